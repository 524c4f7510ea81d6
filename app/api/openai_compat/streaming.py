"""A server-owned reply's event log as OpenAI's `chat.completion.chunk` stream.

The reply runs as a generation of the server (services.turns.generations); this only reads its
log, so a client that leaves stops nothing and the reply is still stored and charged once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from fastapi.sse import format_sse_event

from app.api.openai_compat.errors import openai_error_of
from app.schemas.messages import TurnResult
from app.schemas.openai_compat import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    ChunkFunctionCall,
    ChunkToolCall,
    CompletionUsage,
    OpenAIFinishReason,
    error_body,
)
from app.services.streaming.streams import StreamItem
from app.services.turns.chat_completions import (
    completion_id,
    created_of,
    finish_reason_of,
    system_fingerprint_of,
    usage_of,
)

DONE = "[DONE]"


def _chunk(
    chunk_id: str,
    created: int,
    model: str,
    *,
    delta: ChunkDelta | None = None,
    finish_reason: OpenAIFinishReason | None = None,
    usage: CompletionUsage | None = None,
    system_fingerprint: str | None = None,
) -> bytes:
    choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
    chunk = ChatCompletionChunk(
        id=chunk_id,
        created=created,
        model=model,
        choices=choices,
        usage=usage,
        system_fingerprint=system_fingerprint,
    )
    body: dict[str, Any] = chunk.model_dump(mode="json")
    for choice in body["choices"]:
        # OpenAI leaves unset delta fields out (`"delta": {}` on the finishing chunk, no `id`
        # on a tool call's later pieces).
        choice["delta"] = sent = {k: v for k, v in choice["delta"].items() if v is not None}
        for call in sent.get("tool_calls", ()):
            for key in [key for key, value in call.items() if value is None]:
                del call[key]
            call["function"] = {k: v for k, v in call["function"].items() if v is not None}
    return format_sse_event(data_str=json.dumps(body, ensure_ascii=False))


async def completion_chunks(
    items: AsyncIterator[StreamItem], reply_id: UUID, *, include_usage: bool
) -> AsyncIterator[bytes]:
    """Role chunk, content chunks, finish chunk, usage chunk (if asked), then `[DONE]`.

    A failure after the stream began is sent as OpenAI does, an `{"error": ...}` data line,
    and ends the stream; the reply is stored as `failed` by its generation.
    """
    chunk_id, created, model = completion_id(reply_id), created_of(reply_id), ""
    async for item in items:
        if item.comment is not None:
            yield format_sse_event(comment=item.comment)
            continue
        data = json.loads(item.data or "{}")
        if item.event == "start":
            model = str(data.get("model") or "")
            yield _chunk(chunk_id, created, model, delta=ChunkDelta(role="assistant", content=""))
        elif item.event == "delta":
            content = str(data.get("content", ""))
            yield _chunk(chunk_id, created, model, delta=ChunkDelta(content=content))
        elif item.event == "tool_call":
            call = ChunkToolCall(
                index=int(data.get("index", 0)),
                id=data.get("id"),
                type="function" if data.get("id") else None,
                function=ChunkFunctionCall(name=data.get("name"), arguments=data.get("arguments")),
            )
            yield _chunk(chunk_id, created, model, delta=ChunkDelta(tool_calls=[call]))
        elif item.event == "reasoning":
            if thought := str(data.get("content", "")):
                yield _chunk(chunk_id, created, model, delta=ChunkDelta(reasoning_content=thought))
        elif item.event == "done":
            message = TurnResult.model_validate(data).message
            model = message.model or model
            reason = finish_reason_of(message.finish_reason)
            # Known once the provider has finished: the last chunks carry it.
            fingerprint = system_fingerprint_of(message)
            yield _chunk(
                chunk_id,
                created,
                model,
                delta=ChunkDelta(),
                finish_reason=reason,
                system_fingerprint=fingerprint,
            )
            if include_usage:
                yield _chunk(
                    chunk_id,
                    created,
                    model,
                    usage=usage_of(message),
                    system_fingerprint=fingerprint,
                )
            yield format_sse_event(data_str=DONE)
            return
        elif item.event == "error":
            error = openai_error_of(502, str(data.get("code") or "upstream_error"))
            body = error_body(str(data.get("message") or ""), error.type, code=error.code)
            yield format_sse_event(data_str=json.dumps(body))
            return
