"""Every provider call is measured once: outcome, retries, tokens and cost, without message text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.core.config import Settings
from app.core.logging import configure_logging
from app.errors import UpstreamError
from app.providers.base import ChatMessage, ChatRequest, Provider, StreamEvent, Usage, whole_reply
from app.providers.instrumented import InstrumentedProvider
from app.providers.mock import MockProvider
from app.providers.registry import ProviderRegistry
from app.providers.resilience import ResilientProvider, RetryPolicy

MARKER = "quokka-marker-2b7e"  # message text: never in a log line
NO_WAIT = RetryPolicy(max_retries=2, initial_backoff_s=0, max_backoff_s=0)
Lines = list[dict[str, Any]]


@dataclass
class FlakyProvider:
    """Fails its first `failures` calls with a retryable error, then answers like the mock."""

    failures: int
    name: str = "flaky"
    default_model: str = "mock"
    calls: int = 0

    def supports(self, model: str) -> bool:
        return model == "mock"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        if self.calls <= self.failures:
            raise UpstreamError("temporarily down", retryable=True)
        async for event in MockProvider().stream(request):
            yield event


def request() -> ChatRequest:
    return ChatRequest(model="mock", messages=(ChatMessage("user", MARKER),))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def calls(provider: str, status: str) -> float:
    return sample("chat_api_provider_calls_total", provider=provider, model="mock", status=status)


@pytest.fixture
def read_log(caplog: pytest.LogCaptureFixture) -> Callable[[], Lines]:
    """The event dicts logged so far (structlog hands them to the standard library as is)."""
    configure_logging(Settings(_env_file=None, log_format="json", app_env="test"))

    def read() -> Lines:
        lines = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
        assert all(MARKER not in json.dumps(line, default=str) for line in lines)
        return lines

    return read


def call_lines(lines: Lines) -> Lines:
    return [line for line in lines if line["event"] == "provider call"]


async def test_a_retried_call_is_one_call_with_its_retries(read_log: Callable[[], Lines]) -> None:
    flaky = FlakyProvider(failures=1)
    provider = InstrumentedProvider(ResilientProvider(flaky, NO_WAIT))
    ok_before = calls("flaky", "ok")
    retries_before = sample("chat_api_provider_retries_total", provider="flaky", model="mock")

    reply = await whole_reply(provider, request())

    assert flaky.calls == 2
    assert calls("flaky", "ok") == ok_before + 1
    retries = sample("chat_api_provider_retries_total", provider="flaky", model="mock")
    assert retries == retries_before + 1
    [line] = call_lines(read_log())
    assert line["status"] == "ok"
    assert line["retries"] == 1
    assert line["prompt_tokens"] == reply.finished.usage.prompt_tokens
    assert line["completion_tokens"] == reply.finished.usage.completion_tokens
    assert line["time_to_first_token_ms"] is not None
    assert line["latency_ms"] >= line["time_to_first_token_ms"]


async def test_a_call_that_fails_every_attempt_is_counted_by_its_code(
    read_log: Callable[[], Lines],
) -> None:
    provider = InstrumentedProvider(ResilientProvider(FlakyProvider(failures=9), NO_WAIT))
    before = calls("flaky", "upstream_error")

    with pytest.raises(UpstreamError):
        await whole_reply(provider, request())

    assert calls("flaky", "upstream_error") == before + 1
    [line] = call_lines(read_log())
    assert (line["status"], line["retries"], line["prompt_tokens"]) == ("upstream_error", 2, None)


async def test_a_caller_that_stops_reading_mid_reply_leaves_a_cancelled_call(
    read_log: Callable[[], Lines],
) -> None:
    provider: Provider = InstrumentedProvider(MockProvider())
    before = calls("mock", "cancelled")

    events = provider.stream(request())
    await anext(events)
    await events.aclose()  # type: ignore[attr-defined]

    assert calls("mock", "cancelled") == before + 1
    [line] = call_lines(read_log())
    assert line["status"] == "cancelled"


async def test_the_log_line_carries_the_cost_the_price_book_gives(
    read_log: Callable[[], Lines],
) -> None:
    priced: list[tuple[str, str, str | None]] = []

    def cost_of(
        provider: str, model: str, usage: Usage, *, requested_model: str | None = None
    ) -> Decimal:
        priced.append((provider, model, requested_model))
        return Decimal("0.0000125")

    provider = InstrumentedProvider(MockProvider(), cost_of=cost_of)

    await whole_reply(provider, request())

    assert priced == [("mock", "mock", "mock")]
    [line] = call_lines(read_log())
    assert line["cost_usd"] == "0.0000125"


async def test_closing_the_registry_reaches_the_adapter_under_every_wrapper() -> None:
    # Metrics around retries around the adapter: its SDK client must still be closed.
    class ClosingMock(MockProvider):
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    adapter = ClosingMock()
    registry = ProviderRegistry(
        {"mock": InstrumentedProvider(ResilientProvider(adapter, NO_WAIT))}, "mock"
    )

    await registry.aclose()

    assert adapter.closed
