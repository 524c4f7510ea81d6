"""Conversations out and in: exported whole as JSON (every branch, exact costs) or as
Markdown for people (the branch shown); imported from our JSON or ChatGPT's export as new
conversations of the caller, all in one transaction, charging nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from anyio import to_thread
from pydantic import ValidationError
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.db.base import new_id, utcnow
from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.db.rows import column_values, with_defaults
from app.errors import MessageNotFound, ProviderNotConfigured, UnknownModel
from app.providers.registry import ProviderRegistry
from app.repositories.messages import MessageRepo
from app.schemas.content import wire
from app.schemas.conversations import ConversationDetail, ConversationRead
from app.schemas.messages import MessageRead
from app.schemas.transfers import (
    MAX_IMPORTED_MESSAGES,
    ConversationExport,
    DraftConversation,
    DraftMessage,
    ExportDocument,
    ImportedMessage,
    InvalidImport,
    Loc,
)
from app.services.conversations.branches import Tree
from app.services.conversations.chatgpt_import import read_chatgpt

# ---- export ------------------------------------------------------------------------------


async def export_json(session: AsyncSession, conversation: Conversation) -> ConversationExport:
    """The conversation and every message of every branch, oldest first, costs included."""
    messages = await MessageRepo(session).all_in_order(conversation.id)
    return ConversationExport(
        exported_at=utcnow(),
        conversation=ConversationRead.model_validate(conversation),
        messages=[MessageRead.model_validate(message) for message in messages],
    )


async def export_markdown(session: AsyncSession, conversation: Conversation) -> str:
    """The branch shown (its active path) as Markdown, with the conversation's totals."""
    messages = await MessageRepo(session).all_in_order(conversation.id)
    return markdown_of(conversation, active_path(conversation, messages), utcnow())


