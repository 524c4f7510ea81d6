"""Anthropic's Messages API on the service's turn engine: a `/v1/messages` body becomes the
OpenAI-shaped turn `/v1/chat/completions` runs (same validation, option checks, storage and
charging); the reply is shown as Anthropic's `Message` (`anthropic_replies`).

Only what OpenAI's shape cannot say is carried past it: a thinking budget reaches a provider
that honours Anthropic's `thinking` (Anthropic) exactly, thinking blocks sent back ride on
the assistant messages as reasoning and signature, and `cache_control` breakpoints ride on
the messages, system prompt and tools they mark (`CacheBreak`: only the Claude adapter sends
them, and they are never stored).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from app.providers.base import SYSTEM_JOINER, CacheBreak, ChatMessage, ChatRequest
from app.providers.context import counter_for, prompt_tokens
from app.providers.options import option_support_of
from app.providers.registry import ModelChoice
from app.schemas.anthropic_messages import (
    CacheControl,
    DocumentBlockIn,
    ImageBlockIn,
    Message,
    MessageCountTokens,
    MessageCreate,
    MessageParam,
    OutputConfig,
    TextBlockIn,
    ThinkingBlockIn,
    ThinkingEnabled,
    TokenCount,
    ToolResultBlockIn,
    ToolUseBlockIn,
)
from app.schemas.messages import TurnResult
from app.schemas.openai_compat import ChatCompletionCreate
from app.services.turns.anthropic_replies import message_of
from app.services.turns.chat_completions import plan_turn
from app.services.turns.prompt_turns import PromptTurn
from app.services.turns.request_options import InvalidChatRequest, TurnOptions

# Anthropic's own thinking option, for a provider that honours it (see ANTHROPIC_OPTIONS).
NATIVE_THINKING = "thinking"
# Anthropic's own `output_config` (effort, structured output), likewise.
NATIVE_OUTPUT_CONFIG = "output_config"
# The `json_schema.name` an `output_config.format` goes out under: OpenAI requires a name,
# Anthropic's format has none, and a fixed one keeps the same schema the same request (a
# name made from the schema would change the prompt the model sees for no reason).
OUTPUT_FORMAT_NAME = "output"
# A thinking budget as `reasoning_effort` for providers without budgets: the band it is in.
EFFORT_BANDS: tuple[tuple[int, str], ...] = ((4096, "low"), (16384, "medium"))
EFFORT_ABOVE_BANDS = "high"
# Anthropic refuses a request with more `cache_control` blocks than this; so do we, first.
MAX_CACHE_BREAKPOINTS = 4


def effort_of(budget_tokens: int) -> str:
    """The `reasoning_effort` band a thinking budget falls in (documented in the API page)."""
    for ceiling, effort in EFFORT_BANDS:
        if budget_tokens < ceiling:
            return effort
    return EFFORT_ABOVE_BANDS


def _honours(choice: ModelChoice, name: str, value: object) -> bool:
    return option_support_of(choice.provider).honours(name, value)


def plan_message_turn(
    choice: ModelChoice, body: MessageCountTokens, conversation_id: UUID | None
) -> PromptTurn:
    """The turn a `/v1/messages` body asks for; a 400 naming the first field `choice`'s
    provider cannot honour, before anything is stored."""
    _refuse_too_many_breakpoints(body)
    wire, extras, marks = _openai_body(choice, body)
    try:
        chat = ChatCompletionCreate.model_validate(wire)
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        raise InvalidChatRequest(loc, first["msg"]) from None
    turn = plan_turn(choice, chat, conversation_id)
    options = turn.options
    if extras:
        # Checked above by `_honours`: only a provider that takes them gets here with them.
        options = TurnOptions({**options.requested, **extras}, options.unknown)
    reasoned = _with_reasoning(turn.messages, body.messages)
    # One OpenAI message per wire message but the system one, in order: each takes its own.
    marked = tuple(
        dataclasses.replace(message, cache_breaks=breaks) if breaks else message
        for message, breaks in zip(reasoned, marks.messages, strict=True)
    )
    user_id = body.metadata.user_id if isinstance(body, MessageCreate) and body.metadata else None
    return dataclasses.replace(
        turn,
        messages=marked,
        new_messages=marked,
        options=options,
        system_cache_breaks=marks.system,
        tool_cache_breaks=marks.tools,
        # `metadata.user_id` is the provider's end-user id, never the conversation's owner.
        owner=None,
        metadata={"user_id": user_id} if user_id else None,
    )


@dataclass(frozen=True, slots=True)
class _Breakpoints:
    """Where a body's `cache_control`s fall once it is OpenAI-shaped (`CacheBreak`): in the
    system text, on tools, and per OpenAI message (one entry each, system left out)."""

    system: tuple[CacheBreak, ...]
    tools: tuple[CacheBreak, ...]
    messages: list[tuple[CacheBreak, ...]]


def _break(at: int, control: CacheControl, *, tool_call: bool = False) -> CacheBreak:
    return CacheBreak(at, control.ttl, tool_call)


def _refuse_too_many_breakpoints(body: MessageCountTokens) -> None:
    """More `cache_control` blocks than Anthropic takes is a 400 naming the field, worded as
    Anthropic's (on every provider: the body is Anthropic's, and so is its limit)."""
    controls = [block.cache_control for block in _system_blocks(body)]
    controls += [tool.cache_control for tool in body.tools or ()]
    for message in body.messages:
        for block in () if isinstance(message.content, str) else message.content:
            controls.append(getattr(block, "cache_control", None))
            if isinstance(block, ToolResultBlockIn) and isinstance(block.content, list):
                controls += [inner.cache_control for inner in block.content]
    found = sum(control is not None for control in controls)
    if found > MAX_CACHE_BREAKPOINTS:
        raise InvalidChatRequest(
            "cache_control",
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}.",
        )


def _system_blocks(body: MessageCountTokens) -> list[TextBlockIn]:
    return [] if body.system is None or isinstance(body.system, str) else body.system


def _system_of(body: MessageCountTokens) -> tuple[str, tuple[CacheBreak, ...]]:
    """The system prompt as one text (blocks joined as every system prompt is), and where
    each marked block ends in it."""
    if isinstance(body.system, str) or body.system is None:
        return body.system or "", ()
    breaks: list[CacheBreak] = []
    end = 0
    for index, block in enumerate(body.system):
        end += (len(SYSTEM_JOINER) if index else 0) + len(block.text)
        if block.cache_control is not None:
            breaks.append(_break(end, block.cache_control))
    return SYSTEM_JOINER.join(block.text for block in body.system), tuple(breaks)


def _openai_body(
    choice: ModelChoice, body: MessageCountTokens
) -> tuple[dict[str, Any], dict[str, Any], _Breakpoints]:
    """The body as `/v1/chat/completions` takes it, the options sent under Anthropic's names
    (they pass the provider's check here, or are left for `turn_options` to refuse), and its
    breakpoints (which OpenAI's shape cannot carry)."""
    messages: list[dict[str, Any]] = []
    system, system_breaks = _system_of(body)
    if system:
        messages.append({"role": "system", "content": system})
    message_breaks: list[tuple[CacheBreak, ...]] = []
    for message in body.messages:
        for openai_message, breaks in _openai_messages(message):
            messages.append(openai_message)
            message_breaks.append(breaks)
    wire: dict[str, Any] = {"model": body.model, "messages": messages}
    extras: dict[str, Any] = {}
    tool_breaks: tuple[CacheBreak, ...] = ()
    if body.tools:
        wire["tools"] = [_openai_tool(tool.model_dump(exclude_none=True)) for tool in body.tools]
        tool_breaks = tuple(
            _break(index, tool.cache_control)
            for index, tool in enumerate(body.tools)
            if tool.cache_control is not None
        )
    if body.tool_choice is not None:
        choice_type = body.tool_choice.type
        wire["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
            "tool": {
                "type": "function",
                "function": {"name": getattr(body.tool_choice, "name", "")},
            },
        }[choice_type]
        if getattr(body.tool_choice, "disable_parallel_tool_use", None) is True:
            wire["parallel_tool_calls"] = False
    if body.thinking is not None:
        thinking = body.thinking.model_dump(exclude_none=True)
        if _honours(choice, NATIVE_THINKING, thinking):
            extras[NATIVE_THINKING] = thinking
        elif getattr(body.thinking, "display", None) == "omitted":
            raise InvalidChatRequest(
                "thinking.display", f"the {choice.provider.name!r} provider cannot omit thinking"
            )
        elif isinstance(body.thinking, ThinkingEnabled):
            wire["reasoning_effort"] = effort_of(body.thinking.budget_tokens)
        # "adaptive" (the model decides) and "disabled" are other providers' own default.
    if body.output_config is not None:
        _output_config(choice, body.output_config, wire, extras)
    if isinstance(body, MessageCreate):
        _create_options(body, wire)
    return wire, extras, _Breakpoints(system_breaks, tool_breaks, message_breaks)


def _output_config(
    choice: ModelChoice, config: OutputConfig, wire: dict[str, Any], extras: dict[str, Any]
) -> None:
    """`output_config` exactly as sent to a provider that honours Anthropic's; elsewhere its
    `format` as a json_schema `response_format` and its `effort` as `reasoning_effort` (the
    same five words), each a 400 naming it where the provider cannot honour it."""
    # As the client gave it: fields it left out stay out, a null it sent stays null.
    given = config.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if _honours(choice, NATIVE_OUTPUT_CONFIG, given):
        extras[NATIVE_OUTPUT_CONFIG] = given
        return
    provider = choice.provider.name
    if config.format is not None:
        schema = given["format"]["schema"]
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": OUTPUT_FORMAT_NAME, "schema": schema},
        }
        if not _honours(choice, "response_format", response_format):
            raise InvalidChatRequest(
                "output_config.format", f"the {provider!r} provider cannot honour it"
            )
        wire["response_format"] = response_format
    if config.effort is not None:
        if not _honours(choice, "reasoning_effort", config.effort):
            raise InvalidChatRequest(
                "output_config.effort",
                f"the {provider!r} provider does not support effort {config.effort!r}",
            )
        # The effort asked for outright wins over a thinking budget's band (set above).
        wire["reasoning_effort"] = config.effort


def _create_options(body: MessageCreate, wire: dict[str, Any]) -> None:
    wire["max_tokens"] = body.max_tokens
    if (
        isinstance(body.thinking, ThinkingEnabled)
        and body.thinking.budget_tokens >= body.max_tokens
    ):
        # Thinking counts towards `max_tokens`: a budget as large leaves no room to answer.
        raise InvalidChatRequest("thinking.budget_tokens", "must be less than `max_tokens`")
    for name in ("temperature", "top_p"):
        if (value := getattr(body, name)) is not None:
            wire[name] = value
    if body.stop_sequences:
        wire["stop"] = body.stop_sequences
    if body.metadata is not None and body.metadata.user_id:
        wire["user"] = body.metadata.user_id
    if body.service_tier is not None:
        wire["service_tier"] = "auto" if body.service_tier == "auto" else "default"
    if body.top_k is not None:
        # No field of OpenAI's, nor of the pinned Messages API's: an OpenAI-compatible server
        # (vLLM) takes it as its own; every other provider refuses it, naming `top_k`.
        wire["top_k"] = body.top_k


def _openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    if "strict" in tool:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _openai_messages(message: MessageParam) -> list[tuple[dict[str, Any], tuple[CacheBreak, ...]]]:
    """One Anthropic turn as OpenAI messages, each with its breakpoints: a user turn's tool
    results become `tool` messages ahead of its text and images; an assistant turn's tool
    uses its `tool_calls`."""
    if isinstance(message.content, str):
        return [({"role": message.role, "content": message.content}, ())]
    if message.role == "assistant":
        texts = [b for b in message.content if isinstance(b, TextBlockIn)]
        uses = [b for b in message.content if isinstance(b, ToolUseBlockIn)]
        text = "".join(b.text for b in texts)
        breaks = [*_text_breaks(texts), *_use_breaks(uses)]
        calls = [
            {
                "id": b.id,
                "type": "function",
                "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)},
            }
            for b in uses
        ]
        assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            assistant["tool_calls"] = calls
        return [(assistant, tuple(breaks))]
    out: list[tuple[dict[str, Any], tuple[CacheBreak, ...]]] = [
        (
            {"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text},
            _result_breaks(b),
        )
        for b in message.content
        if isinstance(b, ToolResultBlockIn)
    ]
    blocks = [
        b for b in message.content if isinstance(b, TextBlockIn | ImageBlockIn | DocumentBlockIn)
    ]
    if blocks:
        out.append(
            ({"role": "user", "content": [_openai_part(b) for b in blocks]}, _part_breaks(blocks))
        )
    refused = [b.type for b in message.content if isinstance(b, ToolUseBlockIn | ThinkingBlockIn)]
    if refused:
        raise InvalidChatRequest("messages", f"a user turn cannot hold a {refused[0]} block")
    return out


def _text_breaks(blocks: list[TextBlockIn]) -> list[CacheBreak]:
    """Where each marked block ends in the blocks' text, joined as `text_of` joins it."""
    breaks: list[CacheBreak] = []
    end = 0
    for block in blocks:
        end += len(block.text)
        if block.cache_control is not None:
            breaks.append(_break(end, block.cache_control))
    return breaks


def _use_breaks(uses: list[ToolUseBlockIn]) -> list[CacheBreak]:
    return [
        _break(index, use.cache_control, tool_call=True)
        for index, use in enumerate(uses)
        if use.cache_control is not None
    ]


def _result_breaks(result: ToolResultBlockIn) -> tuple[CacheBreak, ...]:
    """A result's breakpoint, or those on text blocks inside it: one block upstream."""
    inner = result.content if isinstance(result.content, list) else []
    controls = [result.cache_control, *(block.cache_control for block in inner)]
    return tuple(_break(0, control) for control in controls if control is not None)


def _part_breaks(
    blocks: list[TextBlockIn | ImageBlockIn | DocumentBlockIn],
) -> tuple[CacheBreak, ...]:
    """A user message's breakpoints: by part, or, when it is text only (it keeps no parts,
    as `stored_parts` decides), by where each marked block ends in its text."""
    texts = [b for b in blocks if isinstance(b, TextBlockIn)]
    if len(texts) == len(blocks):
        return tuple(_text_breaks(texts))
    return tuple(
        _break(index, block.cache_control)
        for index, block in enumerate(blocks)
        if block.cache_control is not None
    )


def _openai_part(block: TextBlockIn | ImageBlockIn | DocumentBlockIn) -> dict[str, Any]:
    if isinstance(block, TextBlockIn):
        return {"type": "text", "text": block.text}
    if isinstance(block, DocumentBlockIn):
        file = {"file_data": f"data:application/pdf;base64,{block.source.data}"}
        return {"type": "file", "file": file | ({"filename": block.title} if block.title else {})}
    source = block.source
    url = source.url if source.type == "url" else f"data:{source.media_type};base64,{source.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _with_reasoning(
    prompt: tuple[ChatMessage, ...], sent: list[MessageParam]
) -> tuple[ChatMessage, ...]:
    """`prompt`'s assistant messages with the thinking blocks the client sent back in theirs
    (in order: one OpenAI assistant message per Anthropic assistant turn)."""
    thoughts = [
        None
        if isinstance(m.content, str)
        else next((b for b in m.content if isinstance(b, ThinkingBlockIn)), None)
        for m in sent
        if m.role == "assistant"
    ]
    out: list[ChatMessage] = []
    for message in prompt:
        if message.role == "assistant" and thoughts:
            thought = thoughts.pop(0)
            if thought is not None:
                message = dataclasses.replace(
                    message, reasoning=thought.thinking, reasoning_signature=thought.signature
                )
        out.append(message)
    return tuple(out)


def count_message_tokens(choice: ModelChoice, body: MessageCountTokens) -> TokenCount:
    """The prompt's tokens as the service counts them for `choice` (the same count that
    fits a prompt to the model's window); nothing is sent or stored."""
    turn = plan_message_turn(choice, body, None)
    request = ChatRequest(
        model=choice.model,
        messages=turn.messages,
        system_prompt=turn.system_prompt,
        options=turn.options.sent,
        system_cache_breaks=turn.system_cache_breaks,
        tool_cache_breaks=turn.tool_cache_breaks,
    )
    count = counter_for(choice.provider.name, choice.model)
    return TokenCount(input_tokens=prompt_tokens(request, count))


@dataclass(frozen=True, slots=True)
class CompletedMessage:
    message: Message
    conversation_id: UUID


def completed_message(result: TurnResult) -> CompletedMessage:
    """A finished turn as `/v1/messages` answers it."""
    return CompletedMessage(message_of(result), result.conversation_id)
