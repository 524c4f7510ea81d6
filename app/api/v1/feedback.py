"""/api/v1/conversations/{id}/feedback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.api.deps import OwnedConversation, SessionDep
from app.api.idempotency import IdempotencyDep, replayed
from app.api.v1.openapi import problems
from app.schemas.common import Page
from app.schemas.feedback import FeedbackCreate, FeedbackRead
from app.services.conversations import feedback as service

router = APIRouter(prefix="/conversations/{conversation_id}/feedback", tags=["feedback"])


@router.post(
    "", status_code=201, response_model=FeedbackRead, responses=problems(404, 409, 413, 415, 422)
)
async def give_feedback(
    body: FeedbackCreate,
    idempotency: IdempotencyDep,
    conversation: OwnedConversation,
    session: SessionDep,
) -> FeedbackRead | JSONResponse:
    async def give() -> FeedbackRead:
        return FeedbackRead.model_validate(await service.give(session, conversation, body))

    return replayed(await idempotency.run(give, status=201, session=session))


@router.get("", response_model=Page[FeedbackRead], responses=problems(404, 422))
async def list_feedback(
    conversation: OwnedConversation,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[FeedbackRead]:
    """Newest first."""
    rows, next_cursor = await service.list_page(session, conversation, limit=limit, cursor=cursor)
    return Page[FeedbackRead](
        items=[FeedbackRead.model_validate(row) for row in rows], next_cursor=next_cursor
    )