def attachment_name(conversation: Conversation, extension: str) -> str:
    """A file name safe in any header and file system: the title's plain letters, or the id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", conversation.title or "").strip("-._")[:80]
    return f"{stem or conversation.id}.{extension}"


def active_path(conversation: Conversation, messages: Sequence[Message]) -> list[Message]:
    """The messages from the first to the active leaf; with no leaf chosen, to the newest
    message (where such a conversation continues)."""
    if not messages:
        return []
    leaf = conversation.active_leaf_id or messages[-1].id
    by_id = {message.id: message for message in messages}
    try:
        path = Tree.of((m.id, m.parent_id) for m in messages).path_to(leaf)
    except MessageNotFound:  # a leaf that is gone: show everything rather than nothing
        return list(messages)
    return [by_id[message_id] for message_id in path]


_HEADINGS = {
    MessageRole.USER: "User",
    MessageRole.ASSISTANT: "Assistant",
    MessageRole.SYSTEM: "System",
    MessageRole.TOOL: "Tool",
}


def markdown_of(conversation: Conversation, path: Sequence[Message], now: datetime) -> str:
    title = " ".join((conversation.title or "").split()) or f"Conversation {conversation.id}"
    blocks = [f"# {title}"]
    if conversation.system_prompt:
        blocks += ["### System", conversation.system_prompt]
    for message in path:
        ended = message.status in (MessageStatus.FAILED, MessageStatus.CANCELLED)
        blocks.append(f"### {_HEADINGS[message.role]}" + (f" ({message.status})" if ended else ""))
        blocks += _message_blocks(message)
    shown = "" if len(path) == conversation.message_count else " (all branches)"
    blocks += [
        "---",
        f"*{conversation.message_count} messages{shown} · {conversation.total_tokens} tokens"
        f" · ${_usd(conversation.total_cost_usd)} · exported {now:%Y-%m-%d %H:%M} UTC*",
    ]
    return "\n\n".join(blocks) + "\n"


def _message_blocks(message: Message) -> list[str]:
    blocks: list[str] = []
    if message.reasoning:
        blocks.append(f"<details><summary>Reasoning</summary>\n\n{message.reasoning}\n\n</details>")
    if message.role is MessageRole.TOOL:
        blocks += [f"Result of `{message.tool_call_id}`:", _fenced(message.content, "")]
    elif message.parts:
        blocks += [_part_text(part) for part in message.parts]
    elif message.content:
        blocks.append(message.content)
    for call in message.tool_calls or ():
        function = call.get("function") or {}
        blocks += [
            f"Tool call `{function.get('name')}`:",
            _fenced(json.dumps(_call_of(call), indent=2, ensure_ascii=False), "json"),
        ]
    return [block for block in blocks if block]


def _part_text(part: dict[str, Any]) -> str:
    if part.get("type") == "text":
        return str(part.get("text") or "")
    if part.get("type") == "image_url":
        url = str((part.get("image_url") or {}).get("url") or "")
        # A data URL is the image itself: megabytes of base64 no reader wants inline.
        return "[image]" if url.startswith("data:") else f"![image]({url})"
    if part.get("type") == "file":
        return f"[file: {(part.get('file') or {}).get('filename') or 'attachment'}]"
    return ""


def _call_of(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        pass  # not JSON: shown as the model wrote it
    return {"id": call.get("id"), "name": function.get("name"), "arguments": arguments}


def _fenced(text: str, language: str) -> str:
    # A fence longer than any run of backticks inside, so the text cannot close it.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def _usd(amount: Decimal) -> str:
    return f"{amount.normalize():f}" if amount else "0"


# ---- import ------------------------------------------------------------------------------

# (id in the file, its stored parent's id in the file, the row), in the order they are stored.
Arranged = list[tuple[str, str | None, Message]]
_MESSAGES: Table = Message.__table__  # type: ignore[assignment]


async def import_conversations(
    session: AsyncSession, principal: Principal, registry: ProviderRegistry, body: Any
) -> ConversationDetail | list[ConversationDetail]:
    """Store the conversation(s) of an import body as new conversations of the caller.

    `body`: our export, one ChatGPT conversation, or an array of them (answered with a
    list). Everything is read and checked before anything is written, and all of it is
    written in the caller's transaction: a bad file stores nothing. Nothing is charged.
    """
    # Reading 10,000 messages takes about a second of CPU: off the event loop.
    checked = await to_thread.run_sync(read_all, body)
    owner = principal.owner_for(None)
    stored = [
        await _store(session, owner, registry, draft, rows, leaf) for draft, rows, leaf in checked
    ]
    return stored if isinstance(body, list) else stored[0]


def read_all(body: Any) -> list[tuple[DraftConversation, Arranged, str | None]]:
    """Every conversation of an import body, read and checked, with its messages arranged."""
    documents = body if isinstance(body, list) else [body]
    if not documents:
        raise InvalidImport.at((), "the array holds no conversations")
    drafts: list[DraftConversation] = []
    total = 0
    for position, document in enumerate(documents):
        within: Loc = (position,) if isinstance(body, list) else ()
        drafts.append(draft := read_draft(document, within))
        total += len(draft.messages)
        if total > MAX_IMPORTED_MESSAGES:
            limit = f"an import holds at most {MAX_IMPORTED_MESSAGES} messages in all"
            raise InvalidImport.at(within, limit)
    return [(draft, *arrange(draft)) for draft in drafts]


def read_draft(document: Any, within: Loc) -> DraftConversation:
    """Our export or a ChatGPT conversation, told apart by `format` and `mapping`."""
    if isinstance(document, dict) and "format" in document:
        return read_export(document, within)
    if isinstance(document, dict) and "mapping" in document:
        return read_chatgpt(document, within)
    raise InvalidImport.at(
        within,
        "expected a chat-api export (with `format`) or a ChatGPT conversation (with `mapping`)",
    )


def read_export(document: dict[str, Any], within: Loc) -> DraftConversation:
    """Our own export as a draft: messages, costs and settings as they were exported."""
    try:
        export = ExportDocument.model_validate(document)
    except ValidationError as error:
        raise InvalidImport.of(error, within) from None
    messages: list[DraftMessage] = []
    seen: set[str] = set()
    for position, message in enumerate(export.messages):
        loc = within + ("messages", position)
        if (key := str(message.id)) in seen:
            raise InvalidImport.at(loc + ("id",), "another message of the file has this id")
        seen.add(key)
        parent = None if message.parent_id is None else str(message.parent_id)
        messages.append(DraftMessage(key, parent, loc, loc + ("parent_id",), _row_of(message)))
    conversation = export.conversation
    leaf = conversation.active_leaf_id
    return DraftConversation(
        settings={
            "title": conversation.title,
            "title_source": conversation.title_source,
            "metadata_": conversation.metadata,
            "system_prompt": conversation.system_prompt,
            "tools": [wire(tool) for tool in conversation.tools] if conversation.tools else None,
            "temperature": conversation.temperature,
            "top_p": conversation.top_p,
            "max_tokens": conversation.max_tokens,
            "archived": conversation.archived,
            "pinned": conversation.pinned,
        },
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        messages=messages,
        leaf=None if leaf is None else str(leaf),
        leaf_loc=within + ("conversation", "active_leaf_id"),
        provider=conversation.provider,
        model=conversation.model,
    )


def _row_of(message: ImportedMessage) -> Message:
    pricing = message.pricing
    status = message.status
    if status is MessageStatus.IN_PROGRESS:  # exported mid-reply: its text stops there
        status = MessageStatus.CANCELLED
    return Message(
        role=message.role,
        content=message.content,
        parts=[wire(part) for part in message.parts] if message.parts else None,
        tool_calls=[call.model_dump() for call in message.tool_calls or ()] or None,
        tool_call_id=message.tool_call_id,
        reasoning=message.reasoning,
        status=status,
        provider=message.provider,
        model=message.model,
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        total_tokens=message.total_tokens,
        cached_tokens=message.cached_tokens,
        cache_write_tokens=message.cache_write_tokens,
        cache_write_1h_tokens=message.cache_write_1h_tokens,
        reasoning_tokens=message.reasoning_tokens,
        cost_usd=message.cost_usd,
        input_price_per_mtok=pricing and pricing.input_per_mtok,
        cached_input_price_per_mtok=pricing and pricing.cached_input_per_mtok,
        cache_write_price_per_mtok=pricing and pricing.cache_write_per_mtok,
        cache_write_1h_price_per_mtok=pricing and pricing.cache_write_1h_per_mtok,
        output_price_per_mtok=pricing and pricing.output_per_mtok,
        price_source=pricing and pricing.source,
        latency_ms=message.latency_ms,
        time_to_first_token_ms=message.time_to_first_token_ms,
        finish_reason=message.finish_reason,
        metadata_=message.metadata,
        created_at=message.created_at,
    )


def arrange(draft: DraftConversation) -> tuple[Arranged, str | None]:
    """The messages to store, in the order they are stored, and the leaf to continue from.

    Refuses a parent not in the file and a cycle of parents. A message not stored hands its
    children to its nearest stored ancestor. One without a time takes its parent's (a first
    message the conversation's), and none is older than its parent: history is read by
    (created_at, id), and new ids are given in this order, so parents always come first.
    """
    by_key = {message.key: message for message in draft.messages}
    position = {message.key: index for index, message in enumerate(draft.messages)}
    for message in draft.messages:
        if message.parent is not None and message.parent not in by_key:
            raise InvalidImport.at(message.parent_loc, "names a parent that is not in the file")
    _refuse_cycles(draft.messages, by_key, position)
    if draft.leaf is not None and draft.leaf not in by_key:
        raise InvalidImport.at(draft.leaf_loc, "is not a message of the file")

    stored_self: dict[str, str | None] = {}

    def nearest_stored(key: str | None) -> str | None:
        walked: list[str] = []
        while key is not None and by_key[key].row is None:
            if key in stored_self:
                key = stored_self[key]
                break
            walked.append(key)
            key = by_key[key].parent
        stored_self.update(dict.fromkeys(walked, key))
        return key

    rows = {message.key: message.row for message in draft.messages if message.row is not None}
    parents = {key: nearest_stored(by_key[key].parent) for key in rows}
    depth: dict[str, int] = {}
    for key in rows:
        chain = [key]
        while (above := parents[chain[-1]]) is not None and above not in depth:
            chain.append(above)
        below = -1 if above is None else depth[above]
        for step, node in enumerate(reversed(chain), start=1):
            depth[node] = below + step
    start = draft.created_at or utcnow()
    for key in sorted(rows, key=depth.__getitem__):  # parents first
        row, parent = rows[key], parents[key]
        floor = start if parent is None else rows[parent].created_at
        own = row.created_at or floor
        row.created_at = own if parent is None else max(own, floor)
    order = sorted(rows, key=lambda key: (rows[key].created_at, depth[key], position[key]))
    if draft.leaf is not None:
        leaf = nearest_stored(draft.leaf)
    else:
        leaf = order[-1] if draft.newest_is_leaf and order else None
    return [(key, parents[key], rows[key]) for key in order], leaf


def _refuse_cycles(
    messages: Sequence[DraftMessage], by_key: dict[str, DraftMessage], position: dict[str, int]
) -> None:
    """A 422 naming the cycle's message that comes first in the file, if parents loop."""
    settled: set[str] = set()  # known to lead up to a first message
    for message in messages:
        trail: dict[str, int] = {}  # walked up from `message`: key -> step
        key: str | None = message.key
        while key is not None and key not in settled:
            if key in trail:
                cycle = list(trail)[trail[key] :]
                first = min(cycle, key=position.__getitem__)
                raise InvalidImport.at(by_key[first].parent_loc, "is part of a cycle of parents")
            trail[key] = len(trail)
            key = by_key[key].parent
        settled.update(trail)


