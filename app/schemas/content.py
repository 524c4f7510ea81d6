"""Message content beyond text, in OpenAI's shapes (both APIs take them as OpenAI sends them):
content parts (text, images, files), tool definitions, tool choice, tool calls and
response formats. Stored and handed to providers as the JSON the client sent (`wire`).
"""

from __future__ import annotations

import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

from app.schemas.common import StorableText, storable_json

MAX_MESSAGE_CHARS = 100_000
MAX_PARTS = 100
MAX_TOOLS = 128
MAX_TOOL_CALLS = 128
# A data URL's media type and base64 payload (RFC 2397 as OpenAI's image and file parts use it).
_DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
_FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


def _storable_json(value: Any) -> Any:
    return storable_json(
        value, what="a JSON value", max_depth=64, max_items=10_000, max_string=MAX_MESSAGE_CHARS
    )


# A client's JSON document (a tool's parameters schema, a response format's schema): stored
# and sent as is, so only what the database can store (no NUL, finite numbers) is taken.
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]


class _Shape(BaseModel):
    # Strict about what is known; what a newer client adds is kept and sent on as it came.
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _storable_extras(self) -> _Shape:
        if self.model_extra:
            _storable_json(self.model_extra)
        return self


def media_type_of(url: str) -> str | None:
    """The media type of a base64 data URL, or None when `url` is not one."""
    matched = _DATA_URL.fullmatch(url)
    return None if matched is None else matched["media_type"]


def _checked_data_url(url: str, kind: str) -> str:
    matched = _DATA_URL.fullmatch(url)
    if matched is None:
        raise ValueError(f"must be a base64 data URL (data:<media type>;base64,...) {kind}")
    try:
        binascii.a2b_base64(matched["data"], strict_mode=True)
    except binascii.Error:
        raise ValueError("the data URL's payload is not valid base64") from None
    return url


def _image_url(url: str) -> str:
    if url.startswith(("https://", "http://")):
        return url
    _checked_data_url(url, "or an http(s) URL")
    if not (media_type_of(url) or "").startswith("image/"):
        raise ValueError("an image's data URL must have an image/* media type")
    return url


class TextPart(_Shape):
    type: Literal["text"]
    text: Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


class ImageURL(_Shape):
    url: Annotated[StorableText, Field(min_length=1), AfterValidator(_image_url)]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Shape):
    type: Literal["image_url"]
    image_url: ImageURL


class FileData(_Shape):
    file_data: (
        Annotated[StorableText, AfterValidator(lambda v: _checked_data_url(v, ""))] | None
    ) = None
    file_id: Annotated[StorableText, Field(max_length=255)] | None = None
    filename: Annotated[StorableText, Field(max_length=255)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FileData:
        if self.file_data is None and self.file_id is None:
            raise ValueError("a file needs `file_data` or `file_id`")
        return self


class FilePart(_Shape):
    type: Literal["file"]
    file: FileData


ContentPart = Annotated[TextPart | ImagePart | FilePart, Field(discriminator="type")]
ContentParts = Annotated[list[ContentPart], Field(min_length=1, max_length=MAX_PARTS)]
TextParts = Annotated[list[TextPart], Field(min_length=1, max_length=MAX_PARTS)]


def text_of(content: str | list[Any] | None) -> str:
    """A message's text: the string, or its text parts joined in order."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text for part in content if isinstance(part, TextPart))


def stored_parts(content: str | list[Any] | None) -> list[JsonObject] | None:
    """The parts to store and send when the content is more than text, else None."""
    if not isinstance(content, list) or all(isinstance(p, TextPart) for p in content):
        return None
    return [wire(part) for part in content]


class FunctionDefinition(_Shape):
    name: Annotated[str, Field(pattern=_FUNCTION_NAME)]
    description: Annotated[StorableText, Field(max_length=16_384)] | None = None
    parameters: JsonObject | None = None
    strict: StrictBool | None = None


class ToolDefinition(_Shape):
    """A function the model may call (OpenAI's `tools` item)."""

    type: Literal["function"]
    function: FunctionDefinition


Tools = Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)]


class FunctionName(_Shape):
    name: Annotated[str, Field(pattern=_FUNCTION_NAME)]


class NamedToolChoice(_Shape):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(_Shape):
    name: Annotated[str, Field(pattern=_FUNCTION_NAME)]
    # JSON text as the model wrote it: kept as is, even when it is not valid JSON.
    arguments: Annotated[StorableText, Field(max_length=MAX_MESSAGE_CHARS)]


class ToolCallIn(_Shape):
    """An assistant message's call, as a client sends history back."""

    id: Annotated[StorableText, Field(min_length=1, max_length=255)]
    type: Literal["function"]
    function: FunctionCall


ToolCalls = Annotated[list[ToolCallIn], Field(min_length=1, max_length=MAX_TOOL_CALLS)]


class ResponseFormat(_Shape):
    """`{"type": "text" | "json_object" | "json_schema", ...}`; sent on exactly as received."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonObject | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema":
            if not self.json_schema or not isinstance(self.json_schema.get("name"), str):
                raise ValueError("`json_schema` with a `name` is required for type 'json_schema'")
        return self


def tools_of(tools: list[ToolDefinition] | None) -> list[JsonObject] | None:
    return None if tools is None else [wire(tool) for tool in tools]


def wire(value: BaseModel) -> JsonObject:
    """A shape as the JSON the client sent (fields it left out stay out)."""
    return value.model_dump(mode="json", exclude_unset=True)
