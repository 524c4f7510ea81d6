"""The migrations build exactly the models' schema, on a fresh database of each backend."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from alembic import command
from app.core.config import Settings
from app.db.base import NAMING_CONVENTION
from app.db.migrations import PROJECT_ROOT, alembic_config
from app.db.models import Base, Conversation, Message
from app.db.session import create_engine
from app.schemas.messages import MessageRead
from tests.databases import postgres_database

APP_TABLES = {"conversations", "messages", "feedback"}


@pytest.fixture(params=["postgres", "sqlite"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it, not even Alembic's version table."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'chat.db'}"
        return
    async with postgres_database(migrated=False) as url:
        yield url


async def alembic(action: str, url: str, revision: str) -> None:
    # Alembic's env runs its own event loop, so it gets a thread of its own.
    if action == "upgrade":
        await asyncio.to_thread(command.upgrade, alembic_config(url), revision)
    else:
        await asyncio.to_thread(command.downgrade, alembic_config(url), revision)


async def on_database(url: str, inspect_with: Any) -> Any:
    """Run `inspect_with(sync_connection)` against the database at `url`."""
    engine = create_engine(Settings(_env_file=None, database_url=url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(inspect_with)
    finally:
        await engine.dispose()


def drift_from(metadata: MetaData) -> Any:
    """What autogenerate would write for `metadata`: a migration that nobody has written yet."""

    def compare(connection: Connection) -> list[Any]:
        # The same comparison options as alembic/env.py, so this sees what autogenerate sees.
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        diffs: list[Any] = compare_metadata(context, metadata)
        return diffs

    return compare


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def stored_revision(connection: Connection) -> str | None:
    revision: str | None = connection.execute(
        text("SELECT version_num FROM alembic_version")
    ).scalar_one_or_none()
    return revision


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def models_with_an_unmigrated_column() -> MetaData:
    """The models as they are, plus one column that no migration adds."""
    copy = MetaData(naming_convention=NAMING_CONVENTION)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(copy)
    copy.tables["messages"].append_column(Column("sentiment", String(16), nullable=True))
    return copy


class TestMigrations:
    async def test_upgrade_to_head_builds_exactly_the_models_schema(
        self, empty_database_url: str
    ) -> None:
        await alembic("upgrade", empty_database_url, "head")

        assert await on_database(empty_database_url, drift_from(Base.metadata)) == []
        assert await on_database(empty_database_url, table_names) >= APP_TABLES
        revision = await on_database(empty_database_url, stored_revision)
        assert revision == head_revision(empty_database_url)

    async def test_the_drift_check_notices_a_model_column_without_a_migration(
        self, empty_database_url: str
    ) -> None:
        await alembic("upgrade", empty_database_url, "head")

        diffs = await on_database(
            empty_database_url, drift_from(models_with_an_unmigrated_column())
        )

        assert [(d[0], d[2], d[3].name) for d in diffs] == [("add_column", "messages", "sentiment")]

    async def test_downgrade_to_base_then_upgrade_again_rebuilds_the_same_schema(
        self, empty_database_url: str
    ) -> None:
        await alembic("upgrade", empty_database_url, "head")

        await alembic("downgrade", empty_database_url, "base")
        assert not (await on_database(empty_database_url, table_names)) & APP_TABLES
        await alembic("upgrade", empty_database_url, "head")

        assert await on_database(empty_database_url, drift_from(Base.metadata)) == []

    async def test_python_m_app_migrate_applies_the_migrations_to_database_url(
        self, empty_database_url: str
    ) -> None:
        environment = {**os.environ, "DATABASE_URL": empty_database_url, "APP_ENV": "test"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "migrate",
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            output, _ = await process.communicate()

        assert process.returncode == 0, output.decode(errors="replace")
        assert await on_database(empty_database_url, drift_from(Base.metadata)) == []
        revision = await on_database(empty_database_url, stored_revision)
        assert revision == head_revision(empty_database_url)


def insert_text_only_exchange(connection: Connection) -> None:
    """A conversation as 0007 stored it: a user message and a reply, text only."""
    connection.execute(
        text(
            "INSERT INTO conversations (id, user_id, metadata, message_count, total_tokens,"
            " total_cost_usd, created_at, updated_at) VALUES (:id, 'u1', '{}', 2, 5, 0.5,"
            " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ),
        {"id": OLD_CONVERSATION.hex if connection.dialect.name == "sqlite" else OLD_CONVERSATION},
    )
    for position, (role, content) in enumerate([("user", "Hi 👋"), ("assistant", "Hello.")]):
        message_id = uuid.UUID(int=position + 1)
        connection.execute(
            text(
                "INSERT INTO messages (id, conversation_id, role, content, status, metadata,"
                " prompt_tokens, completion_tokens, cached_tokens, total_tokens,"
                " cache_write_tokens, cost_usd, created_at) VALUES (:id, :conversation, :role,"
                " :content, 'completed', '{}', 0, 0, 0, 0, 0, 0, CURRENT_TIMESTAMP)"
            ),
            {
                "id": message_id.hex if connection.dialect.name == "sqlite" else message_id,
                "conversation": (
                    OLD_CONVERSATION.hex
                    if connection.dialect.name == "sqlite"
                    else OLD_CONVERSATION
                ),
                "role": role,
                "content": content,
            },
        )
    ids = {"conversation": OLD_CONVERSATION, "message": uuid.UUID(int=2)}
    if connection.dialect.name == "sqlite":
        ids = {name: value.hex for name, value in ids.items()}  # type: ignore[misc]
    connection.execute(
        text(
            "INSERT INTO feedback (id, conversation_id, message_id, type, created_at)"
            " VALUES (:id, :conversation, :message, 'thumbs_up', CURRENT_TIMESTAMP)"
        ),
        {
            "id": uuid.UUID(int=9).hex if connection.dialect.name == "sqlite" else uuid.UUID(int=9),
            **ids,
        },
    )
    connection.commit()


def counts(connection: Connection) -> dict[str, int]:
    return {
        table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        for table in ("conversations", "messages", "feedback")
    }


OLD_CONVERSATION = uuid.UUID("0192f5b0-0000-7000-8000-0000000000aa")


class TestMessagesBeyondText:
    async def test_messages_stored_before_0008_read_back_as_text_only_messages_and_lose_nothing(
        self, empty_database_url: str
    ) -> None:
        await alembic("upgrade", empty_database_url, "0007")
        await on_database(empty_database_url, insert_text_only_exchange)

        await alembic("upgrade", empty_database_url, "head")

        def read(connection: Connection) -> list[Any]:
            with Session(connection) as session:
                rows = session.scalars(select(Message).order_by(Message.id)).all()
                return [MessageRead.model_validate(row).model_dump() for row in rows]

        messages = await on_database(empty_database_url, read)

        def tree(connection: Connection) -> tuple[list[Any], Any]:
            with Session(connection) as session:
                rows = session.scalars(select(Message).order_by(Message.id)).all()
                leaf = session.scalar(select(Conversation.active_leaf_id))
                return [(row.id, row.parent_id) for row in rows], leaf

        # 0009: a linear history became one path, its newest message the leaf.
        (first, no_parent), (second, parent) = (await on_database(empty_database_url, tree))[0]
        assert (no_parent, parent) == (None, first)
        assert (await on_database(empty_database_url, tree))[1] == second
        # SQLite rebuilds tables in batch mode: with foreign keys on, dropping the old
        # `messages` cascaded to the feedback on them.
        assert await on_database(empty_database_url, counts) == {
            "conversations": 1,
            "messages": 2,
            "feedback": 1,
        }
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "Hi 👋"),
            ("assistant", "Hello."),
        ]
        for message in messages:
            assert (message["parts"], message["tool_calls"], message["tool_call_id"]) == (
                None,
                None,
                None,
            )
            assert (message["reasoning"], message["reasoning_tokens"]) == (None, 0)
