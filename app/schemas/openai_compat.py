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
    model_validator,
)

from app.schemas.common import ModelName, StorableText
from app.schemas.messages import MAX_MESSAGE_CHARS, MAX_REPLY_TOKENS

MAX_MESSAGES = 1_000
MAX_STOP_SEQUENCES = 4


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do; known ones are strict.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    text: Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


MessageText = Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


class ChatMessageIn(_Request):
    """One message of the prompt: plain text, or a list of text parts joined in order."""

    # `developer` is what newer OpenAI models call the system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: MessageText | Annotated[list[TextPart], Field(min_length=1, max_length=100)] | None
    name: Annotated[str, Field(max_length=64)] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Request):
    include_usage: StrictBool = False
    # OpenAI pads its stream deltas against a side channel; ours never carry the padding.
    include_obfuscation: Literal[False] | None = None


JsonObject = dict[str, Any]
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


class ResponseFormat(BaseModel):
    """`{"type": "text" | "json_object" | "json_schema", ...}`; sent on exactly as received."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonObject | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("`json_schema` is required when `type` is 'json_schema'")
        return self


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
    tool_choice: Literal["none", "auto", "required"] | JsonObject | None = None
    tools: list[JsonObject] | None = None
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


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


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
    system_fingerprint: str | None = None
    service_tier: str | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


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
    system_fingerprint: str | None = None


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
