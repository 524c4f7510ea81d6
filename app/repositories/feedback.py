"""All SQL on feedback. Callers reach it only through a conversation they own."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Feedback
from app.repositories.pagination import fetch_page


class FeedbackRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, feedback: Feedback) -> Feedback:
        self.session.add(feedback)
        await self.session.flush()
        return feedback

    async def page(
        self, conversation_id: UUID, *, limit: int, cursor: str | None
    ) -> tuple[Sequence[Feedback], str | None]:
        """Newest first, like an inbox."""
        return await fetch_page(
            self.session,
            select(Feedback).where(Feedback.conversation_id == conversation_id),
            created_at=Feedback.created_at,
            row_id=Feedback.id,
            limit=limit,
            cursor=cursor,
            newest_first=True,
        )
