"""What every client-owned-history route does with its turn, whatever its wire format.

`/v1/chat/completions`, `/v1/responses` and `/v1/messages` differ in how they read a request
and write a reply; running the turn is the same: once per `Idempotency-Key`, holding the
caller's concurrency slots, the conversation's id in `X-Conversation-ID`, and a stream read
from the server-owned generation's event log (so a client that leaves stops nothing). A
stream's format is a translator of that log (`EventsOf`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import TurnServices
from app.api.idempotency import REPLAYED_HEADER
from app.api.sse import SSE_HEADERS, EventStreamResponse
from app.core.security import Principal
from app.services.limits.idempotency import IdempotentRequest, ResponseRecorder, StoredResponse
from app.services.limits.stream_quota import opened_stream, released_after
from app.services.streaming import streams
from app.services.streaming.streams import StreamItem
from app.services.turns.turns import StartedGeneration

T = TypeVar("T")

CONVERSATION_HEADER = "X-Conversation-ID"

# A reply's event log (opened) and its id -> the wire format's stream.
EventsOf = Callable[[AsyncIterator[StreamItem], UUID], AsyncIterator[bytes]]


async def stream_turn(
    services: TurnServices,
    idempotency: IdempotentRequest,
    principal: Principal,
    start: Callable[[ResponseRecorder | None], Awaitable[StartedGeneration]],
    events_of: EventsOf,
) -> StreamingResponse:
    """Start the turn's reply as a generation (once per key, in the caller's stream and
    generation slots) and stream its log in the format `events_of` writes.

    Everything that fails before the first token (404, 409, 429, a provider refusing the
    request) is raised here, as an HTTP error; after it, the format's error event.
    """
    opened = await idempotency.run_durably(
        lambda record: services.quotas.open_stream(
            principal.user_id, services.generations, lambda: start(record)
        ),
        status=200,
        encode=streams.started_body,
    )
    started, slot = opened_stream(opened)
    reply_id = streams.started_reply_id(started)
    into = (
        started.body["conversation_id"]
        if isinstance(started, StoredResponse)
        else started.conversation_id
    )
    items = streams.read_reply(
        services.generations.events,
        services.sessionmaker,
        reply_id,
        after=0,
        heartbeat_s=services.settings.stream_heartbeat_seconds,
    )
    first_known = await streams.opened(released_after(items, slot))
    return EventStreamResponse(
        events_of(first_known, reply_id),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, CONVERSATION_HEADER: str(into)},
    )


async def complete_turn(
    services: TurnServices,
    idempotency: IdempotentRequest,
    principal: Principal,
    complete: Callable[[ResponseRecorder | None], Awaitable[T]],
    *,
    stored_as: str,
    encode: Callable[[T], dict[str, Any]],
) -> T | JSONResponse:
    """Run the turn to its end once per key, in the caller's generation slot: its outcome,
    or, for a key already answered, that answer replayed (`encode` made it; the client's
    body is under `stored_as`, beside `conversation_id`)."""
    outcome = await idempotency.run_durably(
        lambda record: services.quotas.generate(principal.user_id, lambda: complete(record)),
        status=200,
        encode=encode,
    )
    if isinstance(outcome, StoredResponse):
        return JSONResponse(
            outcome.body[stored_as],
            headers={
                CONVERSATION_HEADER: str(outcome.body["conversation_id"]),
                REPLAYED_HEADER: "true",
            },
        )
    return outcome
