"""POST /v1/chat/completions: OpenAI's Chat Completions over any configured provider."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import CurrentUser, TurnServicesDep
from app.api.idempotency import REPLAYED_HEADER, IdempotencyDep
from app.api.openai_compat.openapi import openai_errors
from app.api.openai_compat.streaming import completion_chunks
from app.api.sse import SSE_HEADERS, EventStreamResponse
from app.schemas.openai_compat import ChatCompletion, ChatCompletionCreate
from app.services.limits.idempotency import StoredResponse
from app.services.limits.stream_quota import opened_stream, released_after
from app.services.streaming import streams
from app.services.turns.chat_completions import (
    CompletedChat,
    complete_chat,
    plan_turn,
    route_model,
    start_chat_stream,
)

router = APIRouter(prefix="/chat/completions")

CONVERSATION_HEADER = "X-Conversation-ID"


def _stored_body(completed: CompletedChat) -> dict[str, Any]:
    """What an `Idempotency-Key` keeps: the completion and the conversation it went to."""
    return {
        "completion": completed.completion.model_dump(mode="json"),
        "conversation_id": str(completed.conversation_id),
    }


@router.post(
    "",
    response_model=ChatCompletion,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **openai_errors(400, 401, 404, 409, 413, 429, 502, 504),
    },
)
async def create_chat_completion(
    body: ChatCompletionCreate,
    response: Response,
    idempotency: IdempotencyDep,
    principal: CurrentUser,
    services: TurnServicesDep,
    conversation_id: Annotated[UUID | None, Header(alias=CONVERSATION_HEADER)] = None,
) -> ChatCompletion | JSONResponse | StreamingResponse:
    """Answer with the model the name routes to; store and charge the call as a turn.

    Without `X-Conversation-ID` the call becomes a new conversation of the caller; with it,
    the messages its stored branch lacks and the reply are appended (or branched where the
    client's history parts from the stored one) to that conversation. Either
    way its id comes back in `X-Conversation-ID`. With `"stream": true` the reply streams as
    `chat.completion.chunk` events ending with `data: [DONE]`; it is stored and charged even
    if the client leaves.
    """
    turn = plan_turn(
        route_model(services.registry, services.prices, body.model), body, conversation_id
    )
    turns, generations, quotas = services.turns, services.generations, services.quotas
    # Slots are taken inside the keyed call: a duplicate in flight is a 409 whatever the caps.
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
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        # A reply that fails before its first token is answered as an HTTP error.
        first_known = await streams.opened(released_after(items, slot))
        return EventStreamResponse(
            completion_chunks(first_known, reply_id, include_usage=include_usage),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, CONVERSATION_HEADER: str(into)},
        )
    outcome = await idempotency.run_durably(
        lambda record: quotas.generate(
            principal.user_id, lambda: complete_chat(turns, principal, turn, record=record)
        ),
        status=200,
        encode=_stored_body,
    )
    if isinstance(outcome, StoredResponse):
        return JSONResponse(
            outcome.body["completion"],
            headers={
                CONVERSATION_HEADER: str(outcome.body["conversation_id"]),
                REPLAYED_HEADER: "true",
            },
        )
    response.headers[CONVERSATION_HEADER] = str(outcome.conversation_id)
    return outcome.completion
