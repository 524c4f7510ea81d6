"""Conversations: create, list, read, change and delete, always as a given principal."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.db.base import utcnow
from app.db.driver import Statements
from app.db.models import Conversation, Message
from app.errors import ConversationNotFound
from app.providers.registry import ProviderRegistry
from app.repositories.conversations import ConversationRepo, insert_conversation
from app.repositories.messages import MessageRepo
from app.schemas.content import tools_of
from app.schemas.conversations import ConversationCreate, ConversationUpdate
from app.services.conversations.branches import Tree


async def get_owned(
    session: AsyncSession, principal: Principal, conversation_id: UUID
) -> Conversation:
    """The conversation if the caller may see it; a missing and a foreign id are the same 404."""
    conversation = await ConversationRepo(session).get(conversation_id, principal)
    if conversation is None:
        raise ConversationNotFound(conversation_id)
    return conversation


async def create(
    run: Statements,
    principal: Principal,
    body: ConversationCreate,
    registry: ProviderRegistry,
) -> Conversation:
    """Store a new conversation; its provider and model defaults must be ones we can serve.

    `run`: the driver for a lone insert (one statement), or a session whose transaction
    also holds an `Idempotency-Key`'s claim and response."""
    if body.provider is not None or body.model is not None:
        registry.resolve(body.provider, body.model)
    now = utcnow()
    conversation = Conversation(
        user_id=principal.owner_for(body.user_id),
        title=body.title,
        metadata_=body.metadata,
        provider=body.provider,
        model=body.model,
        system_prompt=body.system_prompt,
        tools=tools_of(body.tools) or None,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        pinned=body.pinned,
        title_source=None if body.title is None else "user",
        created_at=now,
        updated_at=now,
    )
    await insert_conversation(run, conversation)
    return conversation


async def list_page(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: str | None,
    query: str | None,
    archived: bool = False,
    pinned: bool | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[Conversation], str | None]:
    """A page of the conversations the caller may list, newest first: unarchived ones unless
    `archived`, narrowed to pinned or unpinned ones when `pinned` is given."""
    return await ConversationRepo(session).page(
        principal,
        user_id=user_id,
        query=query,
        archived=archived,
        pinned=pinned,
        limit=limit,
        cursor=cursor,
    )


async def messages_of(
    session: AsyncSession, conversation: Conversation, *, leaf: UUID | None = None
) -> Sequence[Message]:
    """The messages of the branch ending at `leaf` (default: the active one), oldest first,
    each with `sibling_ids` (itself and the other messages that follow its parent)."""
    tree, path = await _branch(session, conversation, leaf)
    if not path:
        return []
    messages = await MessageRepo(session).in_order(conversation.id, path)
    return _with_siblings(tree, messages)


async def messages_page(
    session: AsyncSession,
    conversation: Conversation,
    *,
    limit: int,
    cursor: str | None,
    leaf: UUID | None = None,
) -> tuple[Sequence[Message], str | None]:
    """A page of `messages_of`: the branch's messages, oldest first."""
    tree, path = await _branch(session, conversation, leaf)
    rows, next_cursor = await MessageRepo(session).page(
        conversation.id, limit=limit, cursor=cursor, among=path
    )
    return _with_siblings(tree, rows), next_cursor


async def _branch(
    session: AsyncSession, conversation: Conversation, leaf: UUID | None
) -> tuple[Tree, list[UUID]]:
    tree = Tree.of(await MessageRepo(session).links(conversation.id))
    if leaf is not None:
        leaf = tree.newest_leaf_under(leaf)  # MessageNotFound unless one of its messages
    return tree, tree.path_to(leaf or conversation.active_leaf_id or tree.newest)


def _with_siblings(tree: Tree, messages: Sequence[Message]) -> Sequence[Message]:
    siblings = tree.siblings([message.id for message in messages])
    for message in messages:
        # Read by MessageRead (`sibling_ids`); not a column.
        message.sibling_ids = siblings[message.id]  # type: ignore[attr-defined]
    return messages


async def update(
    session: AsyncSession,
    conversation: Conversation,
    body: ConversationUpdate,
    registry: ProviderRegistry,
) -> Conversation:
    """Change only the fields the client sent."""
    changes = body.model_dump(exclude_unset=True)
    if "provider" in changes or "model" in changes:
        provider = changes.get("provider", conversation.provider)
        model = changes.get("model", conversation.model)
        if provider is not None or model is not None:
            registry.resolve(provider, model)
    if "metadata" in changes:
        conversation.metadata_ = changes.pop("metadata") or {}
    if "tools" in changes:
        changes["tools"] = tools_of(body.tools) or None
    if "title" in changes:  # the user named it: a generated title never replaces it
        changes["title_source"] = None if changes["title"] is None else "user"
    if "active_leaf_id" in changes:
        tree = Tree.of(await MessageRepo(session).links(conversation.id))
        changes["active_leaf_id"] = tree.newest_leaf_under(changes["active_leaf_id"])
    for field, value in changes.items():
        setattr(conversation, field, value)
    conversation.updated_at = utcnow()
    await session.flush()
    return conversation


async def delete(session: AsyncSession, conversation: Conversation) -> None:
    await ConversationRepo(session).delete(conversation)
