"""OpenAI's Chat Completions and Models bodies, as OpenAI's SDKs send and read them.

`ChatCompletionCreate` declares every field of OpenAI's create call (openai-python's
`CompletionCreateParams`); which provider honours which is decided per turn
(`services.turns.request_options`): each is sent, mapped, stored or refused with a 400 naming it,
never ignored. Responses carry every field the SDKs' types declare.
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
    TypeAdapter,
    model_validator,
)

from app.schemas.common import ModelName, StorableText
from app.schemas.content import (
    MAX_MESSAGE_CHARS,
    ContentParts,
    JsonObject,
    ResponseFormat,
    TextParts,
    ToolCalls,
    ToolChoice,
    Tools,
    text_of,
)
from app.schemas.messages import MAX_REPLY_TOKENS

MAX_MESSAGES = 1_000
MAX_STOP_SEQUENCES = 4


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do; known ones are strict.
    model_config = ConfigDict(extra="ignore")


MessageText = Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


class ChatMessageIn(_Request):
    """One message of the prompt: text, or content parts (images and files only from the
    user); an assistant's `tool_calls`; a tool result's `tool_call_id`."""

    # `developer` is what newer OpenAI models call the system message.
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: MessageText | ContentParts | None = None
    name: Annotated[str, Field(max_length=64)] | None = None
    tool_calls: ToolCalls | None = None
    tool_call_id: Annotated[StorableText, Field(min_length=1, max_length=255)] | None = None

    @model_validator(mode="after")
    def _fits_role(self) -> ChatMessageIn:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a `tool` message needs the `tool_call_id` it answers")
        if self.role != "tool" and self.tool_call_id is not None:
            raise ValueError("only a `tool` message has a `tool_call_id`")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an `assistant` message has `tool_calls`")
        if self.role != "user" and isinstance(self.content, list):
            TextPartsOnly.validate_python(self.content)
        return self

    @property
    def text(self) -> str:
        return text_of(self.content)


class StreamOptions(_Request):
    include_usage: StrictBool = False
    # OpenAI pads its stream deltas against a side channel; ours never carry the padding.
    include_obfuscation: Literal[False] | None = None


# Only text parts: what system, developer, assistant and tool messages may hold.
TextPartsOnly: TypeAdapter[list[Any]] = TypeAdapter(TextParts)
Penalty = Annotated[StrictFloat | StrictInt, Field(ge=-2, le=2)]
ShortText = Annotated[StorableText, Field(min_length=1, max_length=512)]
# OpenAI's `metadata`: at most 16 pairs, keys up to 64 characters, values up to 512.
RequestMetadata = Annotated[
    dict[
        Annotated[StorableText, Field(max_length=64)],
        Annotated[StorableText, Field(max_length=512)],
    ],
    Field(max_length=16),
]


class ChatCompletionCreate(_Request):
    """`POST /v1/chat/completions`: every field of OpenAI's body, checked as OpenAI checks it.

    Fields no provider knows are kept in `model_extra`: an OpenAI-compatible server receives
    them as sent (vLLM's `top_k`, say); any other provider refuses them.
    """

    model_config = ConfigDict(extra="allow")

    model: ModelName
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    audio: JsonObject | None = None
    frequency_penalty: Penalty | None = None
    function_call: Literal["none", "auto"] | JsonObject | None = None
    functions: list[JsonObject] | None = None
    logit_bias: (
        dict[Annotated[str, Field(max_length=16)], Annotated[StrictInt, Field(ge=-100, le=100)]]
        | None
    ) = None
    logprobs: StrictBool | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)] | None = None
    metadata: RequestMetadata | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    moderation: JsonObject | None = None
    n: Annotated[StrictInt, Field(ge=1, le=1)] | None = None
    parallel_tool_calls: StrictBool | None = None
    prediction: JsonObject | None = None
    presence_penalty: Penalty | None = None
    prompt_cache_key: ShortText | None = None
    prompt_cache_options: JsonObject | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    response_format: ResponseFormat | None = None
    safety_identifier: Annotated[StorableText, Field(min_length=1, max_length=64)] | None = None
    seed: StrictInt | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    stop: (
        Annotated[StorableText, Field(min_length=1, max_length=256)]
        | Annotated[
            list[Annotated[StorableText, Field(min_length=1, max_length=256)]],
            Field(max_length=MAX_STOP_SEQUENCES),
        ]
        | None
    ) = None
    store: StrictBool | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[StrictFloat | StrictInt, Field(ge=0, le=2)] | None = None
    tool_choice: ToolChoice | None = None
    tools: Tools | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    top_p: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] | None = None
    user: Annotated[StorableText, Field(min_length=1, max_length=255)] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: JsonObject | None = None

    @property
    def reply_token_limit(self) -> int | None:
        """`max_completion_tokens` is the current name; `max_tokens` the deprecated one."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails = Field(
        default_factory=CompletionTokensDetails
    )


OpenAIFinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


def _is_none(value: object) -> bool:
    return value is None


def omitted_when_null() -> Any:
    """A response field OpenAI leaves out when it has no value: its schema types it as an
    array or a string, never null, so `null` would fail clients that validate."""
    return Field(default=None, exclude_if=_is_none)


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    # Null when the reply is only tool calls, as OpenAI sends it.
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = omitted_when_null()
    # A reasoning server's visible thinking (vLLM, DeepSeek: `reasoning_content`).
    reasoning_content: str | None = omitted_when_null()


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: OpenAIFinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    """The `chat.completion` object; `id` is `chatcmpl-<stored reply id>`."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = omitted_when_null()
    service_tier: str | None = omitted_when_null()


class ChunkFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunctionCall


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: OpenAIFinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One `chat.completion.chunk` of a stream; the usage chunk has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = omitted_when_null()


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """What every /v1 error looks like, as OpenAI's SDKs parse it."""

    error: OpenAIErrorDetail


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return OpenAIErrorBody(
        error=OpenAIErrorDetail(message=message, type=type_, param=param, code=code)
    ).model_dump()
