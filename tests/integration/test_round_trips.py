"""Database round trips of one turn, counted on the app's engine: a guard, not a timing.

Every statement costs the worker CPU and a wait. On Postgres a turn is three statements and
no transaction: it reads the conversation with its history, claims the turn (the count and
both new messages, one writable CTE) and stores the outcome (totals, reply and monthly usage,
one writable CTE). On SQLite (no writable CTEs) opening is one short transaction, storing the
outcome another.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from app.core.config import Settings
from app.db.driver import engine_of, observe_statements
from tests.factories import create_conversation, send_message
from tests.sse import stream_message

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
StateOf = Callable[[httpx.AsyncClient], dict[str, Any]]

# Set only around the counted request: tasks it starts (a streamed generation) inherit it,
# while tasks started before (the abandoned-reply sweep) never count.
_SENT: ContextVar[list[str] | None] = ContextVar("sent", default=None)

# What each dialect is sent for one turn: (opening it, storing its outcome).
POSTGRES_OPEN = ["SELECT conversations", "UPDATE conversations + INSERT messages"]
# The conversation is locked first (`SELECT ... FOR UPDATE` in the statement), then the reply
# is ended only if still running, and the totals and month charged only if it was.
POSTGRES_COMPLETE = ["UPDATE messages + UPDATE conversations + INSERT user_monthly_usage"]
# The branch is walked by a recursive CTE (`WITH RECURSIVE branch_path ... SELECT`).
SQLITE_OPEN = [
    *("BEGIN", "SELECT conversations", "SELECT branch_path"),
    *("UPDATE conversations", "INSERT messages", "COMMIT"),
]
SQLITE_COMPLETE = [
    "BEGIN",
    "UPDATE messages",
    "UPDATE conversations",
    "INSERT user_monthly_usage",
    "COMMIT",
]

# A write (not an upsert's `DO UPDATE SET`), and its table.
_WRITES = re.compile(r"(?<!DO )\b(UPDATE|INSERT INTO|DELETE FROM) (\w+)")


def _kind(statement: str) -> str:
    """The tables written, in order (`UPDATE conversations + INSERT messages` for a writable
    CTE), or for a read `SELECT <the table of its outermost FROM>`."""
    writes = [f"{verb.split()[0]} {table}" for verb, table in _WRITES.findall(statement)]
    if writes:
        return " + ".join(writes)
    depth = 0
    words = statement.replace("(", " ( ").replace(")", " ) ").split()
    for word, following in zip(words, words[1:], strict=False):
        depth += {"(": 1, ")": -1}.get(word, 0)
        if depth == 0 and word == "FROM":
            return f"SELECT {following}"
    return statement


def _on_statement(_conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
    sent = _SENT.get()
    # SQLite's transactions start with BEGIN IMMEDIATE (app/db/session.py), counted as BEGIN.
    if sent is not None and statement != "BEGIN IMMEDIATE":
        sent.append(_kind(statement))


def _sends_transactions(conn: Connection) -> bool:
    # In autocommit SQLAlchemy still signals begin and commit, but sends neither.
    return conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT"


def _on_begin(conn: Connection) -> None:
    if (sent := _SENT.get()) is not None and _sends_transactions(conn):
        sent.append("BEGIN")


def _on_commit(conn: Connection) -> None:
    if (sent := _SENT.get()) is not None and _sends_transactions(conn):
        sent.append("COMMIT")


@contextmanager
def _on_driver_statement(sql: str) -> Iterator[None]:
    if (sent := _SENT.get()) is not None:
        sent.append(_kind(sql))
    yield


@contextmanager
def counted_round_trips(client: httpx.AsyncClient, state_of: StateOf) -> Iterator[list[str]]:
    """What the client's app sends its database meanwhile, from this task and those it
    starts, in order: through SQLAlchemy (its events) and on the driver (an observer)."""
    listeners = (
        ("before_cursor_execute", _on_statement),
        ("begin", _on_begin),
        ("commit", _on_commit),
    )
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    remove = observe_statements(engine_of(state_of(client)["sessionmaker"]), _on_driver_statement)
    sent: list[str] = []
    token = _SENT.set(sent)
    try:
        yield sent
    finally:
        _SENT.reset(token)
        remove()
        for name, listener in listeners:
            event.remove(Engine, name, listener)


def expected_turn(settings: Settings) -> tuple[list[str], list[str]]:
    """What one turn sends on this backend: (opening it, storing its outcome)."""
    if settings.is_sqlite:
        return SQLITE_OPEN, SQLITE_COMPLETE
    return POSTGRES_OPEN, POSTGRES_COMPLETE


class TestRoundTrips:
    async def test_a_plain_turn_takes_three_statements_on_postgres(
        self, client: httpx.AsyncClient, settings: Settings, state_of: StateOf
    ) -> None:
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "warm up")  # history is not empty

        with counted_round_trips(client, state_of) as sent:
            await send_message(client, conversation["id"], "count me")

        opening, completing = expected_turn(settings)
        assert sent == opening + completing

    async def test_a_streamed_turn_takes_the_same(
        self,
        start_app: StartApp,
        make_settings: MakeSettings,
        settings: Settings,
        state_of: StateOf,
    ) -> None:
        # No periodic flush of partial text inside the count, however slow the machine.
        client = await start_app(make_settings(stream_flush_seconds=60))
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "warm up")

        with counted_round_trips(client, state_of) as sent:
            stream = await stream_message(client, conversation["id"], "count me")

        assert stream.status_code == 200
        opening, completing = expected_turn(settings)
        assert sent == opening + completing

    async def test_an_idempotent_turn_stores_its_outcome_and_response_in_one_transaction(
        self, client: httpx.AsyncClient, settings: Settings, state_of: StateOf
    ) -> None:
        conversation = await create_conversation(client)

        with counted_round_trips(client, state_of) as sent:
            response = await client.post(
                f"/api/v1/conversations/{conversation['id']}/messages",
                json={"content": "count me"},
                headers={"Idempotency-Key": "round-trips-1"},
            )

        assert response.status_code == 201, response.text
        opening, _ = expected_turn(settings)
        # The outcome and the stored response commit together: a key is never answered for
        # a reply that was not charged, nor left claimed for one that was.
        if settings.is_sqlite:
            stored = [*SQLITE_COMPLETE[:-1], "UPDATE idempotency_keys", "COMMIT"]
        else:
            stored = ["BEGIN", *POSTGRES_COMPLETE, "UPDATE idempotency_keys", "COMMIT"]
        key_claimed = ["BEGIN", "INSERT idempotency_keys", "COMMIT"]
        assert sent == [*key_claimed, *opening, *stored]

    async def test_an_openai_style_turn_stores_its_new_messages_in_one_insert(
        self, client: httpx.AsyncClient, settings: Settings, state_of: StateOf
    ) -> None:
        said = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Count me"},
        ]

        with counted_round_trips(client, state_of) as started:
            first = await client.post(
                "/v1/chat/completions", json={"model": "mock", "messages": said}
            )
        with counted_round_trips(client, state_of) as appended:
            second = await client.post(
                "/v1/chat/completions",
                json={"model": "mock", "messages": [*said, {"role": "user", "content": "More"}]},
                headers={"X-Conversation-ID": first.headers["x-conversation-id"]},
            )

        assert first.status_code == 200, first.text
        assert second.status_code == 200, second.text
        _, completing = expected_turn(settings)
        # A new conversation is created already counting its messages and reply; one that
        # goes on is read with its stored branch (matched against what the client sent) and
        # claimed like any turn.
        if settings.is_sqlite:
            creating = ["BEGIN", "INSERT conversations", "INSERT messages", "COMMIT"]
            claiming = [
                *("BEGIN", "SELECT conversations", "SELECT branch_path"),
                *("UPDATE conversations", "INSERT messages", "COMMIT"),
            ]
        else:
            creating = ["INSERT conversations + INSERT messages"]
            claiming = ["SELECT conversations", "UPDATE conversations + INSERT messages"]
        assert started == [*creating, *completing]
        assert appended == [*claiming, *completing]

    async def test_a_conversation_is_created_by_one_statement(
        self, client: httpx.AsyncClient, settings: Settings, state_of: StateOf
    ) -> None:
        with counted_round_trips(client, state_of) as sent:
            response = await client.post("/api/v1/conversations", json={"title": "count me"})

        assert response.status_code == 201, response.text
        created = await client.get(f"/api/v1/conversations/{response.json()['id']}")
        assert created.json()["title"] == "count me"
        assert created.json()["message_count"] == 0
        # Atomic alone: on Postgres no transaction around it.
        insert = ["INSERT conversations"]
        assert sent == (["BEGIN", *insert, "COMMIT"] if settings.is_sqlite else insert)

    async def test_a_keyed_conversation_commits_with_its_key_in_one_transaction(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        with counted_round_trips(client, state_of) as sent:
            response = await client.post(
                "/api/v1/conversations",
                json={"title": "count me"},
                headers={"Idempotency-Key": "round-trips-conversation"},
            )

        assert response.status_code == 201, response.text
        assert sent == [
            *("BEGIN", "INSERT idempotency_keys", "INSERT conversations"),
            *("UPDATE idempotency_keys", "COMMIT"),
        ]
