"""Per-user caps on open streams and running replies (RELIABILITY.md promise 10).

Past the cap a request is 429 `too_many_concurrent` with `Retry-After`, before anything is
stored or sent upstream; a slot comes back when its stream closes or its reply ends (and a
reply keeps its slot after its client left, since it still runs). Through Redis the cap holds
across replicas; without it, per process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.errors import TooManyConcurrent
from app.services.limits.stream_quota import KEY_PREFIX, LEASE_TTL_S, ConcurrencyQuota
from tests.auth import bearer
from tests.databases import clean_redis
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, StallingProvider, registry_with
from tests.sse import read_stream, stream_message

StartApp = Callable[..., Any]
QUICK_SHUTDOWN = {"shutdown_grace_seconds": 0.5}
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
async def shared_redis() -> AsyncIterator[str]:
    """The test Redis, with no leases before or after the test."""
    async with clean_redis(f"{KEY_PREFIX}:*") as url:
        yield url


def assert_too_many(response: httpx.Response, what: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "too_many_concurrent"
    assert what in body["detail"]
    assert int(response.headers["Retry-After"]) >= 1


async def stalled_stream(
    client: httpx.AsyncClient, provider: StallingProvider, headers: dict[str, str] | None = None
) -> tuple[str, asyncio.Task[Any]]:
    """A conversation whose streamed reply is stuck upstream, and the task reading it."""
    conversation = await client.post(
        "/api/v1/conversations",
        json={"provider": FAKE_PROVIDER, "model": FAKE_MODEL},
        headers=headers or {},
    )
    assert conversation.status_code == 201, conversation.text
    conversation_id: str = conversation.json()["id"]
    entered = provider.entered
    reading = asyncio.create_task(
        stream_message(client, conversation_id, "Wait for it.", headers=headers or {}, within=30)
    )
    await asyncio.wait_for(provider.wait_until_entered(entered + 1), 5)
    return conversation_id, reading


async def eventually(request: Callable[[], Any], status: int, *, within: float = 5.0) -> Any:
    """The response once it has `status` (a slot in Redis comes back a moment later)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await request()
        if response.status_code == status:
            return response
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.05)


class TestOpenAICompatibleCalls:
    async def test_v1_calls_share_the_users_caps(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        # An OpenAI client must not get around the caps by using /v1 instead of /api/v1.
        provider = StallingProvider()
        settings = make_settings(max_concurrent_generations_per_user=1, **QUICK_SHUTDOWN)
        client = await start_app(settings, providers=registry_with(provider))
        _, reading = await stalled_stream(client, provider)
        ask = {
            "model": "mock",
            "messages": [{"role": "user", "content": "Hi"}],
        }

        refused_plain = await client.post("/v1/chat/completions", json=ask)
        refused_stream = await client.post("/v1/chat/completions", json={**ask, "stream": True})
        provider.release()
        await reading
        allowed = await eventually(lambda: client.post("/v1/chat/completions", json=ask), 200)

        for refused in (refused_plain, refused_stream):
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_concurrent"
            assert int(refused.headers["Retry-After"]) >= 1
        assert allowed.json()["object"] == "chat.completion"


class TestStreamCap:
    async def test_a_stream_past_the_cap_is_429_and_a_closed_one_gives_its_slot_back(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()
        settings = make_settings(
            max_concurrent_streams_per_user=1,
            max_concurrent_generations_per_user=0,
            **QUICK_SHUTDOWN,
        )
        client = await start_app(settings, providers=registry_with(provider))
        conversation_id, reading = await stalled_stream(client, provider)
        url = f"/api/v1/conversations/{conversation_id}/stream"

        refused_attach = await client.get(url)
        refused_post = await client.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"content": "And another", "stream": True},
        )
        provider.release()
        first = await reading

        assert_too_many(refused_attach, "streams")
        assert_too_many(refused_post, "streams")
        assert first.terminal.event == "done"
        # Each finished stream gave its slot back: one after another they all open.
        for _ in range(3):
            replay = await read_stream(client, "GET", url)
            assert replay.status_code == 200, replay.body
            assert replay.terminal.event == "done"

    async def test_the_cap_is_per_user(
        self,
        start_app: StartApp,
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
    ) -> None:
        provider = StallingProvider()
        settings = auth_settings(max_concurrent_streams_per_user=1, **QUICK_SHUTDOWN)
        client = await start_app(settings, providers=registry_with(provider))
        alice, bob = bearer(await issue_key("alice")), bearer(await issue_key("bob"))
        _, alices = await stalled_stream(client, provider, alice)

        bobs = asyncio.create_task(stalled_stream(client, provider, bob))
        _, bobs_reading = await bobs
        provider.release()

        assert (await alices).terminal.event == "done"
        assert (await bobs_reading).terminal.event == "done"

    async def test_with_auth_on_the_default_cap_is_ten_and_off_without_auth(
        self, auth_settings: Callable[..., Settings], make_settings: Callable[..., Settings]
    ) -> None:
        assert auth_settings().stream_cap == 10
        assert auth_settings().generation_cap == 10
        assert auth_settings(max_concurrent_streams_per_user=0).stream_cap is None
        assert make_settings().stream_cap is None
        assert make_settings(max_concurrent_generations_per_user=3).generation_cap == 3


