"""/api/v1/conversations/{id}/messages: send a turn, read the history."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import (
    CurrentUser,
    OwnedConversation,
    SessionDep,
    TurnServices,
    TurnServicesDep,
)
from app.api.idempotency import IdempotencyDep, replayed
from app.api.sse import event_stream
from app.api.v1.openapi import problems
from app.core.security import Principal
from app.schemas.common import Page
from app.schemas.messages import MessageCreate, MessageRead, RegenerateCreate, TurnResult
from app.services.conversations import conversations as conversation_service
from app.services.limits.idempotency import IdempotentRequest
from app.services.limits.stream_quota import opened_stream, released_after
from app.services.streaming import streams
from app.services.turns.turns import take_turn

router = APIRouter(prefix="/conversations/{conversation_id}/messages", tags=["messages"])


@router.post(
    "",
    status_code=201,
    response_model=TurnResult,
    responses=problems(400, 402, 404, 409, 413, 415, 422, 429, 502, 504),
)
async def send_message(
    conversation_id: UUID,
    body: MessageCreate,
    idempotency: IdempotencyDep,
    principal: CurrentUser,
    services: TurnServicesDep,
    accept: Annotated[str, Header()] = "",
) -> TurnResult | StreamingResponse | JSONResponse:
    """Store the message, get the reply from the model, store and charge it, return both.

    With `"stream": true` or `Accept: text/event-stream`, the reply streams as SSE instead;
    the response starts with its first token, so a failure before it is an HTTP error.
    `Idempotency-Key` makes a retry return the first response (for a stream: the same reply's
    stream, replayed from its start) with no second provider call and no second charge.
    """
    return await _turn(
        conversation_id, body, idempotency, principal, services, stream_wanted(body, accept)
    )


@router.post(
    "/{message_id}/regenerate",
    status_code=201,
    response_model=TurnResult,
    responses=problems(400, 402, 404, 409, 413, 415, 422, 429, 502, 504),
)
async def regenerate(
    conversation_id: UUID,
    message_id: UUID,
    body: RegenerateCreate,
    idempotency: IdempotencyDep,
    principal: CurrentUser,
    services: TurnServicesDep,
    accept: Annotated[str, Header()] = "",
) -> TurnResult | StreamingResponse | JSONResponse:
    """A new reply beside the reply `message_id`, to the same prompt (the path to its
    parent), optionally from another provider or model; it becomes the active branch.

    Streams, resumes, replays under an `Idempotency-Key` and is charged as a turn is; one
    reply runs in a conversation at a time (409). 404 unless `message_id` is a message of
    the conversation; 422 unless it is a reply.
    """
    return await _turn(
        conversation_id,
        body.as_turn(),
        idempotency,
        principal,
        services,
        stream_wanted(body, accept),
        regenerating=message_id,
    )


def stream_wanted(body: MessageCreate | RegenerateCreate, accept: str) -> bool:
    return body.stream or "text/event-stream" in accept


async def _turn(
    conversation_id: UUID,
    body: MessageCreate,
    idempotency: IdempotentRequest,
    principal: Principal,
    services: TurnServices,
    stream: bool,
    *,
    regenerating: UUID | None = None,
) -> TurnResult | StreamingResponse | JSONResponse:
    # No request session here: the turn opens its own short transactions so that no
    # connection is held while the provider is thinking. Slots are taken inside the keyed
    # call: a duplicate of a request in flight is a 409 however many slots are in use.
    quotas, generations = services.quotas, services.generations
    if stream:
        outcome = await idempotency.run_durably(
            lambda record: quotas.open_stream(
                principal.user_id,
                generations,
                lambda: generations.start(
                    principal, conversation_id, body, record=record, regenerating=regenerating
                ),
            ),
            status=200,
            encode=streams.started_body,
        )
        started, slot = opened_stream(outcome)
        items = streams.read_reply(
            generations.events,
            services.sessionmaker,
            streams.started_reply_id(started),
            after=0,
            heartbeat_s=services.settings.stream_heartbeat_seconds,
        )
        # A reply that fails before its first token is answered as an HTTP error.
        return event_stream(await streams.opened(released_after(items, slot)))
    turn = await idempotency.run_durably(
        lambda record: quotas.generate(
            principal.user_id,
            lambda: take_turn(
                services.turns,
                principal,
                conversation_id,
                body,
                record=record,
                regenerating=regenerating,
            ),
        ),
        status=201,
    )
    return replayed(turn)


@router.get("", response_model=Page[MessageRead], responses=problems(404, 422))
async def list_messages(
    conversation: OwnedConversation,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    leaf: Annotated[
        UUID | None,
        Query(description="Another branch: the one through this message (to its newest end)."),
    ] = None,
) -> Page[MessageRead]:
    """The active branch's messages (or `leaf`'s branch), oldest first, each with its
    `parent_id` and `sibling_ids`."""
    rows, next_cursor = await conversation_service.messages_page(
        session, conversation, limit=limit, cursor=cursor, leaf=leaf
    )
    return Page[MessageRead](
        items=[MessageRead.model_validate(row) for row in rows], next_cursor=next_cursor
    )
