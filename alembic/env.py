"""Alembic environment: async engines for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from alembic import context
from app.core.config import Settings
from app.db.models import Base
from app.db.session import create_engine

target_metadata = Base.metadata


def _database_url() -> str:
    configured = context.config.attributes.get("database_url")
    return configured if isinstance(configured, str) else Settings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    """Batch mode rebuilds a SQLite table by dropping the old one: with foreign keys on, the
    drop cascades (a rebuilt `messages` took every feedback row with it). Off on migration
    connections, set at connect, after the app's own listener turned them on and before any
    transaction (SQLite ignores the pragma inside one)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


async def _run_online() -> None:
    settings = Settings(database_url=_database_url())
    engine = create_engine(settings)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _foreign_keys_off)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
