"""The callers of recently used API keys, so most requests need no database read to authenticate.

A key lookup was one of the four statements of a turn, and one of a stream start's two trips
to the pool. But a revoked key must stop working at once, on every replica, however it was
revoked: the CLI, another process, an operator's own SQL. So on Postgres triggers on `api_keys`
(migration 0006) send `NOTIFY api_key_changed, '<key hash>'` whenever a key is revoked,
re-owned or deleted (`'*'` when the table is truncated), and every process LISTENs on a
connection of its own and forgets that key as the notice arrives.

The cache is trusted only while that connection is up: before it is, after it drops and until
it is back, every request asks the database, exactly as with no cache, and whatever was cached
is dropped (notices sent meanwhile were missed). SQLite has no NOTIFY: there keys are not cached.

An entry lives at most `ttl_s`: a key's use is still recorded (`last_used_at`, once a minute)
by the lookup that refreshes it. Unknown keys are never cached: nobody can fill the memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import metrics
from app.core.security import Principal

log = structlog.get_logger(__name__)

CHANNEL = "api_key_changed"
# The payload that means "forget every key" (the table was truncated).
EVERY_KEY = "*"

_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
# SQLAlchemy's own connection options, not asyncpg's.
_ENGINE_ONLY_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func")


class KnownKeys:
    """Key hash -> caller, for keys seen in the last `ttl_s`; empty and unused until trusted."""

    def __init__(
        self,
        *,
        ttl_s: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        # Insertion order is age order: a refreshed entry is moved to the end.
        self._entries: dict[str, tuple[float, Principal]] = {}
        # Bumped by every change notice: a lookup that started before one must not cache what
        # it read, which may be the state the notice just replaced.
        self._generation = 0
        self._trusted = False

    @property
    def trusted(self) -> bool:
        return self._trusted

    @property
    def generation(self) -> int:
        """Take before reading a key from the database; pass to `remember`."""
        return self._generation

    def get(self, key_hash: str) -> Principal | None:
        """The cached caller, unless the cache is not trusted now or the entry is too old."""
        if not self._trusted:
            return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires_at, principal = entry
        if expires_at <= self._clock():
            del self._entries[key_hash]
            return None
        return principal

    def remember(self, key_hash: str, principal: Principal, generation: int) -> None:
        """Cache what a lookup read, unless a change notice (or a lost listener) came since
        `generation` was taken."""
        if not self._trusted or generation != self._generation:
            return
        self._entries.pop(key_hash, None)
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key_hash] = (self._clock() + self._ttl_s, principal)

    def forget(self, key_hash: str) -> None:
        """A change notice: drop that key (or, for `EVERY_KEY`, all of them)."""
        self._generation += 1
        if key_hash == EVERY_KEY:
            self._entries.clear()
        else:
            self._entries.pop(key_hash, None)

    def trust(self, trusted: bool) -> None:
        """Start (the listener is up) or stop (it is not) using the cache; either way from
        empty, since notices may have been missed."""
        self._generation += 1
        self._entries.clear()
        self._trusted = trusted
        metrics.KEY_CHANGE_LISTENERS.set(1 if trusted else 0)


async def listen_for_key_changes(
    engine: AsyncEngine, keys: KnownKeys, *, check_every_s: float = 30.0
) -> None:
    """Keep `keys` trusted while a LISTEN connection is up, forgetting keys as notices come.

    Runs until cancelled, reconnecting with back-off.
    """
    await _Listener(engine, keys, check_every_s).run()


class _Listener:
    def __init__(self, engine: AsyncEngine, keys: KnownKeys, check_every_s: float) -> None:
        self.engine = engine
        self.keys = keys
        self.check_every_s = check_every_s
        # Connection attempts that failed since the cache was last trusted.
        self.failures = 0

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
                error = "ConnectionClosed"
            except Exception as raised:
                # Not only connection errors: a listener that died of anything else would
                # leave the cache off for the process's life with nothing said.
                error = type(raised).__name__
            finally:
                self.keys.trust(False)
            # Once per outage, not once per attempt: Postgres may be down for a while.
            if self.failures == 0:
                log.warning(
                    "api key change listener lost: keys are looked up on every request",
                    error=error,
                )
            await asyncio.sleep(_BACKOFF_S[min(self.failures, len(_BACKOFF_S) - 1)])
            self.failures += 1

    async def _listen(self) -> None:
        """One connection's life: trusted from its LISTEN until it is lost.

        A connection that closes is noticed at once; one that dies silently, by the
        `SELECT 1` every `check_every_s`.
        """
        connection = await _connect(self.engine)
        try:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(
                CHANNEL, lambda _connection, _pid, _channel, payload: self.keys.forget(payload)
            )
            self.keys.trust(True)
            if self.failures:
                log.info("api key change listener reconnected")
            self.failures = 0
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self.check_every_s)
                if not lost.is_set():
                    await connection.fetchval("SELECT 1", timeout=5)
        finally:
            connection.terminate()  # `run` stops trusting the cache, whatever ended this


async def _connect(engine: AsyncEngine) -> Any:
    """A connection of its own (not the pool's: a LISTEN holds it for the process's life),
    made with the engine's own URL and options."""
    _args, options = engine.dialect.create_connect_args(engine.url)
    for name in _ENGINE_ONLY_OPTIONS:
        options.pop(name, None)
    options.setdefault("timeout", 5)
    return await asyncpg.connect(**options)
