"""One Redis Streams reader per process, fanning entries out to the local listeners of each key.

A listener that did its own blocking `XREAD` would hold a pooled Redis connection for as long
as its stream stays open, so a few hundred open streams would exhaust the pool. Here a single
background task reads every key that local listeners wait on (each from the lowest position one
of them needs) and hands each entry to the listeners that have not seen it. A per-process wake-up
stream (`chat:fanout:<uuid>`) is part of every read, so a new listener is picked up at once
rather than when the read in flight times out.

Entry ids are `<position>-0` (the event log writes them so); positions are what listeners count.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

# Stream entry fields as redis-py returns them (bytes unless the client decodes).
Fields = dict[Any, Any]
Entry = tuple[int, Fields]

_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)


class Subscription:
    """One listener's place on one key: entries after `seen` are queued for it."""

    # One per open stream waiting on Redis: no per-instance __dict__, and a list and a future
    # rather than a deque and an `asyncio.Event` (each holding a deque of about 600 bytes).
    __slots__ = ("_failure", "_pending", "_waiter", "key", "seen")

    def __init__(self, key: str, seen: int) -> None:
        self.key = key
        # The last position handed to this listener (or caught up on before it subscribed).
        self.seen = seen
        self._pending: list[Entry] = []
        self._failure: RedisError | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def take(self, timeout_s: float) -> list[Entry]:
        """The entries queued since the last call, waiting up to `timeout_s` for one.

        Returns `[]` when none came in time; raises the reader's error when its read failed.
        """
        if not self._pending and self._failure is None:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout_s, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._pending:
            entries, self._pending = self._pending, []
            return entries
        if self._failure is not None:
            raise self._failure
        return []

    def _deliver(self, entries: list[Entry]) -> None:
        self._pending.extend(entries)
        self.seen = entries[-1][0]
        _wake(self._waiter)

    def _fail(self, error: RedisError) -> None:
        self._failure = error
        _wake(self._waiter)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class StreamFanout:
    """Reads many Redis Streams over one connection for every local listener."""

    def __init__(
        self,
        redis: Redis,
        *,
        block_ms: int = 2_000,
        count: int = 500,
        wake_ttl_s: int = 300,
    ) -> None:
        self._redis = redis
        self._block_ms = block_ms
        self._count = count
        self._wake_ttl_s = wake_ttl_s
        self._wake_key = f"chat:fanout:{uuid.uuid4()}"
        self._wake_last = "0-0"
        self._listeners: dict[str, set[Subscription]] = {}
        # The position each key is read after by the XREAD in flight (absent: not read).
        self._reading: dict[str, int] = {}
        self._wake_sent = False
        # With no listener the reader sends nothing to Redis: it waits for this.
        self._listened = asyncio.Event()
        self._idle = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def subscribe(self, key: str, seen: int) -> Subscription:
        """Queue for the caller every entry of `key` after position `seen`, as it arrives.

        The caller must `unsubscribe` when done (in a `finally`).
        """
        if self._closed:
            raise RedisConnectionError("the stream reader is closed")
        subscription = Subscription(key, seen)
        self._listeners.setdefault(key, set()).add(subscription)
        if self._task is None or self._task.done():
            # Its first read includes this key.
            self._task = asyncio.create_task(self._read_forever(), name="redis-stream-fanout")
        elif self._idle:
            self._listened.set()
        elif self._reading.get(key, seen + 1) > seen and not self._wake_sent:
            # The read in flight does not cover this listener: start another one now.
            self._wake_sent = True
            try:
                await self._wake()
            except BaseException:  # a Redis error, or the listener cancelled meanwhile
                self.unsubscribe(subscription)
                raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop queueing entries for this listener."""
        listeners = self._listeners.get(subscription.key)
        if listeners is not None:
            listeners.discard(subscription)
            if not listeners:
                del self._listeners[subscription.key]

    async def aclose(self) -> None:
        """Stop the reader; later subscriptions fail as if Redis were unreachable."""
        self._closed = True
        if self._task is not None:
            # redis-py can absorb a cancellation that lands mid-command (the read then runs
            # on until its BLOCK ends), so cancel until the reader is gone.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                self._task.result()
            self._task = None
        with contextlib.suppress(RedisError):
            await self._redis.delete(self._wake_key)

    async def _wake(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
            # A process that dies leaves no wake-up stream behind for long.
            pipe.expire(self._wake_key, self._wake_ttl_s)
            await pipe.execute()

    async def _read_forever(self) -> None:
        failures = 0
        while not self._closed:
            if not self._listeners:
                self._reading, self._idle = {}, True
                self._listened.clear()
                await self._listened.wait()
                self._idle = False
            self._reading = {
                key: min(listener.seen for listener in listeners)
                for key, listeners in self._listeners.items()
            }
            self._wake_sent = False
            streams: dict[Any, Any] = {self._wake_key: self._wake_last}
            streams.update({key: f"{seen}-0" for key, seen in self._reading.items()})
            try:
                response: Any = await self._redis.xread(
                    streams, count=self._count, block=self._block_ms
                )
            except RedisError as error:
                if self._closed:
                    return  # redis-py may turn the cancellation of a read into a RedisError
                # Listeners decide for themselves (the log may have moved into this process).
                for listeners in self._listeners.values():
                    for listener in listeners:
                        listener._fail(error)
                delay = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                failures += 1
                log.warning("stream reader failed", error=type(error).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            for key, batch in _batches(response):
                if key == self._wake_key:
                    self._wake_last = _text(batch[-1][0])
                else:
                    self._deliver(key, [(_entry_position(i), fields) for i, fields in batch])

    def _deliver(self, key: str, entries: list[Entry]) -> None:
        after = self._reading.get(key)
        if after is None or not entries:
            return
        for listener in self._listeners.get(key, ()):
            # One who came in below what this read covered is served by the next read.
            if listener.seen < after:
                continue
            fresh = [entry for entry in entries if entry[0] > listener.seen]
            if fresh:
                listener._deliver(fresh)


def _batches(response: Any) -> list[tuple[str, list[Any]]]:
    """`(key, entries)` pairs of an XREAD reply: RESP2 answers a list, RESP3 a dict."""
    if not response:
        return []
    pairs = response.items() if isinstance(response, dict) else response
    return [(_text(key), entries) for key, entries in pairs if entries]


def _entry_position(entry_id: bytes | str) -> int:
    """The position in a Redis Stream entry id `<position>-0`."""
    return int(_text(entry_id).split("-", 1)[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
