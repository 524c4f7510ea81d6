"""Requests to the Anthropic Messages API: a `ChatRequest` as its body. Top-level `system`,
alternating turns, `max_tokens`; OpenAI's tools, tool choices, tool calls and results, images,
PDFs, structured output and reasoning as the API's; the client's prompt-caching breakpoints
(`CacheBreak`) as `cache_control` on the blocks they mark."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import anthropic
from anthropic.types import (
    CacheControlEphemeralParam,
    ContentBlockParam,
    DocumentBlockParam,
    ImageBlockParam,
    MessageParam,
    MetadataParam,
    OutputConfigParam,
    TextBlockParam,
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
from app.providers.base import (
    SYSTEM_JOINER,
    CacheBreak,
    ChatMessage,
    ChatRequest,
    ContentPart,
    ToolCall,
    by_place,
    text_pieces,
)

# OpenAI's `reasoning_effort` as an extended-thinking budget ("none": thinking disabled).
# Only the budget is sent, not `output_config.effort`: fewer models take `effort` than take a
# budget (Haiku 4.5 and Sonnet 4.5 refuse it), so sending both would refuse reasoning there.
# The budget is added to the reply's own limit, since thinking counts towards `max_tokens`.
# (A /v1/messages client's own `output_config.effort` is sent as it came: it chose the model.)
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
    exists. A turn of text only is sent as a string, any other as content blocks; a
    breakpoint makes its block a content block with `cache_control` (never joined to
    another, so the cached prefix ends where the client marked it).
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


def _cache_control(mark: CacheBreak) -> CacheControlEphemeralParam:
    control: CacheControlEphemeralParam = {"type": "ephemeral"}
    if mark.ttl is not None:
        control["ttl"] = mark.ttl
    return control


def _text_items(text: str, breaks: tuple[CacheBreak, ...], joiner: str = "") -> list[_Item]:
    """`text` as one plain item, or cut where its breakpoints end blocks: each marked piece a
    text block with its `cache_control`. `joiner` joined the client's blocks into `text`:
    it is left out at the start of a piece that follows a cut."""
    marks = [mark for mark in breaks if not mark.tool_call]
    if not marks:
        return [text]
    items: list[_Item] = []
    for index, (piece, mark) in enumerate(text_pieces(text, marks)):
        if index and joiner:
            piece = piece.removeprefix(joiner)
        if mark is None:
            items.append(piece)
        else:
            block: TextBlockParam = {
                "type": "text",
                "text": piece,
                "cache_control": _cache_control(mark),
            }
            items.append(block)
    return items


def _items_of(message: ChatMessage, provider: str) -> list[_Item]:
    breaks = message.cache_breaks
    if message.role == "assistant":
        if not message.tool_calls and not message.reasoning_signature:
            return _text_items(message.content, breaks)
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
        items.extend(_text_items(message.content, breaks))
        calls = by_place(mark for mark in breaks if mark.tool_call)
        items.extend(
            _tool_use_of(call, provider, calls.get(index))
            for index, call in enumerate(message.tool_calls)
        )
        return items
    if message.role == "tool":
        if not message.tool_call_id:
            raise _refused(provider, "a tool result without the `tool_call_id` it answers")
        result: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            result["content"] = message.content
        if breaks:
            # One block: any breakpoint on a tool message (the client's may be on a text
            # block inside its result) marks the result.
            [mark] = by_place(CacheBreak(0, m.ttl) for m in breaks).values()
            result["cache_control"] = _cache_control(mark)
        return [result]
    if message.parts and (breaks or any(part.get("type") != "text" for part in message.parts)):
        marks = by_place(breaks)
        return [
            _block_of(part, provider, marks.get(index)) for index, part in enumerate(message.parts)
        ]
    return _text_items(message.content, breaks)


def _tool_use_of(call: ToolCall, provider: str, mark: CacheBreak | None) -> ToolUseBlockParam:
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
    block: ToolUseBlockParam = {
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": arguments,
    }
    if mark is not None:
        block["cache_control"] = _cache_control(mark)
    return block


def _block_of(part: ContentPart, provider: str, mark: CacheBreak | None = None) -> _Item:
    """One of OpenAI's content parts as the Messages API's block (text stays text unless a
    breakpoint marks it)."""
    kind = part.get("type")
    if kind == "text":
        text = str(part.get("text") or "")
        if mark is None:
            return text
        marked: TextBlockParam = {
            "type": "text",
            "text": text,
            "cache_control": _cache_control(mark),
        }
        return marked
    if kind == "image_url":
        # OpenAI's `detail` has no counterpart: the API sizes images itself.
        url = str((part.get("image_url") or {}).get("url") or "")
        image: ImageBlockParam
        if url.startswith(("https://", "http://")):
            image = {"type": "image", "source": {"type": "url", "url": url}}
            if mark is not None:
                image["cache_control"] = _cache_control(mark)
            return image
        media_type, data = _data_url(url)
        if media_type not in _IMAGE_TYPES:
            raise _refused(
                provider, f"an image of type {media_type} (only JPEG, PNG, GIF and WebP)"
            )
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": cast(_ImageType, media_type), "data": data},
        }
        if mark is not None:
            image["cache_control"] = _cache_control(mark)
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
        if mark is not None:
            document["cache_control"] = _cache_control(mark)
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
    system: str | list[TextBlockParam] | anthropic.Omit
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
            system=_system_of(request),
            stop_sequences=list(request.stop) if request.stop else anthropic.omit,
            metadata={"user_id": str(user)} if user else anthropic.omit,
            service_tier=SERVICE_TIERS.get(options.get("service_tier"), anthropic.omit),
            tools=_tools_of(options.get("tools"), request.tool_cache_breaks),
            tool_choice=_tool_choice_of(options),
            thinking=thinking,
            output_config=_merged_output_config(options),
        )


def _system_of(request: ChatRequest) -> str | list[TextBlockParam] | anthropic.Omit:
    """The system prompt as a string, or as text blocks where the client marked some (each
    block that ends a marked prefix carries its `cache_control`)."""
    if not request.system_prompt:
        return anthropic.omit
    if not request.system_cache_breaks:
        return request.system_prompt
    blocks: list[TextBlockParam] = []
    # The joiner between the client's blocks is left out again where a breakpoint cuts.
    for item in _text_items(request.system_prompt, request.system_cache_breaks, SYSTEM_JOINER):
        if isinstance(item, str):
            if item:  # the API refuses empty text blocks
                blocks.append({"type": "text", "text": item})
        elif item["type"] == "text":
            blocks.append(item)
    return blocks


def _tools_of(tools: object, breaks: tuple[CacheBreak, ...]) -> list[ToolParam] | anthropic.Omit:
    """OpenAI's function tools as the API's tools (a function without parameters takes an
    empty object); a tool the client marked carries its `cache_control`."""
    if not tools:
        return anthropic.omit
    marks = by_place(breaks)
    translated: list[ToolParam] = []
    for index, tool in enumerate(cast(list[Mapping[str, Any]], tools)):
        function = tool["function"]
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        param: ToolParam = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            param["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            param["strict"] = function["strict"]
        if (mark := marks.get(index)) is not None:
            param["cache_control"] = _cache_control(mark)
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


def _merged_output_config(options: Mapping[str, Any]) -> OutputConfigParam | anthropic.Omit:
    """Anthropic's own `output_config` (from /v1/messages) exactly as the client sent it, over
    what `response_format` becomes: its fields win, so one format is ever sent."""
    derived = _output_config_of(options.get("response_format"))
    if "output_config" not in options:
        return derived
    given = cast(OutputConfigParam, dict(options["output_config"]))
    return given if isinstance(derived, anthropic.Omit) else {**derived, **given}


def _output_config_of(response_format: object) -> OutputConfigParam | anthropic.Omit:
    """A `json_schema` response format as the API's structured output (the schema as sent:
    the API refuses one it cannot enforce, and that refusal reaches the client)."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return anthropic.omit
    schema = dict(response_format["json_schema"]["schema"])
    return {"format": {"type": "json_schema", "schema": schema}}
