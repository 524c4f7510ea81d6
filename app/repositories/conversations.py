"""All SQL on conversations; every read starts from `owned`, the one tenancy filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Delete,
    Insert,
    Result,
    Select,
    Table,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.db.base import utcnow
from app.db.driver import Statements
from app.db.models import Conversation, Feedback, Message
from app.db.rows import column_values, columns_of, with_defaults
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
        archived: bool = False,
        pinned: bool | None = None,
        limit: int,
        cursor: str | None,
    ) -> tuple[Sequence[Conversation], str | None]:
        """Newest first; `query` matches titles and message text, case-insensitively.

        Only archived or only unarchived conversations (search included), and only pinned or
        unpinned ones when `pinned` is given. A cursor is a position in (created_at, id), so
        it stays valid with the same filters: filtered rows are skipped, none is repeated.
        """
        statement = self.owned(principal, principal.listing_owner(user_id))
        # Filtered on the walk of (user_id, created_at, id), no index of their own: a page costs
        # ~1 ms; a filter that matches almost none of a 50,000-conversation user walks them
        # all, ~8 ms (Postgres, warm). Partial indexes (WHERE archived / pinned) would fix that.
        statement = statement.where(Conversation.archived == archived)
        if pinned is not None:
            statement = statement.where(Conversation.pinned == pinned)
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

    async def erase_owned_by(self, owner: str) -> ErasedConversations:
        """Delete every conversation of `owner` with its messages and feedback; how many of each.

        The conversations are locked first, in id order: the order a turn's writers lock in
        (conversation, message, month), so an erasure never deadlocks with a completing reply,
        which then finds its reply gone and charges nothing. Two erasures queue on the locks.
        """
        owner_only = {"owner": owner}
        await self.session.execute(LOCK_OWNED_CONVERSATIONS, owner_only)
        feedback = await self.session.execute(ERASE_FEEDBACK, owner_only)
        messages = await self.session.execute(ERASE_MESSAGES, owner_only)
        conversations = await self.session.execute(ERASE_CONVERSATIONS, owner_only)
        return ErasedConversations(
            conversations=_deleted(conversations),
            messages=_deleted(messages),
            feedback=_deleted(feedback),
        )

    async def charge(self, conversation_id: UUID, *, tokens: int, cost_usd: Decimal) -> None:
        """Add a reply's tokens and cost to the totals in SQL (`total = total + delta`)."""
        await self.session.execute(
            CHARGE_TOTALS,
            {
                "charged_conversation": conversation_id,
                "tokens": tokens,
                "cost": cost_usd,
                "now": utcnow(),
            },
        )


async def insert_conversation(run: Statements, conversation: Conversation) -> None:
    """Store a new conversation: one INSERT on the driver (Postgres), a flush in a session.

    Through a session the same row cost the worker ~1.8 ms a request (unit of work, BEGIN,
    INSERT, COMMIT); on the driver it is one statement, atomic alone.
    """
    with_defaults(conversation)
    if run.session is not None:
        await ConversationRepo(run.session).add(conversation)
        return
    await run.rows(INSERT_CONVERSATION, conversation_params(conversation))


def conversation_params(conversation: Conversation) -> dict[str, object]:
    """`INSERT_CONVERSATION`'s parameters: `c_<column>`, the new row's values."""
    return {f"c_{column}": value for column, value in column_values(conversation).items()}


@dataclass(frozen=True, slots=True)
class ErasedConversations:
    """What `erase_owned_by` deleted."""

    conversations: int
    messages: int
    feedback: int


def _deleted(result: Result[Any]) -> int:
    """The rows a DELETE removed (its command status on Postgres, `changes()` on SQLite)."""
    return int(getattr(result, "rowcount", 0))


@dataclass(frozen=True, slots=True)
class TurnConversation:
    """What a turn reads of its conversation, returned by the statement that counts it."""

    id: UUID
    user_id: str
    provider: str | None
    model: str | None
    system_prompt: str | None
    tools: list[Any] | None  # offered on turns that name none
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    title: str | None
    active_leaf_id: UUID | None  # where the next turn continues


_CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
_c = _CONVERSATIONS.c
# Every column of a new conversation, as `c_<column>` parameters: not named like a column, so
# the statement also serves as a writable CTE (a conversation started with its first turn).
INSERT_CONVERSATION: Insert = insert(_CONVERSATIONS).values(
    {
        column: bindparam(f"c_{column}", type_=_c[column].type)
        for column in columns_of(Conversation).values()
    }
)
# Its parameter is not named like a column, so the statement also serves inside a larger one
# (a writable CTE: app.repositories.turns), where SQLAlchemy would add `SET column = :name`.
CHARGE_TOTALS = (
    update(_CONVERSATIONS)
    .where(_c.id == bindparam("charged_conversation"))
    .values(
        total_tokens=_c.total_tokens + bindparam("tokens", type_=BigInteger),
        total_cost_usd=_c.total_cost_usd + bindparam("cost", type_=_c.total_cost_usd.type),
        updated_at=bindparam("now"),
    )
)

# Erasure of one owner's data. Explicit deletes rather than the cascade, so each count is exact.
_OWNED_IDS = select(_c.id).where(_c.user_id == bindparam("owner"))
_FEEDBACK: Table = Feedback.__table__  # type: ignore[assignment]
_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
LOCK_OWNED_CONVERSATIONS = _OWNED_IDS.order_by(_c.id).with_for_update()  # no-op on SQLite
ERASE_FEEDBACK: Delete = delete(_FEEDBACK).where(_FEEDBACK.c.conversation_id.in_(_OWNED_IDS))
ERASE_MESSAGES: Delete = delete(_MESSAGES).where(_MESSAGES.c.conversation_id.in_(_OWNED_IDS))
ERASE_CONVERSATIONS: Delete = delete(_CONVERSATIONS).where(_c.user_id == bindparam("owner"))
