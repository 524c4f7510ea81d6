"""A streamed turn as a client reads it: the events, their order and ids, and what is stored.

Every stream opens with `retry:`, then `start`, the `delta`s and exactly one `done` or `error`;
errors known before the first byte are ordinary HTTP problems. Each scenario runs on both
event logs (in-process, and Redis Streams) where the log carries the events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from redis.exceptions import RedisError

from app.core.config import Settings
from app.errors import UpstreamError
from tests.databases import REDIS_URL, unavailable
from tests.factories import create_conversation, without_siblings
from tests.fakes.providers import (
    FAKE_MODEL,
    FAKE_PROVIDER,
    FailingProvider,
    StallingProvider,
    registry_with,
)
from tests.fakes.upstream import CutStream, FakeUpstream, Stall, StallMidStream
from tests.sse import EventStream, read_stream

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
WAYS_TO_STREAM = ["stream_true", "accept_header", "get_with_content"]
# Short: a generation left hanging by a failed assertion is ended quickly at shutdown.
QUICK_SHUTDOWN = {"shutdown_grace_seconds": 0.5}


@pytest.fixture(params=["in_process", "redis"])
def event_log(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the event log: in-process, or a Redis Stream per reply."""
    if request.param == "in_process":
        return {}
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except RedisError as error:
        unavailable("Redis", error)
    return {"redis_url": REDIS_URL}


def messages_url(conversation_id: str) -> str:
    return f"/api/v1/conversations/{conversation_id}/messages"


async def stream_turn(
    client: httpx.AsyncClient, conversation_id: str, content: str, how: str = "stream_true"
) -> EventStream:
    """Send `content` in one of the three ways the contract offers to stream the reply."""
    if how == "stream_true":
        body = {"content": content, "stream": True}
        return await read_stream(client, "POST", messages_url(conversation_id), json=body)
    if how == "accept_header":
        return await read_stream(
            client,
            "POST",
            messages_url(conversation_id),
            json={"content": content},
            headers={"Accept": "text/event-stream"},
        )
    return await read_stream(
        client,
        "GET",
        f"/api/v1/conversations/{conversation_id}/stream",
        params={"content": content},
    )


