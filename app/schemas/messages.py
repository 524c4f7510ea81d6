"""Message bodies: what a client sends for a turn and what it reads back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    model_validator,
)

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
from app.schemas.content import (
    MAX_MESSAGE_CHARS,
    MAX_TOOL_CALLS,
    ContentParts,
    ResponseFormat,
    ToolChoice,
    Tools,
)

MAX_REPLY_TOKENS = 128_000


# Generation settings, as a turn or a conversation gives them. Strict: JSON `true` or `"1"`
# is a wrong type (422), not a silently coerced 1.
Temperature = Annotated[StrictFloat | StrictInt, Field(ge=0, le=2, allow_inf_nan=False)]
TopP = Annotated[StrictFloat | StrictInt, Field(ge=0, le=1, allow_inf_nan=False)]
ReplyTokens = Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)]


class ToolResult(RequestBody):
    """The result of one of the previous reply's tool calls, sent back with the next turn."""

    tool_call_id: Annotated[StorableText, Field(min_length=1, max_length=255)]
    content: Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


class MessageCreate(RequestBody):
    """A turn: the user's message (text, or content parts with images and files), the results
    of the previous reply's tool calls, or both (results first); and what the reply may do."""

    content: (
        Annotated[
            Annotated[
                StorableText, Field(min_length=1, max_length=MAX_MESSAGE_CHARS), Tag("[text]")
            ]
            | Annotated[ContentParts, Tag("[parts]")],
            # Chosen by type, so a bad image is an error about that image, not also "Input
            # should be a valid string".
            Discriminator(lambda value: "[text]" if isinstance(value, str) else "[parts]"),
        ]
        | None
    ) = None
    tool_results: Annotated[list[ToolResult], Field(max_length=MAX_TOOL_CALLS)] = Field(
        default_factory=list
    )
    # Offered to the model this turn (else the conversation's `tools`); `[]` offers none.
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    provider: ProviderName | None = None
    model: ModelName | None = None
    # Strict: JSON `true` or `"1"` is a wrong type (422), not a silently coerced 1.
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: ReplyTokens | None = None
    # The message the user's message follows: another branch beside the message that
    # followed it (an edit); `null` starts a new first message. Left out: the active leaf.
    parent_id: UUID | None = None
    stream: StrictBool = False
    # Opt-in exact-match reply cache; honoured only with `temperature: 0`
    # (docs/api/limits-and-caching.md).
    cache: StrictBool = False
    metadata: Metadata = Field(default_factory=dict)

    @model_validator(mode="after")
    def _says_something(self) -> MessageCreate:
        if self.content is None and not self.tool_results:
            raise ValueError("a turn needs `content`, `tool_results` or both")
        return self


class RegenerateCreate(RequestBody):
    """A new reply beside an earlier one, to the same prompt: optionally from another
    provider or model, or with other settings; the earlier reply is kept (a sibling)."""

    provider: ProviderName | None = None
    model: ModelName | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: ReplyTokens | None = None
    stream: StrictBool = False
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    metadata: Metadata = Field(default_factory=dict)

    def as_turn(self) -> MessageCreate:
        """The turn it runs: these settings, no new message (checks already made here)."""
        return MessageCreate.model_construct(_fields_set=self.model_fields_set, **dict(self))


class ReplyPricing(Schema):
    """The rates (USD per million tokens) a reply was charged at, and where they came from."""

    input_per_mtok: Money
    cached_input_per_mtok: Money | None
    cache_write_per_mtok: Money | None
    # One-hour cache writes (Anthropic's `ttl: "1h"`); null: charged at `cache_write_per_mtok`.
    cache_write_1h_per_mtok: Money | None = None
    output_per_mtok: Money
    source: str | None


class MessageRead(Schema):
    id: UUID
    conversation_id: UUID
    # The message this one follows (null for a first message).
    parent_id: UUID | None = None
    # In listings and a conversation's detail only (left out elsewhere): this message and
    # the others that follow its parent (edits, regenerations), oldest first, so a UI can
    # show "2 / 3".
    sibling_ids: list[UUID] | None = Field(default=None, exclude_if=lambda value: value is None)
    role: MessageRole
    content: str
    # The whole content when it is more than text (images, files), as OpenAI's parts.
    parts: list[dict[str, Any]] | None = None
    # An assistant's function calls (OpenAI's `tool_calls` items); its finish_reason is then
    # `tool_calls`, and the next turn carries their results.
    tool_calls: list[dict[str, Any]] | None = None
    # A tool result's call.
    tool_call_id: str | None = None
    # The model's visible reasoning, where the provider returns it.
    reasoning: str | None = None
    status: MessageStatus
    provider: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    # Part of `cache_write_tokens`: written to a one-hour cache, at its own rate.
    cache_write_1h_tokens: int = 0
    # Part of `completion_tokens`: what the model spent thinking.
    reasoning_tokens: int = 0
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
