"""One turn of a conversation: store the user's message, ask the model, store and charge the reply.

No database connection is held while the provider works: the turn commits the user's message
(and an `in_progress` reply) first, calls the provider with no session open, then completes the
reply and adds its cost to the conversation in one short transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import metrics
from app.core.security import Principal
from app.db.base import utcnow
from app.db.driver import Statements, statements
from app.db.durable import is_connection_failure
from app.db.models import Message, MessageRole, MessageStatus
from app.errors import (
    BudgetExceeded,
    ChatAPIError,
    ConversationNotFound,
    GenerationInProgress,
    MessageNotFound,
    ReplyEndedElsewhere,
    TurnNotStored,
    UpstreamError,
    UpstreamTimeout,
    failure_fields,
)
from app.providers.base import (
    ChatMessage,
    ChatRequest,
    Finished,
    Provider,
    Usage,
    one_shot_of,
)
from app.providers.registry import ModelChoice, ProviderRegistry
from app.repositories.conversations import TurnConversation
from app.repositories.turns import Claim, TurnRepo, TurnView
from app.repositories.usage import month_of
from app.schemas.messages import MessageCreate, TurnResult
from app.services.limits.idempotency import ResponseRecorder
from app.services.limits.rate_limits import RateLimiter
from app.services.pricing.price import Price
from app.services.pricing.price_book import PriceBook
from app.services.turns.generated_text import Generation, monotonic_ms
from app.services.turns.outcomes import OutcomeWriter
from app.services.turns.partial_text import PartialTextSaver
from app.services.turns.request_options import InvalidChatRequest
from app.services.turns.turn_messages import (
    check_tool_results,
    prompt_message_of,
    redacted_request,
    reply_options,
    turn_messages,
)

log = structlog.get_logger(__name__)

MessagesT = TypeVar("MessagesT", bound=Sequence[Message])
PreparedT = TypeVar("PreparedT")

# Reads and claims of one turn before giving up (409) on a conversation that keeps changing.
CLAIM_ATTEMPTS = 3

# An opened turn: the in-progress reply, the request for the provider, the provider (with its
# fallbacks) and the owner to charge. `run_turn` or a server-owned generation finishes it.
OpenTurn = tuple[Message, ChatRequest, Provider, str]


@dataclass(frozen=True, slots=True)
class StartedGeneration:
    """A streamed turn once opened: the reply being generated and its conversation."""

    reply_id: UUID
    conversation_id: UUID


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What every turn needs, built once at start-up."""

    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ProviderRegistry
    prices: PriceBook
    generation_timeout_s: float
    # Every running reply of this process, streamed or not: its text so far and a sign of
    # life for the abandoned-reply sweep.
    partials: PartialTextSaver
    # Stores replies' outcomes, waiting out a database that is away (turns/outcomes.py).
    outcomes: OutcomeWriter
    # This process's lease (turns/leases.py), stamped on every reply it starts: once
    # the lease lapses, the reply has no live owner and is ended by the sweep.
    generation_owner: UUID | None = None
    budget_usd: Decimal | None = None
    limiter: RateLimiter | None = None
    # PII_REDACTION=provider: mask personal data and keys in the text sent to the provider.
    redact_provider_text: bool = False
    # Names new conversations after their first turn (TITLE_MODEL), when configured.
    titles: TitleHook | None = None


def choose_model(
    registry: ProviderRegistry, conversation: TurnConversation, body: MessageCreate
) -> ModelChoice:
    """The message's choice wins, then the conversation's defaults, then the service's."""
    provider = body.provider or conversation.provider
    model = body.model
    if model is None and (body.provider is None or body.provider == conversation.provider):
        model = conversation.model
    return registry.resolve(provider, model)


async def take_turn(
    ctx: TurnContext,
    principal: Principal,
    conversation_id: UUID,
    body: MessageCreate,
    *,
    record: ResponseRecorder | None = None,
    regenerating: UUID | None = None,
) -> TurnResult:
    """Run one non-streaming turn and return the contract's 201 body.

    On any provider failure the user's message stays stored, the reply is stored as `failed`
    with whatever text arrived, and the domain error (502, 504 or 429) reaches the client.
    """
    opened = await open_turn(ctx, principal, conversation_id, body, regenerating=regenerating)
    return await run_turn(ctx, opened, record=record)


