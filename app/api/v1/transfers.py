"""Conversations out and in: export as JSON or Markdown, import our JSON or ChatGPT's."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from app.api.deps import CurrentUser, OwnedConversation, ProvidersDep, SessionDep
from app.api.v1.openapi import problems
from app.schemas.conversations import ConversationDetail
from app.schemas.transfers import ConversationExport
from app.services.conversations import transfers as service

router = APIRouter(prefix="/conversations", tags=["conversations"])

_IMPORT_BODY = (
    "Our export (`GET .../export?format=json`), one conversation of ChatGPT's "
    "`conversations.json`, or an array of them (imported together, answered with a list)."
)


@router.get(
    "/{conversation_id}/export",
    response_model=ConversationExport,
    responses={
        200: {"content": {"text/markdown": {"schema": {"type": "string"}}}},
        **problems(404, 422),
    },
)
async def export_conversation(
    conversation: OwnedConversation,
    session: SessionDep,
    export_format: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
) -> Response:
    """A download: JSON holds every branch and cost and imports back; Markdown is the branch
    shown, for people."""
    if export_format == "markdown":
        text = await service.export_markdown(session, conversation)
        return Response(
            text,
            media_type="text/markdown; charset=utf-8",
            headers=_download(service.attachment_name(conversation, "md")),
        )
    document = await service.export_json(session, conversation)
    return Response(
        document.model_dump_json(),
        media_type="application/json",
        headers=_download(service.attachment_name(conversation, "json")),
    )


@router.post(
    "/import",
    status_code=201,
    response_model=ConversationDetail | list[ConversationDetail],
    responses=problems(413, 415, 422),
)
async def import_conversations(
    body: Annotated[Any, Body(description=_IMPORT_BODY)],
    session: SessionDep,
    principal: CurrentUser,
    registry: ProvidersDep,
) -> ConversationDetail | list[ConversationDetail]:
    """New conversations of the caller, all or none; costs as exported (ChatGPT's: none),
    never charged again."""
    return await service.import_conversations(session, principal, registry, body)


def _download(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}
