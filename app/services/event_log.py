"""The per-reply event log that every stream listener reads: Redis Streams, or in-process.

A generation appends each event (`start`, `delta`, `done`, `error`) here before anyone sees
it; listeners only read. Event ids are `<position>` within one reply's log, opaque to clients,
so `Last-Event-ID` resumes right after an event on any replica that can read the same log.
With Redis configured, the log lives in a Redis Stream (`chat:events:<reply id>`), trimmed to a
bounded length and expired a while after the reply ends. The listeners of one process catch up
with short reads, then share its one blocking reader (`redis_fanout`) rather than each holding
a Redis connection while it waits. A Redis outage degrades to the
in-process log of the replica running the generation, so streaming never stops for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from app.services.redis_fanout import StreamFanout

log = structlog.get_logger(__name__)

TERMINAL_EVENTS = frozenset({"done", "error"})
# How often a listener waiting on Redis looks whether its reply's log moved into this process.
_DEGRADED_CHECK_S = 1.0
# Entries per catch-up read: a long log is read in bounded steps.
_CATCH_UP_COUNT = 500


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: str
    event: str
    data: str  # JSON text, stored once and sent as is
    # The next event is already at hand (read with this one): a listener can send both in
    # one write instead of one each, and waits for nothing by doing so.
    more: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS


class EventLog(Protocol):
    async def append(self, reply_id: UUID, event: str, data: str) -> str:
        """Store one event and wake its listeners; returns the event's id."""
        ...

    def follow(
        self, reply_id: UUID, after: str | None, *, idle_s: float
    ) -> AsyncGenerator[LoggedEvent | None, None]:
        """Events after `after` in order, then new ones as they come, up to a terminal one.

        Yields `None` after `idle_s` seconds without an event, so callers can send keep-alives.
        Ends at once, yielding nothing, when the log holds no such reply or its terminal event
        is at or before `after` (a client that reconnects after `done` is not kept waiting).
        """
        ...

    async def exists(self, reply_id: UUID) -> bool: ...

    async def finish(self, reply_id: UUID) -> None:
        """The reply ended: keep its log for late readers, then let it go."""
        ...


@dataclass(slots=True)
class _Buffer:
    # One reply's events as two parallel lists, not a `LoggedEvent` (and an id string) each:
    # a reply is mostly small deltas, kept for `retention_s` after it ends, so the per-event
    # overhead is most of the log's memory. Ids are positions, made when an event is read.
    names: list[str] = field(default_factory=list)  # interned: one string for all `delta`s
    data: list[str] = field(default_factory=list)
    # The listeners waiting for the next event, each on its own future: a plain list, not an
    # `asyncio.Condition` (a lock and a deque of about 600 bytes for every reply).
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    # Ended (and queued to be forgotten after the retention): an end is counted once.
    finished: bool = False
    # The position before `names[0]`: more than 0 when the log began in Redis.
    first: int = 0


class InProcessEventLog:
    """Events held in this process: enough for one replica, and the fallback without Redis."""

    def __init__(self, retention_s: float = 300.0) -> None:
        self._buffers: dict[UUID, _Buffer] = {}
        self._retention_s = retention_s
        self._finished: deque[tuple[float, UUID]] = deque()  # (when, reply), in order of ending

    async def append(self, reply_id: UUID, event: str, data: str) -> str:
        buffer = self._buffers.setdefault(reply_id, _Buffer())
        position = buffer.first + len(buffer.names) + 1
        buffer.names.append(sys.intern(event))
        buffer.data.append(data)
        waiters, buffer.waiters = buffer.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return str(position)

    async def follow(
        self, reply_id: UUID, after: str | None, *, idle_s: float
    ) -> AsyncGenerator[LoggedEvent | None, None]:
        buffer = self._buffers.get(reply_id)
        if buffer is None:
            return
        position = max(0, _position(after) - buffer.first)  # an index into `names`
        while True:
            while position < len(buffer.names):
                event = LoggedEvent(
                    str(buffer.first + position + 1),
                    buffer.names[position],
                    buffer.data[position],
                    more=position + 1 < len(buffer.names),
                )
                position += 1
                yield event
                if event.is_terminal:
                    return
            if buffer.names and buffer.names[-1] in TERMINAL_EVENTS:
                return  # the client saw the end already: nothing more will come
            await _wait_for_more(buffer, position, idle_s)
            if len(buffer.names) <= position:
                yield None

    async def exists(self, reply_id: UUID) -> bool:
        return reply_id in self._buffers

    def continue_from(self, reply_id: UUID, position: int) -> None:
        """Number this reply's next event `position + 1`: the log so far is elsewhere."""
        self._buffers.setdefault(reply_id, _Buffer(first=position))

    def first_position(self, reply_id: UUID) -> int:
        """The position before the first event held here (0: it holds the whole log)."""
        buffer = self._buffers.get(reply_id)
        return 0 if buffer is None else buffer.first

    async def finish(self, reply_id: UUID) -> None:
        now = time.monotonic()
        buffer = self._buffers.get(reply_id)
        if buffer is not None and not buffer.finished:
            buffer.finished = True
            self._finished.append((now, reply_id))
        self._forget_expired(now)

    def _forget_expired(self, now: float) -> None:
        # Oldest end first: stop at the first still kept, rather than walk every log held
        # (with thousands of replies retained, each end walked them all).
        cutoff = now - self._retention_s
        while self._finished and self._finished[0][0] < cutoff:
            _, reply_id = self._finished.popleft()
            self._buffers.pop(reply_id, None)