async def run_turn(
    ctx: TurnContext, opened: OpenTurn, *, record: ResponseRecorder | None = None
) -> TurnResult:
    """Ask the provider for an opened turn's reply, then store and charge it exactly once.

    A failure stores the reply as `failed` (its text kept) and raises the domain error.
    `record` (an `Idempotency-Key`'s) stores the result in the transaction that charges it.
    """
    reply, request, provider, owner = opened
    started = monotonic_ms()
    generation = Generation()
    # Alive while the provider works, however long it takes (a slow answer, retries): the
    # sweep must not end it. Its text arrives whole, so no partial text is saved meanwhile.
    ctx.partials.track(reply.id, generation)
    try:
        try:
            async with asyncio.timeout(ctx.generation_timeout_s):
                finished = await _generate(provider, request, generation)
        finally:
            ctx.partials.forget(reply.id)
    except TimeoutError:
        failure: ChatAPIError = UpstreamTimeout(provider.name, ctx.generation_timeout_s)
    except ChatAPIError as exc:
        failure = exc
    except asyncio.CancelledError:
        # The server is shutting down under us: leave nothing `in_progress`.
        interrupted = UpstreamError("the turn was interrupted")
        await asyncio.shield(fail_reply(ctx, reply, interrupted, generation, started))
        raise
    except Exception:
        log.exception(
            "provider raised an unexpected error", provider=provider.name, model=reply.model
        )
        failure = UpstreamError(f"provider {provider.name!r} failed")
    else:
        return await complete_reply(ctx, owner, reply, finished, generation, started, record=record)
    await fail_reply(ctx, reply, failure, generation, started)
    raise failure


async def _generate(provider: Provider, request: ChatRequest, generation: Generation) -> Finished:
    one_shot = one_shot_of(provider)
    if one_shot is not None:
        # The caller wants only the whole reply: one upstream call, no stream to parse. Its
        # first token arrives with the rest; a failure leaves no partial text.
        reply = await one_shot.complete(request)
        generation.take(reply)
        return reply.finished
    async for event in provider.stream(request):
        if isinstance(event, Finished):
            return event
        generation.add(event)
    raise UpstreamError(f"provider {provider.name!r} ended its reply without finishing")


