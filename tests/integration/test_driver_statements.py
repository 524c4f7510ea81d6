"""The driver path (Postgres): SQLAlchemy's statements on the pool's asyncpg connection.

Its errors must look exactly like a session's (the API maps those), a connection the server
dropped must leave the pool, and a statement cancelled halfway must never hand its
connection to the next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy.exc
from sqlalchemy import Interval, Text, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.db.base import utcnow
from app.db.driver import checkout, driver_connection
from app.db.models import ApiKey
from app.db.session import create_engine
from tests.databases import postgres_database

_PID = select(func.pg_backend_pid())
_SLEEP = select(func.pg_sleep(bindparam("seconds")))
_NOW_PLUS = select(
    bindparam("moment", type_=ApiKey.created_at.type) + bindparam("delta", type_=Interval)
)
# A dict reaches asyncpg's JSONB codec only as the JSON text the type's bind conversion makes.
_NOTE_OF = select(bindparam("document", type_=JSONB)["note"].astext)

# A list per column, as a turn's messages are inserted: only items with a conversion get one.
_ARRAYS_OF = select(
    bindparam("documents", type_=ARRAY(JSONB)),
    bindparam("texts", type_=ARRAY(Text())),
)


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    """Postgres only: SQLite runs every statement in a session, never on the driver."""
    async with postgres_database() as url:
        made = create_engine(Settings(_env_file=None, database_url=url), pool_size=2)
        yield made
        await made.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with driver_connection(engine) as connection:
        [(pid,)] = await connection.rows(_PID, {})
    return int(pid)


class TestDriverStatements:
    async def test_values_go_through_the_types_bind_conversions(self, engine: AsyncEngine) -> None:
        moment = utcnow()
        async with driver_connection(engine) as connection:
            [(later,)] = await connection.rows(
                _NOW_PLUS, {"moment": moment, "delta": timedelta(hours=1)}
            )
        assert later == moment + timedelta(hours=1)

    async def test_a_dict_for_a_jsonb_parameter_is_sent_as_json(self, engine: AsyncEngine) -> None:
        document = {"cache": "hit", "note": "emoji 🎉 and 'quotes'"}
        async with driver_connection(engine) as connection:
            [(note,)] = await connection.rows(_NOTE_OF, {"document": document})
        assert note == document["note"]

    async def test_array_items_go_through_their_types_conversions_where_they_have_one(
        self, engine: AsyncEngine
    ) -> None:
        documents = [{"cache": "hit"}, {"note": "emoji 🎉"}]
        texts = ["plain", "emoji 🎉", "'; DROP TABLE messages; --"]
        async with driver_connection(engine) as connection:
            [(sent_documents, sent_texts)] = await connection.rows(
                _ARRAYS_OF, {"documents": documents, "texts": texts}
            )
        # Dicts through their conversion to JSON text (the driver takes no dict); text as is.
        assert sent_documents == documents
        assert sent_texts == texts

    async def test_a_violated_constraint_is_sqlalchemys_integrity_error(
        self, engine: AsyncEngine
    ) -> None:
        insert_key = text(
            "INSERT INTO api_keys (id, user_id, is_admin, prefix, key_hash, created_at) "
            "VALUES (gen_random_uuid(), 'u', false, 'p', :key_hash, now())"
        )
        same = {"key_hash": "same-hash"}
        async with driver_connection(engine) as connection:
            await connection.rows(insert_key, same)
            with pytest.raises(sqlalchemy.exc.IntegrityError) as raised:
                await connection.rows(insert_key, same)
            # Autocommit: the failed statement leaves the connection usable at once.
            assert await connection.rows(_PID, {})
        assert "api_keys" in str(raised.value.orig)
        assert "same-hash" not in str(raised.value).split("\n[SQL")[0] + str(raised.value.params)

    async def test_a_connection_the_server_dropped_is_a_lost_database_and_leaves_the_pool(
        self, engine: AsyncEngine
    ) -> None:
        async with driver_connection(engine) as connection:
            [(doomed,)] = await connection.rows(_PID, {})
            async with engine.connect() as admin:  # the pool's second connection
                await admin.execute(text(f"SELECT pg_terminate_backend({doomed})"))
            with pytest.raises(sqlalchemy.exc.DBAPIError) as raised:
                await connection.rows(_PID, {})

        assert raised.value.connection_invalidated
        assert doomed not in {await backend_pid(engine) for _ in range(4)}

    async def test_a_statement_cancelled_halfway_never_hands_its_connection_on(
        self, engine: AsyncEngine
    ) -> None:
        sleeper: list[int] = []

        async def sleep_on_the_driver() -> None:
            async with driver_connection(engine) as connection:
                [(pid,)] = await connection.rows(_PID, {})
                sleeper.append(int(pid))
                await connection.rows(_SLEEP, {"seconds": 5})

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sleep_on_the_driver(), timeout=0.5)

        # The pool's connections now answer at once, and none is the one still sleeping.
        handed_out = {await asyncio.wait_for(backend_pid(engine), timeout=2) for _ in range(4)}
        assert sleeper
        assert sleeper[0] not in handed_out


class TestReturningConnections:
    async def test_an_overflow_connection_the_pool_has_no_room_for_is_closed(self) -> None:
        async with postgres_database() as url:
            engine = create_engine(
                Settings(_env_file=None, database_url=url), pool_size=1, max_overflow=1
            )
            try:
                kept, overflow = await checkout(engine), await checkout(engine)
                kept_driver, overflow_driver = kept.driver_connection, overflow.driver_connection
                async with driver_connection(engine, kept):
                    pass
                # The pool's one place is taken again: this one must really be closed, not
                # dropped open (its server backend would linger).
                async with driver_connection(engine, overflow):
                    pass

                assert overflow_driver.is_closed()
                assert not kept_driver.is_closed()
                assert engine.sync_engine.pool.checkedin() == 1
            finally:
                await engine.dispose()
