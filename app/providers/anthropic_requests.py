"""Requests to the Anthropic Messages API: a `ChatRequest` as its body. Top-level `system`,
alternating turns, `max_tokens`; OpenAI's tools, tool choices, tool calls and results, images,
PDFs, structured output and reasoning as the API's."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import anthropic
from anthropic.types import (
    ContentBlockParam,
    DocumentBlockParam,
    ImageBlockParam,
    MessageParam,
    MetadataParam,
    OutputConfigParam,
    ThinkingConfigParam,
    ToolChoiceAnyParam,
    ToolChoiceAutoParam,
    ToolChoiceParam,
    ToolChoiceToolParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)

from app.errors import UpstreamRejected
from app.providers.base import ChatMessage, ChatRequest, ContentPart, ToolCall

# OpenAI's `reasoning_effort` as an extended-thinking budget ("none": thinking disabled).
# Only the budget is sent, not `output_config.effort`: fewer models take `effort` than take a
# budget (Haiku 4.5 and Sonnet 4.5 refuse it), so sending both would refuse reasoning there.
# The budget is added to the reply's own limit, since thinking counts towards `max_tokens`.
THINKING_BUDGETS: Mapping[object, int] = {
    "minimal": 1024,  # the API's least
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32000,
    "max": 32000,
}
# OpenAI's `service_tier` -> the Messages API's: "default" is standard capacity only.
SERVICE_TIERS: Mapping[object, Literal["auto", "standard_only"]] = {
    "auto": "auto",
    "default": "standard_only",
}
_ImageType = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
_IMAGE_TYPES: frozenset[str] = frozenset(get_args(_ImageType))


def _refused(provider: str, detail: str) -> UpstreamRejected:
    """A prompt the Messages API cannot take, refused before it is sent (a 400)."""
    return UpstreamRejected(
        provider, 400, f"the {provider!r} provider cannot take {detail}", param="messages"
    )


# A turn's content while it is put together: plain text, or blocks once it has more.
_Item = str | ContentBlockParam


def to_anthropic_messages(
    messages: Sequence[ChatMessage], provider: str = "anthropic"
) -> list[MessageParam]:
    """Alternating user/assistant turns starting with the user, as the Messages API requires.

    Consecutive turns of one role are joined (text with a blank line: a failed reply leaves
    two user messages in a row); tool results become `tool_result` blocks of a user turn,
    ahead of its other content; assistant turns before the first user turn are left out;
    system messages inside the history become user text, since only the top-level `system`
    exists. A turn of text only is sent as a string, any other as content blocks.
    """
    turns: list[tuple[Literal["user", "assistant"], list[_Item]]] = []
    for message in messages:
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        if not turns and role == "assistant":
            continue
        items = _items_of(message, provider)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(items)
        else:
            turns.append((role, items))
    return [_message_of(role, items) for role, items in turns]


def _message_of(role: Literal["user", "assistant"], items: list[_Item]) -> MessageParam:
    if all(isinstance(item, str) for item in items):
        text = "\n\n".join(cast(list[str], items))
        if role == "user":
            return {"role": "user", "content": text}
        return {"role": "assistant", "content": text}
    blocks: list[ContentBlockParam] = [
        {"type": "text", "text": item} if isinstance(item, str) else item
        for item in items
        if item != ""  # the API refuses empty text blocks
    ]
    if role == "user":
        # The API wants a turn's tool results before anything else in it (stable sort).
        blocks.sort(key=lambda block: block["type"] != "tool_result")
        return {"role": "user", "content": blocks}
    return {"role": "assistant", "content": blocks}


def _items_of(message: ChatMessage, provider: str) -> list[_Item]:
    if message.role == "assistant":
        if not message.tool_calls and not message.reasoning_signature:
            return [message.content]
        items: list[_Item] = []
        if message.reasoning_signature:
            # Sent back as received (a tool-use loop with thinking needs it); reasoning
            # without the provider's signature cannot be, and is left out.
            items.append(
                {
                    "type": "thinking",
                    "thinking": message.reasoning or "",
                    "signature": message.reasoning_signature,
                }
            )
        items.append(message.content)
        items.extend(_tool_use_of(call, provider) for call in message.tool_calls)
        return items
    if message.role == "tool":
        if not message.tool_call_id:
            raise _refused(provider, "a tool result without the `tool_call_id` it answers")
        result: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            result["content"] = message.content
        return [result]
    if any(part.get("type") != "text" for part in message.parts):
        return [_block_of(part, provider) for part in message.parts]
    return [message.content]


def _tool_use_of(call: ToolCall, provider: str) -> ToolUseBlockParam:
    """A call the model made, its `input` parsed from the arguments' JSON text.

    Arguments that are not a JSON object are refused rather than replaced by `{}`: the model
    would be told it called the tool with something it never wrote.
    """
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise _refused(provider, f"tool call {call.id!r}: its arguments are not a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _block_of(part: ContentPart, provider: str) -> _Item:
    """One of OpenAI's content parts as the Messages API's block (text stays text)."""
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text") or "")
    if kind == "image_url":
        # OpenAI's `detail` has no counterpart: the API sizes images itself.
        url = str((part.get("image_url") or {}).get("url") or "")
        if url.startswith(("https://", "http://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        media_type, data = _data_url(url)
        if media_type not in _IMAGE_TYPES:
            raise _refused(
                provider, f"an image of type {media_type} (only JPEG, PNG, GIF and WebP)"
            )
        image: ImageBlockParam = {
            "type": "image",
            "source": {"type": "base64", "media_type": cast(_ImageType, media_type), "data": data},
        }
        return image
    if kind == "file":
        file = part.get("file") or {}
        if not file.get("file_data"):
            raise _refused(provider, "a file by `file_id` (send its `file_data`)")
        media_type, data = _data_url(str(file["file_data"]))
        if media_type != "application/pdf":
            raise _refused(provider, f"a file of type {media_type} (only PDF)")
        document: DocumentBlockParam = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        }
        if file.get("filename"):
            document["title"] = str(file["filename"])
        return document
    raise _refused(provider, f"a content part of type {kind!r}")


def _data_url(url: str) -> tuple[str, str]:
    """The media type and base64 payload of a `data:<type>;base64,...` URL."""
    header, comma, data = url.removeprefix("data:").partition(",")
    if not url.startswith("data:") or not comma or not header.endswith(";base64"):
        return "unknown", ""
    return header.removesuffix(";base64").lower(), data


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """What one request sends besides the model: the options translated to the API's."""

    messages: list[MessageParam]
    max_tokens: int
    system: str | anthropic.Omit
    stop_sequences: list[str] | anthropic.Omit
    metadata: MetadataParam | anthropic.Omit
    service_tier: Literal["auto", "standard_only"] | anthropic.Omit
    tools: list[ToolParam] | anthropic.Omit
    tool_choice: ToolChoiceParam | anthropic.Omit
    thinking: ThinkingConfigParam | anthropic.Omit
    output_config: OutputConfigParam | anthropic.Omit

    @classmethod
    def of(cls, provider: str, request: ChatRequest, default_max_tokens: int) -> MessagesRequest:
        """What `request` sends; a prompt the API cannot take is `UpstreamRejected` here."""
        options = request.options
        effort = options.get("reasoning_effort")
        budget = THINKING_BUDGETS.get(effort, 0)
        thinking: ThinkingConfigParam | anthropic.Omit = anthropic.omit
        if budget:
            thinking = {"type": "enabled", "budget_tokens": budget}
        elif effort == "none":
            thinking = {"type": "disabled"}
        if "thinking" in options:
            # Anthropic's own `thinking` (from /v1/messages): sent exactly, its budget already
            # inside the client's `max_tokens`, as the API counts it.
            thinking = cast(ThinkingConfigParam, dict(options["thinking"]))
        user = options.get("safety_identifier") or options.get("user")
        return cls(
            messages=to_anthropic_messages(request.messages, provider),
            max_tokens=(request.max_tokens or default_max_tokens) + budget,
            system=request.system_prompt or anthropic.omit,
            stop_sequences=list(request.stop) if request.stop else anthropic.omit,
            metadata={"user_id": str(user)} if user else anthropic.omit,
            service_tier=SERVICE_TIERS.get(options.get("service_tier"), anthropic.omit),
            tools=_tools_of(options.get("tools")),
            tool_choice=_tool_choice_of(options),
            thinking=thinking,
            output_config=_output_config_of(options.get("response_format")),
        )


