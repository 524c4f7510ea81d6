"""All SQL on conversations; every read starts from `owned`, the one tenancy filter."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from uuid import UUID

from sqlalchemy import Select, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.db.base import utcnow
from app.db.models import Conversation, Message
from app.repositories.pagination import fetch_page


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ConversationRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def owned(self, principal: Principal, owner: str | None = None) -> Select[Conversation]:
        """What the caller may see: their own, or for admins any (narrowed to `owner`)."""
        statement = select(Conversation)
        owner = principal.visible_owner(owner)
        if owner is not None:
            statement = statement.where(Conversation.user_id == owner)
        return statement

    async def get(self, conversation_id: UUID, principal: Principal) -> Conversation | None:
        return (
            await self.session.scalars(
                self.owned(principal).where(Conversation.id == conversation_id)
            )
        ).one_or_none()

    async def page(
        self,
        principal: Principal,
        *,
        user_id: str | None,
        query: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[Sequence[Conversation], str | None]:
        """Newest first; `query` matches titles and message text, case-insensitively."""
        statement = self.owned(principal, principal.listing_owner(user_id))
        if query:
            pattern = _like_pattern(query)
            in_messages = exists().where(
                Message.conversation_id == Conversation.id,
                Message.content.ilike(pattern, escape="\\"),
            )
            statement = statement.where(
                or_(Conversation.title.ilike(pattern, escape="\\"), in_messages)
            )
        return await fetch_page(
            self.session,
            statement,
            created_at=Conversation.created_at,
            row_id=Conversation.id,
            limit=limit,
            cursor=cursor,
            newest_first=True,
        )

    async def add(self, conversation: Conversation) -> Conversation:
        self.session.add(conversation)
        await self.session.flush()
        return conversation

    async def delete(self, conversation: Conversation) -> None:
        # The database cascades to messages and feedback (ON DELETE CASCADE).
        await self.session.delete(conversation)
        await self.session.flush()

    async def get_counting_messages(
        self, conversation_id: UUID, principal: Principal, *, added: int
    ) -> Conversation | None:
        """`get`, adding `added` to `message_count`, in one statement: how a turn opens.

        `UPDATE ... RETURNING`: one round trip instead of a read and an update on every turn.
        The count changes in SQL (`x = x + delta`), so concurrent turns never overwrite each
        other, under the same tenancy filter as `owned`. A turn that then fails (budget, a
        running reply) rolls it back with its transaction. The row stays locked until then:
        lock a conversation before its messages, as `complete_reply` does, or risk deadlock.
        """
        visible = self.owned(principal).where(Conversation.id == conversation_id).whereclause
        assert visible is not None  # the id filter at least
        statement = (
            update(Conversation)
            .where(visible)
            .values(message_count=Conversation.message_count + added, updated_at=utcnow())
            .returning(Conversation)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def charge(self, conversation_id: UUID, *, tokens: int, cost_usd: Decimal) -> None:
        """Add a reply's tokens and cost to the totals in SQL (`total = total + delta`)."""
        await self.session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(
                total_tokens=Conversation.total_tokens + tokens,
                total_cost_usd=Conversation.total_cost_usd + cost_usd,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)  # no ORM copy to refresh
        )
