"""What an SSE listener reads: a reply's event log, or its stored row once the log is gone.

Event ids are `<reply id>/<position>`: opaque to clients, and enough to resume after the
event on any replica. A listener never writes; the generation owns the reply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.security import Principal
from app.db.models import Message, MessageRole, MessageStatus
from app.errors import ConversationNotFound, MessageNotFound, ReportedFailure
from app.repositories.conversations import ConversationRepo
from app.schemas.messages import TurnResult
from app.services.limits.idempotency import StoredResponse
from app.services.streaming.event_log import EventLog, LoggedEvent
from app.services.turns.turns import StartedGeneration

log = structlog.get_logger(__name__)

RETRY_MS = 3000
_DB_POLL_S = 0.5
# The position of a replayed reply's terminal event: beyond any live log, so it tells a
# client that saw it apart from one that saw a live event the replay cannot place.
REPLAY_END_POSITION = 2**31 - 1
# How long a listener waits for a logged end once the stored row says the reply has ended.
_LATE_END_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One thing to send: an event, or (all fields None but `comment`) a keep-alive."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    comment: str | None = None
    # Another item follows at once: the response may hold this one and write both together.
    more: bool = False


def parse_last_event_id(value: str | None) -> tuple[UUID | None, int]:
    """The reply and position a client last saw; anything unreadable means from the start."""
    if not value:
        return None, 0
    reply, _, position = value.strip().partition("/")
    try:
        return UUID(reply), max(0, int(position))
    except ValueError:
        return None, 0


async def latest_reply_id(
    sessionmaker: async_sessionmaker[AsyncSession], principal: Principal, conversation_id: UUID
) -> UUID:
    """The running reply of a conversation, else its newest one (404 when it has none)."""
    async with sessionmaker() as session:
        conversation = await ConversationRepo(session).get(conversation_id, principal)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        reply_id = await session.scalar(
            select(Message.id)
            .where(
                Message.conversation_id == conversation_id,
                Message.role == MessageRole.ASSISTANT,
            )
            .order_by(
                (Message.status == MessageStatus.IN_PROGRESS).desc(),
                Message.created_at.desc(),
                Message.id.desc(),
            )
            .limit(1)
        )
    if reply_id is None:
        raise MessageNotFound(conversation_id)
    return reply_id


async def read_reply(
    events: EventLog,
    sessionmaker: async_sessionmaker[AsyncSession],
    reply_id: UUID,
    *,
    after: int,
    heartbeat_s: float,
) -> AsyncIterator[StreamItem]:
    """The reply's events after position `after`, live while it runs, then the end."""
    if await events.exists(reply_id):
        followed = False
        async for logged in events.follow(reply_id, str(after), idle_s=heartbeat_s):
            if logged is None:
                ended = await _ended(sessionmaker, reply_id)
                if ended is not None:
                    # A generation commits its row, then logs its end: under load this check
                    # can land between the two (it may wait seconds for a connection). The
                    # log gets a moment more, so a live reply ends with its own last event.
                    late = await _logged_after(events, reply_id, after)
                    for logged in late:
                        yield StreamItem(
                            logged.event, logged.data, f"{reply_id}/{logged.id}", more=logged.more
                        )
                    if late and late[-1].is_terminal:
                        return
                    # Ended, yet its log is silent: its process died (then swept, or cancelled
                    # from elsewhere). The row holds the end; nothing more will be logged.
                    if after < REPLAY_END_POSITION:
                        end, end_data = replay_of(ended)[-1]
                        yield StreamItem(end, end_data, f"{reply_id}/{REPLAY_END_POSITION}")
                    return
                yield StreamItem(comment="ping")
            else:
                yield StreamItem(
                    logged.event, logged.data, f"{reply_id}/{logged.id}", more=logged.more
                )
                if logged.is_terminal:
                    return
                followed = True
                after = max(after, _position_of(logged.id))
        if not followed and after > 0:
            return  # nothing after the position asked for: its end was already sent
        # The log stopped before the reply's end (its store became unreadable mid-reply):
        # the stored row gives the end, so the stream still ends with exactly one.
        log.warning("event log ended early; the stream ends from the stored reply")
    # The log is gone (expired, or kept by a replica we cannot reach): the row tells the rest.
    # Keep-alives follow the clock, not the count of polls: a poll that waits for a busy
    # pool must not stretch the silence past a proxy's idle timeout.
    clock = asyncio.get_running_loop().time
    next_ping = clock() + heartbeat_s
    while (message := await _load(sessionmaker, reply_id)) is None or (
        message.status == MessageStatus.IN_PROGRESS
    ):
        await asyncio.sleep(max(0.0, min(_DB_POLL_S, next_ping - clock())))
        if clock() >= next_ping:
            next_ping = clock() + heartbeat_s
            yield StreamItem(comment="ping")
    *opening, (end, end_data) = replay_of(message)
    for position, (event, data) in enumerate(opening, start=1):
        if position > after:
            # The end (or nothing) follows at once: the replay goes out in one write.
            yield StreamItem(event, data, f"{reply_id}/{position}", more=True)
    # Live positions past `start` cannot be placed in the shorter replay: those clients still
    # get the terminal event (it holds the whole reply); only one that saw the replay's own
    # terminal event gets nothing more.
    if after < REPLAY_END_POSITION:
        yield StreamItem(end, end_data, f"{reply_id}/{REPLAY_END_POSITION}")