def _tools_of(tools: object) -> list[ToolParam] | anthropic.Omit:
    """OpenAI's function tools as the API's tools (a function without parameters takes an
    empty object)."""
    if not tools:
        return anthropic.omit
    translated: list[ToolParam] = []
    for tool in cast(list[Mapping[str, Any]], tools):
        function = tool["function"]
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        param: ToolParam = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            param["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            param["strict"] = function["strict"]
        translated.append(param)
    return translated


def _tool_choice_of(options: Mapping[str, Any]) -> ToolChoiceParam | anthropic.Omit:
    """OpenAI's `tool_choice` and `parallel_tool_calls` as the API's one `tool_choice`
    (either without `tools` is refused before a turn starts, on every provider)."""
    choice = options.get("tool_choice")
    parallel = options.get("parallel_tool_calls")
    if choice is None and parallel is None:
        return anthropic.omit
    if choice == "none":
        return {"type": "none"}  # no calls, so none in parallel either
    translated: ToolChoiceAutoParam | ToolChoiceAnyParam | ToolChoiceToolParam
    if isinstance(choice, Mapping):
        translated = {"type": "tool", "name": str(choice["function"]["name"])}
    elif choice == "required":
        translated = {"type": "any"}
    else:
        translated = {"type": "auto"}
    if isinstance(parallel, bool):
        translated["disable_parallel_tool_use"] = not parallel
    return translated


def _output_config_of(response_format: object) -> OutputConfigParam | anthropic.Omit:
    """A `json_schema` response format as the API's structured output (the schema as sent:
    the API refuses one it cannot enforce, and that refusal reaches the client)."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return anthropic.omit
    schema = dict(response_format["json_schema"]["schema"])
    return {"format": {"type": "json_schema", "schema": schema}}
