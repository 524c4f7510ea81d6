"""Database round trips of one turn, counted on the app's engine: a guard, not a timing.

Every statement costs the worker CPU and a wait: a turn opens with one transaction (the
conversation found and counted in one `UPDATE ... RETURNING`, the prompt history, both new
messages in one INSERT) and completes with another (totals, reply, monthly usage).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from app.core.config import Settings
from tests.factories import create_conversation, send_message
from tests.sse import read_stream

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]

# Set only around the counted request: tasks it starts (a streamed generation) inherit it,
# while tasks started before (the abandoned-reply sweep) never count.
_SENT: ContextVar[list[str] | None] = ContextVar("sent", default=None)

OPEN = ["BEGIN", "UPDATE conversations", "SELECT messages", "INSERT messages", "COMMIT"]
COMPLETE = [
    "BEGIN",
    "UPDATE conversations",
    "UPDATE messages",
    "INSERT user_monthly_usage",
    "COMMIT",
]


def _kind(statement: str) -> str:
    """`UPDATE conversations`, `INSERT messages`, `SELECT messages`: verb and first table."""
    words = statement.split()
    verb = words[0].upper()
    if verb == "SELECT":
        table = words[words.index("FROM") + 1] if "FROM" in words else ""
    elif verb == "INSERT":
        table = words[2]
    else:
        table = words[1]
    return f"{verb} {table}"


def _on_statement(_conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
    sent = _SENT.get()
    # SQLite's transactions start with BEGIN IMMEDIATE (app/db/session.py), counted as BEGIN.
    if sent is not None and statement != "BEGIN IMMEDIATE":
        sent.append(_kind(statement))


def _on_begin(_conn: Connection) -> None:
    if (sent := _SENT.get()) is not None:
        sent.append("BEGIN")


def _on_commit(_conn: Connection) -> None:
    if (sent := _SENT.get()) is not None:
        sent.append("COMMIT")


@contextmanager
def counted_round_trips() -> Iterator[list[str]]:
    """What the database is sent meanwhile by this task and those it starts, in order."""
    listeners = (
        ("before_cursor_execute", _on_statement),
        ("begin", _on_begin),
        ("commit", _on_commit),
    )
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    sent: list[str] = []
    token = _SENT.set(sent)
    try:
        yield sent
    finally:
        _SENT.reset(token)
        for name, listener in listeners:
            event.remove(Engine, name, listener)


class TestRoundTrips:
    async def test_a_plain_turn_takes_ten_round_trips(self, client: httpx.AsyncClient) -> None:
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "warm up")  # history is not empty

        with counted_round_trips() as sent:
            await send_message(client, conversation["id"], "count me")

        assert sent == OPEN + COMPLETE

    async def test_a_streamed_turn_takes_the_same_ten(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        # No periodic flush of partial text inside the count, however slow the machine.
        client = await start_app(make_settings(stream_flush_seconds=60))
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "warm up")

        with counted_round_trips() as sent:
            stream = await read_stream(
                client,
                "POST",
                f"/api/v1/conversations/{conversation['id']}/messages",
                json={"content": "count me", "stream": True},
            )

        assert stream.status_code == 200
        assert sent == OPEN + COMPLETE

    async def test_an_openai_style_turn_stores_its_new_messages_in_one_insert(
        self, client: httpx.AsyncClient
    ) -> None:
        said = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Count me"},
        ]

        with counted_round_trips() as started:
            first = await client.post(
                "/v1/chat/completions", json={"model": "mock", "messages": said}
            )
        with counted_round_trips() as appended:
            second = await client.post(
                "/v1/chat/completions",
                json={"model": "mock", "messages": [*said, {"role": "user", "content": "More"}]},
                headers={"X-Conversation-ID": first.headers["x-conversation-id"]},
            )

        assert first.status_code == 200, first.text
        assert second.status_code == 200, second.text
        # A new conversation is created already counting its messages and reply.
        assert started == ["BEGIN", "INSERT conversations", "INSERT messages", "COMMIT", *COMPLETE]
        assert appended == ["BEGIN", "UPDATE conversations", "INSERT messages", "COMMIT", *COMPLETE]
