"""Storing a reply's outcome whatever the database is doing: at once, or when it returns.

The first attempt is the plain write (no task, no retry machinery: the cost of every turn).
If the database fails it (a pooled connection killed by a restart, an outage, a full pool),
the write goes on in a task of its own, retried on fresh connections (app/db/durable.py),
and the turn waits for it up to `wait_s` (GENERATION_TIMEOUT_SECONDS). A turn that stops
waiting gets a 503 naming its stored messages; the write itself goes on until the database
takes it or the process stops, so a reply generated during an outage is stored when the
database comes back rather than left `in_progress`. Every write given here is conditional on
the reply still running, so none can apply twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.driver import Statements, statements
from app.db.durable import durably, is_connection_failure
from app.errors import ChatAPIError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# How long a write no caller waits for any more keeps trying: for the life of the process,
# in practice (a process that stops leaves the reply to the abandoned-reply sweep).
_KEEP_TRYING_S = 7 * 86_400.0


class OutcomeWriter:
    """Writes outcomes now, or in the background while the database is away."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], wait_s: float) -> None:
        self._sessionmaker = sessionmaker
        self.wait_s = wait_s
        self._pending: set[asyncio.Task[object]] = set()

    @property
    def pending(self) -> int:
        """Writes waiting for the database."""
        return len(self._pending)

    async def store(
        self,
        write: Callable[[Statements], Awaitable[T]],
        *,
        single_statements: bool,
        if_still_waiting: Callable[[], ChatAPIError],
    ) -> T:
        """`write`'s result once stored. If the database keeps it waiting past `wait_s`,
        raises `if_still_waiting()` while the write goes on in the background."""
        try:
            async with statements(self._sessionmaker, single_statements=single_statements) as run:
                return await write(run)
        except Exception as error:
            if not is_connection_failure(error):
                raise
            log.warning("storing an outcome waits for the database", error=type(error).__name__)
        task = self.keep_trying(write, single_statements=single_statements)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.wait_s)
        except TimeoutError:
            raise if_still_waiting() from None

    def keep_trying(
        self, write: Callable[[Statements], Awaitable[T]], *, single_statements: bool
    ) -> asyncio.Task[T]:
        """Run `write` in the background until the database takes it."""
        task = asyncio.create_task(
            durably(
                self._sessionmaker,
                write,
                deadline_s=_KEEP_TRYING_S,
                single_statements=single_statements,
            )
        )
        self._pending.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("an outcome could not be stored", error=type(error).__name__)

    async def aclose(self) -> None:
        """At shutdown: stop the writes still waiting (their replies' owner lease ends with
        the process, so the sweep of another process fails them)."""
        for task in list(self._pending):
            task.cancel()
        for task in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
