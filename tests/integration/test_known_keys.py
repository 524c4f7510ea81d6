"""API keys remembered in memory (Postgres): read once, forgotten the moment they change.

The cache is only as good as the notices that empty it, so these tests change keys the ways an
operator would (SQL from another connection, deleting the row, truncating the table) and cut
the listening connection, and check each time that no request is let in on a stale entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from app.core.config import Settings
from app.services.access.api_keys import hash_key
from app.services.access.known_keys import CHANNEL, EVERY_KEY, KnownKeys
from tests.auth import bearer
from tests.integration.test_metrics import scrape, value
from tests.integration.test_round_trips import counted_round_trips

CONVERSATIONS = "/api/v1/conversations"
KEY_READ = "SELECT api_keys"
LISTENING = "chat_api_key_change_listeners"
StateOf = Callable[[httpx.AsyncClient], dict[str, Any]]


async def until(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


# Keys are cached only where Postgres can announce their changes.
postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Any]:
    """A connection of the test's own, playing the operator at a `psql` prompt."""
    connection = await asyncpg.connect(dsn(database_url))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def client(start_app: Callable[..., Any], auth_settings: Callable[..., Settings]) -> Any:
    return await start_app(auth_settings())


@pytest.fixture
async def known_keys(client: httpx.AsyncClient, state_of: StateOf, settings: Settings) -> KnownKeys:
    """The app's cache, once its listener is up where there is one (not on SQLite)."""
    keys: KnownKeys = state_of(client)["known_keys"]
    if not settings.is_sqlite:
        await until(lambda: keys.trusted)
    return keys


async def key_reads(client: httpx.AsyncClient, state_of: StateOf, key: str) -> int:
    """How many times one authenticated request read its key from the database."""
    with counted_round_trips(client, state_of) as sent:
        response = await client.get(CONVERSATIONS, headers=bearer(key))
    assert response.status_code == 200, response.text
    return sent.count(KEY_READ)


async def refused_soon(client: httpx.AsyncClient, key: str) -> None:
    """The key is refused now or within moments (a notice is delivered asynchronously)."""
    deadline = asyncio.get_running_loop().time() + 2
    while (await client.get(CONVERSATIONS, headers=bearer(key))).status_code != 401:
        assert asyncio.get_running_loop().time() < deadline, "a changed key was still let in"
        await asyncio.sleep(0.005)


class TestReads:
    async def test_a_key_is_read_once_then_served_from_memory(
        self,
        client: httpx.AsyncClient,
        known_keys: KnownKeys,
        issue_key: Callable[..., Any],
        settings: Settings,
        state_of: StateOf,
    ) -> None:
        key = await issue_key("alice")

        reads = [await key_reads(client, state_of, key) for _ in range(3)]

        if settings.is_sqlite:
            # No NOTIFY: a key revoked by another process could not be forgotten in time.
            assert not known_keys.trusted
            assert reads == [1, 1, 1]
        else:
            assert reads == [1, 0, 0]

    async def test_an_unknown_key_is_read_every_time_and_refused(
        self, client: httpx.AsyncClient, known_keys: KnownKeys, state_of: StateOf
    ) -> None:
        for _ in range(2):
            with counted_round_trips(client, state_of) as sent:
                response = await client.get(CONVERSATIONS, headers=bearer("ca_not-a-real-key"))
            assert response.status_code == 401
            assert sent.count(KEY_READ) == 1


@postgres_only
class TestChangesAreHeard:
    @pytest.mark.parametrize(
        "change",
        ["UPDATE api_keys SET revoked_at = now()", "DELETE FROM api_keys"],
        ids=["revoked", "deleted"],
    )
    async def test_a_key_revoked_or_deleted_by_hand_is_refused(
        self,
        client: httpx.AsyncClient,
        known_keys: KnownKeys,
        issue_key: Callable[..., Any],
        database: Any,
        change: str,
    ) -> None:
        key = await issue_key("alice")
        assert (await client.get(CONVERSATIONS, headers=bearer(key))).status_code == 200

        await database.execute(f"{change} WHERE key_hash = $1", hash_key(key))

        await refused_soon(client, key)

    async def test_a_key_given_to_another_user_acts_as_that_user(
        self,
        client: httpx.AsyncClient,
        known_keys: KnownKeys,
        issue_key: Callable[..., Any],
        database: Any,
    ) -> None:
        key = await issue_key("alice")
        made = await client.post(CONVERSATIONS, json={"title": "alice's"}, headers=bearer(key))
        assert made.status_code == 201

        await database.execute(
            "UPDATE api_keys SET user_id = 'bob' WHERE key_hash = $1", hash_key(key)
        )

        await until(lambda: known_keys.get(hash_key(key)) is None, within=2)
        listed = await client.get(CONVERSATIONS, headers=bearer(key))
        assert listed.json()["items"] == []

    async def test_a_lost_listener_stops_the_cache_until_it_is_back(
        self,
        client: httpx.AsyncClient,
        known_keys: KnownKeys,
        issue_key: Callable[..., Any],
        database: Any,
        state_of: StateOf,
    ) -> None:
        key = await issue_key("alice")
        assert await key_reads(client, state_of, key) == 1
        assert await key_reads(client, state_of, key) == 0

        assert value(await scrape(client), LISTENING) == 1
        ended = await database.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = $1",
            f'LISTEN "{CHANNEL}"',
        )
        assert ended == 1
        await until(lambda: not known_keys.trusted, within=2)
        assert value(await scrape(client), LISTENING) == 0

        # Notices sent now would be missed: every request reads its key meanwhile.
        assert await key_reads(client, state_of, key) == 1
        assert await key_reads(client, state_of, key) == 1

        await until(lambda: known_keys.trusted)
        assert value(await scrape(client), LISTENING) == 1
        await database.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_key(key)
        )
        await refused_soon(client, key)


@postgres_only
class TestNotices:
    """The triggers of migration 0006, heard on a LISTEN of the test's own."""

    @pytest.fixture
    async def notices(self, database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
        heard: asyncio.Queue[str] = asyncio.Queue()
        listener = await asyncpg.connect(dsn(database_url))
        await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[-1]))
        try:
            yield heard
        finally:
            await listener.close()

    async def test_each_change_that_matters_is_announced_and_a_use_is_not(
        self, notices: asyncio.Queue[str], issue_key: Callable[..., Any], database: Any
    ) -> None:
        key = await issue_key("alice")
        key_hash = hash_key(key)
        where = "WHERE key_hash = $1"

        await database.execute(f"UPDATE api_keys SET last_used_at = now() {where}", key_hash)
        await database.execute(f"UPDATE api_keys SET name = 'renamed' {where}", key_hash)
        await database.execute(f"UPDATE api_keys SET is_admin = true {where}", key_hash)
        await database.execute(f"UPDATE api_keys SET revoked_at = now() {where}", key_hash)
        await database.execute(f"DELETE FROM api_keys {where}", key_hash)
        await database.execute("TRUNCATE api_keys")
        await asyncio.sleep(0.2)

        heard = [notices.get_nowait() for _ in range(notices.qsize())]
        assert heard == [key_hash, key_hash, key_hash, EVERY_KEY]
