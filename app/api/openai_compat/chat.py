"""POST /v1/chat/completions: OpenAI's Chat Completions over any configured provider."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import CurrentUser, TurnServicesDep
from app.api.idempotency import IdempotencyDep
from app.api.openai_compat.openapi import openai_errors
from app.api.openai_compat.streaming import completion_chunks
from app.api.prompt_turn_routes import CONVERSATION_HEADER, complete_turn, stream_turn
from app.schemas.openai_compat import ChatCompletion, ChatCompletionCreate
from app.services.turns.chat_completions import (
    CompletedChat,
    complete_prompt_turn,
    completed_chat,
    plan_turn,
    route_model,
    start_chat_stream,
)

router = APIRouter(prefix="/chat/completions")


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
    turns = services.turns
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await stream_turn(
            services,
            idempotency,
            principal,
            lambda record: start_chat_stream(
                turns, services.generations, principal, turn, record=record
            ),
            lambda items, reply_id: completion_chunks(items, reply_id, include_usage=include_usage),
        )
    outcome = await complete_turn(
        services,
        idempotency,
        principal,
        lambda record: complete_prompt_turn(turns, principal, turn, completed_chat, record=record),
        stored_as="completion",
        encode=_stored_body,
    )
    if isinstance(outcome, JSONResponse):
        return outcome  # a replay
    response.headers[CONVERSATION_HEADER] = str(outcome.conversation_id)
    return outcome.completion