async def _store(
    session: AsyncSession,
    owner: str,
    registry: ProviderRegistry,
    draft: DraftConversation,
    arranged: Arranged,
    leaf: str | None,
) -> ConversationDetail:
    """Insert one conversation and its messages (new ids, parents remapped), with totals
    that are the sums over its messages. Flushed, not committed."""
    conversation_id = new_id()
    new_ids: dict[str, UUID] = {}
    messages: list[Message] = []
    for key, parent, row in arranged:  # parents come first
        row.id = new_ids[key] = new_id()
        row.parent_id = None if parent is None else new_ids[parent]
        row.conversation_id = conversation_id
        row.imported_from = draft.source  # kept out of usage reports: not charged here
        messages.append(with_defaults(row))  # the column defaults, as a flush would give
    created = draft.created_at or (messages[0].created_at if messages else utcnow())
    last = max((message.created_at for message in messages), default=created)
    provider, model = _servable(registry, draft.provider, draft.model)
    conversation = Conversation(
        id=conversation_id,
        user_id=owner,
        **draft.settings,
        provider=provider,
        model=model,
        active_leaf_id=None if leaf is None else new_ids[leaf],
        message_count=len(messages),
        total_tokens=sum(message.total_tokens for message in messages),
        total_cost_usd=sum((message.cost_usd or Decimal(0) for message in messages), Decimal(0)),
        created_at=created,
        updated_at=draft.updated_at or max(created, last),
    )
    session.add(conversation)
    await session.flush()
    if messages:  # one executemany of a Core INSERT: a flush of 10,000 objects took seconds
        await session.execute(insert(_MESSAGES), [column_values(m) for m in messages])
    return ConversationDetail(
        **ConversationRead.model_validate(conversation).model_dump(),
        messages=[MessageRead.model_validate(message) for message in messages],
    )


def _servable(
    registry: ProviderRegistry, provider: str | None, model: str | None
) -> tuple[str | None, str | None]:
    """The conversation's defaults if this service can serve them; else none (the service's
    default then answers, as for a new conversation). Messages keep who wrote them."""
    if provider is None and model is None:
        return None, None
    try:
        registry.resolve(provider, model)
    except (UnknownModel, ProviderNotConfigured):
        return None, None
    return provider, model
