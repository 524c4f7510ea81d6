"""A turn whose whole prompt comes from the client (OpenAI's chat completions semantics).

The client owns the history: the provider sees exactly the messages sent, and only what is
new to the conversation is stored before the reply. The reply then runs, is stored and is
charged by the same core as every other turn (`app.services.turns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from app.core.security import Principal
from app.db.base import utcnow
from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.errors import ConversationNotFound, GenerationInProgress
from app.providers.base import ChatMessage, ChatRequest
from app.providers.registry import ModelChoice
from app.repositories.conversations import ConversationRepo, TurnConversation
from app.repositories.messages import MessageRepo
from app.services.idempotency import ResponseRecorder
from app.services.turns import (
    OpenTurn,
    StartedGeneration,
    TurnContext,
    check_budget,
    redacted_request,
)


@dataclass(frozen=True, slots=True)
class PromptTurn:
    """A turn whose whole prompt the client sends (OpenAI semantics: the client owns history).

    `messages` is what the provider sees, in order; `new_messages` is what gets stored before
    the reply (the whole exchange for a new conversation, the trailing user messages when
    appending) and must end with a user message. `conversation_id=None` starts a conversation
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


async def open_prompt_turn(
    ctx: TurnContext,
    principal: Principal,
    turn: PromptTurn,
    *,
    record: ResponseRecorder | None = None,
) -> OpenTurn:
    """Store a client-sent exchange and an in-progress reply; the request is the client's.

    One transaction: the conversation (created, or the caller's own: else 404), the budget
    and token-limit checks, the new messages in order and the claimed reply (409 while another
    reply runs in the conversation). Nothing is stored when any of them fails. `record` (a
    streamed call's `Idempotency-Key`) stores the started reply in that transaction too.
    """
    *_, last = turn.new_messages
    if last.role != "user":
        raise ValueError("a prompt turn's new messages must end with a user message")
    async with ctx.sessionmaker.begin() as session:
        conversations = ConversationRepo(session)
        now = utcnow()
        counted = len(turn.new_messages) + 1  # and the reply
        conversation: Conversation | TurnConversation
        if turn.conversation_id is None:
            conversation = await conversations.add(
                Conversation(
                    user_id=principal.owner_for(turn.owner),
                    title=turn.title,
                    metadata_={},
                    provider=turn.choice.provider.name,
                    model=turn.choice.model,
                    system_prompt=turn.system_prompt,
                    message_count=counted,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            # Found (tenancy filter) and counted in one statement; a failure below rolls back.
            found = await conversations.get_counting_messages(
                turn.conversation_id, principal, added=counted
            )
            if found is None:
                raise ConversationNotFound(turn.conversation_id)
            conversation = found
        await check_budget(ctx, session, conversation.user_id)
        if ctx.limiter is not None:
            await ctx.limiter.check_tokens(conversation.user_id)
        # Distinct times keep the client's order: history is read by (created_at, id).
        stored = [
            Message(
                conversation_id=conversation.id,
                role=MessageRole(message.role),
                content=message.content,
                status=MessageStatus.COMPLETED,
                metadata_={},
                cost_usd=Decimal(0),
                created_at=now + timedelta(microseconds=position),
            )
            for position, message in enumerate(turn.new_messages)
        ]
        reply = Message(
            conversation_id=conversation.id,
            role=MessageRole.ASSISTANT,
            content="",
            status=MessageStatus.IN_PROGRESS,
            provider=turn.choice.provider.name,
            model=turn.choice.model,
            metadata_={},
            cost_usd=Decimal(0),  # until charged; the same columns as `stored`: one INSERT
            created_at=now + timedelta(microseconds=len(stored)),
        )
        owner = conversation.user_id
        if not await MessageRepo(session).claim_generation(*stored, reply):
            raise GenerationInProgress(conversation.id)
        if record is not None:
            await record(session, StartedGeneration(reply.id, conversation.id))
    request = ChatRequest(
        model=turn.choice.model,
        messages=turn.messages,
        system_prompt=turn.system_prompt,
        temperature=turn.temperature,
        max_tokens=turn.max_tokens,
        top_p=turn.top_p,
        stop=turn.stop,
    )
    if ctx.redact_provider_text:
        request = redacted_request(request)
    return reply, request, ctx.registry.with_fallbacks(turn.choice), owner
