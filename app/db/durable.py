"""Writing a reply's outcome through a busy pool, dropped connections and database outages.

A finished reply has been paid for upstream and already shown to its listeners: refusing to
store it because the pool was busy, a pooled connection had died with a database restart, or
the database was away for a while would leave it `in_progress`, uncharged, and its
conversation blocked. So the whole write (checkout, statements, commit) is retried on a fresh
connection whenever it failed for the database's reasons, until `deadline_s` has passed.

Retrying a write whose statement may already have been applied (the connection dropped after
it was sent) is safe only because every write given here is conditional on the reply still
being `in_progress`: a second attempt finds it ended and changes nothing, so a reply is never
stored or charged twice. The retry policy is tenacity's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy.exc
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from app.db.driver import Statements, statements
from app.db.unavailable import is_unavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The longest pause between attempts: once the database is back, a waiting outcome is
# written within about this long.
MAX_RETRY_WAIT_S = 2.0

# The database's failures, not the statement's: the pool had no connection in time, the
# database refused or dropped a connection, or a pooled connection was already closed.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_connection_failure(error: BaseException) -> bool:
    """Whether the database (not the statement) failed: worth another attempt elsewhere."""
    if isinstance(error, _CONNECTION_ERRORS):
        return True
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    # Postgres turning work away (too many clients: 53300, shutting down: 57P01) arrives as
    # a plain DBAPIError: its SQLSTATE says it is the database's moment.
    return is_unavailable(error)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "database unavailable while storing a reply's outcome; retrying",
        error=type(error).__name__,
        attempt=state.attempt_number,
        retry_in_s=round(state.upcoming_sleep, 2),
    )


async def durably(
    sessionmaker: async_sessionmaker[AsyncSession],
    write: Callable[[Statements], Awaitable[T]],
    *,
    deadline_s: float,
    single_statements: bool = False,
) -> T:
    """`write` in `app.db.driver.statements`, retried on a fresh connection for as long as
    `deadline_s` while the database cannot take it; then its last error is raised.

    `write` must be safe to run again after a failed attempt, even one whose statements were
    applied before the connection dropped: make it conditional on the state it changes.
    """
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_connection_failure),
        stop=stop_after_delay(deadline_s),
        wait=wait_exponential(multiplier=0.1, max=MAX_RETRY_WAIT_S),
        before_sleep=_log_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with statements(sessionmaker, single_statements=single_statements) as run:
                return await write(run)
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover
