"""Alembic environment: async engines for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio

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


async def _run_online() -> None:
    settings = Settings(database_url=_database_url())
    engine = create_engine(settings)
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