async def open_turn(
    ctx: TurnContext,
    principal: Principal,
    conversation_id: UUID,
    body: MessageCreate,
    *,
    record: ResponseRecorder | None = None,
    regenerating: UUID | None = None,
) -> OpenTurn:
    """Commit the user's message and an in-progress reply; build the request from the history.

    The turn continues the conversation's active branch, or branches: after `body.parent_id`
    (an edit), or beside the reply `regenerating` (a new reply to the same prompt, with no
    new message of the user's).

    The conversation and its history are read first, then the turn is claimed on the
    condition that nothing was added meanwhile (`TurnRepo.claim`); if something was, it is
    read again. Nothing is stored when a check fails. `record` (a streamed turn's
    `Idempotency-Key`) stores the started reply in the claim's transaction, so a retry finds
    that reply and never starts a second one.
    """

    walk = branch_walk(body, regenerating)

    def prepare(view: TurnView) -> tuple[list[Message], Prepared]:
        choice = choose_model(ctx.registry, view.conversation, body)
        parent, history = branch_point(view, walk)
        if regenerating is None:
            check_tool_results(body, history)
        options = reply_options(choice, body, view.conversation.tools)
        messages = turn_messages(
            view.conversation.id,
            body,
            choice,
            ctx.generation_owner,
            parent=parent,
            regenerating=regenerating is not None,
        )
        return messages, Prepared(choice, options, history)

    # One connection for the read and the claim: under a full pool each checkout is a wait.
    # Without a recorder each statement is atomic alone: no transaction around them.
    async with (
        guarded_claim(ctx) as guard,
        statements(ctx.sessionmaker, single_statements=record is None) as run,
    ):
        turns = TurnRepo(run)
        owner = principal.visible_owner(None)
        view, messages, prepared = await claim_after_read(
            ctx,
            turns,
            conversation_id,
            owner,
            prepare,
            history=walk.reads_history,
            from_message=walk.from_message,
            guard=guard,
        )
        *said, reply = messages
        conversation = view.conversation
        if record is not None:
            await record(turns.session, StartedGeneration(reply.id, conversation.id))
    if ctx.titles is not None and view.message_count == 0 and conversation.title is None:
        # Named in the background from what the user said: never delays the reply.
        ctx.titles.first_turn_started(conversation.id, conversation.user_id, said, reply.id)
    request = ChatRequest(
        model=prepared.choice.model,
        messages=(*prepared.history, *(prompt_message_of(message) for message in said)),
        system_prompt=conversation.system_prompt,
        cache_scope=conversation.user_id if body.cache else None,  # the reply cache's tenant
        # The turn's own settings, else the conversation's.
        temperature=_first_set(body.temperature, conversation.temperature),
        top_p=_first_set(body.top_p, conversation.top_p),
        max_tokens=body.max_tokens or conversation.max_tokens,
        options=prepared.options,
    )
    choice = prepared.choice
    if ctx.redact_provider_text:
        request = redacted_request(request)
    return reply, request, ctx.registry.with_fallbacks(choice), conversation.user_id


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a turn decided from what it read: model, reply options and prompt history."""

    choice: ModelChoice
    options: dict[str, Any]
    history: list[ChatMessage]


def _first_set(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


@dataclass(frozen=True, slots=True)
class BranchWalk:
    """Where a turn's new messages go, known before the conversation is read: after the
    active leaf (`from_message` None), after a message the turn names (an edit's parent),
    beside a reply (`regenerating`), or as a new first message (no history to read)."""

    from_message: UUID | None
    regenerating: UUID | None = None
    reads_history: bool = True


def branch_walk(body: MessageCreate, regenerating: UUID | None) -> BranchWalk:
    if regenerating is not None:
        return BranchWalk(regenerating, regenerating=regenerating)
    if "parent_id" not in body.model_fields_set:
        return BranchWalk(None)
    return BranchWalk(body.parent_id, reads_history=body.parent_id is not None)


def branch_point(view: TurnView, walk: BranchWalk) -> tuple[UUID | None, list[ChatMessage]]:
    """The message a turn's new messages follow and the prompt before them: the regenerated
    reply's parent and what preceded the reply, the `parent_id` the turn names (null: a new
    first message) and its branch, or the active leaf and its branch."""
    end = view.branch.end
    if walk.regenerating is not None:
        if end is None:
            raise MessageNotFound(walk.regenerating)
        if end.role != MessageRole.ASSISTANT:
            raise InvalidChatRequest(
                "message_id", "only a reply (an assistant message) is regenerated"
            )
        return end.parent_id, view.history_before(end.id)
    if walk.from_message is not None and end is None:
        raise InvalidChatRequest("parent_id", "is not a message of this conversation")
    return view.leaf, view.history


class TitleHook(Protocol):
    """Names a conversation in the background after its first turn (titles.py)."""

    def first_turn_started(
        self, conversation_id: UUID, owner: str, said: Sequence[Message], reply_id: UUID
    ) -> None: ...


@dataclass(slots=True)
class ClaimGuard:
    """The reply a turn is claiming, once its claim has been sent to the database."""

    reply: Message | None = None


@asynccontextmanager
async def guarded_claim(ctx: TurnContext) -> AsyncIterator[ClaimGuard]:
    """A claim whose connection failed may have been applied: the user's message stored and a
    reply `in_progress` that nobody will generate, under this live process's lease.

    Such a failure is a 503 that names the reply and its conversation, and the reply is failed
    (if it was stored) as soon as the database takes the write, so it blocks nothing.
    """
    guard = ClaimGuard()
    try:
        yield guard
    except Exception as error:
        reply = guard.reply
        if reply is None or not is_connection_failure(error):
            raise
        reply.content = ""
        reply.status = MessageStatus.FAILED
        reply.finish_reason = "error"
        reply.metadata_ = {
            **reply.metadata_,
            "error": {"code": "not_ready", "detail": "the database went away"},
        }
        ctx.outcomes.keep_trying(lambda run: TurnRepo(run).finish(reply), single_statements=True)
        raise TurnNotStored(
            reply.conversation_id,
            reply.id,
            "the database went away while this turn was being stored; if its messages were "
            "stored, its reply is failed: check the conversation before sending again",
        ) from error


async def claim_after_read(
    ctx: TurnContext,
    turns: TurnRepo,
    conversation_id: UUID,
    owner: str | None,
    prepare: Callable[[TurnView], tuple[MessagesT, PreparedT]],
    *,
    history: bool = True,
    from_message: UUID | None = None,
    guard: ClaimGuard | None = None,
) -> tuple[TurnView, MessagesT, PreparedT]:
    """Read a conversation, check it may take a turn, and claim the turn's messages.

    `prepare` builds the messages (in-progress reply last) and anything else the caller needs
    from what was read. The checks come in the contract's order: 404, then `prepare`'s own
    errors, 402, 429, 409. If other turns land between the read and the claim, it reads
    again, so a history read with it is whole when the claim succeeds.
    """
    for _attempt in range(CLAIM_ATTEMPTS):
        view = await turns.view(
            conversation_id, owner, month_of(utcnow()), history=history, from_message=from_message
        )
        if view is None:
            raise ConversationNotFound(conversation_id)
        messages, prepared = prepare(view)
        refuse_over_budget(ctx, view.month_spent)
        if ctx.limiter is not None:
            await ctx.limiter.check_tokens(view.conversation.user_id)
        if view.reply_running:
            raise GenerationInProgress(conversation_id)
        if guard is not None:
            guard.reply = messages[-1]
        claim = await turns.claim(view.conversation.id, view.message_count, messages)
        if claim is Claim.RUNNING:
            raise GenerationInProgress(conversation_id)
        if claim is Claim.CLAIMED:
            return view, messages, prepared
    # Other turns kept landing between the read and the claim.
    raise GenerationInProgress(conversation_id)


def refuse_over_budget(ctx: TurnContext, month_spent: Decimal) -> None:
    """`BudgetExceeded` (402) once the owner's spending this month has reached the budget.

    Checked before the provider is called. Turns already in flight may still land after the
    check, so a month can end slightly over budget by at most those turns; it never starts a
    new one past it.
    """
    if ctx.budget_usd is not None and month_spent >= ctx.budget_usd:
        raise BudgetExceeded(ctx.budget_usd, month_of(utcnow()))


async def complete_reply(
    ctx: TurnContext,
    owner: str,
    reply: Message,
    finished: Finished,
    generation: Generation,
    started: int,
    status: MessageStatus = MessageStatus.COMPLETED,
    *,
    record: ResponseRecorder | None = None,
) -> TurnResult:
    """Store the reply with its usage and cost, and charge it, in one transaction.

    `record` stores the result for an `Idempotency-Key` in that transaction too: a key is
    never left claimed for a reply that was charged, nor answered for one that was not.
    """
    usage = finished.usage
    served_by = finished.provider or reply.provider or ""
    requested = finished.requested_model or (reply.model if served_by == reply.provider else None)
    price = ctx.prices.price_of(
        served_by, finished.model, requested_model=requested, prompt_tokens=usage.prompt_tokens
    )
    cost = None if price is None else price.cost_of(usage)
    if price is None:
        log.warning(
            "no price known for model; cost stored as null",
            provider=served_by,
            model=finished.model,
        )
    reply.content = generation.text
    _record_calls_and_reasoning(reply, generation)
    reply.status = status
    reply.provider = served_by
    reply.model = finished.model
    _record_usage(reply, usage, cost, price)
    reply.finish_reason = finished.reason
    if finished.cache is not None:  # the reply cache was asked: say whether it answered
        reply.metadata_ = {**reply.metadata_, "cache": finished.cache}
    if finished.system_fingerprint is not None:  # OpenAI's clients read it back
        reply.metadata_ = {**reply.metadata_, "system_fingerprint": finished.system_fingerprint}
    reply.latency_ms = monotonic_ms() - started
    reply.time_to_first_token_ms = (
        None if generation.first_token_at is None else generation.first_token_at - started
    )
    month = month_of(reply.created_at)

    async def write(run: Statements) -> bool:
        turns = TurnRepo(run)
        # The totals with the reply, atomically: they can never disagree with their messages.
        # Only if it still runs: a retry, or an end written meanwhile, charges nothing.
        applied = await turns.complete(reply, owner, month, usage, cost or Decimal(0))
        if applied and record is not None:
            await record(turns.session, TurnResult.of(reply))
        return applied

    # Without a recorder the outcome is stored by one statement: no transaction around it.
    applied = await ctx.outcomes.store(
        write, single_statements=record is None, if_still_waiting=lambda: _not_stored(reply)
    )
    if not applied:
        await _ended_by_this_write(ctx, reply)
    result = TurnResult.of(reply)
    if ctx.limiter is not None:
        await ctx.limiter.add_tokens(owner, usage.total_tokens)
    log.info(
        "turn completed",
        provider=reply.provider,
        model=reply.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=str(cost),
        latency_ms=reply.latency_ms,
    )
    metrics.record_reply_usage(reply.provider, reply.model, usage, cost)
    return result


def _record_calls_and_reasoning(reply: Message, generation: Generation) -> None:
    calls = generation.tool_calls
    reply.tool_calls = [call.as_openai() for call in calls] if calls else None
    reply.reasoning = generation.reasoning or None
    if generation.signature is not None:  # sent back with the reasoning on the next turn
        reply.metadata_ = {**reply.metadata_, "reasoning_signature": generation.signature}


def _record_usage(reply: Message, usage: Usage, cost: Decimal | None, price: Price | None) -> None:
    reply.prompt_tokens = usage.prompt_tokens
    reply.reasoning_tokens = usage.reasoning_tokens
    reply.completion_tokens = usage.completion_tokens
    reply.cached_tokens = usage.cached_tokens
    reply.cache_write_tokens = usage.cache_write_tokens
    reply.cache_write_1h_tokens = usage.cache_write_1h_tokens
    reply.total_tokens = usage.total_tokens
    reply.cost_usd = cost
    if price is not None:
        reply.input_price_per_mtok = price.input_per_mtok
        reply.cached_input_price_per_mtok = price.cached_input_per_mtok
        reply.cache_write_price_per_mtok = price.cache_write_per_mtok
        reply.cache_write_1h_price_per_mtok = price.cache_write_1h_per_mtok
        reply.output_price_per_mtok = price.output_per_mtok
        reply.price_source = price.source


async def fail_reply(
    ctx: TurnContext,
    reply: Message,
    failure: ChatAPIError,
    generation: Generation,
    started: int,
) -> None:
    reply.content = generation.text
    reply.status = MessageStatus.FAILED
    reply.finish_reason = "error"
    reply.cost_usd = Decimal(0)
    reply.latency_ms = monotonic_ms() - started
    # Merged: what the turn stored with the reply (request metadata, a Responses turn's
    # settings) stays readable on a failed reply.
    reply.metadata_ = {
        **reply.metadata_,
        "error": {"code": failure.code, "detail": failure.detail, **failure_fields(failure)},
    }
    applied = await ctx.outcomes.store(
        lambda run: TurnRepo(run).finish(reply),
        single_statements=True,
        if_still_waiting=lambda: _not_stored(reply),
    )
    if applied:
        log.warning("turn failed", provider=reply.provider, model=reply.model, code=failure.code)
    else:
        log.warning("a failed turn had already been ended", code=failure.code)


def _not_stored(reply: Message) -> TurnNotStored:
    return TurnNotStored(
        reply.conversation_id,
        reply.id,
        "the database is unavailable: the turn's messages are stored and its reply is written "
        "as soon as the database returns",
    )


async def _ended_by_this_write(ctx: TurnContext, reply: Message) -> None:
    """A conditional outcome changed nothing: either an earlier attempt of this same write
    was applied (its answer lost with its connection), or the reply had been ended by someone
    else (cancelled, or failed as abandoned while this process could not reach the database).
    The second is raised."""
    async with ctx.sessionmaker() as session:
        stored = await session.get(Message, reply.id)
    if stored is None or (
        stored.status == reply.status
        and stored.content == reply.content
        and stored.total_tokens == reply.total_tokens
    ):
        return
    raise ReplyEndedElsewhere(reply.id, stored.status.value)
