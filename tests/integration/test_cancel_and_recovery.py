"""Ending a reply early: a cancel keeps its text and charges its tokens, here or on another
replica; a reply left `in_progress` by a process that died is failed by the sweep."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from app.core.config import Settings
from app.db.base import utcnow
from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.db.session import create_engine, make_sessionmaker
from app.providers.base import ChatRequest, Finished, StreamEvent, TextDelta, Usage
from app.services.streaming.event_log import InProcessEventLog, RedisEventLog
from app.services.streaming.streams import StreamItem, read_reply
from app.services.turns.recovery import fail_abandoned_replies
from app.services.turns.turn_messages import chain
from tests.databases import REDIS_URL, unavailable
from tests.factories import create_conversation, send_message, without_siblings
from tests.fakes.providers import registry_with
from tests.sse import EventStream, read_stream, stream_message

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
QUICK_SHUTDOWN = {"shutdown_grace_seconds": 0.5}
PIECES = ("Once ", "upon ", "a time")


@dataclass
class TricklingProvider:
    """Sends `pieces` (a `pause` apart), then holds the reply until `release()`.

    Named and priced as the built-in mock, so what it produces costs something.
    """

    pieces: tuple[str, ...] = PIECES
    pause: float = 0.0
    name: str = "mock"
    default_model: str = "mock"
    _holding: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def supports(self, model: str) -> bool:
        return model == self.default_model

    def release(self) -> None:
        self._released.set()

    async def wait_until_holding(self) -> None:
        """Return once every piece has been sent and the reply is held."""
        await asyncio.wait_for(self._holding.wait(), 5)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        for piece in self.pieces:
            await asyncio.sleep(self.pause)
            yield TextDelta(piece)
        self._holding.set()
        await self._released.wait()
        yield Finished(reason="stop", usage=Usage(10, 3), model=request.model)


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


def stream_turn(client: httpx.AsyncClient, conversation_id: str) -> asyncio.Task[EventStream]:
    """Start streaming a turn in the background; the task ends with the whole stream."""
    return asyncio.create_task(stream_message(client, conversation_id, "Tell me a story"))


async def stored(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def cancel(
    client: httpx.AsyncClient, conversation_id: str, message_id: str
) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{conversation_id}/messages/{message_id}/cancel"
    )


class TestCancel:
    async def test_cancelling_a_running_reply_keeps_its_text_charges_it_and_ends_the_stream(
        self, start_app: StartApp, make_settings: MakeSettings, event_log: dict[str, Any]
    ) -> None:
        provider = TricklingProvider()
        client = await start_app(
            make_settings(**event_log, **QUICK_SHUTDOWN), providers=registry_with(provider)
        )
        conversation = await create_conversation(client)
        reading = stream_turn(client, conversation["id"])
        await provider.wait_until_holding()
        _, running = (await stored(client, conversation["id"]))["messages"]
        assert running["status"] == "in_progress"

        response = await cancel(client, conversation["id"], running["id"])

        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert (cancelled["id"], cancelled["status"]) == (running["id"], "cancelled")
        assert cancelled["content"] == "".join(PIECES)
        assert cancelled["completion_tokens"] > 0
        assert Decimal(str(cancelled["cost_usd"])) > 0
        stream = await reading
        assert stream.names == ["start", "delta", "delta", "delta", "done"]
        assert stream.terminal.json()["message"] == without_siblings(cancelled)
        after = await stored(client, conversation["id"])
        assert without_siblings(after["messages"][1]) == cancelled
        assert after["total_cost_usd"] == cancelled["cost_usd"]
        # The conversation is free again for the next turn.
        provider.release()
        await send_message(client, conversation["id"], "And then?")

    async def test_cancelling_a_finished_reply_returns_it_unchanged(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        turn = await send_message(client, conversation["id"])

        response = await cancel(client, conversation["id"], turn["message"]["id"])

        assert response.status_code == 200, response.text
        assert response.json() == without_siblings(turn["message"])
        assert response.json()["status"] == "completed"
        stored_reply = (await stored(client, conversation["id"]))["messages"][1]
        assert without_siblings(stored_reply) == turn["message"]

    async def test_cancelling_a_message_of_another_conversation_is_a_404(
        self, client: httpx.AsyncClient
    ) -> None:
        mine = await create_conversation(client)
        other = await create_conversation(client)
        turn = await send_message(client, other["id"])

        foreign = await cancel(client, mine["id"], turn["message"]["id"])
        missing = await cancel(client, mine["id"], str(uuid.uuid4()))

        assert foreign.status_code == missing.status_code == 404
        assert foreign.json()["code"] == missing.json()["code"] == "message_not_found"
        assert foreign.headers["content-type"] == "application/problem+json"
        assert (await stored(client, other["id"]))["messages"][1]["status"] == "completed"

    async def test_a_cancel_arriving_while_the_finished_reply_is_stored_lets_it_complete(
        self, start_app: StartApp, make_settings: MakeSettings, database_url: str
    ) -> None:
        if not database_url.startswith("postgresql"):
            pytest.skip("a row lock holds the reply mid-commit; SQLite locks the whole file")
        provider = TricklingProvider()
        settings = make_settings(**QUICK_SHUTDOWN)
        client = await start_app(settings, providers=registry_with(provider))
        conversation = await create_conversation(client)
        reading = stream_turn(client, conversation["id"])
        await provider.wait_until_holding()
        _, reply = (await stored(client, conversation["id"]))["messages"]

        engine = create_engine(settings)
        try:
            async with engine.begin() as locker:
                # Charging the conversation now waits for this lock: the reply is being stored.
                await locker.execute(
                    select(Conversation.id)
                    .where(Conversation.id == uuid.UUID(conversation["id"]))
                    .with_for_update()
                )
                provider.release()
                await asyncio.sleep(0.2)
                cancelling = asyncio.create_task(cancel(client, conversation["id"], reply["id"]))
                await asyncio.sleep(0.2)
            response = await asyncio.wait_for(cancelling, 5)
        finally:
            await engine.dispose()

        assert response.status_code == 200, response.text
        completed = response.json()
        assert (completed["status"], completed["content"]) == ("completed", "".join(PIECES))
        stream = await reading
        assert stream.terminal.event == "done"
        assert stream.terminal.json()["message"] == without_siblings(completed)
        after = await stored(client, conversation["id"])
        assert after["total_cost_usd"] == completed["cost_usd"] > 0

    async def test_cancelling_on_another_replica_stops_the_generation_where_it_runs(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        provider = TricklingProvider()
        running = await start_app(
            make_settings(**redis_log(), **QUICK_SHUTDOWN), providers=registry_with(provider)
        )
        elsewhere = await start_app(make_settings(**redis_log()))
        conversation = await create_conversation(running)
        reading = stream_turn(running, conversation["id"])
        await provider.wait_until_holding()
        _, reply = (await stored(running, conversation["id"]))["messages"]

        response = await cancel(elsewhere, conversation["id"], reply["id"])

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert response.json()["content"] == "".join(PIECES)
        stream = await reading
        assert stream.terminal.event == "done"
        assert stream.terminal.json()["message"]["status"] == "cancelled"


async def insert_reply(
    settings: Settings, *, content: str, untouched_for: timedelta
) -> tuple[str, str]:
    """A conversation whose reply is `in_progress`, last touched `untouched_for` ago, as a
    process that died mid-reply leaves it. Returns the conversation's and the reply's ids."""
    engine = create_engine(settings)
    touched = utcnow() - untouched_for
    try:
        async with make_sessionmaker(engine).begin() as session:
            conversation = Conversation(user_id="anonymous", provider="mock", model="mock")
            session.add(conversation)
            await session.flush()
            question = Message(
                conversation_id=conversation.id,
                role=MessageRole.USER,
                content="Are you still there?",
                status=MessageStatus.COMPLETED,
                created_at=touched,
            )
            reply = Message(
                conversation_id=conversation.id,
                role=MessageRole.ASSISTANT,
                content=content,
                status=MessageStatus.IN_PROGRESS,
                provider="mock",
                model="mock",
                cost_usd=None,
                created_at=touched,
                updated_at=touched,
            )
            chain(None, [question, reply])
            conversation.active_leaf_id = reply.id
            session.add_all((question, reply))
        return str(conversation.id), str(reply.id)
    finally:
        await engine.dispose()


async def sweep(settings: Settings, *, stale_after_s: float) -> int:
    engine = create_engine(settings)
    try:
        return await fail_abandoned_replies(make_sessionmaker(engine), stale_after_s=stale_after_s)
    finally:
        await engine.dispose()


class TestCrashRecovery:
    async def test_a_stale_in_progress_reply_is_failed_with_its_partial_text(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        conversation_id, reply_id = await insert_reply(
            settings, content="Half of a rep", untouched_for=timedelta(minutes=10)
        )

        assert await sweep(settings, stale_after_s=60) == 1

        client = await start_app(settings)
        _, reply = (await stored(client, conversation_id))["messages"]
        assert reply["id"] == reply_id
        assert (reply["status"], reply["content"]) == ("failed", "Half of a rep")
        assert reply["finish_reason"] == "error"
        assert reply["metadata"]["error"]["code"] == "generation_abandoned"
        replay = await read_stream(client, "GET", f"/api/v1/conversations/{conversation_id}/stream")
        assert replay.names == ["start", "delta", "error"]
        assert replay.terminal.json()["code"] == "generation_abandoned"
        # Nothing holds the conversation any more: a new turn starts.
        await send_message(client, conversation_id, "Try again")

    async def test_a_fresh_in_progress_reply_is_left_alone(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        conversation_id, _ = await insert_reply(
            settings, content="Still com", untouched_for=timedelta(seconds=1)
        )

        assert await sweep(settings, stale_after_s=60) == 0

        client = await start_app(settings)
        _, reply = (await stored(client, conversation_id))["messages"]
        assert (reply["status"], reply["content"]) == ("in_progress", "Still com")

    async def test_a_listener_of_an_abandoned_reply_gets_its_error_once_it_is_swept(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        settings = make_settings(stream_heartbeat_seconds=0.2, **redis_log())
        # Older than the sweep below allows, younger than the app's own start-up sweep does.
        conversation_id, reply_id = await insert_reply(
            settings, content="Half of a rep", untouched_for=timedelta(seconds=30)
        )
        # What the dead process left in the shared log: `start` and a delta, never an end.
        async with Redis.from_url(REDIS_URL) as shared:
            dead_log = RedisEventLog(shared, InProcessEventLog())
            start = {"message_id": reply_id, "conversation_id": conversation_id}
            await dead_log.append(uuid.UUID(reply_id), "start", json.dumps(start))
            delta = {"content": "Half of a rep"}
            await dead_log.append(uuid.UUID(reply_id), "delta", json.dumps(delta))
        client = await start_app(settings)
        attached = asyncio.create_task(
            read_stream(client, "GET", f"/api/v1/conversations/{conversation_id}/stream", within=5)
        )
        await asyncio.sleep(0.3)

        assert await sweep(settings, stale_after_s=10) == 1

        stream = await attached
        assert stream.names == ["start", "delta", "error"]
        assert stream.terminal.json()["code"] == "generation_abandoned"
        again = await read_stream(
            client,
            "GET",
            f"/api/v1/conversations/{conversation_id}/stream",
            headers={"Last-Event-ID": stream.terminal.id or ""},
            within=5,
        )
        assert again.events == []

    async def test_the_shared_log_of_a_reply_that_never_ends_still_expires(self) -> None:
        redis_log()
        reply_id = uuid.uuid4()
        async with Redis.from_url(REDIS_URL) as shared:
            dead_log = RedisEventLog(shared, InProcessEventLog())
            await dead_log.append(reply_id, "start", json.dumps({"message_id": str(reply_id)}))

            ttl = await shared.ttl(f"chat:events:{reply_id}")

        assert ttl > 0, ttl

    async def test_cancelling_a_reply_that_nothing_runs_ends_it_at_once_with_its_text(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        conversation_id, reply_id = await insert_reply(
            settings, content="Left beh", untouched_for=timedelta(seconds=1)
        )
        client = await start_app(settings)

        response = await asyncio.wait_for(cancel(client, conversation_id, reply_id), 2)

        assert response.status_code == 200, response.text
        assert (response.json()["status"], response.json()["content"]) == ("cancelled", "Left beh")

    async def test_a_running_reply_stores_its_partial_text_as_it_goes(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        provider = TricklingProvider(pause=0.06)
        client = await start_app(
            make_settings(stream_flush_seconds=0.05, **QUICK_SHUTDOWN),
            providers=registry_with(provider),
        )
        conversation = await create_conversation(client)
        reading = stream_turn(client, conversation["id"])
        await provider.wait_until_holding()

        # Saved while it runs, by the flushes alone (the provider holds the reply): polled,
        # because under load a flush can land a moment after the provider's last piece.
        seen: list[str] = []
        for _ in range(100):
            _, running = (await stored(client, conversation["id"]))["messages"]
            seen.append(running["content"])
            if running["content"].startswith("Once upon"):
                break
            await asyncio.sleep(0.02)
        provider.release()

        assert running["status"] == "in_progress"
        assert all("".join(PIECES).startswith(content) for content in seen)
        assert running["content"].startswith("Once upon"), seen
        assert (await reading).terminal.event == "done"


class TestARowEndingBeforeItsLog:
    async def test_a_listener_ends_with_the_logged_end_when_the_row_ended_a_moment_sooner(
        self, settings: Settings
    ) -> None:
        # A generation commits its finished row, then logs `done`. A listener whose keep-alive
        # check reads the row between the two (under load it can wait seconds for a
        # connection) must still end with the logged `done` and its real position, not the
        # stored replay's (which a client resuming from it could not place).
        _, reply_id = await insert_reply(settings, content="", untouched_for=timedelta(0))
        reply = uuid.UUID(reply_id)
        events = InProcessEventLog()
        await events.append(reply, "start", json.dumps({"message_id": reply_id}))
        await events.append(reply, "delta", json.dumps({"content": "Hello"}))
        engine = create_engine(settings)
        sessionmaker = make_sessionmaker(engine)
        try:
            async with sessionmaker.begin() as session:
                stored_reply = await session.get(Message, reply)
                assert stored_reply is not None
                stored_reply.content = "Hello"
                stored_reply.status = MessageStatus.COMPLETED

            async def listen() -> list[StreamItem]:
                items = read_reply(events, sessionmaker, reply, after=0, heartbeat_s=0.2)
                return [item async for item in items if item.comment is None]

            listening = asyncio.create_task(listen())
            await asyncio.sleep(0.4)  # past the keep-alive check, within the log's grace
            await events.append(reply, "done", json.dumps({"message": {"id": reply_id}}))
            items = await asyncio.wait_for(listening, 5)
        finally:
            await engine.dispose()

        assert [item.event for item in items] == ["start", "delta", "done"]
        assert [item.id for item in items] == [f"{reply_id}/{n}" for n in (1, 2, 3)]
