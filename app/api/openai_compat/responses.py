"""/v1/responses: OpenAI's Responses API over any configured provider, on the turn engine."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import CurrentUser, SessionDep, TurnServicesDep
from app.api.idempotency import IdempotencyDep
from app.api.openai_compat.openapi import openai_errors
from app.api.openai_compat.response_events import response_events
from app.api.prompt_turn_routes import CONVERSATION_HEADER, complete_turn, stream_turn
from app.schemas.responses import ResponseCreate, ResponseDeleted, ResponseItemList
from app.services.turns import responses as service
from app.services.turns.response_objects import echoed_settings
from app.services.turns.response_requests import refuse_unserved

router = APIRouter(prefix="/responses")


def _stored_body(completed: service.CompletedResponse) -> dict[str, Any]:
    """What an `Idempotency-Key` keeps: the response and the conversation it went to."""
    return {"response": completed.response, "conversation_id": str(completed.conversation_id)}


@router.post(
    "",
    response_model=None,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **openai_errors(400, 401, 404, 409, 413, 429, 502, 504),
    },
)
async def create_response(
    body: ResponseCreate,
    response: Response,
    idempotency: IdempotencyDep,
    principal: CurrentUser,
    services: TurnServicesDep,
) -> JSONResponse | StreamingResponse:
    """Answer with the model the name routes to; store and charge the call as a turn.

    Without `previous_response_id` the call starts a conversation of the caller's; with it,
    the conversation of that response continues after it (404 unless it is the caller's).
    The conversation's id comes back in `X-Conversation-ID`. With `"stream": true` the reply
    streams as the Responses API's typed events; it is stored and charged even if the client
    leaves.
    """
    turns = services.turns
    previous_id = body.previous_response_id
    refuse_unserved(body)  # refusals before the previous response is looked up
    previous = None
    if previous_id is not None:
        previous = await service.find_previous(turns, principal, previous_id)
    turn = service.plan_response(turns, body, previous)
    if body.stream:
        settings = echoed_settings(body)
        return await stream_turn(
            services,
            idempotency,
            principal,
            lambda record: service.start_response_stream(
                turns, services.generations, principal, turn, previous_id, record=record
            ),
            lambda items, reply_id: response_events(items, reply_id, settings),
        )
    outcome = await complete_turn(
        services,
        idempotency,
        principal,
        lambda record: service.complete_response(
            turns, principal, turn, previous_id, record=record
        ),
        stored_as="response",
        encode=_stored_body,
    )
    if isinstance(outcome, JSONResponse):
        return outcome  # a replay
    return JSONResponse(
        outcome.response, headers={CONVERSATION_HEADER: str(outcome.conversation_id)}
    )


@router.get("/{response_id}", responses=openai_errors(401, 404, 429))
async def get_response(
    response_id: str, session: SessionDep, principal: CurrentUser
) -> dict[str, Any]:
    """The caller's response as it was returned (or as it stands while it runs); 404 else."""
    return await service.get_response(session, principal, response_id)


@router.delete(
    "/{response_id}", response_model=ResponseDeleted, responses=openai_errors(401, 404, 409, 429)
)
async def delete_response(
    response_id: str, session: SessionDep, principal: CurrentUser
) -> ResponseDeleted:
    """Forget the caller's response: no longer retrievable nor continuable."""
    return await service.delete_response(session, principal, response_id)


@router.get(
    "/{response_id}/input_items",
    response_model=ResponseItemList,
    # 400: a bad `limit`, `order` or `after` (OpenAI's status for a validation error).
    responses=openai_errors(400, 401, 404, 429),
)
async def list_input_items(
    response_id: str,
    session: SessionDep,
    principal: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=255)] = None,
) -> ResponseItemList:
    """The items the response was given as input, newest first by default (OpenAI's)."""
    items = await service.input_items(session, principal, response_id)
    return service.page_of(items, limit=limit, order=order, after=after)
