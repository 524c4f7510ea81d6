"""Responses API responses: the stored replies `/v1/responses` names, read only by owner."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Conversation, Message, MessageRole
from app.repositories.messages import MessageRepo


class ResponseRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def owned(self, owner: str | None) -> Select[Message]:
        """Every read of a response starts here: replies in `owner`'s conversations only
        (`None`: any owner's, for callers who may read every user's)."""
        statement = (
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.role == MessageRole.ASSISTANT)
        )
        if owner is not None:
            statement = statement.where(Conversation.user_id == owner)
        return statement

    async def get_owned(self, reply_id: UUID, owner: str | None) -> Message | None:
        found: Message | None = await self.session.scalar(
            self.owned(owner).where(Message.id == reply_id)
        )
        return found

    async def path_to(self, message: Message, *, after: UUID | None) -> Sequence[Message]:
        """The messages from the one after `after` (else the first) down to `message`'s
        parent, oldest first: what a turn sent before its reply."""
        parents = dict(await MessageRepo(self.session).links(message.conversation_id))
        path: list[UUID] = []
        node = message.parent_id
        while node is not None and node != after and len(path) < len(parents):
            path.append(node)
            node = parents.get(node)
        if not path:
            return []
        return await MessageRepo(self.session).in_order(message.conversation_id, path)
