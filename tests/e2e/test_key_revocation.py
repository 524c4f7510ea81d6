"""A key revoked with the CLI is refused at once by every worker of a running server.

Each worker remembers the callers of keys it has seen (Postgres); this is the operator's view
of the promise that makes that safe: revoke from another process, and the very next request
is a 401, whichever worker takes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.services.access.known_keys import CHANNEL
from tests.databases import postgres_database
from tests.e2e.conftest import LiveServer, create_key, run_cli, start_server, stop_server

WORKERS = 2
LIST = "/api/v1/conversations"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, str]]:
    """A server of two workers with auth on, on a database of its own, once both listen."""
    async with postgres_database() as database_url:
        env = {"DATABASE_URL": database_url, "AUTH_ENABLED": "true", "WEB_CONCURRENCY": "2"}
        live = await asyncio.to_thread(start_server, env, tmp_path / "server.log")
        try:
            await _until_listening(database_url, WORKERS)
            yield live, database_url
        finally:
            await asyncio.to_thread(stop_server, live)


async def _until_listening(database_url: str, workers: int) -> None:
    connection = await asyncpg.connect(database_url.replace("+asyncpg", "", 1))
    try:
        for _ in range(300):
            listening = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = $1",
                f'LISTEN "{CHANNEL}"',
            )
            if listening == workers:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{listening} of {workers} workers listen for key changes")
    finally:
        await connection.close()


async def test_a_key_revoked_with_the_cli_is_refused_at_once_by_every_worker(
    server: tuple[LiveServer, str],
) -> None:
    live, database_url = server
    key = await asyncio.to_thread(create_key, database_url, "alice")
    # A new connection per request, so the requests spread over both workers.
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=live.base_url,
        headers={"Authorization": f"Bearer {key}"},
        limits=no_keep_alive,
        timeout=10,
    ) as client:
        before = [(await client.get(LIST)).status_code for _ in range(20)]
        printed = await asyncio.to_thread(run_cli, database_url, "keys", "revoke", key[:8])
        after = [(await client.get(LIST)).status_code for _ in range(20)]

    assert printed.startswith("revoked key")
    assert before == [200] * 20, live.log()
    assert after == [401] * 20, live.log()
