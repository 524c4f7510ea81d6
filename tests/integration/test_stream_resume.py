"""Attaching to a reply and resuming it: `GET .../stream` without content, and `Last-Event-ID`.

A reconnecting client gets exactly the events after the last one it saw, no event lost or
repeated, on the replica it reached first or another one; a finished reply replays, from its
event log while that is kept and from the stored row once it is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from redis.exceptions import RedisError

from app.core.config import Settings
from tests.databases import REDIS_URL, unavailable
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, StallingProvider, registry_with
from tests.sse import EventStream, Frame, read_stream, stream_message

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
QUICK_SHUTDOWN = {"shutdown_grace_seconds": 0.5}


@pytest.fixture(params=["in_process", "redis"])
def event_log(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the event log: in-process, or a Redis Stream per reply."""
    if request.param == "in_process":
        return {}
    return redis_log()


def redis_log() -> dict[str, Any]:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except RedisError as error:
        unavailable("Redis", error)
    return {"redis_url": REDIS_URL}


async def stream_turn(
    client: httpx.AsyncClient, conversation_id: str, content: str = "Tell me a story."
) -> EventStream:
    stream = await stream_message(client, conversation_id, content)
    assert stream.status_code == 200, stream.body
    return stream


async def attach(
    client: httpx.AsyncClient, conversation_id: str, last_event_id: str | None = None
) -> EventStream:
    """`GET .../stream` without content, as an `EventSource` reconnecting would send it."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    stream = await read_stream(
        client, "GET", f"/api/v1/conversations/{conversation_id}/stream", headers=headers
    )
    assert stream.status_code == 200, stream.body
    assert stream.frames[0].retry == 3000
    return stream


def seen(events: list[Frame]) -> list[tuple[str | None, str | None, str | None]]:
    """What a client can compare between two reads: every event's id, name and data."""
    return [(frame.id, frame.event, frame.data) for frame in events]


