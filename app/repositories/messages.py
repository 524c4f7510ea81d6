"""All SQL on messages. Callers reach them only through a conversation they own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Message, MessageStatus
from app.db.rows import column_values, columns_of, with_defaults
from app.providers.base import ChatMessage, ChatRole, ToolCall
from app.repositories.pagination import fetch_page

# Replies that failed carry no text the model should see again.
PROMPT_STATUSES = (MessageStatus.COMPLETED, MessageStatus.CANCELLED)


_ONE_GENERATION_VIOLATIONS = (
    "uq_messages_one_generation_per_conversation",
    "UNIQUE constraint failed: messages.conversation_id",
)


class MessageRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def in_conversation(self, conversation_id: UUID) -> Select[Message]:
        return select(Message).where(Message.conversation_id == conversation_id)

    async def get_in_conversation(self, message_id: UUID, conversation_id: UUID) -> Message | None:
        return (
            await self.session.scalars(
                self.in_conversation(conversation_id).where(Message.id == message_id)
            )
        ).one_or_none()

    async def links(self, conversation_id: UUID) -> list[tuple[UUID, UUID | None]]:
        """Every message's (id, parent id), oldest first: the conversation's tree."""
        rows = await self.session.execute(
            select(Message.id, Message.parent_id)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at, Message.id)
        )
        return [(message_id, parent_id) for message_id, parent_id in rows]

    async def all_in_order(self, conversation_id: UUID) -> Sequence[Message]:
        statement = self.in_conversation(conversation_id).order_by(Message.created_at, Message.id)
        return (await self.session.scalars(statement)).all()

    async def in_order(self, conversation_id: UUID, among: Sequence[UUID]) -> Sequence[Message]:
        """The messages of `among` (ids of this conversation's), oldest first."""
        statement = (
            self.in_conversation(conversation_id)
            .where(Message.id.in_(among))
            .order_by(Message.created_at, Message.id)
        )
        return (await self.session.scalars(statement)).all()

    async def page(
        self,
        conversation_id: UUID,
        *,
        limit: int,
        cursor: str | None,
        among: Sequence[UUID] | None = None,
    ) -> tuple[Sequence[Message], str | None]:
        """A page, oldest first, of the conversation's messages (only `among`, if given)."""
        statement = self.in_conversation(conversation_id)
        if among is not None:
            statement = statement.where(Message.id.in_(among))
        return await fetch_page(
            self.session,
            statement,
            created_at=Message.created_at,
            row_id=Message.id,
            limit=limit,
            cursor=cursor,
            newest_first=False,
        )

    async def add_all(self, *messages: Message) -> None:
        self.session.add_all(messages)
        await self.session.flush()

    async def claim_generation(self, *messages: Message) -> bool:
        """Store a turn's messages (its in-progress reply last) unless a reply already runs.

        The claim is the insert itself (a partial unique index on running replies), so two
        concurrent turns can never both start. No savepoint (two round trips on every turn):
        on `False` the transaction has failed, so the caller must end it (raise).

        One Core INSERT for all of them: the messages stay plain transient objects, never
        added to the session (a unit-of-work flush cost more CPU than the rest of the SQL).
        Their ids, times and column defaults are filled in here, so they read as stored.
        """
        rows = [column_values(with_defaults(message)) for message in messages]
        try:
            # executemany of one cached statement: still one round trip (asyncpg pipelines
            # it; SQLAlchemy batches it into one INSERT), where a multi-row VALUES would be
            # compiled afresh each time (it has no cache key).
            await self.session.execute(_INSERT_MESSAGE, rows)
        except IntegrityError as error:
            if not is_running_reply_violation(error):
                raise
            return False
        return True


def is_running_reply_violation(error: IntegrityError) -> bool:
    """Whether an insert failed because a reply already runs in its conversation."""
    # Postgres names the index; SQLite names the column the partial index covers.
    return any(mark in str(error.orig) for mark in _ONE_GENERATION_VIOLATIONS)


def changes_of(message: Message) -> dict[str, Any]:
    """`SAVE_MESSAGE`'s parameters: the message's every column but its identity, now."""
    message.updated_at = utcnow()
    values = {f"new_{column}": getattr(message, name) for name, column in MUTABLE_COLUMNS.items()}
    values["message_id"] = message.id
    return values


_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_INSERT_MESSAGE = insert(_MESSAGES)
# What a prompt reads of a message, in this order (`prompt_message`'s arguments).
PROMPT_COLUMNS = (
    _MESSAGES.c.role,
    _MESSAGES.c.content,
    _MESSAGES.c.parts,
    _MESSAGES.c.tool_calls,
    _MESSAGES.c.tool_call_id,
)


def in_prompt() -> ColumnElement[bool]:
    """Messages a model should see again: ended well, with something in them."""
    return and_(
        or_(*(_MESSAGES.c.status == status for status in PROMPT_STATUSES)),
        or_(
            _MESSAGES.c.content != "",
            _MESSAGES.c.tool_calls.is_not(None),
            _MESSAGES.c.parts.is_not(None),
        ),
    )


# A stored role (text, or a `MessageRole`) as a prompt's role: a dict lookup, where
# `MessageRole(role)` cost a 1,000-message history 1.4 ms (it runs once per message per turn).
_ROLE_OF: dict[str, ChatRole] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
}


def prompt_message(
    role: str,
    content: str,
    parts: list[Any] | None,
    tool_calls: list[Any] | None,
    tool_call_id: str | None,
) -> ChatMessage:
    """A stored message as a prompt's message (`PROMPT_COLUMNS`, read in that order)."""
    if parts is None and tool_calls is None and tool_call_id is None:
        return ChatMessage(_ROLE_OF[role], content)  # the plain-text common case
    return ChatMessage(
        _ROLE_OF[role],
        content,
        parts=tuple(parts or ()),
        tool_calls=tuple(ToolCall.of_openai(call) for call in tool_calls or ()),
        tool_call_id=tool_call_id,
    )


# ORM attribute name -> column name (`metadata_` is stored as `metadata`).
COLUMN_OF = columns_of(Message)
MUTABLE_COLUMNS = {
    attribute: column
    for attribute, column in COLUMN_OF.items()
    if attribute not in ("id", "conversation_id", "role", "created_at")
}
# A running reply's end, written only while it still runs: an outcome written twice (a retry
# after a dropped connection) or after the reply was ended elsewhere (cancelled, swept)
# changes nothing. Parameters are named apart from the columns (SQLAlchemy reserves those
# names in SET clauses).
FINISH_RUNNING = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id == bindparam("message_id"),
        _MESSAGES.c.status == MessageStatus.IN_PROGRESS,
    )
    .values({column: bindparam(f"new_{column}") for column in MUTABLE_COLUMNS.values()})
    .returning(_MESSAGES.c.id)
)