class RedisEventLog:
    """Events in a Redis Stream per reply, readable from every replica.

    Stream entry ids are not used as event ids: the position in the reply's log is, so ids
    stay the same whichever log served them. Falls back to `fallback` while Redis is down.
    """

    def __init__(
        self,
        redis: Redis,
        fallback: InProcessEventLog,
        *,
        max_events: int = 100_000,
        retention_s: int = 3_600,
        max_life_s: int = 86_400,
        reader_block_ms: int = 2_000,
    ) -> None:
        self._redis = redis
        self._fallback = fallback
        self._max_events = max_events
        self._retention_s = retention_s
        self._max_life_s = max_life_s
        self._degraded: set[UUID] = set()
        # The last position stored in Redis per reply running here: a degraded log goes on
        # from it, so positions stay unique and a Last-Event-ID from Redis still means the same.
        self._positions: dict[UUID, int] = {}
        # One blocking read for all of this process's listeners, not one connection each.
        self._reader = StreamFanout(redis, block_ms=reader_block_ms)

    async def append(self, reply_id: UUID, event: str, data: str) -> str:
        if reply_id not in self._degraded:
            try:
                position = await self._append(reply_id, event, data)
            except RedisError as error:
                # Listeners on this replica keep reading; other replicas see the DB's replay.
                log.warning("event log degraded to in-process", error=type(error).__name__)
                self._degraded.add(reply_id)
                self._fallback.continue_from(reply_id, self._positions.get(reply_id, 0))
            else:
                self._positions[reply_id] = int(position)
                return position
        return await self._fallback.append(reply_id, event, data)

    async def _append(self, reply_id: UUID, event: str, data: str) -> str:
        # Only the one generation running a reply writes its log, so it counts positions
        # itself; Redis rejects an entry id that does not grow, should that ever break.
        position = self._positions.get(reply_id, 0) + 1
        key = _key(reply_id)
        fields: dict[FieldT, EncodableT] = {"id": str(position), "event": event, "data": data}
        if position > 1:
            await self._redis.xadd(
                key, fields, id=f"{position}-0", maxlen=self._max_events, approximate=True
            )
            return str(position)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, id=f"{position}-0", maxlen=self._max_events, approximate=True)
            # A reply whose process dies never reaches `finish`: its log must still go.
            pipe.expire(key, self._max_life_s)
            await pipe.execute()
        return str(position)

    async def follow(
        self, reply_id: UUID, after: str | None, *, idle_s: float
    ) -> AsyncGenerator[LoggedEvent | None, None]:
        if await self._moved_here(reply_id):
            seen, first = _position(after), self._fallback.first_position(reply_id)
            if seen < first:
                # The log began in Redis before it degraded: its head is there, if readable.
                async for event in self._head(reply_id, seen, first):
                    yield event
                after = str(first)
            async for item in self._fallback.follow(reply_id, after, idle_s=idle_s):
                yield item
            return
        key = _key(reply_id)
        seen = _position(after)
        try:
            newest: Any = await self._redis.xrevrange(key, count=1)
            if not newest or _ends_by(newest, seen):
                return  # no such log, or its end is behind the position asked for
            # Catch up on the shared pool first, then let the reader hand over the rest: it
            # reads from the position subscribed with, so nothing falls between the two.
            while True:
                entries: Any = await self._redis.xrange(
                    key, min=f"{seen + 1}-0", max="+", count=_CATCH_UP_COUNT
                )
                for index, (entry_id, fields) in enumerate(entries, start=1):
                    seen = _entry_position(entry_id)
                    event = _logged(fields, more=index < len(entries))
                    yield event
                    if event.is_terminal:
                        return
                if len(entries) < _CATCH_UP_COUNT:
                    break
            subscription = await self._reader.subscribe(key, seen)
            try:
                silent_s = 0.0
                while not await self._moved_here(reply_id):
                    wait_s = min(idle_s, _DEGRADED_CHECK_S)
                    batch = await subscription.take(wait_s)
                    if not batch:
                        silent_s += wait_s
                        if silent_s >= idle_s:
                            silent_s = 0.0
                            if _ends_by(await self._redis.xrevrange(key, count=1), seen):
                                return  # the end is behind the position asked for
                            yield None
                        continue
                    silent_s = 0.0
                    for index, (position, fields) in enumerate(batch, start=1):
                        seen = position
                        event = _logged(fields, more=index < len(batch))
                        yield event
                        if event.is_terminal:
                            return
            finally:
                self._reader.unsubscribe(subscription)
        except RedisError as error:
            if not await self._moved_here(reply_id):
                log.warning("event log unreadable; stream ends", error=type(error).__name__)
                return
        # This replica's generation went on in memory while we read Redis: the rest is there.
        async for item in self.follow(reply_id, str(seen), idle_s=idle_s):
            yield item

    async def _moved_here(self, reply_id: UUID) -> bool:
        """Whether this reply's log went on in this process after Redis failed."""
        return reply_id in self._degraded or await self._fallback.exists(reply_id)

    async def _head(self, reply_id: UUID, seen: int, upto: int) -> AsyncIterator[LoggedEvent]:
        """The events after position `seen` up to `upto` that reached Redis before it failed."""
        try:
            entries: Any = await self._redis.xrange(
                _key(reply_id), min=f"{seen + 1}-0", max=f"{upto}-0"
            )
        except RedisError as error:
            log.warning("event log head unreadable", error=type(error).__name__)
            return
        for index, (_, fields) in enumerate(entries, start=1):
            yield _logged(fields, more=index < len(entries))

    async def exists(self, reply_id: UUID) -> bool:
        if await self._fallback.exists(reply_id):
            return True
        try:
            return bool(await self._redis.exists(_key(reply_id)))
        except RedisError:
            return False

    async def finish(self, reply_id: UUID) -> None:
        await self._fallback.finish(reply_id)
        self._degraded.discard(reply_id)
        self._positions.pop(reply_id, None)
        key = _key(reply_id)
        with contextlib.suppress(RedisError):
            await self._redis.expire(key, self._retention_s)

    async def aclose(self) -> None:
        """Stop this process's stream reader; open listeners end or go on in memory."""
        await self._reader.aclose()


