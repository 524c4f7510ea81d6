"""Unsaved ORM objects as the column values a Core INSERT takes."""

from __future__ import annotations

import uuid
from decimal import Decimal

from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.db.rows import column_values, columns_of, with_defaults


def test_defaults_fill_only_what_was_never_set() -> None:
    message = Message(conversation_id=uuid.uuid4(), role=MessageRole.USER, content="hi")
    with_defaults(message)
    assert message.content == "hi"
    assert message.metadata_ == {}
    assert message.total_tokens == 0
    assert isinstance(message.id, uuid.UUID)
    assert message.created_at is not None


def test_each_default_is_made_per_object_not_shared() -> None:
    first, second = with_defaults(Message()), with_defaults(Message())
    assert first.id != second.id
    assert first.metadata_ is not second.metadata_  # a callable default, called each time


def test_column_values_are_what_the_orm_reads_keyed_by_column() -> None:
    for row in (
        with_defaults(Message(role=MessageRole.ASSISTANT, status=MessageStatus.IN_PROGRESS)),
        with_defaults(Conversation(user_id="alice", total_cost_usd=Decimal("0.5"))),
        Message(content="never defaulted: unset columns are None"),
    ):
        read = {column: getattr(row, attr) for attr, column in columns_of(type(row)).items()}
        assert column_values(row) == read
    assert "metadata" in column_values(Message())  # the column's name, not `metadata_`
