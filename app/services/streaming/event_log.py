"""The per-reply event log that every stream listener reads: in-process, and Redis Streams.

A generation appends each event (`start`, `delta`, `done`, `error`) here before anyone sees
it; listeners only read. Event ids are `<position>` within one reply's log, opaque to clients,
so `Last-Event-ID` resumes right after an event on any replica that can read the same log.
A reply generated in this process is always held in the in-process log while it runs (and for
the retention after), so its listeners here never wait on Redis and a Redis outage changes
nothing for them. With Redis configured each event is also written, at the same position, to a
Redis Stream (`chat:events:<reply id>`), trimmed to a bounded length and expired a while after
the reply ends: listeners on other replicas, and resumes once the local copy is gone, read it
there, catching up with short reads, then sharing one blocking reader per process
(`redis_fanout`) rather than each holding a Redis connection while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from app.services.streaming.redis_fanout import StreamFanout

log = structlog.get_logger(__name__)

TERMINAL_EVENTS = frozenset({"done", "error"})
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

    async def append_end(self, reply_id: UUID, event: str, data: str) -> bool:
        """End the log of a reply whose generation died (elsewhere, or in an earlier process)
        with a terminal `event`, right after its last event, and let it expire as usual.

        Returns False, appending nothing, when there is no such log or it has ended already.
        """
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
    # overhead is most of the log's memory. Ids are positions (index + 1), made when read.
    names: list[str] = field(default_factory=list)  # interned: one string for all `delta`s
    data: list[str] = field(default_factory=list)
    # The listeners waiting for the next event, each on its own future: a plain list, not an
    # `asyncio.Condition` (a lock and a deque of about 600 bytes for every reply).
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    # Ended (and queued to be forgotten after the retention): an end is counted once.
    finished: bool = False

    @property
    def ended(self) -> bool:
        return bool(self.names) and self.names[-1] in TERMINAL_EVENTS


class InProcessEventLog:
    """Events of the replies generated in this process: all a single replica needs, and what
    its own listeners read when Redis holds the log too."""

    def __init__(self, retention_s: float = 300.0) -> None:
        self._buffers: dict[UUID, _Buffer] = {}
        self._retention_s = retention_s
        self._finished: deque[tuple[float, UUID]] = deque()  # (when, reply), in order of ending

    async def append(self, reply_id: UUID, event: str, data: str) -> str:
        buffer = self._buffers.get(reply_id)
        if buffer is None:
            buffer = self._buffers[reply_id] = _Buffer()
        buffer.names.append(sys.intern(event))
        buffer.data.append(data)
        waiters, buffer.waiters = buffer.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return str(len(buffer.names))

    async def append_end(self, reply_id: UUID, event: str, data: str) -> bool:
        _check_terminal(event)
        if not self.holds(reply_id) or self.has_ended(reply_id):
            return False
        await self.append(reply_id, event, data)
        await self.finish(reply_id)
        return True

    def event_at(self, reply_id: UUID, position: int) -> tuple[str, str] | None:
        """The name and data of the event at `position` (from 1), if this log holds it."""
        buffer = self._buffers.get(reply_id)
        if buffer is None or not 0 < position <= len(buffer.names):
            return None
        return buffer.names[position - 1], buffer.data[position - 1]

    async def follow(
        self, reply_id: UUID, after: str | None, *, idle_s: float
    ) -> AsyncGenerator[LoggedEvent | None, None]:
        buffer = self._buffers.get(reply_id)
        if buffer is None:
            return
        position = _position(after)  # an index into `names`
        while True:
            while position < len(buffer.names):
                event = LoggedEvent(
                    str(position + 1),
                    buffer.names[position],
                    buffer.data[position],
                    more=position + 1 < len(buffer.names),
                )
                position += 1
                yield event
                if event.is_terminal:
                    return
            if buffer.ended:
                return  # the client saw the end already: nothing more will come
            await _wait_for_more(buffer, position, idle_s)
            if len(buffer.names) <= position:
                yield None

    async def exists(self, reply_id: UUID) -> bool:
        return reply_id in self._buffers

    def holds(self, reply_id: UUID) -> bool:
        """Whether this log has the reply (generated here, and not yet past its retention)."""
        return reply_id in self._buffers

    def has_ended(self, reply_id: UUID) -> bool:
        """Whether the reply's log here ends with a terminal event."""
        buffer = self._buffers.get(reply_id)
        return buffer is not None and buffer.ended

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
    """Events in a Redis Stream per reply, readable from every replica, written through `local`.

    The replies generated here are appended to `local` first (waking the listeners here), then
    to Redis at the same position, so an id means the same event whichever log served it.
    Listeners here follow `local`; others read Redis. A reply whose Redis write fails is not
    written there again (a later entry would leave a gap): other replicas then end its streams
    from the stored row, and nothing changes for listeners here.
    """

    def __init__(
        self,
        redis: Redis,
        local: InProcessEventLog,
        *,
        max_events: int = 100_000,
        retention_s: int = 3_600,
        max_life_s: int = 86_400,
        reader_block_ms: int = 2_000,
    ) -> None:
        self._redis = redis
        self._local = local
        self._max_events = max_events
        self._retention_s = retention_s
        self._max_life_s = max_life_s
        # Replies running here whose log in Redis stopped at a failed write.
        self._cut_off: set[UUID] = set()
        # Replies running here whose last write was interrupted (the generation cancelled):
        # whether it reached Redis is unknown, so the next write sends it again first.
        self._unsure: set[UUID] = set()
        # One blocking read for all of this process's listeners, not one connection each.
        self._reader = StreamFanout(redis, block_ms=reader_block_ms)

    async def append(self, reply_id: UUID, event: str, data: str) -> str:
        event_id = await self._local.append(reply_id, event, data)
        if reply_id in self._cut_off:
            return event_id
        try:
            await self._write(reply_id, event_id, event, data)
        except RedisError as error:
            log.warning(
                "event log in Redis stopped; listeners here read on", error=type(error).__name__
            )
            self._cut_off.add(reply_id)
        except asyncio.CancelledError:
            self._unsure.add(reply_id)
            raise
        return event_id

    async def _write(self, reply_id: UUID, event_id: str, event: str, data: str) -> None:
        # Only the one generation running a reply writes its log, so positions come from the
        # local copy; Redis rejects an entry id that does not grow, should that ever break.
        key = _key(reply_id)
        if reply_id in self._unsure:
            await self._write_again(reply_id, int(event_id) - 1)
        fields: dict[FieldT, EncodableT] = {"id": event_id, "event": event, "data": data}
        if event_id != "1":
            await self._redis.xadd(
                key, fields, id=f"{event_id}-0", maxlen=self._max_events, approximate=True
            )
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, id="1-0", maxlen=self._max_events, approximate=True)
            # A reply whose process dies never reaches `finish`: its log must still go.
            pipe.expire(key, self._max_life_s)
            await pipe.execute()

    async def _write_again(self, reply_id: UUID, position: int) -> None:
        """Write the local event at `position` to Redis unless it got there already."""
        logged = self._local.event_at(reply_id, position)
        if logged is not None:
            event, data = logged
            key = _key(reply_id)
            fields: dict[FieldT, EncodableT] = {"id": str(position), "event": event, "data": data}
            try:
                await self._redis.xadd(key, fields, id=f"{position}-0")
            except ResponseError as error:
                if "equal or smaller" not in str(error):
                    raise
            if position == 1:
                await self._redis.expire(key, self._max_life_s)
        self._unsure.discard(reply_id)

    async def append_end(self, reply_id: UUID, event: str, data: str) -> bool:
        _check_terminal(event)
        if self._local.holds(reply_id):
            # Generated here: ended like any reply of this process, through both logs.
            if self._local.has_ended(reply_id):
                return False
            await self.append(reply_id, event, data)
            await self.finish(reply_id)
            return True
        key = _key(reply_id)
        try:
            newest: Any = await self._redis.xrevrange(key, count=1)
            if not newest or _text(newest[0][1][b"event"]) in TERMINAL_EVENTS:
                return False
            position = _entry_position(newest[0][0]) + 1
            fields: dict[FieldT, EncodableT] = {"id": str(position), "event": event, "data": data}
            try:
                # NOMKSTREAM: a log that expired meanwhile is not brought back without a TTL.
                added = await self._redis.xadd(key, fields, id=f"{position}-0", nomkstream=True)
            except ResponseError:
                return False  # a writer still alive took the position: its log goes on
            if added is None:
                return False
            await self._redis.expire(key, self._retention_s)
        except RedisError as error:
            log.warning("could not end an abandoned reply's log", error=type(error).__name__)
            return False
        return True

    def follow(
        self, reply_id: UUID, after: str | None, *, idle_s: float
    ) -> AsyncGenerator[LoggedEvent | None, None]:
        if self._local.holds(reply_id):
            # Generated here: no Redis round trip, and nothing a Redis outage could take.
            return self._local.follow(reply_id, after, idle_s=idle_s)
        return self._follow_redis(reply_id, after, idle_s=idle_s)

    async def _follow_redis(
        self, reply_id: UUID, after: str | None, *, idle_s: float
    ) -> AsyncGenerator[LoggedEvent | None, None]:
        """The log another process writes: caught up on, then handed over by the reader."""
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
                while True:
                    batch = await subscription.take(idle_s)
                    if not batch:
                        if _ends_by(await self._redis.xrevrange(key, count=1), seen):
                            return  # the end is behind the position asked for
                        yield None
                        continue
                    for index, (position, fields) in enumerate(batch, start=1):
                        seen = position
                        event = _logged(fields, more=index < len(batch))
                        yield event
                        if event.is_terminal:
                            return
            finally:
                self._reader.unsubscribe(subscription)
        except RedisError as error:
            # The caller ends the stream from the stored reply.
            log.warning("event log unreadable; stream ends", error=type(error).__name__)

    async def exists(self, reply_id: UUID) -> bool:
        if self._local.holds(reply_id):
            return True
        try:
            return bool(await self._redis.exists(_key(reply_id)))
        except RedisError:
            return False

    async def finish(self, reply_id: UUID) -> None:
        await self._local.finish(reply_id)
        self._cut_off.discard(reply_id)
        self._unsure.discard(reply_id)
        with contextlib.suppress(RedisError):
            await self._redis.expire(_key(reply_id), self._retention_s)

    async def aclose(self) -> None:
        """Stop this process's stream reader; its listeners of other replicas' replies end."""
        await self._reader.aclose()


def _check_terminal(event: str) -> None:
    if event not in TERMINAL_EVENTS:
        raise ValueError(f"{event!r} does not end a reply")


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