async def _wait_for_more(buffer: _Buffer, seen: int, idle_s: float) -> None:
    """Until the buffer holds more than `seen` events, or `idle_s` passes."""
    if len(buffer.names) > seen:
        return
    # A future and a timer handle per waiting listener: every open stream waits here.
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    buffer.waiters.append(waiter)
    timer = loop.call_later(idle_s, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        if waiter in buffer.waiters:  # timed out or cancelled: no append woke it
            buffer.waiters.remove(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _key(reply_id: UUID) -> str:
    return f"chat:events:{reply_id}"


def _position(after: str | None) -> int:
    """How many events the client has seen, from its Last-Event-ID (garbage means none)."""
    if after is None:
        return 0
    try:
        return max(0, int(after.rsplit("/", 1)[-1]))
    except ValueError:
        return 0


def _ends_by(newest: Any, seen: int) -> bool:
    """Whether the newest entry (an XREVRANGE COUNT 1 reply) is terminal, at or before `seen`."""
    if not newest:
        return False
    entry_id, fields = newest[0]
    return _text(fields[b"event"]) in TERMINAL_EVENTS and _entry_position(entry_id) <= seen


def _logged(fields: Any, *, more: bool) -> LoggedEvent:
    return LoggedEvent(
        _text(fields[b"id"]), _text(fields[b"event"]), _text(fields[b"data"]), more=more
    )


def _entry_position(entry_id: bytes | str) -> int:
    """The position in a Redis Stream entry id `<position>-0`."""
    return int(_text(entry_id).split("-", 1)[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
