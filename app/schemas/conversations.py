"""Conversation bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, Field, StrictBool, model_validator

from app.schemas.common import (
    Metadata,
    ModelName,
    Money,
    ProviderName,
    RequestBody,
    Schema,
    StorableText,
    UserId,
)
from app.schemas.content import Tools
from app.schemas.messages import MessageRead, ReplyTokens, Temperature, TopP

Title = Annotated[StorableText, Field(max_length=500)]
SystemPrompt = Annotated[StorableText, Field(max_length=100_000)]


class ConversationSettings(BaseModel):
    """What a conversation is created with, by a client or by an import."""

    title: Title | None = None
    metadata: Metadata = Field(default_factory=dict)
    provider: ProviderName | None = None
    model: ModelName | None = None
    system_prompt: SystemPrompt | None = None
    # Offered to the model on every turn that names no `tools` of its own.
    tools: Tools | None = None
    # Used by every turn that does not set its own.
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: ReplyTokens | None = None
    pinned: StrictBool = False


class ConversationCreate(RequestBody, ConversationSettings):
    user_id: UserId | None = None


class ConversationUpdate(RequestBody):
    """PATCH: only the fields present change; `null` clears a nullable field."""

    title: Title | None = None
    metadata: Metadata | None = None
    provider: ProviderName | None = None
    model: ModelName | None = None
    system_prompt: SystemPrompt | None = None
    tools: Tools | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: ReplyTokens | None = None
    archived: StrictBool | None = None
    pinned: StrictBool | None = None
    # Switch branches: the conversation continues from this message (a message that has
    # replies below it moves to the newest message of its branch).
    active_leaf_id: UUID | None = None

    @model_validator(mode="after")
    def _flags_and_leaf_not_cleared(self) -> ConversationUpdate:
        for name in ("archived", "pinned", "active_leaf_id"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` cannot be null")
        return self


class ConversationRead(Schema):
    id: UUID
    user_id: str
    title: str | None
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    provider: str | None
    model: str | None
    system_prompt: str | None
    tools: list[dict[str, Any]] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    # "user" when the user named it (never overwritten), "generated", or "first_message".
    title_source: str | None = None
    archived: bool = False
    pinned: bool = False
    active_leaf_id: UUID | None = None
    message_count: int
    total_tokens: int
    total_cost_usd: Money
    created_at: datetime
    updated_at: datetime


class ConversationDetail(ConversationRead):
    messages: list[MessageRead]
