"""Server-owned generations: a streamed reply runs as a task of the server, not of a connection.

Every event goes to the reply's event log first; SSE listeners only read the log, so a client
that leaves stops nothing and a client that comes back (here or on another replica) resumes
from the log. The reply is stored and charged exactly once, by the task, whoever listens.
Only `cancel` stops a generation early: its text is kept and its tokens are charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.security import Principal
from app.db.models import Message, MessageStatus
from app.errors import (
    ChatAPIError,
    ConversationNotFound,
    MessageNotFound,
    UpstreamError,
    UpstreamTimeout,
    failure_fields,
)
from app.providers.base import (
    ChatRequest,
    Finished,
    Provider,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from app.providers.context import counter_for, prompt_tokens
from app.repositories.conversations import ConversationRepo
from app.repositories.messages import MessageRepo
from app.schemas.messages import MessageCreate, MessageRead
from app.services.limits.idempotency import ResponseRecorder
from app.services.streaming.event_log import EventLog
from app.services.turns.generated_text import Generation, monotonic_ms
from app.services.turns.turns import (
    OpenTurn,
    StartedGeneration,
    TurnContext,
    complete_reply,
    fail_reply,
    open_turn,
)

log = structlog.get_logger(__name__)

CANCEL_CHANNEL = "chat:cancel"
_CANCEL_WAIT_MS = 10_000


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    cancel_requested: bool = False
    # The provider is done and the outcome is being stored: interrupting now would lose it.
    storing: bool = False


class Generations:
    """Starts, tracks and cancels the generations running in this process."""

    def __init__(
        self,
        ctx: TurnContext,
        events: EventLog,
        *,
        redis: Redis | None = None,
    ) -> None:
        self._ctx = ctx
        self._events = events
        self._redis = redis
        self._running: dict[UUID, _Running] = {}

    @property
    def events(self) -> EventLog:
        return self._events

    async def start(
        self,
        principal: Principal,
        conversation_id: UUID,
        body: MessageCreate,
        *,
        record: ResponseRecorder | None = None,
        regenerating: UUID | None = None,
    ) -> StartedGeneration:
        """Store the user's message, claim the conversation, log `start` and run the reply.

        Everything that can fail before the first byte (404, 409, 402, 422) raises here.
        `record` stores an `Idempotency-Key`'s response with the user's message.
        """
        opened = await open_turn(
            self._ctx, principal, conversation_id, body, record=record, regenerating=regenerating
        )
        return await self.launch(opened)

    async def launch(self, opened: OpenTurn) -> StartedGeneration:
        """Log `start` for an opened turn and run its reply as a task of the server."""
        reply, request, provider, owner = opened
        start = {
            "message_id": str(reply.id),
            "conversation_id": str(reply.conversation_id),
            "provider": reply.provider,
            "model": reply.model,
        }
        # Read once: after a failed transaction the ORM row is expired and detached.
        reply_id, conversation_id = reply.id, reply.conversation_id
        await self._events.append(reply_id, "start", json.dumps(start))
        task = asyncio.create_task(self._run(reply, request, provider, owner))
        self._running[reply_id] = _Running(task)
        task.add_done_callback(lambda _: self._running.pop(reply_id, None))
        return StartedGeneration(reply_id, conversation_id)

    def on_end(self, reply_id: UUID, callback: Callable[[], object]) -> None:
        """Call `callback` once the generation of `reply_id` running here ends (now if none)."""
        running = self._running.get(reply_id)
        if running is None:
            callback()
        else:
            running.task.add_done_callback(lambda _: callback())

    async def cancel(self, reply_id: UUID) -> bool:
        """Stop a running generation, here or (through Redis) on another replica."""
        running = self._running.get(reply_id)
        if running is not None:
            if not running.storing:
                running.cancel_requested = True
                running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
            return True
        if self._redis is not None:
            with contextlib.suppress(RedisError):
                return bool(await self._redis.publish(CANCEL_CHANNEL, str(reply_id)))
        return False

    async def listen_for_cancels(self) -> None:
        """Cancel local generations that another replica was asked to cancel."""
        if self._redis is None:
            return
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        with contextlib.suppress(ValueError):
                            reply_id = UUID(_text(message["data"]))
                            if reply_id in self._running:
                                await self.cancel(reply_id)
            except RedisError:
                await asyncio.sleep(1)  # Redis is down: local cancels still work

    async def drain(self, grace_s: float) -> None:
        """At shutdown: let running generations finish for `grace_s`, then interrupt them."""
        tasks = [running.task for running in self._running.values()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for running in list(self._running.values()):
            if running.task in pending and not running.storing:
                running.task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _run(
        self, reply: Message, request: ChatRequest, provider: Provider, owner: str
    ) -> None:
        reply_id = reply.id
        generation = Generation()
        started = monotonic_ms()
        self._ctx.partials.track(reply_id, generation)
        failure: ChatAPIError
        try:
            async with asyncio.timeout(self._ctx.generation_timeout_s):
                finished = None
                async for event in provider.stream(request):
                    if isinstance(event, Finished):
                        finished = event
                        break
                    generation.add(event)
                    await self._events.append(reply_id, *logged_event(event))
            if finished is None:
                raise UpstreamError(f"provider {provider.name!r} ended its reply early")
        except asyncio.CancelledError:
            running = self._storing(reply_id)
            if running is not None and running.cancel_requested:
                await asyncio.shield(
                    self._cancelled(reply_id, reply, request, generation, started, owner)
                )
                return
            # The server is going away: leave nothing `in_progress`.
            interrupted = UpstreamError("the generation was interrupted by a shutdown")
            await asyncio.shield(self._failed(reply_id, reply, interrupted, generation, started))
            raise
        except TimeoutError:
            failure = UpstreamTimeout(provider.name, self._ctx.generation_timeout_s)
        except ChatAPIError as error:
            failure = error
        except Exception:
            log.exception("provider raised an unexpected error", provider=provider.name)
            failure = UpstreamError(f"provider {provider.name!r} failed")
        else:
            self._storing(reply_id)
            try:
                # Waits out a database that is away (up to GENERATION_TIMEOUT_SECONDS): the
                # listeners get `done` once it is stored, not an error for a whole reply.
                result = await complete_reply(
                    self._ctx, owner, reply, finished, generation, started
                )
            except ChatAPIError as error:
                # Still not stored (its write goes on), or ended meanwhile by someone else.
                unstored = _error_event(error)
                await self._end(reply_id, "error", json.dumps(unstored))
                return
            except Exception:
                log.exception("could not store a finished reply", reply_id=str(reply_id))
                unstored = {"code": "internal_error", "message": "the reply could not be stored"}
                await self._end(reply_id, "error", json.dumps(unstored))
                return
            await self._end(reply_id, "done", result.model_dump_json())
            return
        self._storing(reply_id)
        await self._failed(reply_id, reply, failure, generation, started)

    def _storing(self, reply_id: UUID) -> _Running | None:
        """From here on the generation only stores its outcome: cancels wait for it instead."""
        self._ctx.partials.forget(reply_id)
        running = self._running.get(reply_id)
        if running is not None:
            running.storing = True
        return running

    async def _failed(
        self,
        reply_id: UUID,
        reply: Message,
        failure: ChatAPIError,
        generation: Generation,
        started: int,
    ) -> None:
        try:
            await fail_reply(self._ctx, reply, failure, generation, started)
        except ChatAPIError as unstored:
            # Its end is still waiting for the database (and will be written when it returns),
            # or was written by someone else: the listeners hear the failure either way.
            log.warning("a failed reply's end is not stored yet", code=unstored.code)
        finally:
            await self._end(reply_id, "error", json.dumps(_error_event(failure)))

    async def _cancelled(
        self,
        reply_id: UUID,
        reply: Message,
        request: ChatRequest,
        generation: Generation,
        started: int,
        owner: str,
    ) -> None:
        # The provider reports usage only at the end: count what was sent and received.
        count = counter_for(reply.provider or "", reply.model or "")
        usage = Usage(
            prompt_tokens=prompt_tokens(request, count),
            completion_tokens=count(generation.text) if generation.text else 0,
        )
        finished = Finished("cancelled", usage, reply.model or "", reply.provider)
        try:
            result = await complete_reply(
                self._ctx, owner, reply, finished, generation, started, MessageStatus.CANCELLED
            )
        except ChatAPIError as error:
            unstored = _error_event(error)
            await self._end(reply_id, "error", json.dumps(unstored))
            return
        await self._end(reply_id, "done", result.model_dump_json())

    async def _end(self, reply_id: UUID, event: str, data: str) -> None:
        await self._events.append(reply_id, event, data)
        await self._events.finish(reply_id)


def logged_event(event: TextDelta | ToolCallDelta | ReasoningDelta) -> tuple[str, str]:
    """A piece of a reply as its event log (and SSE) carries it: `delta` for text,
    `tool_call` for a piece of a function call, `reasoning` for visible thinking."""
    if isinstance(event, TextDelta):
        return "delta", json.dumps({"content": event.text})
    if isinstance(event, ToolCallDelta):
        call: dict[str, object] = {"index": event.index}
        if event.id is not None:
            call["id"] = event.id
        if event.name is not None:
            call["name"] = event.name
        call["arguments"] = event.arguments
        return "tool_call", json.dumps(call)
    reasoning: dict[str, object] = {"content": event.text}
    if event.signature is not None:
        # Anthropic-format streams send the seal as the thinking block's `signature_delta`.
        reasoning["signature"] = event.signature
    return "reasoning", json.dumps(reasoning)


def _error_event(error: ChatAPIError) -> dict[str, object]:
    """An `error` event's body: code and message, and what answers it as HTTP (status,
    `Retry-After`, extension fields) when it ends a stream before its first token."""
    return {"code": error.code, "message": error.detail, **failure_fields(error)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def cancel_reply(
    generations: Generations,
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    conversation_id: UUID,
    message_id: UUID,
) -> MessageRead:
    """Cancel a running reply wherever it runs and return it as stored afterwards."""
    message = await _owned_message(sessionmaker, principal, conversation_id, message_id)
    if message.status == MessageStatus.IN_PROGRESS:
        # Nobody was asked (not running here, no Redis to reach others): no point waiting.
        reached = await generations.cancel(message_id)
        deadline = monotonic_ms() + (_CANCEL_WAIT_MS if reached else 0)
        while message.status == MessageStatus.IN_PROGRESS and monotonic_ms() < deadline:
            await asyncio.sleep(0.05)
            message = await _owned_message(sessionmaker, principal, conversation_id, message_id)
        if message.status == MessageStatus.IN_PROGRESS:
            # Nobody runs it any more (its process died): end it here, text kept.
            async with sessionmaker.begin() as session:
                await session.execute(
                    update(Message)
                    .where(Message.id == message_id, Message.status == MessageStatus.IN_PROGRESS)
                    .values(status=MessageStatus.CANCELLED, finish_reason="cancelled")
                    .execution_options(synchronize_session=False)
                )
            message = await _owned_message(sessionmaker, principal, conversation_id, message_id)
    return MessageRead.model_validate(message)


async def _owned_message(
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    conversation_id: UUID,
    message_id: UUID,
) -> Message:
    async with sessionmaker() as session:
        if await ConversationRepo(session).get(conversation_id, principal) is None:
            raise ConversationNotFound(conversation_id)
        message = await MessageRepo(session).get_in_conversation(message_id, conversation_id)
    if message is None:
        raise MessageNotFound(message_id)
    return message
