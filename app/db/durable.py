"""A transaction for a reply's outcome that waits out a busy pool or a short database outage.

A finished reply has been paid for upstream and already shown to its listeners; refusing to
store it because the pool was busy for `DB_POOL_TIMEOUT_SECONDS` would leave it `in_progress`
and uncharged until the abandoned-reply sweep fails it. So getting the connection is retried
for about a minute. Only that is retried, never a statement: nothing has been sent before the
connection is ours, so a retry can never store or charge a reply twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import sqlalchemy.exc
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.driver import (
    SessionStatements,
    Statements,
    checkout,
    driver_connection,
    engine_of,
    runs_on_driver,
)
from app.db.unavailable import is_unavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Pauses between attempts to get a connection: about a minute in all, on top of each
# attempt's own pool timeout.
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

# Failures of getting a connection, before any statement of the transaction was sent.
_NOT_CONNECTED: tuple[type[Exception], ...] = (
    sqlalchemy.exc.TimeoutError,  # the pool had no connection free in time
    sqlalchemy.exc.OperationalError,  # the database refused or dropped a new connection
    sqlalchemy.exc.InterfaceError,
    OSError,
)


def _not_connected(error: Exception) -> bool:
    # Postgres turning a connection away (too many clients: SQLSTATE 53300, starting up:
    # 57P03) arrives as a plain DBAPIError: its SQLSTATE says it is the database's moment.
    return isinstance(error, _NOT_CONNECTED) or is_unavailable(error)


@asynccontextmanager
async def durable_statements(
    sessionmaker: async_sessionmaker[AsyncSession],
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
    *,
    single_statements: bool = False,
) -> AsyncIterator[Statements]:
    """`app.db.driver.statements`, waiting out a busy pool or outage the same way."""
    if single_statements and runs_on_driver(sessionmaker):
        engine = engine_of(sessionmaker)
        pooled = await _retrying(lambda: checkout(engine), retry_delays_s)
        async with driver_connection(engine, pooled) as connection:
            yield connection
    else:
        async with durable_transaction(sessionmaker, retry_delays_s) as session:
            yield SessionStatements(session)


@asynccontextmanager
async def durable_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
) -> AsyncIterator[AsyncSession]:
    """A session in a transaction, committed when the block ends (rolled back if it raises)."""
    session = await _connected(sessionmaker, retry_delays_s)
    async with session:
        yield session
        await session.commit()


async def _connected(
    sessionmaker: async_sessionmaker[AsyncSession], retry_delays_s: tuple[float, ...]
) -> AsyncSession:
    async def begun() -> AsyncSession:
        session = sessionmaker()
        try:
            await session.connection()  # checks a connection out and begins the transaction
        except BaseException:
            await session.close()
            raise
        return session

    return await _retrying(begun, retry_delays_s)


async def _retrying(connect: Callable[[], Awaitable[T]], retry_delays_s: tuple[float, ...]) -> T:
    delays = iter(retry_delays_s)
    while True:
        try:
            return await connect()
        except Exception as error:
            delay = next(delays, None) if _not_connected(error) else None
            if delay is None:
                raise
            log.warning(
                "waiting for a database connection to store a reply",
                error=type(error).__name__,
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)
