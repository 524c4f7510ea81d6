"""Message bodies: what a client sends for a turn and what it reads back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from app.db.models import MessageRole, MessageStatus
from app.schemas.common import (
    Metadata,
    ModelName,
    Money,
    ProviderName,
    RequestBody,
    Schema,
    StorableText,
)

MAX_MESSAGE_CHARS = 100_000
MAX_REPLY_TOKENS = 128_000


class MessageCreate(RequestBody):
    content: Annotated[StorableText, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]
    provider: ProviderName | None = None
    model: ModelName | None = None
    # Strict: JSON `true` or `"1"` is a wrong type (422), not a silently coerced 1.
    temperature: Annotated[StrictFloat, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)] | None = None
    stream: StrictBool = False
    # Opt-in exact-match reply cache; honoured only with `temperature: 0`
    # (docs/api/limits-and-caching.md).
    cache: StrictBool = False
    metadata: Metadata = Field(default_factory=dict)


class ReplyPricing(Schema):
    """The rates (USD per million tokens) a reply was charged at, and where they came from."""

    input_per_mtok: Money
    cached_input_per_mtok: Money | None
    cache_write_per_mtok: Money | None
    output_per_mtok: Money
    source: str | None


class MessageRead(Schema):
    id: UUID
    conversation_id: UUID
    role: MessageRole
    content: str
    status: MessageStatus
    provider: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cost_usd: Money | None
    pricing: ReplyPricing | None = Field(default=None, validation_alias="reply_pricing")
    latency_ms: int | None
    time_to_first_token_ms: int | None
    finish_reason: str | None
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    created_at: datetime


class TokenUsage(Schema):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TurnResult(Schema):
    """The 201 body of a completed turn (and, later, the data of the SSE `done` event)."""

    message: MessageRead
    conversation_id: UUID
    usage: TokenUsage
    cost_usd: Money | None

    @classmethod
    def of(cls, reply: Any) -> TurnResult:
        """The body for a stored reply (a `Message` row): its usage and cost are its own."""
        return cls(
            message=MessageRead.model_validate(reply),
            conversation_id=reply.conversation_id,
            usage=TokenUsage(
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                total_tokens=reply.total_tokens,
            ),
            cost_usd=reply.cost_usd,
        )
