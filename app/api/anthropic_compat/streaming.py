"""A server-owned reply's event log as Anthropic's Messages stream.

`message_start`, then per content block `content_block_start`, its deltas (`thinking_delta`
and `signature_delta`, `text_delta`, `input_json_delta`) and `content_block_stop`, then
`message_delta` (stop reason, usage) and `message_stop`; keep-alives are `ping` events. The
reply runs as a generation of the server; this only reads its log, so a client that leaves
stops nothing and the reply is still stored and charged once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi.sse import format_sse_event

from app.api.anthropic_compat.errors import anthropic_status_of
from app.schemas.anthropic_messages import Message, Usage, anthropic_error_body
from app.schemas.messages import TurnResult
from app.services.streaming.streams import StreamItem
from app.services.turns.anthropic_replies import message_id, stop_reason_of, usage_of


def _event(name: str, data: dict[str, Any]) -> bytes:
    return format_sse_event(event=name, data_str=json.dumps({"type": name, **data}))


@dataclass
class _Blocks:
    """The content blocks sent so far: Anthropic's are sequential, one open at a time."""

    count: int = 0
    open_kind: str | None = None
    # Our tool call index -> its block's index.
    tools: dict[int, int] = field(default_factory=dict)

    def open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        sent = self.close()
        self.open_kind = kind
        sent.append(_event("content_block_start", {"index": self.count, "content_block": block}))
        return sent

    def ensure(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        return [] if self.open_kind == kind else self.open(kind, block)

    def delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        at = self.count if index is None else index
        return _event("content_block_delta", {"index": at, "delta": delta})

    def close(self) -> list[bytes]:
        if self.open_kind is None:
            return []
        self.open_kind = None
        self.count += 1
        return [_event("content_block_stop", {"index": self.count - 1})]


def _message_start(reply_id: UUID, model: str) -> bytes:
    message = Message(
        id=message_id(reply_id),
        content=[],
        model=model,
        stop_reason=None,
        usage=Usage(input_tokens=0, output_tokens=0),
    )
    return _event("message_start", {"message": message.model_dump(mode="json")})


def _tool_call(blocks: _Blocks, data: dict[str, Any]) -> list[bytes]:
    ordinal = int(data.get("index", 0))
    sent: list[bytes] = []
    if data.get("id"):
        block = {"type": "tool_use", "id": data["id"], "name": data.get("name") or "", "input": {}}
        sent = blocks.open(f"tool:{ordinal}", block)
        blocks.tools[ordinal] = blocks.count
    arguments = str(data.get("arguments") or "")
    if arguments and ordinal in blocks.tools:
        delta = {"type": "input_json_delta", "partial_json": arguments}
        sent.append(blocks.delta(delta, blocks.tools[ordinal]))
    return sent


def _reasoning(blocks: _Blocks, data: dict[str, Any]) -> list[bytes]:
    thought, signature = str(data.get("content") or ""), data.get("signature")
    if not thought and not signature:
        return []
    sent = blocks.ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""})
    if thought:
        sent.append(blocks.delta({"type": "thinking_delta", "thinking": thought}))
    if isinstance(signature, str) and signature:
        sent.append(blocks.delta({"type": "signature_delta", "signature": signature}))
    return sent


def _finish(blocks: _Blocks, result: TurnResult) -> list[bytes]:
    reply = result.message
    sent = blocks.close()
    if blocks.count == 0:
        # A reply with nothing in it still has its one (empty) text block, as `Message` does.
        sent += blocks.open("text", {"type": "text", "text": ""}) + blocks.close()
    usage = usage_of(reply).model_dump(mode="json", exclude_none=True)
    delta = {"stop_reason": stop_reason_of(reply.finish_reason), "stop_sequence": None}
    sent.append(_event("message_delta", {"delta": delta, "usage": usage}))
    sent.append(_event("message_stop", {}))
    return sent


async def message_events(items: AsyncIterator[StreamItem], reply_id: UUID) -> AsyncIterator[bytes]:
    """The reply's stream in Anthropic's events, ending with `message_stop` (or `error`).

    A failure after the stream began is sent as Anthropic does, an `error` event, and ends
    the stream; the reply is stored as `failed` by its generation.
    """
    blocks, started = _Blocks(), False
    async for item in items:
        if item.comment is not None:
            yield _event("ping", {})
            continue
        data = json.loads(item.data or "{}")
        if not started:
            started = True
            yield _message_start(reply_id, str(data.get("model") or ""))
        sent: list[bytes] = []
        if item.event == "delta":
            if text := str(data.get("content", "")):
                sent = blocks.ensure("text", {"type": "text", "text": ""})
                sent.append(blocks.delta({"type": "text_delta", "text": text}))
        elif item.event == "tool_call":
            sent = _tool_call(blocks, data)
        elif item.event == "reasoning":
            sent = _reasoning(blocks, data)
        elif item.event == "done":
            for event in _finish(blocks, TurnResult.model_validate(data)):
                yield event
            return
        elif item.event == "error":
            code = str(data.get("code") or "upstream_error")
            _, error_type = anthropic_status_of(int(data.get("status") or 502), code)
            body = anthropic_error_body(error_type, str(data.get("message") or ""))
            yield format_sse_event(event="error", data_str=json.dumps(body))
            return
        for event in sent:
            yield event
