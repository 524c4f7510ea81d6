"""/api/v1/conversations: thin handlers over services.conversations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from app.api.deps import (
    CurrentUser,
    OwnedConversation,
    ProvidersDep,
    SessionDep,
    SessionFactoryDep,
)
from app.api.idempotency import IdempotencyDep, replayed
from app.api.v1.openapi import problems
from app.db.driver import Statements, statements
from app.schemas.common import Page, StorableText
from app.schemas.conversations import (
    ConversationCreate,
    ConversationDetail,
    ConversationRead,
    ConversationUpdate,
)
from app.schemas.messages import MessageRead
from app.services.conversations import conversations as service

router = APIRouter(prefix="/conversations", tags=["conversations"])


@router.post(
    "", status_code=201, response_model=ConversationRead, responses=problems(409, 413, 415, 422)
)
async def create_conversation(
    idempotency: IdempotencyDep,
    sessionmaker: SessionFactoryDep,
    principal: CurrentUser,
    registry: ProvidersDep,
    body: ConversationCreate | None = None,
) -> ConversationRead | JSONResponse:
    """`Idempotency-Key` makes a retry return the first response instead of a second row."""

    async def create(run: Statements) -> ConversationRead:
        conversation = await service.create(run, principal, body or ConversationCreate(), registry)
        return ConversationRead.model_validate(conversation)

    # Without a key the INSERT is atomic alone: on Postgres one statement, no BEGIN/COMMIT.
    # With one, the key's claim, the row and the stored response commit together.
    async with statements(sessionmaker, single_statements=idempotency.key is None) as run:
        created = await idempotency.run(lambda: create(run), status=201, session=run.session)
    return replayed(created)


@router.get("", response_model=Page[ConversationRead], responses=problems(422))
async def list_conversations(
    session: SessionDep,
    principal: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    # StorableText: a NUL in a query parameter is a 422 here, not a database error (500).
    user_id: Annotated[StorableText | None, Query(min_length=1, max_length=255)] = None,
    q: Annotated[StorableText | None, Query(min_length=1, max_length=200)] = None,
    archived: Annotated[
        bool,
        Query(
            description="`true`: only archived conversations; `false` (default): only the "
            "others. Applies to `q` too: search never finds archived ones unless asked."
        ),
    ] = False,
    pinned: Annotated[
        bool | None,
        Query(
            description="`true`: only pinned conversations; `false`: only unpinned; left out: both."
        ),
    ] = None,
) -> Page[ConversationRead]:
    """Newest first; `q` searches titles and message text; `cursor` is a `next_cursor`.

    Archived conversations are left out unless `archived=true`, which lists only them;
    `pinned` narrows to pinned or unpinned ones. Pass a `next_cursor` back with the same
    filters it was returned with.
    """
    rows, next_cursor = await service.list_page(
        session,
        principal,
        user_id=user_id,
        query=q,
        archived=archived,
        pinned=pinned,
        limit=limit,
        cursor=cursor,
    )
    return Page[ConversationRead](
        items=[ConversationRead.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/{conversation_id}", response_model=ConversationDetail, responses=problems(404, 422))
async def get_conversation(
    conversation: OwnedConversation, session: SessionDep
) -> ConversationDetail:
    messages = await service.messages_of(session, conversation)
    return ConversationDetail(
        **ConversationRead.model_validate(conversation).model_dump(),
        messages=[MessageRead.model_validate(m) for m in messages],
    )


@router.patch(
    "/{conversation_id}", response_model=ConversationRead, responses=problems(404, 413, 415, 422)
)
async def update_conversation(
    body: ConversationUpdate,
    conversation: OwnedConversation,
    session: SessionDep,
    registry: ProvidersDep,
) -> ConversationRead:
    updated = await service.update(session, conversation, body, registry)
    return ConversationRead.model_validate(updated)


@router.delete("/{conversation_id}", status_code=204, responses=problems(404, 422))
async def delete_conversation(conversation: OwnedConversation, session: SessionDep) -> Response:
    await service.delete(session, conversation)
    return Response(status_code=204)
