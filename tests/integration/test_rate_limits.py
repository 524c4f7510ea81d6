"""Per-user requests and tokens per minute: 429 with its headers, shared through Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.providers.mock import MockProvider
from app.services.limits.rate_limits import KEY_PREFIX
from tests.databases import clean_redis
from tests.factories import create_conversation
from tests.fakes.providers import CountingProvider, registry_with

StartApp = Callable[..., Any]
LIST = "/api/v1/conversations"
# Nothing listens here: connections are refused at once.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
async def shared_redis() -> AsyncIterator[str]:
    """The test Redis, with no rate-limit counters before or after the test."""
    async with clean_redis(f"{KEY_PREFIX}*") as url:
        yield url


def assert_rate_limited(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) >= 1


class TestRequestsPerMinute:
    async def test_the_request_past_the_limit_is_429_with_its_headers(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=3))

        allowed = [await client.get(LIST) for _ in range(3)]
        refused = await client.get(LIST)

        assert [r.status_code for r in allowed] == [200, 200, 200]
        assert [r.headers["RateLimit-Limit"] for r in allowed] == ["3", "3", "3"]
        assert [r.headers["RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
        assert all(int(r.headers["RateLimit-Reset"]) >= 0 for r in allowed)
        assert_rate_limited(refused, 3)

    async def test_posts_count_too_and_a_refused_post_stores_nothing(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=2))
        await create_conversation(client)
        await client.get(LIST)

        refused = await client.post(LIST, json={"title": "too many"})

        assert_rate_limited(refused, 2)

    async def test_off_by_default_and_no_headers(self, client: httpx.AsyncClient) -> None:
        responses = [await client.get(LIST) for _ in range(5)]
        assert {r.status_code for r in responses} == {200}
        assert "RateLimit-Limit" not in responses[-1].headers

    async def test_health_is_not_limited(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=1))
        assert {(await client.get("/health")).status_code for _ in range(3)} == {200}


class TestTokensPerMinute:
    async def test_a_turn_past_the_token_limit_is_refused_before_the_provider_is_called(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        counting = CountingProvider(MockProvider())
        client = await start_app(make_settings(rate_limit_tpm=5), providers=registry_with(counting))
        conversation_id = (await create_conversation(client))["id"]
        url = f"/api/v1/conversations/{conversation_id}/messages"

        first = await client.post(url, json={"content": "Use up my tokens."})
        second = await client.post(url, json={"content": "One more?"})
        streamed = await client.post(url, json={"content": "Streamed?", "stream": True})

        assert first.status_code == 201
        assert first.json()["usage"]["total_tokens"] > 5
        assert_rate_limited(second, 5)
        assert_rate_limited(streamed, 5)
        assert counting.calls == 1
        conversation = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
        assert conversation["message_count"] == 2  # the refused turns stored nothing


class TestSharedThroughRedis:
    async def test_two_replicas_share_one_request_budget(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        shared_redis: str,
    ) -> None:
        settings = make_settings(rate_limit_rpm=4, redis_url=shared_redis)
        first, second = await start_app(settings), await start_app(settings)

        statuses = [(await replica.get(LIST)).status_code for replica in (first, second) * 2]
        refused_here = await first.get(LIST)
        refused_there = await second.get(LIST)

        assert statuses == [200, 200, 200, 200]
        assert_rate_limited(refused_here, 4)
        assert_rate_limited(refused_there, 4)

    async def test_two_replicas_share_one_token_budget(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        shared_redis: str,
    ) -> None:
        counting = CountingProvider(MockProvider())
        settings = make_settings(rate_limit_tpm=5, redis_url=shared_redis)
        first = await start_app(settings, providers=registry_with(counting))
        second = await start_app(settings, providers=registry_with(counting))
        conversation_id = (await create_conversation(first))["id"]
        url = f"/api/v1/conversations/{conversation_id}/messages"

        assert (await first.post(url, json={"content": "Spend here."})).status_code == 201
        assert_rate_limited(await second.post(url, json={"content": "Then there?"}), 5)
        assert counting.calls == 1

    async def test_an_unreachable_redis_falls_back_to_memory_and_keeps_limiting(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=2, redis_url=UNREACHABLE_REDIS))

        responses = [await client.get(LIST) for _ in range(3)]

        assert [r.status_code for r in responses[:2]] == [200, 200]
        assert_rate_limited(responses[2], 2)