class TestAttach:
    async def test_attaching_after_the_reply_finished_replays_start_deltas_and_done(
        self, start_app: StartApp, make_settings: MakeSettings, event_log: dict[str, Any]
    ) -> None:
        client = await start_app(make_settings(**event_log))
        conversation = await create_conversation(client)
        live = await stream_turn(client, conversation["id"])

        replay = await attach(client, conversation["id"])

        assert replay.names[0] == "start"
        assert "delta" in replay.names
        assert replay.terminal.event == "done"
        assert seen(replay.events) == seen(live.events)

    async def test_attaching_while_the_reply_runs_follows_it_to_its_end(
        self, start_app: StartApp, make_settings: MakeSettings, event_log: dict[str, Any]
    ) -> None:
        provider = StallingProvider()
        client = await start_app(
            make_settings(**event_log, **QUICK_SHUTDOWN), providers=registry_with(provider)
        )
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        live = asyncio.create_task(stream_turn(client, conversation["id"]))
        await asyncio.wait_for(provider.wait_until_entered(1), 5)

        attached = asyncio.create_task(attach(client, conversation["id"]))
        await asyncio.sleep(0.2)
        provider.release()

        assert seen((await attached).events) == seen((await live).events)
        assert (await attached).names == ["start", "delta", "done"]

    async def test_attaching_on_a_replica_without_its_log_waits_for_the_stored_reply(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        provider = StallingProvider()
        running = await start_app(
            make_settings(**QUICK_SHUTDOWN), providers=registry_with(provider)
        )
        elsewhere = await start_app(make_settings(stream_heartbeat_seconds=0.2))
        conversation = await create_conversation(running, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        live = asyncio.create_task(stream_turn(running, conversation["id"]))
        await asyncio.wait_for(provider.wait_until_entered(1), 5)

        attached = asyncio.create_task(attach(elsewhere, conversation["id"]))
        # Several heartbeats' time: the attach request must reach its wait under load too.
        await asyncio.sleep(1.2)
        provider.release()
        stream = await attached

        assert stream.pings, "the waiting replica sends keep-alives"
        assert stream.names == ["start", "delta", "done"]
        assert stream.text == (await live).text == "Released at last."
        assert stream.terminal.json()["message"]["status"] == "completed"


class TestResume:
    async def test_resuming_after_any_event_yields_exactly_the_events_after_it(
        self, start_app: StartApp, make_settings: MakeSettings, event_log: dict[str, Any]
    ) -> None:
        client = await start_app(make_settings(**event_log))
        conversation = await create_conversation(client)
        live = await stream_turn(client, conversation["id"])
        assert len(live.events) > 3

        for k, last in enumerate(live.events, start=1):
            resumed = await attach(client, conversation["id"], last.id)

            assert seen(resumed.events) == seen(live.events[k:]), f"after event {k}"

    async def test_resuming_on_another_replica_yields_exactly_the_events_after_it(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        first = await start_app(make_settings(**redis_log()))
        second = await start_app(make_settings(**redis_log()))
        conversation = await create_conversation(first)
        live = await stream_turn(first, conversation["id"])

        for k, last in enumerate(live.events, start=1):
            resumed = await attach(second, conversation["id"], last.id)

            assert seen(resumed.events) == seen(live.events[k:]), f"after event {k}"

    async def test_a_garbage_last_event_id_replays_from_the_start(
        self, start_app: StartApp, make_settings: MakeSettings, event_log: dict[str, Any]
    ) -> None:
        client = await start_app(make_settings(**event_log))
        conversation = await create_conversation(client)
        live = await stream_turn(client, conversation["id"])
        reply_id = live.events[0].json()["message_id"]

        for garbage in ("garbage", "3", "/3", "not-a-uuid/3", f"{reply_id}/x", f"{reply_id}"):
            resumed = await attach(client, conversation["id"], garbage)

            assert seen(resumed.events) == seen(live.events), garbage

    async def test_a_last_event_id_of_an_older_reply_replays_the_latest_from_the_start(
        self, start_app: StartApp, make_settings: MakeSettings, event_log: dict[str, Any]
    ) -> None:
        client = await start_app(make_settings(**event_log))
        conversation = await create_conversation(client)
        older = await stream_turn(client, conversation["id"], "First question")
        latest = await stream_turn(client, conversation["id"], "Second question")

        resumed = await attach(client, conversation["id"], older.events[1].id)

        assert seen(resumed.events) == seen(latest.events)
        assert older.events[0].json()["message_id"] != latest.events[0].json()["message_id"]


class TestReplayFromTheDatabase:
    async def test_a_finished_reply_replays_from_the_database_when_its_log_is_gone(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        first = await start_app(make_settings())
        conversation = await create_conversation(first)
        live = await stream_turn(first, conversation["id"])
        # A new instance without Redis never saw this reply's events: only the row is left.
        restarted = await start_app(make_settings())

        replay = await attach(restarted, conversation["id"])

        assert replay.names == ["start", "delta", "done"]
        assert replay.events[0].data == live.events[0].data
        assert replay.text == live.text
        assert replay.terminal.json() == live.terminal.json()
        assert all(frame.id for frame in replay.events)
        for k, last in enumerate(replay.events, start=1):
            resumed = await attach(restarted, conversation["id"], last.id)

            assert seen(resumed.events) == seen(replay.events[k:]), f"after event {k}"

    async def test_resuming_from_a_live_event_once_the_log_is_gone_still_ends_the_reply(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        first = await start_app(make_settings())
        conversation = await create_conversation(first)
        live = await stream_turn(first, conversation["id"])
        restarted = await start_app(make_settings())

        for k, last in enumerate(live.events[1:-1], start=2):
            resumed = await attach(restarted, conversation["id"], last.id)

            # The row cannot say which pieces were sent; its `done` carries the whole text.
            assert resumed.names == ["done"], f"after live event {k}"
            assert resumed.terminal.json() == live.terminal.json()
