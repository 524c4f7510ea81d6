"""Per-user caps on what runs at once: open SSE streams and running generations.

A slot is a lease: a member of a per-user Redis sorted set scored by its expiry, so every
replica counts the same slots and a replica that dies leaks nothing for longer than
`LEASE_TTL_S`; a live lease is extended while it is held. Without Redis, or while it does
not answer, slots are counted in this process's memory (one warning per outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.errors import TooManyConcurrent
from app.services.turns.generations import Generations
from app.services.turns.turns import StartedGeneration

log = structlog.get_logger(__name__)

T = TypeVar("T")

KEY_PREFIX = "chat:quota"
LEASE_TTL_S = 60
RENEW_EVERY_S = LEASE_TTL_S / 3
RETRY_REDIS_AFTER_S = 30.0

# Drop expired leases, then take a slot if one is free; Redis's own clock, so replicas agree.
_ACQUIRE = """
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_s + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return 1
"""
_RENEW = """
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZADD', KEYS[1], 'XX', now_s + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""


class Lease:
    """One held slot; `release` is idempotent and safe from any path."""

    def __init__(
        self, quota: ConcurrencyQuota, user_id: str, lease_id: str, in_redis: bool
    ) -> None:
        self.id = lease_id
        self._quota = quota
        self._user_id = user_id
        self._in_redis = in_redis
        self._released = False
        self._renewer: asyncio.Task[None] | None = None
        if in_redis:
            self._renewer = asyncio.create_task(self._renew_while_held())

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._renewer is not None:
            self._renewer.cancel()
        await self._quota._release(self._user_id, self.id, self._in_redis)

    def release_soon(self) -> None:
        """Release from synchronous code (a done callback, a finalizer): a slot counted here
        at once, one in Redis in a task of its own."""
        if self._released:
            return
        if not self._in_redis:
            self._released = True
            self._quota._release_local(self._user_id, self.id)
            return
        try:
            self._quota._track(asyncio.ensure_future(self.release()))
        except RuntimeError:  # no running loop (interpreter shutdown): nothing left to free
            self._released = True

    async def _renew_while_held(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            await self._quota._renew(self._user_id, self.id)


class ConcurrencyQuota:
    """At most `limit` leases of one kind per user at once; `None` is no cap."""

    def __init__(self, kind: str, limit: int | None, redis: Redis | None = None) -> None:
        self.kind = kind
        self.limit = limit
        self._redis = redis if limit is not None else None
        self._local: defaultdict[str, set[str]] = defaultdict(set)
        self._redis_down_until = 0.0
        self._degraded = False
        self._pending: set[asyncio.Future[Any]] = set()

    async def acquire(self, user_id: str) -> Lease | None:
        """Take a slot, or raise `TooManyConcurrent` (429) when all are in use."""
        if self.limit is None:
            return None
        lease_id = uuid.uuid4().hex
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                taken = await self._redis.eval(
                    _ACQUIRE, 1, self._key(user_id), self.limit, lease_id, LEASE_TTL_S
                )
            except (RedisError, OSError) as error:
                self._redis_failed(error)
            else:
                self._redis_answered()
                if not taken:
                    raise TooManyConcurrent(self.kind, self.limit)
                return Lease(self, user_id, lease_id, in_redis=True)
        held = self._local[user_id]
        if len(held) >= self.limit:
            raise TooManyConcurrent(self.kind, self.limit)
        held.add(lease_id)
        return Lease(self, user_id, lease_id, in_redis=False)

    @contextlib.asynccontextmanager
    async def holding(self, user_id: str) -> AsyncIterator[Lease | None]:
        """A slot for the duration of the block."""
        lease = await self.acquire(user_id)
        try:
            yield lease
        finally:
            if lease is not None:
                await lease.release()

    async def _release(self, user_id: str, lease_id: str, in_redis: bool) -> None:
        if not in_redis:
            self._release_local(user_id, lease_id)
            return
        if self._redis is not None:
            try:
                await self._redis.zrem(self._key(user_id), lease_id)
            except (RedisError, OSError):
                pass  # the lease expires by itself within LEASE_TTL_S

    def _release_local(self, user_id: str, lease_id: str) -> None:
        held = self._local.get(user_id)
        if held is not None:
            held.discard(lease_id)
            if not held:
                del self._local[user_id]

    async def _renew(self, user_id: str, lease_id: str) -> None:
        if self._redis is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await self._redis.eval(_RENEW, 1, self._key(user_id), lease_id, LEASE_TTL_S)

    def _key(self, user_id: str) -> str:
        return f"{KEY_PREFIX}:{self.kind}:{user_id}"

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _redis_failed(self, error: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning(
                "concurrency quota storage unreachable; counting in memory",
                kind=self.kind,
                error=type(error).__name__,
            )
        self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER_S

    def _redis_answered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("concurrency quota storage reachable again", kind=self.kind)


def released_after(items: AsyncIterator[T], lease: Lease | None) -> AsyncIterator[T]:
    """`items`, then the lease released: when they end or fail, when the client leaves, and
    also when the response is dropped before its body was ever read."""
    guarded = _release_after(items, lease)
    if lease is not None:
        weakref.finalize(guarded, lease.release_soon)
    return guarded


async def _release_after(items: AsyncIterator[T], lease: Lease | None) -> AsyncIterator[T]:
    try:
        async for item in items:
            yield item
    finally:
        if lease is not None:
            # Not awaited: a cancelled response body may not wait on Redis any more.
            lease.release_soon()


@dataclass(frozen=True, slots=True)
class OpenedStream:
    """A streamed reply just started, and the stream slot its response body is to release."""

    started: StartedGeneration
    slot: Lease | None


def opened_stream(outcome: OpenedStream | T) -> tuple[StartedGeneration | T, Lease | None]:
    """The reply a streamed request streams, and the slot it holds; a stored response (an
    `Idempotency-Key`'s replay) took none."""
    if isinstance(outcome, OpenedStream):
        return outcome.started, outcome.slot
    return outcome, None


@dataclass(frozen=True, slots=True)
class Quotas:
    """The per-user caps the API takes a slot from before it streams or generates.

    Under an `Idempotency-Key` the slots are taken inside the keyed call, after the key is
    claimed: a duplicate of a request in flight is a 409 (or its stored response) whatever the
    caps, and a request refused a slot releases its claim like any failed request.
    """

    streams: ConcurrencyQuota
    generations: ConcurrencyQuota

    @contextlib.asynccontextmanager
    async def opening_stream(self, user_id: str) -> AsyncIterator[Lease | None]:
        """A stream slot for a response about to open: released here if opening it fails;
        otherwise the caller hands it to `released_after` with the response body."""
        lease = await self.streams.acquire(user_id)
        try:
            yield lease
        except BaseException:
            if lease is not None:
                await lease.release()
            raise

    async def start_generation(
        self, user_id: str, generations: Generations, start: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `start` holding a generation slot until the reply it starts has ended."""
        lease = await self.generations.acquire(user_id)
        try:
            outcome = await start()
        except BaseException:
            if lease is not None:
                await lease.release()
            raise
        if lease is not None:
            if isinstance(outcome, StartedGeneration):
                generations.on_end(outcome.reply_id, lease.release_soon)
            else:
                await lease.release()  # a replayed response started nothing
        return outcome

    async def open_stream(
        self,
        user_id: str,
        generations: Generations,
        start: Callable[[], Awaitable[StartedGeneration]],
    ) -> OpenedStream:
        """A stream slot, then `start` holding a generation slot until its reply ends; the
        stream slot goes to `released_after` with the response body. A refused slot or a
        failed start releases what was taken."""
        async with self.opening_stream(user_id) as slot:
            started = await self.start_generation(user_id, generations, start)
        return OpenedStream(started, slot)

    async def generate(self, user_id: str, run: Callable[[], Awaitable[T]]) -> T:
        """Await `run` (a reply generated to its end) holding a generation slot."""
        async with self.generations.holding(user_id):
            return await run()

    @classmethod
    def build(cls, *, streams: int | None, generations: int | None, redis: Redis | None) -> Quotas:
        return cls(
            ConcurrencyQuota("streams", streams, redis),
            ConcurrencyQuota("generations", generations, redis),
        )
