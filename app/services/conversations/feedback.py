"""Feedback on a conversation or on one of its messages."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Conversation, Feedback
from app.errors import MessageNotFound
from app.repositories.feedback import FeedbackRepo
from app.repositories.messages import MessageRepo
from app.schemas.feedback import FeedbackCreate


async def give(session: AsyncSession, conversation: Conversation, body: FeedbackCreate) -> Feedback:
    """Store feedback; a `message_id` must name a message of this same conversation."""
    if body.message_id is not None:
        message = await MessageRepo(session).get_in_conversation(body.message_id, conversation.id)
        if message is None:
            raise MessageNotFound(body.message_id)
    feedback = Feedback(
        conversation_id=conversation.id,
        message_id=body.message_id,
        type=body.type,
        rating=body.rating,
        comment=body.comment,
    )
    return await FeedbackRepo(session).add(feedback)


async def list_page(
    session: AsyncSession, conversation: Conversation, *, limit: int, cursor: str | None
) -> tuple[Sequence[Feedback], str | None]:
    return await FeedbackRepo(session).page(conversation.id, limit=limit, cursor=cursor)
