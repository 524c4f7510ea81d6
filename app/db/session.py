"""Engine and session factory for the two backends: Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.config import Settings
from app.db.fair_pool import FairAsyncQueuePool


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    """One pooled engine per process, created at start-up."""
    if settings.is_sqlite:
        return _sqlite_engine(settings, **overrides)
    options: dict[str, Any] = {
        # Errors and logs must never carry bound values: they can be message text.
        "hide_parameters": True,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_recycle": 1800,
        # A busy pool refuses a request (503) after this, rather than queueing it for long.
        "pool_timeout": settings.db_pool_timeout_seconds,
        # ...and serves the requests waiting for it in the order they came.
        "poolclass": FairAsyncQueuePool,
        "connect_args": {"timeout": 5, "command_timeout": 30},
    }
    options.update(overrides)
    engine = create_async_engine(settings.database_url, **options)
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Replace a pooled connection the server has already closed, before it is used.

    A database restart closes every pooled connection; handed out as they were, the first
    DB_POOL_SIZE requests after it failed with 503 ("connection is closed"). asyncpg learns of
    the close as soon as the event loop reads it, so asking costs nothing: no round trip, as
    `pool_pre_ping` would spend on every checkout (three a turn). The pool reconnects on
    `DisconnectionError`. A connection whose loss is not known yet still fails its statement;
    reply outcomes retry that on a fresh connection (app/db/durable.py).
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise sqlalchemy.exc.DisconnectionError("the server closed this pooled connection")


def _sqlite_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    options: dict[str, Any] = {"hide_parameters": True}
    if (path := settings.sqlite_path) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A file database is pooled like Postgres, so DB_POOL_SIZE bounds connections on both.
        options.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
            poolclass=FairAsyncQueuePool,
        )
    options.update(overrides)
    engine = create_async_engine(settings.database_url, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
        # writes fails at once with SQLITE_BUSY when another writer got there first.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: rows stay readable after commit, without a reload round trip.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session whose work is committed when the block ends (rolled back if it raises)."""
    async with sessionmaker() as session:
        yield session
        await session.commit()