class TestGenerationCap:
    async def test_a_reply_keeps_its_slot_after_its_client_left_until_it_ends(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()
        settings = make_settings(
            max_concurrent_generations_per_user=1,
            max_concurrent_streams_per_user=0,
            **QUICK_SHUTDOWN,
        )
        client = await start_app(settings, providers=registry_with(provider))
        _, reading = await stalled_stream(client, provider)
        reading.cancel()  # the client leaves; the reply runs on
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        other = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        url = f"/api/v1/conversations/{other['id']}/messages"

        refused = await client.post(url, json={"content": "Me too?"})
        stored = (await client.get(f"/api/v1/conversations/{other['id']}")).json()
        provider.release()
        accepted = await eventually(lambda: client.post(url, json={"content": "Now?"}), 201)

        assert_too_many(refused, "generations")
        assert stored["message_count"] == 0  # refused before anything was stored
        assert accepted.json()["message"]["status"] == "completed"

    async def test_replicas_share_the_cap_through_redis(
        self, start_app: StartApp, make_settings: Callable[..., Settings], shared_redis: str
    ) -> None:
        provider = StallingProvider()
        settings = make_settings(
            redis_url=shared_redis,
            max_concurrent_generations_per_user=1,
            max_concurrent_streams_per_user=0,
            **QUICK_SHUTDOWN,
        )
        first = await start_app(settings, providers=registry_with(provider))
        second = await start_app(settings, providers=registry_with(provider))
        _, reading = await stalled_stream(first, provider)
        other = await create_conversation(second, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        url = f"/api/v1/conversations/{other['id']}/messages"

        refused = await second.post(url, json={"content": "Over here?"})
        provider.release()
        await reading
        accepted = await eventually(lambda: second.post(url, json={"content": "Now?"}), 201)

        assert_too_many(refused, "generations")
        assert accepted.status_code == 201

    async def test_an_unreachable_redis_caps_in_memory(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()
        settings = make_settings(
            redis_url=UNREACHABLE_REDIS,
            max_concurrent_generations_per_user=1,
            max_concurrent_streams_per_user=0,
            **QUICK_SHUTDOWN,
        )
        client = await start_app(settings, providers=registry_with(provider))
        _, reading = await stalled_stream(client, provider)
        other = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)

        refused = await client.post(
            f"/api/v1/conversations/{other['id']}/messages", json={"content": "Me too?"}
        )
        provider.release()

        assert_too_many(refused, "generations")
        assert (await reading).terminal.event == "done"


class TestLeasesInRedis:
    async def test_a_slot_held_by_a_dead_replica_comes_back_when_its_lease_expires(
        self, shared_redis: str
    ) -> None:
        redis = Redis.from_url(shared_redis)
        try:
            quota = ConcurrencyQuota("generations", 1, redis)
            held = await quota.acquire("carol")  # never released: its replica "died"
            assert held is not None
            with pytest.raises(TooManyConcurrent):
                await quota.acquire("carol")
            await redis.zadd(f"{KEY_PREFIX}:generations:carol", {held.id: 1.0})  # expired

            again = await quota.acquire("carol")

            assert again is not None
            await again.release()
            await held.release()
        finally:
            await redis.aclose()

    async def test_a_held_lease_is_renewed(self, shared_redis: str) -> None:
        redis = Redis.from_url(shared_redis)
        key = f"{KEY_PREFIX}:streams:dave"
        try:
            quota = ConcurrencyQuota("streams", 1, redis)
            lease = await quota.acquire("dave")
            assert lease is not None
            await redis.zadd(key, {lease.id: 1.0})  # about to expire

            await quota._renew("dave", lease.id)
            renewed = await redis.zscore(key, lease.id)
            await lease.release()

            assert renewed is not None
            assert renewed > 1.0 + LEASE_TTL_S
            assert await redis.zscore(key, lease.id) is None
        finally:
            await redis.aclose()
