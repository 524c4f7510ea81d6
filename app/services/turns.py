"""One turn of a conversation: store the user's message, ask the model, store and charge the reply.

No database connection is held while the provider works: the turn commits the user's message
(and an `in_progress` reply) first, calls the provider with no session open, then completes the
reply and adds its cost to the conversation in one short transaction.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.security import Principal
from app.db.base import utcnow
from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.errors import ChatAPIError, ConversationNotFound, UpstreamError, UpstreamTimeout
from app.providers.base import ChatMessage, ChatRequest, Completion, Provider, complete
from app.providers.registry import ModelChoice, ProviderRegistry
from app.repositories.conversations import ConversationRepo
from app.repositories.messages import MessageRepo
from app.schemas.messages import MessageCreate, MessageRead, TokenUsage, TurnResult
from app.services.pricing import PriceBook

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What every turn needs, built once at start-up."""

    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ProviderRegistry
    prices: PriceBook
    provider_timeout_s: float


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def choose_model(
    registry: ProviderRegistry, conversation: Conversation, body: MessageCreate
) -> ModelChoice:
    """The message's choice wins, then the conversation's defaults, then the service's."""
    provider = body.provider or conversation.provider
    model = body.model
    if model is None and (body.provider is None or body.provider == conversation.provider):
        model = conversation.model
    return registry.resolve(provider, model)


async def take_turn(
    ctx: TurnContext, principal: Principal, conversation_id: UUID, body: MessageCreate
) -> TurnResult:
    """Run one non-streaming turn and return the contract's 201 body.

    On any provider failure the user's message stays stored, the reply is stored as `failed`,
    and the domain error (502, 504 or 429) propagates to the client.
    """
    reply, request, provider = await _open_turn(ctx, principal, conversation_id, body)
    started = _monotonic_ms()
    try:
        async with asyncio.timeout(ctx.provider_timeout_s):
            completion = await complete(provider, request, clock=_monotonic_ms)
    except TimeoutError:
        failure: ChatAPIError = UpstreamTimeout(provider.name, ctx.provider_timeout_s)
    except ChatAPIError as exc:
        failure = exc
    except asyncio.CancelledError:
        # The server is shutting down under us: leave nothing `in_progress`.
        await asyncio.shield(
            _fail_reply(ctx, reply, UpstreamError("the turn was interrupted"), started)
        )
        raise
    except Exception:
        log.exception(
            "provider raised an unexpected error", provider=provider.name, model=reply.model
        )
        failure = UpstreamError(f"provider {provider.name!r} failed")
    else:
        return await _complete_reply(ctx, reply, completion, started)
    await _fail_reply(ctx, reply, failure, started)
    raise failure


async def _open_turn(
    ctx: TurnContext, principal: Principal, conversation_id: UUID, body: MessageCreate
) -> tuple[Message, ChatRequest, Provider]:
    """Commit the user's message and an in-progress reply; build the request from the history."""
    async with ctx.sessionmaker.begin() as session:
        conversation = await ConversationRepo(session).get(conversation_id, principal)
        if conversation is None:
            raise ConversationNotFound(conversation_id)
        choice = choose_model(ctx.registry, conversation, body)
        history = await MessageRepo(session).prompt_history(conversation.id)
        now = utcnow()
        user_message = Message(
            conversation_id=conversation.id,
            role=MessageRole.USER,
            content=body.content,
            status=MessageStatus.COMPLETED,
            metadata_=body.metadata,
            cost_usd=Decimal(0),
            created_at=now,
        )
        reply = Message(
            conversation_id=conversation.id,
            role=MessageRole.ASSISTANT,
            content="",
            status=MessageStatus.IN_PROGRESS,
            provider=choice.provider.name,
            model=choice.model,
            metadata_={},
            cost_usd=None,
            created_at=now,
        )
        await MessageRepo(session).add_all(user_message, reply)
        await ConversationRepo(session).count_messages(conversation.id, added=2)
    request = ChatRequest(
        model=choice.model,
        messages=(
            *(ChatMessage(m.role.value, m.content) for m in history),
            ChatMessage("user", body.content),
        ),
        system_prompt=conversation.system_prompt,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
    )
    return reply, request, choice.provider


async def _complete_reply(
    ctx: TurnContext, reply: Message, completion: Completion, started: int
) -> TurnResult:
    usage = completion.usage
    cost = ctx.prices.cost_of(reply.provider or "", reply.model or "", usage)
    if cost is None:
        log.warning(
            "no price known for model; cost stored as null",
            provider=reply.provider,
            model=completion.model,
        )
    async with ctx.sessionmaker.begin() as session:
        session.add(reply)
        reply.content = completion.text
        reply.status = MessageStatus.COMPLETED
        reply.prompt_tokens = usage.prompt_tokens
        reply.completion_tokens = usage.completion_tokens
        reply.cached_tokens = usage.cached_tokens
        reply.total_tokens = usage.total_tokens
        reply.cost_usd = cost
        reply.finish_reason = completion.finish_reason
        reply.latency_ms = _monotonic_ms() - started
        reply.time_to_first_token_ms = completion.time_to_first_token_ms
        await session.flush()
        # Same transaction as the reply: the totals can never disagree with their messages.
        await ConversationRepo(session).charge(
            reply.conversation_id, tokens=usage.total_tokens, cost_usd=cost or Decimal(0)
        )
    log.info(
        "turn completed",
        provider=reply.provider,
        model=reply.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=str(cost),
        latency_ms=reply.latency_ms,
    )
    return TurnResult(
        message=MessageRead.model_validate(reply),
        conversation_id=reply.conversation_id,
        usage=TokenUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        ),
        cost_usd=cost,
    )


async def _fail_reply(
    ctx: TurnContext, reply: Message, failure: ChatAPIError, started: int
) -> None:
    async with ctx.sessionmaker.begin() as session:
        session.add(reply)
        reply.status = MessageStatus.FAILED
        reply.finish_reason = "error"
        reply.cost_usd = Decimal(0)
        reply.latency_ms = _monotonic_ms() - started
        reply.metadata_ = {"error": {"code": failure.code, "detail": failure.detail}}
    log.warning("turn failed", provider=reply.provider, model=reply.model, code=failure.code)
