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
from app.api.idempotency import IdempotencyDep
from app.api.prompt_turn_routes import CONVERSATION_HEADER, complete_turn, stream_turn
from app.schemas.anthropic_messages import Message, MessageCountTokens, MessageCreate, TokenCount
from app.services.turns.anthropic_messages import (
    CompletedMessage,
    completed_message,
    count_message_tokens,
    plan_message_turn,
)
from app.services.turns.chat_completions import (
    complete_prompt_turn,
    route_model,
    start_chat_stream,
)

router = APIRouter(prefix="/messages")

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
    turns = services.turns
    if body.stream:
        return await stream_turn(
            services,
            idempotency,
            principal,
            lambda record: start_chat_stream(
                turns, services.generations, principal, turn, record=record
            ),
            message_events,
        )
    outcome = await complete_turn(
        services,
        idempotency,
        principal,
        lambda record: complete_prompt_turn(
            turns, principal, turn, completed_message, record=record
        ),
        stored_as="message",
        encode=_stored_body,
    )
    if isinstance(outcome, JSONResponse):
        return outcome  # a replay
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
