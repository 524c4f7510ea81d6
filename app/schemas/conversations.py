"""Conversation bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field

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
from app.schemas.messages import MessageRead

Title = Annotated[StorableText, Field(max_length=500)]
SystemPrompt = Annotated[StorableText, Field(max_length=100_000)]


class ConversationCreate(RequestBody):
    title: Title | None = None
    metadata: Metadata = Field(default_factory=dict)
    provider: ProviderName | None = None
    model: ModelName | None = None
    system_prompt: SystemPrompt | None = None
    # Offered to the model on every turn that names no `tools` of its own.
    tools: Tools | None = None
    user_id: UserId | None = None


class ConversationUpdate(RequestBody):
    """PATCH: only the fields present change; `null` clears a nullable field."""

    title: Title | None = None
    metadata: Metadata | None = None
    provider: ProviderName | None = None
    model: ModelName | None = None
    system_prompt: SystemPrompt | None = None
    tools: Tools | None = None


class ConversationRead(Schema):
    id: UUID
    user_id: str
    title: str | None
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    provider: str | None
    model: str | None
    system_prompt: str | None
    tools: list[dict[str, Any]] | None = None
    message_count: int
    total_tokens: int
    total_cost_usd: Money
    created_at: datetime
    updated_at: datetime


class ConversationDetail(ConversationRead):
    messages: list[MessageRead]
