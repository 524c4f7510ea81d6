"""Stored replies as Anthropic's Messages API shows them: the `message` object, its blocks,
stop reason and usage (shared by `/v1/messages` bodies and its stream's events)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from app.schemas.anthropic_messages import (
    CacheCreation,
    ContentBlock,
    Message,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)
from app.schemas.messages import MessageRead, TurnResult

MESSAGE_ID_PREFIX = "msg_"
_STOP_REASONS: dict[str, StopReason] = {
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def message_id(reply_id: UUID) -> str:
    """Anthropic's id for a message: the stored reply's id, so the two can be matched."""
    return f"{MESSAGE_ID_PREFIX}{reply_id.hex}"


def stop_reason_of(finish_reason: str | None) -> StopReason:
    """A stored finish reason in Anthropic's terms (a cancelled reply simply ended)."""
    return _STOP_REASONS.get(finish_reason or "", "end_turn")


def usage_of(reply: MessageRead) -> Usage:
    """Anthropic counts input without cache reads and writes; ours includes them."""
    cached, written = reply.cached_tokens, reply.cache_write_tokens
    return Usage(
        input_tokens=max(reply.prompt_tokens - cached - written, 0),
        output_tokens=reply.completion_tokens,
        cache_read_input_tokens=cached,
        cache_creation_input_tokens=written,
        cache_creation=CacheCreation(
            ephemeral_5m_input_tokens=written - reply.cache_write_1h_tokens,
            ephemeral_1h_input_tokens=reply.cache_write_1h_tokens,
        ),
    )


def signature_of(reply: MessageRead) -> str:
    signature = reply.metadata.get("reasoning_signature")
    return signature if isinstance(signature, str) else ""


def tool_input_of(arguments: str) -> dict[str, Any]:
    """A stored call's arguments as `input`; text that is no JSON object is kept under
    `_raw` rather than dropped (a model may write invalid JSON)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def content_of(reply: MessageRead) -> list[ContentBlock]:
    """A stored reply's blocks in Anthropic's order: thinking, text, tool uses."""
    blocks: list[ContentBlock] = []
    if reply.reasoning:
        blocks.append(ThinkingBlock(thinking=reply.reasoning, signature=signature_of(reply)))
    if reply.content or not reply.tool_calls:
        blocks.append(TextBlock(text=reply.content))
    for call in reply.tool_calls or ():
        function = call.get("function") or {}
        blocks.append(
            ToolUseBlock(
                id=str(call.get("id") or ""),
                name=str(function.get("name") or ""),
                input=tool_input_of(str(function.get("arguments") or "")),
            )
        )
    return blocks


def message_of(result: TurnResult) -> Message:
    """A finished turn as Anthropic's `message` object."""
    reply = result.message
    return Message(
        id=message_id(reply.id),
        content=content_of(reply),
        model=reply.model or "",
        stop_reason=stop_reason_of(reply.finish_reason),
        usage=usage_of(reply),
    )
