"""The stored domain: conversations, their messages, and feedback on either."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, CreatedAtMixin, IdMixin, JSONDocument, utcnow


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"  # a function's result, answering an assistant's tool call


class MessageStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FeedbackType(StrEnum):
    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"
    RATING = "rating"
    COMMENT = "comment"


def constrained(enum: type[StrEnum], name: str) -> Enum:
    """A VARCHAR with a CHECK constraint: portable, and adding a value is a small migration."""
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Conversation(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "conversations"

    user_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(500))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    provider: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(255))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    # Tools (OpenAI's `tools` items) offered to the model on every turn that names none.
    tools: Mapped[list[Any] | None] = mapped_column(JSONDocument)
    # Generation settings every turn uses unless it names its own.
    temperature: Mapped[float | None]
    top_p: Mapped[float | None]
    max_tokens: Mapped[int | None]
    # Who named it: "user" (never overwritten), "generated" (TITLE_MODEL), "first_message"
    # (/v1's first user message); null when untitled.
    title_source: Mapped[str | None] = mapped_column(String(16))
    # The message the conversation continues from: the end of the branch shown and extended.
    active_leaf_id: Mapped[uuid.UUID | None]
    archived: Mapped[bool] = mapped_column(default=False, server_default=false())
    pinned: Mapped[bool] = mapped_column(default=False, server_default=false())
    message_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # BIGINT: a long-lived conversation can pass 2^31 tokens in total.
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    total_cost_usd: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(Message.created_at, Message.id)",
    )

    __table_args__ = (
        # Listing: a user's conversations, newest first, keyset on (created_at, id).
        Index("ix_conversations_user_id_created_at_id", "user_id", "created_at", "id"),
        # An admin listing across users walks the same order without a sort.
        Index("ix_conversations_created_at_id", "created_at", "id"),
        CheckConstraint("message_count >= 0", name="message_count_non_negative"),
        CheckConstraint("total_tokens >= 0", name="total_tokens_non_negative"),
    )


class Message(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "messages"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    # The message this one follows (null: a first message): messages form a tree whose
    # branches are edits and regenerations. No foreign key: a parent is always inserted
    # before or with its child, in the same conversation, and goes with it.
    parent_id: Mapped[uuid.UUID | None]
    # Set on messages brought in by an import ("chat-api", "chatgpt"): no provider was called
    # here for them, so usage reports leave them out.
    imported_from: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[MessageRole] = mapped_column(constrained(MessageRole, "message_role"))
    content: Mapped[str] = mapped_column(Text, default="")
    # The whole content when it is more than text (images, files), as OpenAI's content parts;
    # null for text-only messages, whose `content` is all of it.
    parts: Mapped[list[Any] | None] = mapped_column(JSONDocument)
    # An assistant message's function calls, as OpenAI's `tool_calls` items.
    tool_calls: Mapped[list[Any] | None] = mapped_column(JSONDocument)
    # A tool message's answer to: the id of the call it carries the result of.
    tool_call_id: Mapped[str | None] = mapped_column(String(255))
    # The model's visible reasoning (thinking), and the provider's signature over it.
    reasoning: Mapped[str | None] = mapped_column(Text)
    status: Mapped[MessageStatus] = mapped_column(constrained(MessageStatus, "message_status"))
    provider: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(255))
    prompt_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    completion_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    cached_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    total_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    cache_write_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # The part of `cache_write_tokens` written to a one-hour cache (priced apart).
    cache_write_1h_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # The part of `completion_tokens` the model spent reasoning (priced at the output rate).
    reasoning_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    cost_usd: Mapped[Decimal | None] = mapped_column(default=Decimal(0))
    # The rates (USD per million tokens) this reply was charged at, so a bill can be explained
    # after prices change; null when no price was known.
    input_price_per_mtok: Mapped[Decimal | None]
    cached_input_price_per_mtok: Mapped[Decimal | None]
    cache_write_price_per_mtok: Mapped[Decimal | None]
    cache_write_1h_price_per_mtok: Mapped[Decimal | None]
    output_price_per_mtok: Mapped[Decimal | None]
    price_source: Mapped[str | None] = mapped_column(String(64))

    @property
    def reply_pricing(self) -> dict[str, Any] | None:
        """The stored rates as one object for the API, or `None` when the reply was unpriced."""
        if self.input_price_per_mtok is None or self.output_price_per_mtok is None:
            return None
        return {
            "input_per_mtok": self.input_price_per_mtok,
            "cached_input_per_mtok": self.cached_input_price_per_mtok,
            "cache_write_per_mtok": self.cache_write_price_per_mtok,
            "cache_write_1h_per_mtok": self.cache_write_1h_price_per_mtok,
            "output_per_mtok": self.output_price_per_mtok,
            "source": self.price_source,
        }

    latency_ms: Mapped[int | None]
    time_to_first_token_ms: Mapped[int | None]
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # Touched whenever a generation flushes its partial text: an `in_progress` reply that has
    # not been touched for a while belongs to a process that died.
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)
    # The process generating an `in_progress` reply (its `GenerationLease`): once that lease
    # lapses, no live process owns the reply and the sweep ends it. Null for rows written
    # before leases existed; those are judged by `updated_at` alone.
    generation_owner: Mapped[uuid.UUID | None]

    conversation: Mapped[Conversation] = relationship(back_populates="messages")

    __table_args__ = (
        # History: a conversation's messages in order, keyset on (created_at, id).
        Index("ix_messages_conversation_id_created_at_id", "conversation_id", "created_at", "id"),
        # A message's siblings: the other children of its parent.
        Index("ix_messages_conversation_id_parent_id", "conversation_id", "parent_id"),
        CheckConstraint(
            "prompt_tokens >= 0 AND completion_tokens >= 0 AND cached_tokens >= 0"
            " AND total_tokens >= 0",
            name="token_counts_non_negative",
        ),
        CheckConstraint("cost_usd IS NULL OR cost_usd >= 0", name="cost_non_negative"),
        # One generation per conversation at a time, claimed by the insert itself.
        Index(
            "uq_messages_one_generation_per_conversation",
            "conversation_id",
            unique=True,
            postgresql_where=text("status = 'in_progress' AND role = 'assistant'"),
            sqlite_where=text("status = 'in_progress' AND role = 'assistant'"),
        ),
        # Start-up recovery finds replies left running by a dead process.
        Index(
            "ix_messages_in_progress_updated_at",
            "updated_at",
            postgresql_where=text("status = 'in_progress'"),
            sqlite_where=text("status = 'in_progress'"),
        ),
    )


class GenerationLease(Base):
    """A serving process's claim to the replies it generates, renewed every few seconds.

    A process that stops renewing (killed, partitioned from the database) owns nothing once
    its lease is older than `GENERATION_LEASE_SECONDS`: its running replies are failed.
    """

    __tablename__ = "generation_leases"

    owner_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(IdMixin, CreatedAtMixin, Base):
    __tablename__ = "feedback"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE")
    )
    type: Mapped[FeedbackType] = mapped_column(constrained(FeedbackType, "feedback_type"))
    rating: Mapped[int | None]
    comment: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_feedback_conversation_id_created_at_id", "conversation_id", "created_at", "id"),
        # Deleting a message cascades here; this index keeps that delete from scanning.
        Index("ix_feedback_message_id", "message_id"),
        CheckConstraint(
            "(type = 'rating' AND rating BETWEEN 1 AND 5)"
            " OR (type <> 'rating' AND (rating IS NULL OR rating BETWEEN 1 AND 5))",
            name="rating_in_range",
        ),
    )


class UserMonthlyUsage(Base):
    """What each user spent per calendar month (UTC): the budget check reads one row.

    Changed only by `SET x = x + :delta` in the transaction that completes a reply.
    """

    __tablename__ = "user_monthly_usage"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "2026-11"
    requests: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    cost_usd: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default=text("0"))
    # Conversation titles generated for the user (TITLE_MODEL): spend of its own kind, kept
    # apart so `requests` and `cost_usd` stay the sum of the user's replies; the budget
    # counts both.
    # Server defaults only: a Python default is rendered as a bound value into the reply's
    # charge (`INSERT ... SELECT` in a CTE), where it arrives as NULL.
    title_requests: Mapped[int] = mapped_column(server_default=text("0"))
    title_cost_usd: Mapped[Decimal] = mapped_column(server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (CheckConstraint("cost_usd >= 0", name="usage_cost_non_negative"),)


class ApiKey(IdMixin, CreatedAtMixin, Base):
    """A key issued by `python -m app.cli keys create`; only its SHA-256 hash is stored."""

    __tablename__ = "api_keys"

    user_id: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    name: Mapped[str | None] = mapped_column(String(255))
    # The key's first characters, shown in listings so an operator can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_api_keys_user_id", "user_id"),)


class IdempotencyStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class IdempotencyKey(CreatedAtMixin, Base):
    """A claimed `Idempotency-Key`: the request it was first used for, then its stored response.

    Claimed by one `INSERT ... ON CONFLICT`; replaced only once `expires_at` has passed.
    """

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 hex
    status: Mapped[IdempotencyStatus] = mapped_column(
        constrained(IdempotencyStatus, "idempotency_status")
    )
    response_status: Mapped[int | None]
    response_body: Mapped[dict[str, Any] | None]
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)