async def opened(items: AsyncIterator[StreamItem]) -> AsyncIterator[StreamItem]:
    """`items` once the first event after `start` is known; if the reply failed before any
    text, its error is raised instead, so the client gets it as an HTTP status, not as 200.

    A first keep-alive (the reply silent for a whole heartbeat: a model thinking at length)
    ends the wait: the response starts with it, so no proxy between here and the client times
    the request out, and a later failure is the stream's `error` event. `items` is closed if
    the wait is interrupted.
    """
    held: list[StreamItem] = []
    try:
        async for item in items:
            if item.comment is not None:
                held.append(item)
                break
            if item.event == "error":
                data = json.loads(item.data or "{}")
                raise ReportedFailure(data, str(data.get("message") or ""))
            held.append(item)
            if item.event != "start":
                break
    except BaseException:
        await _close(items)
        raise
    return _followed_by(held, items)


async def _followed_by(
    held: list[StreamItem], items: AsyncIterator[StreamItem]
) -> AsyncIterator[StreamItem]:
    try:
        for item in held:
            yield item
        async for item in items:
            yield item
    finally:
        await _close(items)


async def _close(items: AsyncIterator[StreamItem]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()


async def _logged_after(events: EventLog, reply_id: UUID, after: int) -> list[LoggedEvent]:
    """What the log holds after `after`, up to its end, waiting at most `_LATE_END_GRACE_S`
    for each next event."""
    late: list[LoggedEvent] = []
    async with aclosing(events.follow(reply_id, str(after), idle_s=_LATE_END_GRACE_S)) as logged:
        async for event in logged:
            if event is None:
                break
            late.append(event)
            if event.is_terminal:
                break
    return late


def _position_of(event_id: str) -> int:
    try:
        return int(event_id)
    except ValueError:
        return 0


def replay_of(message: Message) -> list[tuple[str, str]]:
    """A finished reply as the events a live listener would have seen, text in one delta."""
    start = {
        "message_id": str(message.id),
        "conversation_id": str(message.conversation_id),
        "provider": message.provider,
        "model": message.model,
    }
    replay = [("start", json.dumps(start))]
    if message.reasoning:
        replay.append(("reasoning", json.dumps({"content": message.reasoning})))
    if message.content:
        replay.append(("delta", json.dumps({"content": message.content})))
    for index, call in enumerate(message.tool_calls or ()):
        function = call.get("function") or {}
        whole_call = {
            "index": index,
            "id": call.get("id"),
            "name": function.get("name"),
            "arguments": function.get("arguments", ""),
        }
        replay.append(("tool_call", json.dumps(whole_call)))
    if message.status == MessageStatus.FAILED:
        error = dict((message.metadata_ or {}).get("error") or {})
        body = {
            "code": error.pop("code", "upstream_error"),
            "message": error.pop("detail", ""),
            **error,
        }
        replay.append(("error", json.dumps(body)))
    else:
        result = TurnResult.of(message)
        replay.append(("done", result.model_dump_json()))
    return replay


async def _ended(sessionmaker: async_sessionmaker[AsyncSession], reply_id: UUID) -> Message | None:
    """The reply's row once it is no longer in progress (None while it runs, or if gone)."""
    try:
        message = await _load(sessionmaker, reply_id)
    except MessageNotFound:
        return None
    if message is None or message.status == MessageStatus.IN_PROGRESS:
        return None
    return message


async def _load(sessionmaker: async_sessionmaker[AsyncSession], reply_id: UUID) -> Message | None:
    """The reply's row; None when the database cannot say now (pool exhausted, down).

    The response has started: an error here would cut the stream without its end, so the
    listener keeps waiting (with pings) and asks again.
    """
    try:
        async with sessionmaker() as session:
            message = await session.get(Message, reply_id)
    except (SQLAlchemyError, OSError) as error:
        log.warning("reply unreadable; the stream keeps waiting", error=type(error).__name__)
        return None
    if message is None:
        raise MessageNotFound(reply_id)
    return message


def started_body(started: StartedGeneration) -> dict[str, Any]:
    """What an `Idempotency-Key` stores for a streamed turn: the reply to replay the stream of."""
    return {"message_id": str(started.reply_id), "conversation_id": str(started.conversation_id)}


def started_reply_id(outcome: StartedGeneration | StoredResponse) -> UUID:
    """The reply a (first or replayed) streamed turn streams."""
    if isinstance(outcome, StoredResponse):
        return UUID(str(outcome.body["message_id"]))
    return outcome.reply_id
