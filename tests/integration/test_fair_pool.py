"""The connection pool serves waiting requests in the order they came (app/db/fair_pool.py).

SQLAlchemy's asyncio pool lets whoever asks first after a connection is returned take it,
ahead of the requests already waiting; under load a few requests kept the connections while
others waited until the pool timeout refused them (256 clients of one worker: turn latency
p50 0.37 s, p99 3.9 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import sqlalchemy.exc
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.db.fair_pool import FairAsyncQueuePool
from app.db.session import create_engine

MakeSettings = Callable[..., Settings]


@pytest.fixture
async def one_connection(make_settings: MakeSettings) -> AsyncIterator[AsyncEngine]:
    """An engine of the app's kind whose pool holds one connection, refused after 0.5 s."""
    settings = make_settings(db_pool_size=1, db_max_overflow=0, db_pool_timeout_seconds=0.5)
    engine = create_engine(settings)
    assert isinstance(engine.sync_engine.pool, FairAsyncQueuePool)
    try:
        yield engine
    finally:
        await engine.dispose()


def waits() -> tuple[float, float]:
    """`chat_api_db_pool_wait_seconds` in this process: (waits, seconds waited in all)."""
    count = REGISTRY.get_sample_value("chat_api_db_pool_wait_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("chat_api_db_pool_wait_seconds_sum") or 0.0
    return count, total


def checked_in(engine: AsyncEngine) -> int:
    pool = engine.sync_engine.pool
    assert isinstance(pool, FairAsyncQueuePool)
    return pool.checkedin()


class TestFairPool:
    async def test_a_returned_connection_goes_to_the_longest_waiter(
        self, one_connection: AsyncEngine
    ) -> None:
        engine = one_connection
        served: list[str] = []
        held = await engine.raw_connection()

        async def wait_for_it(name: str) -> None:
            connection = await engine.raw_connection()
            served.append(name)
            await asyncio.sleep(0.01)
            connection.close()

        waiting = []
        for name in ("first", "second", "third"):
            waiting.append(asyncio.create_task(wait_for_it(name)))
            await asyncio.sleep(0.02)  # in line, in this order
        # Return the connection and ask again at once, before any waiter has run: the
        # connection is already the first waiter's, so this request goes to the back.
        held.close()
        again = await engine.raw_connection()
        served.append("returned and asked again")
        again.close()
        await asyncio.gather(*waiting)

        assert served == ["first", "second", "third", "returned and asked again"]
        assert checked_in(engine) == 1

    async def test_a_wait_is_measured_and_no_wait_is_not(self, one_connection: AsyncEngine) -> None:
        engine = one_connection
        before = waits()
        free = await engine.raw_connection()  # nobody waits for a free connection
        free.close()
        assert waits() == before

        held = await engine.raw_connection()
        waiting = asyncio.create_task(engine.raw_connection())
        await asyncio.sleep(0.2)
        held.close()
        (await waiting).close()

        count, seconds = waits()
        assert count == before[0] + 1
        assert seconds - before[1] >= 0.15

    async def test_a_wait_past_the_pool_timeout_is_refused_and_loses_nothing(
        self, one_connection: AsyncEngine
    ) -> None:
        engine = one_connection
        held = await engine.raw_connection()

        with pytest.raises(sqlalchemy.exc.TimeoutError):  # the API's 503 not_ready
            await engine.raw_connection()
        held.close()

        assert checked_in(engine) == 1
        connection = await engine.raw_connection()  # and the pool still serves
        connection.close()

    async def test_a_waiter_that_gives_up_passes_its_connection_on(
        self, one_connection: AsyncEngine
    ) -> None:
        engine = one_connection
        held = await engine.raw_connection()
        leaving = asyncio.create_task(engine.raw_connection())
        staying = asyncio.create_task(engine.raw_connection())
        await asyncio.sleep(0.05)

        # The connection is handed to the first waiter, which is cancelled before it runs
        # (a client that left): the connection must reach the next waiter, not vanish.
        held.close()
        leaving.cancel()
        connection = await asyncio.wait_for(staying, timeout=5)
        connection.close()

        assert leaving.cancelled()
        assert checked_in(engine) == 1
