"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API over any
configured provider, on the same turn engine as /v1/chat/completions."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.anthropic_compat.openapi import anthropic_errors
from app.api.anthropic_compat.streaming import message_events
from app.api.deps import CurrentUser, TurnServicesDep
from app.api.idempotency import REPLAYED_HEADER, IdempotencyDep
from app.api.sse import SSE_HEADERS, EventStreamResponse
from app.schemas.anthropic_messages import Message, MessageCountTokens, MessageCreate, TokenCount
from app.services.limits.idempotency import StoredResponse
from app.services.limits.stream_quota import opened_stream, released_after
from app.services.streaming import streams
from app.services.turns.anthropic_messages import (
    CompletedMessage,
    complete_message,
    count_message_tokens,
    plan_message_turn,
)
from app.services.turns.chat_completions import route_model, start_chat_stream

router = APIRouter(prefix="/messages")

CONVERSATION_HEADER = "X-Conversation-ID"
# Accepted, not required: one wire format is served whatever version a client names.
AnthropicVersion = Annotated[str | None, Header(alias="anthropic-version", max_length=64)]
AnthropicBeta = Annotated[str | None, Header(alias="anthropic-beta", max_length=1024)]


def _stored_body(completed: CompletedMessage) -> dict[str, Any]:
    """What an `Idempotency-Key` keeps: the message and the conversation it went to."""
    return {
        "message": completed.message.model_dump(mode="json"),
        "conversation_id": str(completed.conversation_id),
    }


@router.post(
    "",
    response_model=Message,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **anthropic_errors(400, 401, 404, 409, 413, 429, 500, 504, 529),
    },
)
async def create_message(
    body: MessageCreate,
    response: Response,
    idempotency: IdempotencyDep,
    principal: CurrentUser,
    services: TurnServicesDep,
    conversation_id: Annotated[UUID | None, Header(alias=CONVERSATION_HEADER)] = None,
    anthropic_version: AnthropicVersion = None,
    anthropic_beta: AnthropicBeta = None,
) -> Message | JSONResponse | StreamingResponse:
    """Answer with the model the name routes to; store and charge the call as a turn.

    Without `X-Conversation-ID` the call becomes a new conversation of the caller; with it,
    the messages its stored branch lacks and the reply are appended to that conversation.
    Either way its id comes back in `X-Conversation-ID`. With `"stream": true` the reply
    streams as Anthropic's events; it is stored and charged even if the client leaves.
    """
    choice = route_model(services.registry, services.prices, body.model)
    turn = plan_message_turn(choice, body, conversation_id)
    turns, generations, quotas = services.turns, services.generations, services.quotas
    if body.stream:
        opened = await idempotency.run_durably(
            lambda record: quotas.open_stream(
                principal.user_id,
                generations,
                lambda: start_chat_stream(turns, generations, principal, turn, record=record),
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
            generations.events,
            services.sessionmaker,
            reply_id,
            after=0,
            heartbeat_s=services.settings.stream_heartbeat_seconds,
        )
        # A reply that fails before its first token is answered as an HTTP error.
        first_known = await streams.opened(released_after(items, slot))
        return EventStreamResponse(
            message_events(first_known, reply_id),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, CONVERSATION_HEADER: str(into)},
        )
    outcome = await idempotency.run_durably(
        lambda record: quotas.generate(
            principal.user_id, lambda: complete_message(turns, principal, turn, record=record)
        ),
        status=200,
        encode=_stored_body,
    )
    if isinstance(outcome, StoredResponse):
        return JSONResponse(
            outcome.body["message"],
            headers={
                CONVERSATION_HEADER: str(outcome.body["conversation_id"]),
                REPLAYED_HEADER: "true",
            },
        )
    response.headers[CONVERSATION_HEADER] = str(outcome.conversation_id)
    return outcome.message


@router.post(
    "/count_tokens", response_model=TokenCount, responses=anthropic_errors(400, 401, 404, 429)
)
async def count_tokens(
    body: MessageCountTokens,
    services: TurnServicesDep,
    anthropic_version: AnthropicVersion = None,
    anthropic_beta: AnthropicBeta = None,
) -> TokenCount:
    """The prompt's input tokens for the routed model, as the service counts them; the
    provider is not called and nothing is stored."""
    choice = route_model(services.registry, services.prices, body.model)
    return count_message_tokens(choice, body)
