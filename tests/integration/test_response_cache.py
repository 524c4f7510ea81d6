"""The opt-in reply cache: `cache: true` with temperature 0 answers a repeated request without
calling the provider, charges the hit nothing, and never crosses users.

A repeated request means the same prompt: the same user, provider, model, system prompt,
history and parameters. Here that is the first message of two conversations of one user.
Every scenario runs on both stores (Redis, and the in-process LRU) and both databases.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from redis.exceptions import RedisError

from app.core.config import Settings
from tests.databases import REDIS_URL, unavailable
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, StallingProvider, registry_with
from tests.fakes.upstream import DEFAULT_TEXT, Fail, FakeUpstream, Reply
from tests.sse import read_stream

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
CACHED = {"cache": True, "temperature": 0}


@pytest.fixture(params=["in_process", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select where cached replies live."""
    if request.param == "in_process":
        return {}
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except RedisError as error:
        unavailable("Redis", error)
    return {"redis_url": REDIS_URL}


@pytest.fixture
def cached_app(
    start_app: StartApp, make_settings: MakeSettings, upstream: FakeUpstream, store: dict[str, Any]
) -> Callable[..., Any]:
    """Start the app on the fake OpenAI upstream (one attempt per call) with the chosen store."""

    async def start(**overrides: Any) -> httpx.AsyncClient:
        settings = make_settings(
            openai_api_key=upstream.api_key,
            openai_base_url=f"{upstream.url}/v1",
            default_provider="openai",
            provider_max_retries=0,
            shutdown_grace_seconds=0.5,
            **{**store, **overrides},
        )
        client: httpx.AsyncClient = await start_app(settings)
        return client

    return start


def new_user() -> str:
    # Cached replies outlive a test in Redis: every test asks as users of its own.
    return f"user-{uuid.uuid4().hex[:12]}"


async def new_conversation(client: httpx.AsyncClient, user: str, **fields: Any) -> str:
    conversation = await create_conversation(client, user_id=user, **{"model": "gpt-4o", **fields})
    return str(conversation["id"])


async def turn(
    client: httpx.AsyncClient, conversation_id: str, content: str = "Hello", **fields: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"content": content, **fields},
    )


