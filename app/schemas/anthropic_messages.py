"""Anthropic's Messages API bodies, as the `anthropic` SDKs and Claude-based tools send and
read them (`POST /v1/messages`, `POST /v1/messages/count_tokens`).

Requests are strict: a field Anthropic's API lacks is a 400 naming it, never ignored. Which
provider honours which option is decided per turn (`services.turns.anthropic_messages`).
Responses carry every field the SDK's types declare.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
)

from app.schemas.common import ModelName, StorableText
from app.schemas.content import MAX_MESSAGE_CHARS, JsonObject
from app.schemas.messages import MAX_REPLY_TOKENS
from app.schemas.openai_compat import MAX_MESSAGES, MAX_STOP_SEQUENCES

MAX_BLOCKS = 200
MAX_TOOLS = 128


class _Strict(BaseModel):
    # Anthropic's API refuses unknown fields; so do we (a silently dropped option lies).
    model_config = ConfigDict(extra="forbid")


BlockText = Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


class CacheControl(_Strict):
    """A prompt-caching breakpoint: sent to Claude on the block it marks, accepted and not sent
    on other providers (OpenAI caches by itself), never stored (docs/api/anthropic-messages.md;
    `providers.base.CacheBreak`). More than 4 in a request is a 400, as at Anthropic."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlockIn(_Strict):
    type: Literal["text"]
    text: BlockText
    cache_control: CacheControl | None = None
    # Citations point into documents and search results, which are refused: none can be sent.
    citations: Annotated[list[JsonObject], Field(max_length=0)] | None = None


class Base64ImageSource(_Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: Annotated[str, Field(min_length=1)]


class URLImageSource(_Strict):
    type: Literal["url"]
    url: Annotated[StorableText, Field(min_length=1, pattern=r"^https?://")]


class ImageBlockIn(_Strict):
    type: Literal["image"]
    source: Annotated[Base64ImageSource | URLImageSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class Base64PDFSource(_Strict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: Annotated[str, Field(min_length=1)]


class DocumentBlockIn(_Strict):
    """A PDF, sent as a file part (Anthropic's `document` block again on the way to Claude)."""

    type: Literal["document"]
    source: Base64PDFSource
    title: Annotated[StorableText, Field(max_length=255)] | None = None
    cache_control: CacheControl | None = None


ToolUseId = Annotated[StorableText, Field(min_length=1, max_length=255)]


class ToolUseBlockIn(_Strict):
    type: Literal["tool_use"]
    id: ToolUseId
    name: Annotated[str, Field(min_length=1, max_length=128)]
    input: JsonObject
    cache_control: CacheControl | None = None


class ToolResultBlockIn(_Strict):
    type: Literal["tool_result"]
    tool_use_id: ToolUseId
    content: BlockText | Annotated[list[TextBlockIn], Field(max_length=MAX_BLOCKS)] | None = None
    # Sent to the model as a prefix of the result's text: our tool messages have no flag.
    is_error: StrictBool | None = None
    cache_control: CacheControl | None = None

    @property
    def text(self) -> str:
        content = self.content
        text = content if isinstance(content, str) else "".join(b.text for b in content or ())
        return f"Error: {text}" if self.is_error else text


class ThinkingBlockIn(_Strict):
    type: Literal["thinking"]
    thinking: BlockText
    signature: Annotated[str, Field(max_length=100_000)]


ContentBlockIn = Annotated[
    TextBlockIn
    | ImageBlockIn
    | DocumentBlockIn
    | ToolUseBlockIn
    | ToolResultBlockIn
    | ThinkingBlockIn,
    Field(discriminator="type"),
]


class MessageParam(_Strict):
    role: Literal["user", "assistant"]
    content: BlockText | Annotated[list[ContentBlockIn], Field(min_length=1, max_length=MAX_BLOCKS)]


class ToolIn(_Strict):
    """A client tool (`input_schema`); Anthropic's server tools (`type: web_search_...`) are
    refused by the `type` literal."""

    type: Literal["custom"] | None = None
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")]
    description: Annotated[StorableText, Field(max_length=16_384)] | None = None
    input_schema: JsonObject
    cache_control: CacheControl | None = None
    strict: StrictBool | None = None


class ToolChoiceAuto(_Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceAny(_Strict):
    type: Literal["any"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceTool(_Strict):
    type: Literal["tool"]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceNone(_Strict):
    type: Literal["none"]


ToolChoiceIn = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


ThinkingDisplay = Literal["summarized", "omitted"]


class ThinkingEnabled(_Strict):
    type: Literal["enabled"]
    budget_tokens: Annotated[StrictInt, Field(ge=1024, le=MAX_REPLY_TOKENS)]
    display: ThinkingDisplay | None = None


class ThinkingAdaptive(_Strict):
    """The model decides how much to think (on providers without it: their default)."""

    type: Literal["adaptive"]
    display: ThinkingDisplay | None = None


class ThinkingDisabled(_Strict):
    type: Literal["disabled"]


ThinkingIn = Annotated[
    ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled, Field(discriminator="type")
]


class JSONOutputFormat(_Strict):
    """Structured output: the reply is JSON valid for `schema` (sent on as given)."""

    type: Literal["json_schema"]
    # Read and written by its wire name: `schema` would shadow a BaseModel method.
    schema_: Annotated[JsonObject, Field(alias="schema")]


class OutputConfig(_Strict):
    """Anthropic's `output_config`, exactly the SDK's `OutputConfigParam`: on Claude sent as
    given; elsewhere `effort` is `reasoning_effort` and `format` a json_schema
    `response_format` (`services.turns.anthropic_messages`)."""

    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JSONOutputFormat | None = None


class Metadata(_Strict):
    user_id: Annotated[StorableText, Field(max_length=255)] | None = None


class MessageCountTokens(_Strict):
    """`POST /v1/messages/count_tokens`: the prompt part of a create body."""

    model: ModelName
    messages: Annotated[list[MessageParam], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: BlockText | Annotated[list[TextBlockIn], Field(max_length=MAX_BLOCKS)] | None = None
    tools: Annotated[list[ToolIn], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoiceIn | None = None
    thinking: ThinkingIn | None = None
    # Anthropic's count_tokens takes it too; checked against the provider as a create's is.
    output_config: OutputConfig | None = None


class MessageCreate(MessageCountTokens):
    """`POST /v1/messages`: every field of Anthropic's create body this service can route."""

    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)]
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    stop_sequences: (
        Annotated[
            list[Annotated[StorableText, Field(min_length=1, max_length=256)]],
            Field(max_length=MAX_STOP_SEQUENCES),
        ]
        | None
    ) = None
    stream: StrictBool | None = False
    temperature: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] | None = None
    top_k: Annotated[StrictInt, Field(ge=1)] | None = None
    top_p: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] | None = None


# Responses: the SDK's `Message` and its blocks.


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str
    citations: None = None


class ThinkingBlock(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class CacheCreation(BaseModel):
    """Cache writes by lifetime (they are priced apart)."""

    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class Usage(BaseModel):
    """Tokens as Anthropic counts them: `input_tokens` excludes cache reads and writes."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation: CacheCreation | None = None
    service_tier: Literal["standard", "priority", "batch"] | None = None


class Message(BaseModel):
    """The `message` object; `id` is `msg_<stored reply id, hex>`."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ContentBlock]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """What every `/v1/messages` error looks like, as Anthropic's SDKs parse it."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
    request_id: str | None = None


def anthropic_error_body(type_: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    body = AnthropicErrorBody(error=AnthropicErrorDetail(type=type_, message=message))
    return body.model_dump(exclude_none=True) | ({"request_id": request_id} if request_id else {})
