"""Throwaway test databases on the real backends: a fresh Postgres database or SQLite file."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from app.core.config import Settings
from app.db.migrations import upgrade_to_head

# The server to create test databases on; trust auth as on the CI machine.
POSTGRES_ADMIN_DSN = os.environ.get(
    "TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _worker_redis_db() -> int:
    """A Redis database per pytest-xdist worker (gw0: 15, gw1: 14, ...): tests that clear a
    key pattern (rate limits, caps) must not clear another worker's keys mid-test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 15 - int(worker.removeprefix("gw") or 0) % 8


REDIS_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{_worker_redis_db()}")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, error: BaseException) -> None:
    """In CI a missing service fails the run; on a laptop it skips, saying why."""
    message = f"{what} is not reachable: {error!r}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _async_url(dsn: str, database: str) -> str:
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


@asynccontextmanager
async def admin_connection() -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test server as its administrator (databases, roles)."""
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        unavailable("Postgres", error)
        raise
    try:
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def postgres_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """A new Postgres database (migrated unless asked not to), dropped afterwards."""
    name = f"chat_api_test_{uuid.uuid4().hex[:12]}"
    async with admin_connection() as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = _async_url(POSTGRES_ADMIN_DSN, name)
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        async with admin_connection() as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def sqlite_database(directory: Path) -> AsyncIterator[str]:
    url = f"sqlite+aiosqlite:///{directory / 'chat.db'}"
    await migrate(url)
    yield url


async def migrate(url: str) -> None:
    # Alembic's env runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(upgrade_to_head, Settings(_env_file=None, database_url=url))


@asynccontextmanager
async def clean_redis(key_pattern: str) -> AsyncIterator[str]:
    """The test Redis's URL, with no keys matching `key_pattern` before or after the test."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    redis = Redis.from_url(REDIS_URL, socket_connect_timeout=2)

    async def forget() -> None:
        keys = [key async for key in redis.scan_iter(match=key_pattern)]
        if keys:
            await redis.delete(*keys)

    try:
        await forget()
    except (RedisError, OSError) as error:
        await redis.aclose()
        unavailable("Redis", error)
    try:
        yield REDIS_URL
    finally:
        await forget()
        await redis.aclose()
