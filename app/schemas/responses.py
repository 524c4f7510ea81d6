"""OpenAI's Responses API bodies (`/v1/responses`), as OpenAI's SDKs send and read them.

`ResponseCreate` declares the fields of OpenAI's create call; the turn translates them to the
service's Chat Completions turn (`services.turns.responses`), where each one is sent, mapped
or refused with a 400 naming it. Fields it does not declare are refused by name, never
ignored. Input items are checked one by one there, so an error names `input.<n>`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from app.schemas.common import ModelName, StorableText
from app.schemas.content import MAX_MESSAGE_CHARS, JsonObject
from app.schemas.messages import MAX_REPLY_TOKENS
from app.schemas.openai_compat import RequestMetadata

MAX_INPUT_ITEMS = 1_000
RESPONSE_PREFIX = "resp_"

InputText = Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


class ResponseTextFormat(BaseModel):
    """`text.format`: plain text, a JSON object, or a named JSON schema."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(max_length=64)] | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None
    description: StorableText | None = None


class ResponseText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: ResponseTextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponseReasoning(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    # Summaries are written by OpenAI's models; asking for one elsewhere is refused by name.
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseStreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # OpenAI pads its stream deltas against a side channel; ours never carry the padding.
    include_obfuscation: Literal[False] | None = None


class ResponseCreate(BaseModel):
    """`POST /v1/responses`. Every field OpenAI documents is declared; any other is kept in
    `model_extra` and refused by name."""

    model_config = ConfigDict(extra="allow")

    model: ModelName
    input: InputText | Annotated[list[JsonObject], Field(min_length=1, max_length=MAX_INPUT_ITEMS)]
    instructions: InputText | None = None
    previous_response_id: Annotated[str, Field(max_length=255)] | None = None
    tools: Annotated[list[JsonObject], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | JsonObject | None = None
    parallel_tool_calls: StrictBool | None = None
    temperature: Annotated[StrictFloat | StrictInt, Field(ge=0, le=2)] | None = None
    top_p: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] | None = None
    max_output_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)] | None = None
    text: ResponseText | None = None
    reasoning: ResponseReasoning | None = None
    metadata: RequestMetadata | None = None
    user: Annotated[StorableText, Field(min_length=1, max_length=255)] | None = None
    store: StrictBool | None = None
    stream: StrictBool | None = False
    stream_options: ResponseStreamOptions | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    background: StrictBool | None = None
    conversation: str | JsonObject | None = None
    prompt: JsonObject | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    safety_identifier: Annotated[StorableText, Field(min_length=1, max_length=64)] | None = None
    prompt_cache_key: Annotated[StorableText, Field(min_length=1, max_length=512)] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    max_tool_calls: StrictInt | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True


class ResponseItemList(BaseModel):
    """`GET /v1/responses/{id}/input_items`: one page of a response's input items."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str
    last_id: str
    has_more: bool
