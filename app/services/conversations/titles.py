"""Conversation titles, generated in the background after a conversation's first turn.

`TitleWriter` is the turns' `TitleHook`: it asks `TITLE_MODEL` for a few-word title in a task
of its own, so the reply never waits for it, and stores the title only while the conversation
is still untitled (a title the user set meanwhile wins). Its cost is spend of its own kind:
added to the user's month as `title_requests`/`title_cost_usd` (counted by the budget), and
recorded in the conversation's `metadata.title_generation`; the conversation's and the
month's reply totals stay the sums of their messages (RELIABILITY's promise 3). A title
ready while the reply still streams is also sent to its listeners as a `title` event. A
failing title model only leaves the conversation untitled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.base import utcnow
from app.db.models import Conversation, Message, MessageRole
from app.db.session import unit_of_work
from app.providers.base import ChatMessage, ChatRequest, Usage, WholeReply, whole_reply
from app.providers.registry import ModelChoice, ProviderRegistry
from app.repositories.usage import UserUsageRepo, month_of
from app.services.pricing.price_book import PriceBook
from app.services.streaming.event_log import InProcessEventLog

log = structlog.get_logger(__name__)

TITLE_PROMPT = (
    "Give a title of at most 6 words for this conversation. "
    "Answer with the title only: no quotes, no final punctuation."
)
TITLE_MAX_CHARS = 80
TITLE_MAX_WORDS = 6
# Only the start of a long first message is needed to name it, and it bounds the title's cost.
_PROMPT_MAX_CHARS = 2_000
_TITLE_MAX_TOKENS = 32
# At shutdown, a title whose result is being stored gets this long to commit it.
_STORING_GRACE_S = 5.0
# A streamed reply's log opens with `start`; its first token comes after it.
_START_POSITION = "1"
_FOLLOW_IDLE_S = 30.0
_EDGE_NOISE = "\"'`“”‘’«»*_#:;.,!?-–— \t"
_LABEL = re.compile(r"^\s*title\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class GeneratedTitle:
    """A title and what asking for it cost."""

    text: str
    provider: str
    model: str
    usage: Usage
    cost_usd: Decimal | None


class TitleWriter:
    """Names new conversations from their first message, one background task each.

    The tasks are held here (the event loop keeps only weak references to tasks) and
    drained at shutdown. `events` is the in-process log, not Redis: only a reply's generation
    writes its log in Redis (positions must grow in order there), so listeners on other
    replicas get no `title` event and read the title from the conversation.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        registry: ProviderRegistry,
        prices: PriceBook,
        *,
        model: str,
        provider: str | None = None,
        events: InProcessEventLog | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._prices = prices
        self._model = model
        self._provider = provider or None
        self._timeout_s = timeout_s
        self._events = events
        self._tasks: set[asyncio.Task[None]] = set()
        self._storing: set[asyncio.Task[None]] = set()

    def first_turn_started(
        self, conversation_id: UUID, owner: str, said: Sequence[Message], reply_id: UUID
    ) -> None:
        """Start naming the conversation from what the user said; returns at once."""
        text = _first_user_text(said)
        if text is None:
            return
        task = asyncio.create_task(self._name(conversation_id, owner, text, reply_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace_s: float) -> None:
        """At shutdown: let running titles finish for `grace_s`, then stop those still asking."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            if task not in self._storing:
                task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_STORING_GRACE_S)

    async def _name(self, conversation_id: UUID, owner: str, text: str, reply_id: UUID) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                choice = self._choice()
                reply = await whole_reply(choice.provider, _title_request(choice.model, text))
            generated = self._generated(choice, reply, text)
            # Asked and paid for: a shutdown lets this finish rather than lose the charge.
            task = asyncio.current_task()
            assert task is not None  # noqa: S101 - a coroutine of `first_turn_started`'s task
            self._storing.add(task)
            try:
                named = await self._store(conversation_id, owner, generated)
            finally:
                self._storing.discard(task)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Never the message or the title in the log: only what failed, and where.
            log.warning(
                "could not generate a conversation title",
                conversation_id=str(conversation_id),
                error=type(error).__name__,
            )
            return
        if named:
            await self._announce(reply_id, conversation_id, generated.text)

    def _choice(self) -> ModelChoice:
        if self._provider is not None:
            return self._registry.resolve(self._provider, self._model)
        return self._registry.route(self._model)

    def _generated(self, choice: ModelChoice, reply: WholeReply, text: str) -> GeneratedTitle:
        finished = reply.finished
        provider = finished.provider or choice.provider.name
        usage = finished.usage
        price = self._prices.price_of(
            provider,
            finished.model,
            requested_model=choice.model,
            prompt_tokens=usage.prompt_tokens,
        )
        # The mock answers every prompt alike: its title is the first words of the message.
        title = title_of(text if provider == "mock" else reply.text)
        if not title:
            raise ValueError("the title model answered no title")
        return GeneratedTitle(
            title, provider, finished.model, usage, None if price is None else price.cost_of(usage)
        )

    async def _store(self, conversation_id: UUID, owner: str, generated: GeneratedTitle) -> bool:
        """Charge the title and store it if the conversation is still untitled, in one
        transaction; whether it was stored."""
        cost = generated.cost_usd or Decimal(0)
        async with unit_of_work(self._sessionmaker) as session:
            named = await _name_if_untitled(session, conversation_id, generated.text)
            await _record_title_generation(session, conversation_id, generated)
            # Spend of its own kind: the conversation's totals stay the sum of its messages
            # (its `metadata.title_generation` shows what the title cost).
            await UserUsageRepo(session).charge_title(owner, month_of(utcnow()), cost)
        log.info(
            "conversation title generated" if named else "conversation was named meanwhile",
            conversation_id=str(conversation_id),
            provider=generated.provider,
            model=generated.model,
            prompt_tokens=generated.usage.prompt_tokens,
            completion_tokens=generated.usage.completion_tokens,
            cost_usd=str(generated.cost_usd),
        )
        return named

    async def _announce(self, reply_id: UUID, conversation_id: UUID, title: str) -> None:
        events = self._events
        if events is None or not events.holds(reply_id):
            return  # not streamed by this process, or long over
        # Not before the reply's first token: until then its stream may still be answered as
        # an HTTP error (a reply failing before any text), and a `title` would start it.
        async with contextlib.aclosing(
            events.follow(reply_id, _START_POSITION, idle_s=_FOLLOW_IDLE_S)
        ) as later:
            async for logged in later:
                if logged is not None:
                    break
        # Checked and appended with no await between: the reply cannot end in between, and
        # an event after its terminal one would leave its listeners waiting for ever.
        if not events.holds(reply_id) or events.has_ended(reply_id):
            return
        data = json.dumps({"conversation_id": str(conversation_id), "title": title})
        await events.append(reply_id, "title", data)


def title_of(text: str) -> str:
    """A title from a model's answer: its first line, without quotes, a `Title:` label or
    edge punctuation, at most `TITLE_MAX_WORDS` words and `TITLE_MAX_CHARS` characters."""
    line = next((line for line in text.splitlines() if line.strip(_EDGE_NOISE)), "")
    words = _LABEL.sub("", line).strip(_EDGE_NOISE).split()
    title = " ".join(words[:TITLE_MAX_WORDS]).strip(_EDGE_NOISE)
    if len(title) > TITLE_MAX_CHARS:
        title = title[:TITLE_MAX_CHARS].rsplit(" ", 1)[0] or title[:TITLE_MAX_CHARS]
    return title.strip(_EDGE_NOISE)


def _first_user_text(said: Sequence[Message]) -> str | None:
    for message in said:
        if message.role == MessageRole.USER and message.content.strip():
            return message.content[:_PROMPT_MAX_CHARS]
    return None


def _title_request(model: str, text: str) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=(ChatMessage(role="user", content=text),),
        system_prompt=TITLE_PROMPT,
        max_tokens=_TITLE_MAX_TOKENS,
    )


# The statements below belong in `ConversationRepo` (repositories/conversations.py).


async def _name_if_untitled(session: AsyncSession, conversation_id: UUID, title: str) -> bool:
    """Set a generated title unless the conversation has one by now (the user's, say)."""
    result: Any = await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.title.is_(None))
        .values(title=title, title_source="generated", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


async def _record_title_generation(
    session: AsyncSession, conversation_id: UUID, generated: GeneratedTitle
) -> None:
    """Keep what the title cost in the conversation's metadata (reports over replies miss it)."""
    metadata = await session.scalar(
        select(Conversation.metadata_).where(Conversation.id == conversation_id).with_for_update()
    )
    if metadata is None:
        return  # deleted meanwhile
    cost = generated.cost_usd
    recorded = {
        **metadata,
        "title_generation": {
            "provider": generated.provider,
            "model": generated.model,
            "prompt_tokens": generated.usage.prompt_tokens,
            "completion_tokens": generated.usage.completion_tokens,
            "cost_usd": None if cost is None else str(cost),
        },
    }
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(metadata_=recorded)
        .execution_options(synchronize_session=False)
    )
