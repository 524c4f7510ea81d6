"""Per-user limits: requests per minute and tokens per minute, over a sliding window.

Counters live in Redis (through the `limits` library) so every replica shares them. When Redis
is absent or stops answering, counting falls back to this process's memory (one warning per
outage) and service continues; Redis is tried again after `RETRY_REDIS_AFTER_S`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from app.errors import RateLimited

log = structlog.get_logger(__name__)

KEY_PREFIX = "chat:limits"
RETRY_REDIS_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """What the `RateLimit-*` headers report after a request was counted."""

    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


def _reset_in(reset_time: float) -> int:
    return max(0, math.ceil(reset_time - time.time()))


class RateLimiter:
    """Counts requests and tokens per user; `None` limits are off and cost nothing."""

    def __init__(self, *, rpm: int | None, tpm: int | None, redis_url: str | None = None) -> None:
        self._requests = RateLimitItemPerMinute(rpm, namespace="rpm") if rpm else None
        self._tokens = RateLimitItemPerMinute(tpm, namespace="tpm") if tpm else None
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._redis_storage: RedisStorage | None = None
        self._redis: SlidingWindowCounterRateLimiter | None = None
        if redis_url and (rpm or tpm):
            self._redis_storage = RedisStorage(
                f"async+{redis_url}",
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=KEY_PREFIX,
                socket_connect_timeout=1,
                socket_timeout=1,
            )
            self._redis = SlidingWindowCounterRateLimiter(self._redis_storage)
        self._redis_down_until = 0.0
        self._degraded = False

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None

    @property
    def tokens_enabled(self) -> bool:
        return self._tokens is not None

    async def aclose(self) -> None:
        """Release the Redis connections (the storage keeps a pool)."""
        if self._redis_storage is not None:
            bridge = getattr(self._redis_storage, "bridge", None)
            storage = getattr(bridge, "storage", None)
            close = getattr(storage, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - closing must not fail shutdown
                    log.debug("rate limit storage did not close cleanly")

    @property
    def uses_redis(self) -> bool:
        """Whether counters are meant to be shared through Redis (limits on, Redis set)."""
        return self._redis_storage is not None

    async def storage_reachable(self) -> bool | None:
        """Ping the counters' Redis; None when there is none. For `/ready`.

        A successful ping ends the in-memory fallback at once, instead of after the retry
        delay: a readiness probe that says "ok" means the next request is counted in Redis.
        """
        if self._redis_storage is None:
            return None
        if await self._redis_storage.check():
            self._redis_down_until = 0.0
            return True
        if not self._degraded:
            self._degraded = True
            log.warning("rate limit storage unreachable; counting in memory")
        self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER_S
        return False

    async def hit_request(self, user_id: str) -> LimitStatus | None:
        """Count one request; raise `RateLimited` once the minute's requests are used up."""
        item = self._requests
        if item is None:
            return None
        allowed, remaining, reset_s = await self._hit(item, user_id, 1)
        if not allowed:
            raise RateLimited("requests", item.amount, reset_s)
        return LimitStatus(item.amount, remaining, reset_s)

    async def check_tokens(self, user_id: str) -> None:
        """Refuse a turn while the tokens used in the last minute have reached the limit."""
        item = self._tokens
        if item is None:
            return
        for strategy in self._strategies():
            try:
                if await strategy.test(item, user_id):
                    return self._served_by(strategy)
                stats = await strategy.get_window_stats(item, user_id)
            except StorageError as error:
                self._redis_failed(error)
                continue
            self._served_by(strategy)
            raise RateLimited("tokens", item.amount, _reset_in(stats.reset_time))

    async def add_tokens(self, user_id: str, tokens: int) -> None:
        """Add a finished reply's tokens; usage past the limit fills the window to the brim."""
        item = self._tokens
        if item is None or tokens <= 0:
            return
        allowed, remaining, _ = await self._hit(item, user_id, tokens)
        if not allowed and remaining > 0:
            # `hit` refuses a cost larger than what is left and counts nothing: take the rest.
            await self._hit(item, user_id, remaining)

    async def _hit(self, item: RateLimitItem, user_id: str, cost: int) -> tuple[bool, int, int]:
        for strategy in self._strategies():
            try:
                allowed = await strategy.hit(item, user_id, cost=cost)
                stats = await strategy.get_window_stats(item, user_id)
            except StorageError as error:
                self._redis_failed(error)
                continue
            self._served_by(strategy)
            return allowed, stats.remaining, _reset_in(stats.reset_time)
        raise AssertionError("the in-memory storage never fails")  # pragma: no cover

    def _strategies(self) -> list[SlidingWindowCounterRateLimiter]:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            return [self._redis, self._memory]
        return [self._memory]

    def _redis_failed(self, error: StorageError) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning(
                "rate limit storage unreachable; counting in memory",
                error=type(error.storage_error).__name__,
            )
        self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER_S

    def _served_by(self, strategy: SlidingWindowCounterRateLimiter) -> None:
        if self._degraded and strategy is self._redis:
            self._degraded = False
            log.info("rate limit storage reachable again")