async def ask(
    client: httpx.AsyncClient, conversation_id: str, content: str = "Hello", **fields: Any
) -> dict[str, Any]:
    response = await turn(client, conversation_id, content, **fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def assert_totals_are_sums(client: httpx.AsyncClient, conversation_id: str) -> None:
    read = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
    messages = read["messages"]
    assert read["total_tokens"] == sum(m["total_tokens"] for m in messages)
    assert Decimal(str(read["total_cost_usd"])) == sum(
        (Decimal(str(m["cost_usd"] or 0)) for m in messages), Decimal(0)
    )


class TestCacheHit:
    async def test_the_same_request_twice_calls_the_provider_once_and_charges_the_hit_nothing(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream
    ) -> None:
        client = await cached_app()
        user = new_user()
        first_conversation = await new_conversation(client, user)
        second_conversation = await new_conversation(client, user)

        first = await ask(client, first_conversation, **CACHED)
        second = await ask(client, second_conversation, **CACHED)

        assert len(upstream.requests) == 1
        assert second["message"]["content"] == first["message"]["content"]
        assert first["message"]["metadata"]["cache"] == "miss"
        assert second["message"]["metadata"]["cache"] == "hit"
        assert second["message"]["status"] == "completed"
        assert second["message"]["finish_reason"] == "stop"
        assert second["message"]["model"] == first["message"]["model"]
        assert Decimal(str(first["cost_usd"])) > 0
        assert Decimal(str(second["cost_usd"])) == 0
        assert second["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        await assert_totals_are_sums(client, first_conversation)
        await assert_totals_are_sums(client, second_conversation)
        usage = (await client.get("/api/v1/usage", params={"user_id": user})).json()
        assert Decimal(str(usage["total_cost_usd"])) == Decimal(str(first["cost_usd"]))

    async def test_a_streamed_hit_replays_as_ordinary_events(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream
    ) -> None:
        client = await cached_app()
        user = new_user()
        conversations = [await new_conversation(client, user) for _ in range(2)]
        body = {"content": "Hello", "stream": True, **CACHED}

        streams = [
            await read_stream(client, "POST", f"/api/v1/conversations/{c}/messages", json=body)
            for c in conversations
        ]

        assert len(upstream.requests) == 1
        miss, hit = streams
        assert hit.status_code == 200
        assert hit.names[0] == "start"
        assert hit.names[-1] == "done"
        assert "delta" in hit.names
        assert hit.text == miss.text
        done = hit.terminal.json()
        assert done["message"]["metadata"]["cache"] == "hit"
        assert Decimal(str(done["cost_usd"])) == 0
        assert miss.terminal.json()["message"]["metadata"]["cache"] == "miss"
        await assert_totals_are_sums(client, conversations[1])


class TestCacheMiss:
    async def test_another_user_s_identical_request_is_never_served_the_first_user_s_reply(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream
    ) -> None:
        client = await cached_app()
        upstream.script(Reply("Only for the first user."), Reply("For the second user."))
        first = await ask(client, await new_conversation(client, new_user()), **CACHED)
        second = await ask(client, await new_conversation(client, new_user()), **CACHED)

        assert len(upstream.requests) == 2
        assert first["message"]["content"] == "Only for the first user."
        assert second["message"]["content"] == "For the second user."
        assert second["message"]["metadata"]["cache"] == "miss"

    @pytest.mark.parametrize("temperature", [0.7, None])
    async def test_a_temperature_other_than_zero_is_not_cached(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream, temperature: float | None
    ) -> None:
        client = await cached_app()
        user = new_user()
        fields: dict[str, Any] = {"cache": True}
        if temperature is not None:
            fields["temperature"] = temperature

        replies = [await ask(client, await new_conversation(client, user), **fields) for _ in "ab"]

        assert len(upstream.requests) == 2
        assert all("cache" not in reply["message"]["metadata"] for reply in replies)

    async def test_without_cache_true_nothing_is_cached(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream
    ) -> None:
        client = await cached_app()
        user = new_user()
        for _ in range(2):
            await ask(client, await new_conversation(client, user), temperature=0)

        assert len(upstream.requests) == 2

    @pytest.mark.parametrize(
        ("conversation_fields", "turn_fields"),
        [
            ({}, {"max_tokens": 50}),
            ({}, {"model": "gpt-4o-mini"}),
            ({"system_prompt": "Answer in French."}, {}),
            ({}, {"content": "Hello!"}),
        ],
        ids=["max_tokens", "model", "system_prompt", "message"],
    )
    async def test_any_difference_in_the_request_is_a_miss(
        self,
        cached_app: Callable[..., Any],
        upstream: FakeUpstream,
        conversation_fields: dict[str, Any],
        turn_fields: dict[str, Any],
    ) -> None:
        client = await cached_app()
        user = new_user()
        await ask(client, await new_conversation(client, user), **CACHED)

        other = await new_conversation(client, user, **conversation_fields)
        second = await ask(client, other, **{"content": "Hello", **CACHED, **turn_fields})

        assert len(upstream.requests) == 2
        assert second["message"]["metadata"]["cache"] == "miss"

    async def test_a_failed_reply_is_not_cached(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream
    ) -> None:
        client = await cached_app()
        user = new_user()
        upstream.script(Fail(500), Reply("The real answer."))

        failed = await turn(client, await new_conversation(client, user), **CACHED)
        answered = await ask(client, await new_conversation(client, user), **CACHED)
        replayed = await ask(client, await new_conversation(client, user), **CACHED)

        assert failed.status_code == 502
        assert len(upstream.requests) == 2
        assert answered["message"]["content"] == "The real answer."
        assert answered["message"]["metadata"]["cache"] == "miss"
        assert replayed["message"]["content"] == "The real answer."
        assert replayed["message"]["metadata"]["cache"] == "hit"

    async def test_a_cancelled_reply_is_not_cached(
        self, start_app: StartApp, make_settings: MakeSettings, store: dict[str, Any]
    ) -> None:
        provider = StallingProvider()
        settings = make_settings(shutdown_grace_seconds=0.5, **store)
        client: httpx.AsyncClient = await start_app(settings, providers=registry_with(provider))
        user = new_user()
        fields = {"provider": FAKE_PROVIDER, "model": FAKE_MODEL}
        first = await new_conversation(client, user, **fields)
        url = f"/api/v1/conversations/{first}/messages"
        body = {"content": "Hello", "stream": True, **CACHED}
        reading = asyncio.create_task(read_stream(client, "POST", url, json=body))
        await asyncio.wait_for(provider.wait_until_entered(1), 5)
        running = (await client.get(f"/api/v1/conversations/{first}")).json()["messages"][1]

        cancelled = await client.post(f"{url}/{running['id']}/cancel")
        provider.release()
        await reading
        answered = await ask(client, await new_conversation(client, user, **fields), **CACHED)
        replayed = await ask(client, await new_conversation(client, user, **fields), **CACHED)

        assert cancelled.json()["status"] == "cancelled"
        assert provider.entered == 2
        assert answered["message"]["metadata"]["cache"] == "miss"
        assert replayed["message"]["metadata"]["cache"] == "hit"
        assert replayed["message"]["content"] == provider.reply

    async def test_a_reply_is_asked_for_again_once_it_expires(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream
    ) -> None:
        client = await cached_app(response_cache_ttl_seconds=1)
        user = new_user()
        await ask(client, await new_conversation(client, user), **CACHED)

        await asyncio.sleep(1.2)
        later = await ask(client, await new_conversation(client, user), **CACHED)

        assert len(upstream.requests) == 2
        assert later["message"]["metadata"]["cache"] == "miss"

    async def test_a_ttl_of_zero_turns_the_cache_off(
        self, cached_app: Callable[..., Any], upstream: FakeUpstream
    ) -> None:
        client = await cached_app(response_cache_ttl_seconds=0)
        user = new_user()
        replies = [await ask(client, await new_conversation(client, user), **CACHED) for _ in "ab"]

        assert len(upstream.requests) == 2
        assert all("cache" not in reply["message"]["metadata"] for reply in replies)


class TestCacheUnavailable:
    async def test_turns_still_succeed_when_redis_is_unreachable(
        self,
        start_app: StartApp,
        make_settings: MakeSettings,
        upstream: FakeUpstream,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        settings = make_settings(
            openai_api_key=upstream.api_key,
            openai_base_url=f"{upstream.url}/v1",
            default_provider="openai",
            redis_url=UNREACHABLE_REDIS,
        )
        client: httpx.AsyncClient = await start_app(settings)
        user = new_user()

        secret = "my card is 4111 1111 1111 1111, please remember it"
        replies = [
            await ask(client, await new_conversation(client, user), secret, **CACHED) for _ in "ab"
        ]

        assert len(upstream.requests) == 2
        assert all(reply["message"]["status"] == "completed" for reply in replies)
        assert all(reply["message"]["metadata"]["cache"] == "miss" for reply in replies)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        warnings = [line for line in lines if line.get("event", "").startswith("reply cache")]
        assert warnings, "a Redis failure is logged"
        assert all("4111" not in json.dumps(line) for line in lines)
        assert all(DEFAULT_TEXT not in json.dumps(line) for line in lines)