async def stored_messages(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def assert_sse_headers(stream: EventStream) -> None:
    assert stream.status_code == 200, stream.body
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"


def assert_problem(stream: EventStream, status: int, code: str) -> None:
    assert stream.status_code == status, stream.body
    assert stream.headers["content-type"] == "application/problem+json"
    assert stream.problem()["code"] == code


def assert_well_formed(stream: EventStream) -> None:
    """`retry: 3000` first, `start` next, then deltas, one terminal event; all with ids."""
    assert_sse_headers(stream)
    assert stream.frames[0].retry == 3000
    assert stream.frames[0].event is None
    assert stream.names[0] == "start"
    assert all(name == "delta" for name in stream.names[1:-1]), stream.names
    assert stream.terminal is stream.events[-1]
    ids = [frame.id for frame in stream.events]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


class TestStreamedTurn:
    @pytest.mark.parametrize("how", WAYS_TO_STREAM)
    async def test_a_streamed_turn_sends_retry_start_deltas_and_one_done_with_the_201_body(
        self,
        start_app: StartApp,
        make_settings: MakeSettings,
        event_log: dict[str, Any],
        how: str,
    ) -> None:
        client = await start_app(make_settings(**event_log))
        conversation = await create_conversation(client, title="streamed")
        twin = await create_conversation(client, title="not streamed")

        stream = await stream_turn(client, conversation["id"], "Stream this, please.", how)
        unstreamed = await client.post(
            messages_url(twin["id"]), json={"content": "Stream this, please."}
        )

        assert_well_formed(stream)
        user, reply = await stored_messages(client, conversation["id"])
        assert user["content"] == "Stream this, please."
        assert stream.events[0].json() == {
            "message_id": reply["id"],
            "conversation_id": conversation["id"],
            "provider": "mock",
            "model": "mock",
        }
        assert len(stream.events) > 2
        assert stream.text == reply["content"] != ""
        done = stream.terminal
        assert done.event == "done"
        assert done.json()["message"] == without_siblings(reply)
        assert reply["status"] == "completed"
        assert done.json()["conversation_id"] == conversation["id"]
        # The same object as the non-streaming 201: same keys, same usage and cost.
        expected = unstreamed.json()
        assert unstreamed.status_code == 201
        assert done.json().keys() == expected.keys()
        assert done.json()["message"].keys() == expected["message"].keys()
        assert done.json()["usage"] == expected["usage"]
        assert done.json()["cost_usd"] == expected["cost_usd"] == reply["cost_usd"] > 0
        assert done.json()["message"]["content"] == expected["message"]["content"]


class TestErrorsBeforeTheFirstByte:
    @pytest.mark.parametrize("how", WAYS_TO_STREAM)
    async def test_an_unknown_conversation_is_a_404_not_a_stream(
        self, client: httpx.AsyncClient, how: str
    ) -> None:
        stream = await stream_turn(client, str(uuid.uuid4()), "Anyone there?", how)

        assert_problem(stream, 404, "conversation_not_found")

    @pytest.mark.parametrize("how", ["stream_true", "accept_header"])
    async def test_an_unknown_model_is_a_422_not_a_stream(
        self, client: httpx.AsyncClient, how: str
    ) -> None:
        conversation = await create_conversation(client)
        headers = {"Accept": "text/event-stream"} if how == "accept_header" else {}
        body = {"content": "Hi", "model": "no-such-model", "stream": how == "stream_true"}

        stream = await read_stream(
            client, "POST", messages_url(conversation["id"]), json=body, headers=headers
        )

        assert_problem(stream, 422, "unknown_model")
        assert await stored_messages(client, conversation["id"]) == []

    @pytest.mark.parametrize("how", WAYS_TO_STREAM)
    async def test_a_second_stream_while_one_runs_is_a_409_generation_in_progress(
        self, start_app: StartApp, make_settings: MakeSettings, how: str
    ) -> None:
        provider = StallingProvider()
        client = await start_app(make_settings(**QUICK_SHUTDOWN), providers=registry_with(provider))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        first = asyncio.create_task(stream_turn(client, conversation["id"], "First"))
        await asyncio.wait_for(provider.wait_until_entered(1), 5)

        second = await stream_turn(client, conversation["id"], "Second", how)
        provider.release()

        assert_problem(second, 409, "generation_in_progress")
        assert (await first).terminal.event == "done"
        assert [m["content"] for m in await stored_messages(client, conversation["id"])] == [
            "First",
            "Released at last.",
        ]

    @pytest.mark.parametrize("how", WAYS_TO_STREAM)
    async def test_a_spent_budget_is_a_402_not_a_stream(
        self, start_app: StartApp, make_settings: MakeSettings, how: str
    ) -> None:
        client = await start_app(make_settings(user_budget_usd=0))
        conversation = await create_conversation(client)

        stream = await stream_turn(client, conversation["id"], "Can I still talk?", how)

        assert_problem(stream, 402, "budget_exceeded")
        assert await stored_messages(client, conversation["id"]) == []

    @pytest.mark.parametrize("how", WAYS_TO_STREAM)
    async def test_empty_content_is_a_422_not_a_stream(
        self, client: httpx.AsyncClient, how: str
    ) -> None:
        conversation = await create_conversation(client)

        stream = await stream_turn(client, conversation["id"], "", how)

        assert_problem(stream, 422, "validation_error")
        assert await stored_messages(client, conversation["id"]) == []


class TestConcurrentStreams:
    async def test_two_concurrent_streams_in_one_conversation_get_one_200_and_one_409(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        provider = StallingProvider()
        client = await start_app(make_settings(**QUICK_SHUTDOWN), providers=registry_with(provider))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        racers = [
            asyncio.create_task(stream_turn(client, conversation["id"], f"Racer {n}"))
            for n in range(2)
        ]
        # The loser's 409 comes at once; the winner's stream waits for the provider.
        await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED, timeout=5)
        provider.release()

        streams = await asyncio.gather(*racers)

        assert sorted(stream.status_code for stream in streams) == [200, 409]
        winner = next(stream for stream in streams if stream.status_code == 200)
        loser = next(stream for stream in streams if stream.status_code == 409)
        assert_well_formed(winner)
        assert winner.terminal.event == "done"
        assert_problem(loser, 409, "generation_in_progress")
        assert provider.entered == 1
        assert len(await stored_messages(client, conversation["id"])) == 2


class TestUpstreamFailureMidStream:
    async def test_a_provider_failing_after_two_deltas_ends_the_stream_with_one_error(
        self, start_app: StartApp, make_settings: MakeSettings, event_log: dict[str, Any]
    ) -> None:
        provider = FailingProvider(UpstreamError("provider 'fake' broke"), deltas_before=2)
        client = await start_app(make_settings(**event_log), providers=registry_with(provider))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)

        stream = await stream_turn(client, conversation["id"], "Try your best")

        assert_well_formed(stream)
        assert stream.names == ["start", "delta", "delta", "error"]
        error = stream.terminal.json()
        assert error.keys() == {"code", "message"}
        assert error["code"] == "upstream_error"
        _, reply = await stored_messages(client, conversation["id"])
        assert reply["status"] == "failed"
        assert reply["content"] == stream.text == "partial 0 partial 1 "
        assert reply["metadata"]["error"]["code"] == "upstream_error"

    async def test_an_upstream_stream_cut_mid_reply_ends_with_one_error_and_the_text_kept(
        self,
        start_app: StartApp,
        make_settings: MakeSettings,
        upstream: FakeUpstream,
        event_log: dict[str, Any],
    ) -> None:
        settings = make_settings(
            openai_api_key=upstream.api_key,
            openai_base_url=f"{upstream.url}/v1",
            provider_timeout_seconds=1,
            provider_retry_max_wait_seconds=0.05,
            **event_log,
        )
        client = await start_app(settings)
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(CutStream(after_chunks=2, text="One two three four."))

        stream = await stream_turn(client, conversation["id"], "Hello")

        assert_well_formed(stream)
        assert stream.terminal.event == "error"
        assert stream.terminal.json()["code"] == "upstream_error"
        assert stream.text == "One two"
        assert len(upstream.requests) == 1  # no retry once text reached the client
        _, reply = await stored_messages(client, conversation["id"])
        assert (reply["status"], reply["content"]) == ("failed", "One two")


