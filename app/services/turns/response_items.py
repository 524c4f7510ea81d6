"""Responses API items and tools, both ways: a request's `input` items as Chat Completions
messages (the service's own turn shape), and stored messages back as input items.

Each item is checked here so a refusal names `input.<n>` (and the part) as the client sent
it; anything this service cannot carry to a provider is a 400, never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from app.providers.base import ChatMessage
from app.schemas.content import MAX_MESSAGE_CHARS, JsonObject
from app.services.turns.request_options import InvalidChatRequest

Text = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class _Item(BaseModel):
    # Every field an SDK sends back with an item it received is declared; others are refused.
    model_config = ConfigDict(extra="forbid")


class InputText(_Item):
    type: Literal["input_text", "output_text"]
    text: Text
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputFile(_Item):
    type: Literal["input_file"]
    file_data: str | None = None
    filename: str | None = None


Part = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


class MessageItem(_Item):
    type: Literal["message"] = "message"
    id: str | None = None
    status: str | None = None
    role: Literal["user", "system", "developer", "assistant"]
    content: Text | Annotated[list[Part], Field(min_length=1, max_length=100)]


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    id: str | None = None
    status: str | None = None
    call_id: Annotated[str, Field(min_length=1, max_length=255)]
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    arguments: Text


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    id: str | None = None
    status: str | None = None
    call_id: Annotated[str, Field(min_length=1, max_length=255)]
    output: Text | Annotated[list[InputText], Field(min_length=1)]


_ITEMS: dict[str, TypeAdapter[Any]] = {
    "message": TypeAdapter(MessageItem),
    "function_call": TypeAdapter(FunctionCallItem),
    "function_call_output": TypeAdapter(FunctionCallOutputItem),
}


def chat_messages_of(instructions: str | None, input_: str | list[JsonObject]) -> list[Any]:
    """The Chat Completions messages a Responses `instructions` and `input` ask for: a
    system message, then one message per input item, consecutive function calls joined
    into one assistant message (their `tool_calls`)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(input_, str):
        return [*messages, {"role": "user", "content": input_}]
    for position, raw in enumerate(input_):
        item = _parsed(position, raw)
        if isinstance(item, MessageItem):
            messages.append(_message_of(position, item))
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            output = item.output if isinstance(item.output, str) else _joined(item.output)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return messages


def _parsed(
    position: int, raw: JsonObject
) -> MessageItem | FunctionCallItem | FunctionCallOutputItem:
    kind = raw.get("type", "message")
    adapter = _ITEMS.get(kind) if isinstance(kind, str) else None
    if adapter is None:
        raise InvalidChatRequest(
            f"input.{position}.type", f"input items of type {kind!r} are not supported"
        )
    try:
        item: MessageItem | FunctionCallItem | FunctionCallOutputItem = adapter.validate_python(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(
            str(part) for part in first["loc"] if not str(part).startswith(("list[", "str"))
        )
        raise InvalidChatRequest(f"input.{position}.{where}".rstrip("."), first["msg"]) from None
    return item


def _joined(parts: Sequence[InputText]) -> str:
    return "".join(part.text for part in parts)


def _message_of(position: int, item: MessageItem) -> dict[str, Any]:
    if isinstance(item.content, str):
        return {"role": item.role, "content": item.content}
    if item.role != "user":
        if any(not isinstance(part, InputText) for part in item.content):
            raise InvalidChatRequest(
                f"input.{position}.content", f"a {item.role} message holds only text"
            )
        return {"role": item.role, "content": _joined(item.content)}  # type: ignore[arg-type]
    return {
        "role": "user",
        "content": [_part_of(position, i, p) for i, p in enumerate(item.content)],
    }


def _part_of(position: int, index: int, part: InputText | InputImage | InputFile) -> dict[str, Any]:
    where = f"input.{position}.content.{index}"
    if isinstance(part, InputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if part.image_url is None:
            raise InvalidChatRequest(f"{where}.file_id", "images are sent as `image_url`")
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if part.file_data is None:
        raise InvalidChatRequest(f"{where}.file_id", "files are sent as `file_data`")
    file: dict[str, Any] = {"file_data": part.file_data}
    if part.filename is not None:
        file["filename"] = part.filename
    return {"type": "file", "file": file}


def chat_tools_of(tools: Sequence[JsonObject]) -> list[dict[str, Any]]:
    """Responses' flat function tools as Chat Completions' nested ones; built-in tools
    (web search, file search, ...) are refused by position."""
    chat_tools: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise InvalidChatRequest(
                f"tools.{position}.type",
                f"only function tools are supported, not {tool.get('type')!r}",
            )
        unknown = set(tool) - {"type", "name", "description", "parameters", "strict"}
        if unknown:
            raise InvalidChatRequest(f"tools.{position}.{min(unknown)}", "is not supported")
        function = {k: v for k, v in tool.items() if k != "type" and v is not None}
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def chat_tool_choice_of(choice: str | JsonObject) -> Any:
    """`{"type": "function", "name": ...}` as Chat Completions names a function."""
    if isinstance(choice, str):
        return choice
    if choice.get("type") != "function" or set(choice) != {"type", "name"}:
        raise InvalidChatRequest("tool_choice", "only none, auto, required or a function")
    return {"type": "function", "function": {"name": choice["name"]}}


def input_items_of(stored: Sequence[tuple[UUID, ChatMessage]]) -> list[dict[str, Any]]:
    """Stored messages as the input items they were sent as (ids from the stored rows)."""
    items: list[dict[str, Any]] = []
    for message_id, message in stored:
        if message.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "id": f"fco_{message_id.hex}",
                    "call_id": message.tool_call_id or "",
                    "output": message.content,
                    "status": "completed",
                }
            )
            continue
        if message.role == "assistant":
            if message.content:
                items.append(_stored_message(message_id, "assistant", message.content, ()))
            items.extend(
                function_call_items(message_id, [call.as_openai() for call in message.tool_calls])
            )
            continue
        items.append(_stored_message(message_id, message.role, message.content, message.parts))
    return items


def _stored_message(
    message_id: UUID, role: str, content: str, parts: Sequence[Any]
) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    content_parts = [_input_part(part) for part in parts] or [{"type": kind, "text": content}]
    if kind == "output_text":
        content_parts = [{**part, "annotations": []} for part in content_parts]
    return {
        "type": "message",
        "id": f"msg_{message_id.hex}",
        "role": role,
        "content": content_parts,
        "status": "completed",
    }


def _input_part(part: Any) -> dict[str, Any]:
    if part.get("type") == "image_url":
        image = part.get("image_url", {})
        return {
            "type": "input_image",
            "image_url": image.get("url"),
            "detail": image.get("detail") or "auto",
        }
    if part.get("type") == "file":
        return {"type": "input_file", **part.get("file", {})}
    return {"type": "input_text", "text": part.get("text", "")}


def function_call_items(
    reply_id: UUID, calls: Sequence[dict[str, Any]], *, status: str = "completed"
) -> list[dict[str, Any]]:
    """A reply's tool calls (OpenAI chat `tool_calls` JSON) as `function_call` items."""
    return [
        {
            "type": "function_call",
            "id": function_call_id(reply_id, index),
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
            "status": status,
        }
        for index, call in enumerate(calls)
    ]


def function_call_id(reply_id: UUID, index: int) -> str:
    """A call's item id: the reply's, and its place among the reply's calls."""
    return f"fc_{reply_id.hex}_{index}"
