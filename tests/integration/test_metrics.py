"""What `/metrics` shows after turns, refusals and streams: read as Prometheus text, by delta.

The registry is process-wide (other tests count into it too), so every assertion compares a
scrape taken before the action with one taken after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core import metrics
from app.core.config import Settings
from app.db.session import create_engine
from app.errors import UpstreamError
from tests.factories import create_conversation, send_message
from tests.fakes.providers import (
    FAKE_MODEL,
    FAKE_PROVIDER,
    FailingProvider,
    StallingProvider,
    registry_with,
)
from tests.fakes.upstream import FakeUpstream, Reply
from tests.sse import stream_message

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def assert_call_counted(
    before: Samples, after: Samples, provider: str, model: str, status: str = "ok"
) -> None:
    labels = {"provider": provider, "model": model}
    assert delta(before, after, "chat_api_provider_calls_total", **labels, status=status) == 1
    assert delta(before, after, "chat_api_provider_call_duration_seconds_count", **labels) == 1


def assert_usage_counted(before: Samples, after: Samples, turn: dict[str, Any]) -> None:
    message = turn["message"]
    labels = {"provider": message["provider"], "model": message["model"]}
    usage = turn["usage"]
    prompt = delta(before, after, "chat_api_tokens_total", **labels, kind="prompt")
    completion = delta(before, after, "chat_api_tokens_total", **labels, kind="completion")
    assert (prompt, completion) == (usage["prompt_tokens"], usage["completion_tokens"])
    cost = delta(before, after, "chat_api_cost_usd_total", **labels)
    assert cost == pytest.approx(float(Decimal(str(turn["cost_usd"]))), rel=1e-9)
    assert cost > 0


class TestProviderCalls:
    async def test_a_turn_on_the_mock_provider_counts_the_call_its_tokens_and_its_cost(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        before = await scrape(client)

        turn = await send_message(client, conversation["id"], "Count me")

        after = await scrape(client)
        assert_call_counted(before, after, "mock", "mock")
        ttft = delta(
            before,
            after,
            "chat_api_provider_time_to_first_token_seconds_count",
            provider="mock",
            model="mock",
        )
        assert ttft == 1
        assert_usage_counted(before, after, turn)

    async def test_a_turn_through_the_openai_upstream_counts_the_call_its_tokens_and_its_cost(
        self, start_app: StartApp, make_settings: MakeSettings, upstream: FakeUpstream
    ) -> None:
        client = await start_app(
            make_settings(openai_api_key=upstream.api_key, openai_base_url=f"{upstream.url}/v1")
        )
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Reply("Measured."))
        before = await scrape(client)

        turn = await send_message(client, conversation["id"], "Hi")

        after = await scrape(client)
        assert_call_counted(before, after, "openai", "gpt-4o")
        assert turn["usage"]["total_tokens"] > 0
        assert_usage_counted(before, after, turn)

    async def test_a_failed_call_is_counted_by_its_error_code(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        provider = FailingProvider(UpstreamError("boom"))
        client = await start_app(settings, providers=registry_with(provider))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        before = await scrape(client)

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Fail"}
        )

        after = await scrape(client)
        assert response.status_code == 502
        assert_call_counted(before, after, FAKE_PROVIDER, FAKE_MODEL, status="upstream_error")
        labels = {"provider": FAKE_PROVIDER, "model": FAKE_MODEL, "code": "upstream_error"}
        assert delta(before, after, "chat_api_provider_errors_total", **labels) == 1


class TestRejections:
    async def test_a_429_from_the_rate_limiter_is_counted(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=1))
        await client.get("/api/v1/conversations")
        before = await scrape(client)

        refused = await client.get("/api/v1/conversations")

        after = await scrape(client)
        assert refused.status_code == 429
        assert delta(before, after, "chat_api_rejections_total", code="rate_limited") == 1
        assert delta(before, after, "chat_api_rejections_total", code="budget_exceeded") == 0

    async def test_a_402_budget_rejection_is_counted(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        client = await start_app(make_settings(user_budget_usd=Decimal("0.000001")))
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "Spend it all")
        before = await scrape(client)

        refused = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "More"}
        )

        after = await scrape(client)
        assert refused.status_code == 402
        assert delta(before, after, "chat_api_rejections_total", code="budget_exceeded") == 1
        assert delta(before, after, "chat_api_rejections_total", code="rate_limited") == 0


async def stalling_app(
    start_app: StartApp, settings: Settings
) -> tuple[httpx.AsyncClient, StallingProvider, str]:
    """An app whose one provider holds every call until released, and a conversation on it."""
    provider = StallingProvider()
    client = await start_app(settings, providers=registry_with(provider))
    conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    return client, provider, conversation["id"]


async def open_streams_reach(client: httpx.AsyncClient, wanted: float) -> None:
    """Poll: the body starts just after the provider is called."""
    for _ in range(500):
        if value(await scrape(client), "chat_api_open_streams") == wanted:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"chat_api_open_streams never reached {wanted}")


class TestOpenStreams:
    """A stream's response starts with its first token (a failure before it is an HTTP
    error), so the streams here are the mock's, slowed to a word every 60 ms: open for a
    few seconds after their first word."""

    async def test_a_stream_holds_the_gauge_up_while_open_and_gives_it_back_when_done(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(mock_chunk_delay_ms=60))
        conversation = await create_conversation(client)
        start = value(await scrape(client), "chat_api_open_streams")

        reading = asyncio.create_task(stream_message(client, conversation["id"], "Stream me"))
        await open_streams_reach(client, start + 1)
        stream = await reading

        assert stream.terminal.event == "done"
        assert value(await scrape(client), "chat_api_open_streams") == start

    async def test_an_openai_style_stream_counts_as_well(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(mock_chunk_delay_ms=60))
        start = value(await scrape(client), "chat_api_open_streams")
        ask = {"model": "mock", "messages": [{"role": "user", "content": "Hi"}]}

        async def read() -> str:
            async with client.stream(
                "POST", "/v1/chat/completions", json={**ask, "stream": True}
            ) as response:
                assert response.status_code == 200
                return (await response.aread()).decode()

        reading = asyncio.create_task(read())
        await open_streams_reach(client, start + 1)
        body = await reading

        assert body.rstrip().endswith("data: [DONE]")
        assert value(await scrape(client), "chat_api_open_streams") == start


class TestProviderCallsInFlight:
    async def test_a_running_call_is_counted_until_it_ends(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        client, provider, conversation_id = await stalling_app(start_app, settings)
        name = "chat_api_provider_calls_in_flight"
        start = value(await scrape(client), name, provider=FAKE_PROVIDER)

        turn = asyncio.create_task(send_message(client, conversation_id, "Hold on"))
        await asyncio.wait_for(provider.wait_until_entered(1), 5)
        assert value(await scrape(client), name, provider=FAKE_PROVIDER) == start + 1
        provider.release()
        await turn

        assert value(await scrape(client), name, provider=FAKE_PROVIDER) == start

    async def test_a_failed_call_gives_its_place_back(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        client = await start_app(
            settings, providers=registry_with(FailingProvider(UpstreamError("down")))
        )
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        name = "chat_api_provider_calls_in_flight"
        start = value(await scrape(client), name, provider=FAKE_PROVIDER)

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
        )

        assert response.status_code == 502
        assert value(await scrape(client), name, provider=FAKE_PROVIDER) == start


class TestDatabasePool:
    async def test_connections_in_use_follow_checkouts_and_returns(
        self, make_settings: MakeSettings
    ) -> None:
        engine = create_engine(make_settings())
        metrics.watch_pool(engine)
        gauge = metrics.DB_POOL_IN_USE
        start = gauge._value.get()
        try:
            async with engine.connect(), engine.connect():
                held = gauge._value.get()
            assert held == start + 2
            assert gauge._value.get() == start
        finally:
            await engine.dispose()

    async def test_the_gauge_is_exposed(self, client: httpx.AsyncClient) -> None:
        samples = await scrape(client)

        assert ("chat_api_db_pool_connections_in_use", frozenset()) in samples