class TestHeartbeat:
    @pytest.fixture
    async def client(
        self,
        start_app: StartApp,
        make_settings: MakeSettings,
        upstream: FakeUpstream,
        event_log: dict[str, Any],
    ) -> httpx.AsyncClient:
        """OpenAI against the fake upstream, with a heartbeat every 0.1 s."""
        settings = make_settings(
            openai_api_key=upstream.api_key,
            openai_base_url=f"{upstream.url}/v1",
            stream_heartbeat_seconds=0.1,
            **QUICK_SHUTDOWN,
            **event_log,
        )
        started: httpx.AsyncClient = await start_app(settings)
        return started

    async def test_pings_are_sent_while_the_provider_is_silent(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        # Silence after the first token.
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(StallMidStream(after_chunks=1, seconds=1.0, text="Take your time."))

        stream = await stream_turn(client, conversation["id"], "Take your time")

        assert_well_formed(stream)
        kinds = [frame.event or ",".join(frame.comments) for frame in stream.frames[1:]]
        first_delta = kinds.index("delta")
        next_delta = kinds.index("delta", first_delta + 1)
        assert kinds[:first_delta] == ["start"]
        assert kinds[first_delta + 1 : next_delta].count("ping") >= 2, kinds
        assert set(kinds[first_delta + 1 : next_delta]) == {"ping"}
        assert stream.terminal.event == "done"

    async def test_a_long_silence_before_the_first_token_starts_the_response_with_a_ping(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        # A model thinking for longer than a heartbeat: waiting on for its first token to
        # choose the status would leave the connection silent past a proxy's read timeout.
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Stall(seconds=0.6))

        stream = await stream_turn(client, conversation["id"], "Think hard")

        assert stream.status_code == 200
        kinds = [frame.event or ",".join(frame.comments) for frame in stream.frames[1:]]
        assert kinds[:2] == ["start", "ping"], kinds
        assert stream.terminal.event == "done"
