"""The one-shot path (`complete`) that non-streaming turns take: the same reply, usage and
retries as a stream, one call; wrappers are one-shot only when what they wrap is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app.core.config import Settings
from app.core.logging import configure_logging
from app.errors import UpstreamError, UpstreamTimeout
from app.providers.base import (
    ChatMessage,
    ChatRequest,
    Finished,
    StreamEvent,
    TextDelta,
    Usage,
    WholeReply,
    one_shot_of,
    whole_reply,
)
from app.providers.caching import InProcessReplyStore, ResponseCache
from app.providers.instrumented import InstrumentedProvider
from app.providers.mock import MockProvider
from app.providers.resilience import FallbackProvider, ResilientProvider, RetryPolicy

MARKER = "wombat-marker-5c1d"  # message text: never in a log line
NO_WAIT = RetryPolicy(max_retries=2, initial_backoff_s=0, max_backoff_s=0)


@pytest.fixture
def call_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The "provider call" lines logged so far (set up before the test, so caplog sees them)."""
    configure_logging(Settings(_env_file=None, log_format="json", app_env="test"))

    def read() -> list[dict[str, Any]]:
        lines = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
        assert all(MARKER not in json.dumps(line, default=str) for line in lines)
        return [line for line in lines if line["event"] == "provider call"]

    return read


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(model="mock", messages=(ChatMessage("user", MARKER),), **fields)


@dataclass
class StreamOnlyProvider:
    """A provider with no `complete`, as the test fakes are: it can only be streamed."""

    name: str = "streamer"
    default_model: str = "mock"
    calls: int = 0

    def supports(self, model: str) -> bool:
        return model == "mock"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        yield TextDelta("Hello, ")
        yield TextDelta("world.")
        yield Finished(reason="stop", usage=Usage(5, 2), model=request.model)


@dataclass
class OneShotFake:
    """A one-shot provider whose first `failures` calls raise `error` (or hang, when None)."""

    failures: int
    error: Exception | None = None
    name: str = "oneshot"
    default_model: str = "mock"
    one_shot: bool = True
    calls: int = 0
    streamed: int = 0

    def supports(self, model: str) -> bool:
        return model == "mock"

    async def complete(self, request: ChatRequest) -> WholeReply:
        self.calls += 1
        if self.calls <= self.failures:
            if self.error is None:
                await asyncio.sleep(60)
            else:
                raise self.error
        return WholeReply("Whole.", Finished("stop", Usage(7, 1), model=request.model))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.streamed += 1
        yield Finished("stop", Usage(), model=request.model)


async def drained(provider: MockProvider, chat: ChatRequest) -> WholeReply:
    parts: list[str] = []
    async for event in provider.stream(chat):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            return WholeReply("".join(parts), event)
    raise AssertionError("the stream did not finish")


@pytest.mark.parametrize("max_tokens", [None, 5])
async def test_the_mock_answers_in_one_piece_exactly_what_it_streams(
    max_tokens: int | None,
) -> None:
    mock = MockProvider()
    chat = request(max_tokens=max_tokens)

    assert await mock.complete(chat) == await drained(mock, chat)


async def test_a_provider_that_can_only_stream_is_drained() -> None:
    streamer = StreamOnlyProvider()

    reply = await whole_reply(streamer, request())

    assert one_shot_of(streamer) is None
    assert reply.text == "Hello, world."
    assert reply.finished.usage == Usage(5, 2)


def test_wrappers_are_one_shot_only_when_what_they_wrap_is() -> None:
    cache = ResponseCache(InProcessReplyStore(), ttl_s=60)
    one_shot = InstrumentedProvider(ResilientProvider(MockProvider(), NO_WAIT))
    streamed = InstrumentedProvider(ResilientProvider(StreamOnlyProvider(), NO_WAIT))

    assert one_shot_of(one_shot) is one_shot
    assert one_shot_of(cache.around(one_shot)) is not None
    assert one_shot_of(streamed) is None
    assert one_shot_of(cache.around(streamed)) is None
    assert one_shot_of(FallbackProvider([(one_shot, "mock"), (MockProvider(), "mock")]))
    assert one_shot_of(FallbackProvider([(one_shot, "mock"), (streamed, "mock")])) is None


async def test_retryable_errors_are_retried_in_one_shot_and_never_streamed() -> None:
    fake = OneShotFake(failures=2, error=UpstreamError("answered 500", retryable=True))

    reply = await ResilientProvider(fake, NO_WAIT).complete(request())

    assert (fake.calls, fake.streamed) == (3, 0)
    assert reply.text == "Whole."


async def test_an_error_that_is_not_retryable_is_raised_after_one_call() -> None:
    fake = OneShotFake(failures=1, error=UpstreamError("answered 400"))

    with pytest.raises(UpstreamError):
        await ResilientProvider(fake, NO_WAIT).complete(request())

    assert fake.calls == 1


async def test_a_one_shot_call_is_bounded_as_a_whole_and_retried() -> None:
    fake = OneShotFake(failures=3)  # every attempt hangs
    policy = RetryPolicy(max_retries=2, idle_timeout_s=0.05, initial_backoff_s=0)

    with pytest.raises(UpstreamTimeout):
        await ResilientProvider(fake, policy).complete(request())

    assert fake.calls == 3


async def test_a_fallback_serves_when_the_first_fails_and_says_who_answered() -> None:
    failing = OneShotFake(failures=1, error=UpstreamError("down", retryable=True), name="first")
    chain = FallbackProvider([(failing, "mock"), (MockProvider(), "mock")])

    reply = await chain.complete(request())

    assert (reply.finished.provider, reply.finished.requested_model) == ("mock", "mock")
    assert reply.text


async def test_the_cache_answers_a_repeat_without_a_call() -> None:
    fake = OneShotFake(failures=0)
    cached = ResponseCache(InProcessReplyStore(), ttl_s=60).around(fake)
    chat = request(temperature=0, cache_scope="user-1")

    first = await whole_reply(cached, chat)
    second = await whole_reply(cached, chat)

    assert fake.calls == 1
    assert (first.text, first.finished.cache) == ("Whole.", "miss")
    assert (second.text, second.finished.cache) == ("Whole.", "hit")
    assert second.finished.usage == Usage()  # no call: nothing to charge


async def test_a_one_shot_call_is_logged_once_with_its_latency_as_first_token_time(
    call_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    # Read at the start, at the first token and at the end: the reply arrives whole at 0.25 s.
    ticks = iter([0.0, 0.25, 0.25])
    provider = InstrumentedProvider(
        ResilientProvider(MockProvider(), NO_WAIT), clock=lambda: next(ticks)
    )

    reply = await whole_reply(provider, request())

    [line] = call_lines()
    assert (line["status"], line["finish_reason"]) == ("ok", "stop")
    assert line["completion_tokens"] == reply.finished.usage.completion_tokens
    assert (line["time_to_first_token_ms"], line["latency_ms"]) == (250.0, 250.0)


async def test_a_failed_one_shot_call_is_logged_with_its_code(
    call_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    fake = OneShotFake(failures=3, error=UpstreamError("answered 500", retryable=True))
    provider = InstrumentedProvider(ResilientProvider(fake, NO_WAIT))

    with pytest.raises(UpstreamError):
        await provider.complete(request())

    [line] = call_lines()
    assert (line["status"], line["retries"]) == ("upstream_error", 2)
    assert line["time_to_first_token_ms"] is None
