"""/api/v1/conversations/{id}/stream and .../messages/{message_id}/cancel."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from app.api.deps import (
    CurrentUser,
    GenerationsDep,
    QuotasDep,
    SessionFactoryDep,
    SettingsDep,
    StreamCaller,
)
from app.api.sse import event_stream
from app.api.v1.openapi import problems
from app.schemas.common import StorableText
from app.schemas.messages import MessageCreate, MessageRead
from app.services.limits.stream_quota import released_after
from app.services.streaming import streams
from app.services.turns.generations import cancel_reply

router = APIRouter(prefix="/conversations/{conversation_id}", tags=["streaming"])

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}
}
# The HTTP server refuses a request line past 64 KiB before the app sees it.
URL_TOO_LONG: dict[int | str, dict[str, Any]] = {
    400: {
        "content": {"text/plain": {}},
        "description": "the URL is longer than the server accepts (64 KiB); POST long messages",
    }
}
# Percent-encoded, a character takes up to 12 bytes: this many always fit in that URL.
MAX_QUERY_CONTENT_CHARS = 4_000


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **URL_TOO_LONG, **problems(402, 404, 409, 422, 429)},
)
async def stream(
    conversation_id: UUID,
    principal: StreamCaller,
    generations: GenerationsDep,
    sessionmaker: SessionFactoryDep,
    settings: SettingsDep,
    quotas: QuotasDep,
    content: Annotated[
        StorableText | None, Query(min_length=1, max_length=MAX_QUERY_CONTENT_CHARS)
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=200)] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id", max_length=200)] = None,
) -> StreamingResponse:
    """With `content`: send it and stream the reply (for `EventSource`; longer messages go
    through POST .../messages). Without: attach to the running reply, or replay the latest
    one, resuming after the event named by `Last-Event-ID`, or by the `last_event_id` query
    parameter (an `EventSource` reopened with a fresh ticket cannot set the header); the
    header wins when both are sent."""
    async with quotas.opening_stream(principal.user_id) as slot:
        if content is not None:
            started = await quotas.start_generation(
                principal.user_id,
                generations,
                lambda: generations.start(
                    principal, conversation_id, MessageCreate(content=content)
                ),
            )
            reply_id, after = started.reply_id, 0
        else:
            reply_id = await streams.latest_reply_id(sessionmaker, principal, conversation_id)
            seen_reply, seen = streams.parse_last_event_id(last_event_id or last_event_id_query)
            after = seen if seen_reply == reply_id else 0
        items = streams.read_reply(
            generations.events,
            sessionmaker,
            reply_id,
            after=after,
            heartbeat_s=settings.stream_heartbeat_seconds,
        )
    return event_stream(released_after(items, slot))


@router.post(
    "/messages/{message_id}/cancel", response_model=MessageRead, responses=problems(404, 422)
)
async def cancel(
    conversation_id: UUID,
    message_id: UUID,
    principal: CurrentUser,
    generations: GenerationsDep,
    sessionmaker: SessionFactoryDep,
) -> MessageRead:
    """Stop a running reply, keeping its text (status `cancelled`); a finished one is returned
    as it is."""
    return await cancel_reply(generations, sessionmaker, principal, conversation_id, message_id)
