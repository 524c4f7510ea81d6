"""OpenAI's Chat Completions and Models bodies, as OpenAI's SDKs send and read them.

Requests accept the fields this service honours and ignore the rest (clients such as
LangChain send `presence_penalty`, `logprobs: false` and the like by default), so any
OpenAI client works unchanged; responses carry every field the SDKs' types declare.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

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


class ChatCompletionCreate(_Request):
    """`POST /v1/chat/completions`: the subset of OpenAI's body this service serves."""

    model: ModelName
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    temperature: Annotated[StrictFloat | StrictInt, Field(ge=0, le=2)] | None = None
    top_p: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)] | None = None
    stop: (
        Annotated[StorableText, Field(min_length=1, max_length=256)]
        | Annotated[
            list[Annotated[StorableText, Field(min_length=1, max_length=256)]],
            Field(max_length=MAX_STOP_SEQUENCES),
        ]
        | None
    ) = None
    n: Annotated[StrictInt, Field(ge=1, le=1)] | None = None
    user: Annotated[StorableText, Field(min_length=1, max_length=255)] | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None

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
