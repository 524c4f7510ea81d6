"""A server-owned reply's event log as the Responses API's typed stream events.

The reply runs as a generation of the server (services.turns.generations); this only reads
its log, as `streaming.completion_chunks` does, so a client that leaves stops nothing and the
reply is still stored and charged once. Each event is `event: <type>` with a JSON `data:`
that repeats the type and carries a `sequence_number`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi.sse import format_sse_event

from app.api.openai_compat.errors import openai_error_of
from app.schemas.messages import TurnResult
from app.services.streaming.streams import StreamItem
from app.services.turns.chat_completions import created_of
from app.services.turns.response_items import function_call_id
from app.services.turns.response_objects import (
    message_item,
    message_item_id,
    output_text,
    reasoning_item,
    response_id,
    response_of,
)

# A cancelled reply stopped short, as an incomplete one did; only a failure is `failed`.
_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "cancelled": "response.incomplete",
}


@dataclass
class _Call:
    output_index: int
    item: dict[str, Any]


@dataclass
class ResponseEvents:
    """The stream's state: what items are open, and the next `sequence_number`."""

    reply_id: UUID
    settings: dict[str, Any]
    model: str = ""
    sequence: int = 0
    output_count: int = 0
    text: str | None = None
    text_index: int = 0
    reasoning: str | None = None
    reasoning_index: int = 0
    calls: dict[int, _Call] = field(default_factory=dict)

    def event(self, kind: str, **data: Any) -> bytes:
        body = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return format_sse_event(event=kind, data_str=json.dumps(body, ensure_ascii=False))

    def snapshot(self) -> dict[str, Any]:
        """The response while it runs: no output or usage yet."""
        return {
            "id": response_id(self.reply_id),
            "object": "response",
            "created_at": created_of(self.reply_id),
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": [],
            "store": True,
            "background": False,
            **{k: v for k, v in self.settings.items() if not (k == "user" and v is None)},
        }

    def started(self) -> Iterator[bytes]:
        yield self.event("response.created", response=self.snapshot())
        yield self.event("response.in_progress", response=self.snapshot())

    def reasoned(self, piece: str) -> Iterator[bytes]:
        if self.reasoning is not None and self.reasoning_index < 0:
            return  # thinking after the text began: stored with the reply, not re-opened
        if self.reasoning is None:
            self.reasoning, self.reasoning_index = "", self._next_index()
            yield self._added(self.reasoning_index, reasoning_item(self.reply_id, None))
        self.reasoning += piece
        yield self.event(
            "response.reasoning_text.delta",
            item_id=f"rs_{self.reply_id.hex}",
            output_index=self.reasoning_index,
            content_index=0,
            delta=piece,
        )

    def said(self, piece: str) -> Iterator[bytes]:
        yield from self._close_reasoning()
        item_id = message_item_id(self.reply_id)
        if self.text is None:
            self.text, self.text_index = "", self._next_index()
            yield self._added(
                self.text_index, message_item(self.reply_id, None, status="in_progress")
            )
            yield self.event(
                "response.content_part.added",
                item_id=item_id,
                output_index=self.text_index,
                content_index=0,
                part=output_text(""),
            )
        self.text += piece
        yield self.event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=self.text_index,
            content_index=0,
            delta=piece,
            logprobs=[],
        )

    def called(self, data: dict[str, Any]) -> Iterator[bytes]:
        yield from self._close_reasoning()
        index = int(data.get("index", 0))
        call = self.calls.get(index)
        if call is None:
            item = {
                "type": "function_call",
                "id": function_call_id(self.reply_id, index),
                "call_id": str(data.get("id") or ""),
                "name": str(data.get("name") or ""),
                "arguments": "",
                "status": "in_progress",
            }
            call = self.calls[index] = _Call(self._next_index(), item)
            yield self._added(call.output_index, dict(item))
        if pieces := str(data.get("arguments") or ""):
            call.item["arguments"] += pieces
            yield self.event(
                "response.function_call_arguments.delta",
                item_id=call.item["id"],
                output_index=call.output_index,
                delta=pieces,
            )

    def finished(self, result: TurnResult) -> Iterator[bytes]:
        """Close every open item, then the terminal event with the stored response."""
        message = result.message
        self.model = message.model or self.model
        final = response_of(message, self.settings)
        yield from self._close_reasoning()
        status = "completed" if final["status"] == "completed" else "incomplete"
        if self.text is not None:
            item_id, at = message_item_id(self.reply_id), self.text_index
            yield self.event(
                "response.output_text.done",
                item_id=item_id,
                output_index=at,
                content_index=0,
                text=self.text,
                logprobs=[],
            )
            part = output_text(self.text)
            yield self.event(
                "response.content_part.done",
                item_id=item_id,
                output_index=at,
                content_index=0,
                part=part,
            )
            done = message_item(self.reply_id, self.text, status=status)
            yield self.event("response.output_item.done", output_index=at, item=done)
        for call in self.calls.values():
            item = {**call.item, "status": status}
            yield self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=call.output_index,
                name=item["name"],
                arguments=item["arguments"],
            )
            yield self.event("response.output_item.done", output_index=call.output_index, item=item)
        kind = _TERMINAL.get(final["status"], "response.failed")
        yield self.event(kind, response=final)

    def failed(self, data: dict[str, Any]) -> bytes:
        error = openai_error_of(502, str(data.get("code") or "upstream_error"))
        return self.event(
            "error", code=error.code, message=str(data.get("message") or ""), param=None
        )

    def _next_index(self) -> int:
        self.output_count += 1
        return self.output_count - 1

    def _added(self, output_index: int, item: dict[str, Any]) -> bytes:
        return self.event("response.output_item.added", output_index=output_index, item=item)

    def _close_reasoning(self) -> Iterator[bytes]:
        if self.reasoning is None or self.reasoning_index < 0:
            return
        item_id, at = f"rs_{self.reply_id.hex}", self.reasoning_index
        yield self.event(
            "response.reasoning_text.done",
            item_id=item_id,
            output_index=at,
            content_index=0,
            text=self.reasoning,
        )
        item = reasoning_item(self.reply_id, self.reasoning)
        yield self.event("response.output_item.done", output_index=at, item=item)
        self.reasoning_index = -1  # closed: later pieces of text or calls follow it


async def response_events(
    items: AsyncIterator[StreamItem], reply_id: UUID, settings: dict[str, Any]
) -> AsyncIterator[bytes]:
    """`response.created` and `.in_progress`, the items' events as the reply is written,
    then exactly one of `response.completed` / `.incomplete` / `.failed`, or an `error`
    event when the reply fails after the stream began (stored `failed` by its generation)."""
    stream = ResponseEvents(reply_id, settings)
    async for item in items:
        if item.comment is not None:
            yield format_sse_event(comment=item.comment)
            continue
        data = json.loads(item.data or "{}")
        if item.event == "start":
            stream.model = str(data.get("model") or "")
            for event in stream.started():
                yield event
        elif item.event == "delta":
            for event in stream.said(str(data.get("content", ""))):
                yield event
        elif item.event == "tool_call":
            for event in stream.called(data):
                yield event
        elif item.event == "reasoning" and (thought := str(data.get("content", ""))):
            for event in stream.reasoned(thought):
                yield event
        elif item.event == "done":
            for event in stream.finished(TurnResult.model_validate(data)):
                yield event
            return
        elif item.event == "error":
            yield stream.failed(data)
            return
