"""A turn whose whole prompt comes from the client (OpenAI's chat completions semantics).

The client owns the history: the provider sees exactly the messages sent, and only what is
new to the conversation is stored before the reply. The reply then runs, is stored and is
charged by the same core as every other turn (`app.services.turns.turns`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from app.core.security import Principal
from app.db.base import utcnow
from app.db.driver import statements
from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.errors import MessageNotFound
from app.providers.base import CacheBreak, ChatMessage, ChatRequest
from app.providers.registry import ModelChoice
from app.repositories.turns import TurnRepo, TurnView
from app.repositories.usage import month_of
from app.services.limits.idempotency import ResponseRecorder
from app.services.turns.request_options import TurnOptions
from app.services.turns.turn_messages import chain, redacted_request, stored_message
from app.services.turns.turns import (
    OpenTurn,
    StartedGeneration,
    TurnContext,
    claim_after_read,
    guarded_claim,
    refuse_over_budget,
)


@dataclass(frozen=True, slots=True)
class PromptTurn:
    """A turn whose whole prompt the client sends (OpenAI semantics: the client owns history).

    `messages` is what the provider sees, in order; `new_messages` is what a new
    conversation stores before the reply (an existing one stores what its branch lacks) and
    must end with a user or tool message. `conversation_id=None` starts a conversation
    owned by the caller (or, where the caller may choose, `owner`) titled `title`.
    """

    choice: ModelChoice
    messages: tuple[ChatMessage, ...]
    new_messages: tuple[ChatMessage, ...]
    system_prompt: str | None = None
    conversation_id: UUID | None = None
    title: str | None = None
    owner: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    # The options checked against the provider (`request_options.turn_options`).
    options: TurnOptions = TurnOptions()
    # OpenAI's `metadata`: stored with the reply (its `request_metadata`).
    metadata: Mapping[str, str] | None = None
    # A stored reply of `conversation_id` this turn follows (Responses' `previous_response_id`):
    # the model sees the stored branch ending at it, then `messages`; the new messages are
    # stored after it (a branch when it is not the leaf). `MessageNotFound` if it is not there.
    continues_after: UUID | None = None
    # More of the reply's `metadata`, stored with it (what a Responses GET rebuilds from).
    reply_metadata: Mapping[str, Any] | None = None
    # Prompt-caching breakpoints on the system prompt and the tools (`ChatRequest`'s): sent,
    # never stored. The messages carry their own (`ChatMessage.cache_breaks`).
    system_cache_breaks: tuple[CacheBreak, ...] = ()
    tool_cache_breaks: tuple[CacheBreak, ...] = ()


async def open_prompt_turn(
    ctx: TurnContext,
    principal: Principal,
    turn: PromptTurn,
    *,
    record: ResponseRecorder | None = None,
) -> OpenTurn:
    """Store a client-sent exchange and an in-progress reply; the request is the client's.

    The conversation is created with its messages (one statement on Postgres), or the
    caller's own (else 404) is read and then claimed as `open_turn` claims it (409 while
    another reply runs in it). Budget and token-limit checks come first: nothing is stored
    when any of them fails. `record` (a streamed call's `Idempotency-Key`) stores the started
    reply in one transaction with the messages.
    """
    *_, last = turn.new_messages
    if last.role not in ("user", "tool"):
        raise ValueError("a prompt turn's new messages must end with a user or tool message")
    month = month_of(utcnow())
    # Without a recorder each statement is atomic alone: no transaction around them.
    async with (
        guarded_claim(ctx) as guard,
        statements(ctx.sessionmaker, single_statements=record is None) as run,
    ):
        turns = TurnRepo(run)
        if turn.conversation_id is None:
            owner = principal.owner_for(turn.owner)
            if ctx.budget_usd is not None:
                refuse_over_budget(ctx, await turns.month_spent(owner, month))
            if ctx.limiter is not None:
                await ctx.limiter.check_tokens(owner)
            conversation = Conversation(
                user_id=owner,
                title=turn.title,
                metadata_={},
                provider=turn.choice.provider.name,
                model=turn.choice.model,
                system_prompt=turn.system_prompt,
                created_at=utcnow(),
            )
            conversation.updated_at = conversation.created_at
            conversation.title_source = None if turn.title is None else "first_message"
            messages = _prompt_messages(turn.new_messages, turn, ctx.generation_owner, None)
            conversation.active_leaf_id = messages[-1].id
            guard.reply = messages[-1]
            await turns.start(conversation, messages)
            conversation_id = conversation.id
            history: tuple[ChatMessage, ...] = ()
        else:
            conversation_id = turn.conversation_id
            view, messages, history = await claim_after_read(
                ctx,
                turns,
                conversation_id,
                principal.visible_owner(None),
                lambda view: _following(view, turn, ctx.generation_owner),
                history=True,
                from_message=turn.continues_after,
                guard=guard,
            )
            owner = view.conversation.user_id
        reply = messages[-1]
        if record is not None:
            await record(turns.session, StartedGeneration(reply.id, conversation_id))
    request = ChatRequest(
        model=turn.choice.model,
        messages=(*history, *turn.messages),
        system_prompt=turn.system_prompt,
        temperature=turn.temperature,
        max_tokens=turn.max_tokens,
        top_p=turn.top_p,
        stop=turn.stop,
        options=turn.options.sent,
        system_cache_breaks=turn.system_cache_breaks,
        tool_cache_breaks=turn.tool_cache_breaks,
    )
    if ctx.redact_provider_text:
        request = redacted_request(request)
    # Only fallbacks that honour every option the chosen provider was asked for.
    provider = ctx.registry.with_fallbacks(
        turn.choice, options=turn.options.requested, unknown=turn.options.unknown
    )
    return reply, request, provider, owner


def _following(
    view: TurnView, turn: PromptTurn, owner: UUID | None
) -> tuple[list[Message], tuple[ChatMessage, ...]]:
    """What a turn stores, and the stored prompt the provider sees before its messages."""
    if turn.continues_after is None:
        return _continuing(view, turn, owner), ()
    end = view.branch.end
    if end is None or end.id != turn.continues_after:
        raise MessageNotFound(turn.continues_after)
    return _prompt_messages(turn.new_messages, turn, owner, end.id), tuple(view.history)


def _continuing(view: TurnView, turn: PromptTurn, owner: UUID | None) -> list[Message]:
    """What a call with `X-Conversation-ID` stores: the client's messages past what the
    stored active branch already holds, so the stored transcript is what the model saw.

    The longest stored prefix the client repeats is kept; where the client's messages part
    from the branch (an edit, a regenerated reply, a shortened history), the new ones
    branch off at the last message both share (a new first message if none).
    """
    path = view.branch.nodes
    shared, parent = 0, None
    for node, stored in path:
        if shared == len(turn.messages) - 1 or turn.messages[shared] != stored:
            break
        shared += 1
        parent = node
    if shared == len(path):
        parent = view.leaf  # continues after failed replies too
    return _prompt_messages(turn.messages[shared:], turn, owner, parent)


def _prompt_messages(
    said: Sequence[ChatMessage], turn: PromptTurn, owner: UUID | None, parent: UUID | None
) -> list[Message]:
    """The client's new messages (completed), then the in-progress reply, in order, the
    first following `parent`.

    Distinct times keep the client's order: history is read by (created_at, id). The
    conversation is set when they are stored.
    """
    now = utcnow()
    stored = [
        stored_message(message, now + timedelta(microseconds=position))
        for position, message in enumerate(said)
    ]
    reply = Message(
        role=MessageRole.ASSISTANT,
        content="",
        status=MessageStatus.IN_PROGRESS,
        provider=turn.choice.provider.name,
        model=turn.choice.model,
        metadata_=_reply_metadata(turn),
        cost_usd=Decimal(0),  # until charged; the same columns as `stored`: one INSERT
        created_at=now + timedelta(microseconds=len(stored)),
        generation_owner=owner,
    )
    chain(parent, [*stored, reply])
    return [*stored, reply]


def _reply_metadata(turn: PromptTurn) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(turn.reply_metadata or {})
    if turn.metadata:
        metadata["request_metadata"] = dict(turn.metadata)
    return metadata
