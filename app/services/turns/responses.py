"""OpenAI's Responses API on the service's turn engine.

A Responses request is translated into the Chat Completions turn the service already runs
(`chat_completions.plan_turn`), so its options go through the same checks and a refusal names
the Responses field the client sent. `previous_response_id` continues that reply's
conversation server-side: the model sees the stored branch ending at the reply, and the new
items and reply are stored after it. Each response is its stored reply (`resp_<reply id>`),
read back only by its owner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.db.models import Message, MessageStatus
from app.errors import (
    ConversationNotFound,
    GenerationInProgress,
    MessageNotFound,
    PreviousResponseNotFound,
    ResponseNotFound,
)
from app.providers.base import ChatMessage
from app.repositories.messages import prompt_message
from app.repositories.responses import ResponseRepo
from app.schemas.messages import MessageRead, TurnResult
from app.schemas.responses import ResponseCreate, ResponseDeleted, ResponseItemList
from app.services.limits.idempotency import ResponseRecorder
from app.services.turns.chat_completions import plan_turn, route_model
from app.services.turns.generations import Generations
from app.services.turns.prompt_turns import PromptTurn, open_prompt_turn
from app.services.turns.request_options import InvalidChatRequest
from app.services.turns.response_items import input_items_of
from app.services.turns.response_objects import (
    SETTINGS_KEY,
    echoed_settings,
    reply_id_of,
    response_of,
    settings_of,
)
from app.services.turns.response_requests import chat_body_of, refuse_unserved, renamed
from app.services.turns.turns import StartedGeneration, TurnContext, run_turn


@dataclass(frozen=True, slots=True)
class PreviousResponse:
    """The stored reply a `previous_response_id` names, found among the caller's."""

    reply_id: UUID
    conversation_id: UUID


def plan_response(
    ctx: TurnContext, body: ResponseCreate, previous: PreviousResponse | None
) -> PromptTurn:
    """The turn a Responses request asks for (a 400 naming the first field it cannot
    honour, before anything runs), continuing `previous` when given."""
    refuse_unserved(body)
    chat = chat_body_of(body)
    choice = route_model(ctx.registry, ctx.prices, body.model)
    try:
        turn = plan_turn(choice, chat, None)
    except InvalidChatRequest as error:
        loc = error.extra["errors"][0]["loc"][1:]
        raise renamed(".".join(map(str, loc)), error.extra["errors"][0]["msg"]) from None
    return replace(
        turn,
        conversation_id=None if previous is None else previous.conversation_id,
        continues_after=None if previous is None else previous.reply_id,
        reply_metadata={SETTINGS_KEY: echoed_settings(body)},
    )


async def find_previous(ctx: TurnContext, principal: Principal, response: str) -> PreviousResponse:
    """The caller's response `response` names; `PreviousResponseNotFound` (404) otherwise,
    the same whether it is missing, deleted or another user's."""
    async with ctx.sessionmaker() as session:  # short: no connection held during the turn
        message = await _owned_reply(session, principal, response)
    if message is None or message.status == MessageStatus.IN_PROGRESS:
        if message is not None:
            raise GenerationInProgress(message.conversation_id)
        raise PreviousResponseNotFound(response)
    return PreviousResponse(message.id, message.conversation_id)


def not_found_as_previous(error: Exception, response: str | None) -> Exception:
    """A continued conversation or reply that went away between lookup and claim."""
    if response is not None and isinstance(error, ConversationNotFound | MessageNotFound):
        return PreviousResponseNotFound(response)
    return error


async def _owned_reply(
    session: AsyncSession, principal: Principal, response: str
) -> Message | None:
    """The caller's stored reply `response` names, if it is a live Responses turn."""
    reply_id = reply_id_of(response)
    if reply_id is None:
        return None
    message = await ResponseRepo(session).get_owned(reply_id, principal.visible_owner(None))
    if message is None:
        return None
    settings = message.metadata_.get(SETTINGS_KEY)
    if not isinstance(settings, dict) or settings.get("deleted"):
        return None
    return message


async def get_response(
    session: AsyncSession, principal: Principal, response: str
) -> dict[str, Any]:
    """The caller's response as OpenAI's `response` object; `ResponseNotFound` (404) else."""
    message = await _owned_reply(session, principal, response)
    if message is None:
        raise ResponseNotFound(response)
    read = MessageRead.model_validate(message)
    settings = settings_of(read)
    assert settings is not None
    return response_of(read, settings)


async def delete_response(
    session: AsyncSession, principal: Principal, response: str
) -> ResponseDeleted:
    """Forget a response: no longer retrievable nor continuable. Its messages stay in the
    conversation (they are what was charged), visible through `/api/v1` until deleted there.
    A running response is a 409: its reply is still being written."""
    message = await _owned_reply(session, principal, response)
    if message is None:
        raise ResponseNotFound(response)
    if message.status == MessageStatus.IN_PROGRESS:
        raise GenerationInProgress(message.conversation_id)
    settings = dict(message.metadata_[SETTINGS_KEY])
    message.metadata_ = {**message.metadata_, SETTINGS_KEY: {**settings, "deleted": True}}
    await session.flush()
    return ResponseDeleted(id=response)


async def input_items(
    session: AsyncSession, principal: Principal, response: str
) -> list[dict[str, Any]]:
    """The items the response was given as input (stored messages since the previous
    response, or since the conversation began), oldest first."""
    message = await _owned_reply(session, principal, response)
    if message is None:
        raise ResponseNotFound(response)
    previous = message.metadata_[SETTINGS_KEY].get("previous_response_id")
    after = None if previous is None else reply_id_of(previous)
    stored = await ResponseRepo(session).path_to(message, after=after)
    said: list[tuple[UUID, ChatMessage]] = [
        (row.id, prompt_message(row.role, row.content, row.parts, row.tool_calls, row.tool_call_id))
        for row in stored
    ]
    return input_items_of(said)


@dataclass(frozen=True, slots=True)
class CompletedResponse:
    response: dict[str, Any]
    conversation_id: UUID


async def complete_response(
    ctx: TurnContext,
    principal: Principal,
    turn: PromptTurn,
    previous: str | None,
    *,
    record: ResponseRecorder | None = None,
) -> CompletedResponse:
    """Run the turn to the end; the reply is stored and charged before this returns, and
    `record` (an `Idempotency-Key`'s) gets the response in the transaction that charges it."""

    async def record_response(session: AsyncSession, result: TurnResult) -> None:
        assert record is not None
        await record(session, _completed(result))

    try:
        opened = await open_prompt_turn(ctx, principal, turn)
    except (ConversationNotFound, MessageNotFound) as error:
        raise not_found_as_previous(error, previous) from None
    result = await run_turn(ctx, opened, record=None if record is None else record_response)
    return _completed(result)


def _completed(result: TurnResult) -> CompletedResponse:
    settings = settings_of(result.message) or {}
    return CompletedResponse(response_of(result.message, settings), result.conversation_id)


async def start_response_stream(
    ctx: TurnContext,
    generations: Generations,
    principal: Principal,
    turn: PromptTurn,
    previous: str | None,
    *,
    record: ResponseRecorder | None = None,
) -> StartedGeneration:
    """Store the turn and run its reply as a server-owned generation (it outlives the
    client); everything that can fail before the first byte raises here."""
    try:
        opened = await open_prompt_turn(ctx, principal, turn, record=record)
    except (ConversationNotFound, MessageNotFound) as error:
        raise not_found_as_previous(error, previous) from None
    return await generations.launch(opened)


def page_of(
    items: list[dict[str, Any]], *, limit: int, order: str, after: str | None
) -> ResponseItemList:
    """One page of input items: `order` asc (oldest first) or desc, after the item `after`."""
    ordered = items if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[:limit]
    return ResponseItemList(
        data=page,
        # OpenAI's schema types both as strings, never null: an empty page has "".
        first_id=page[0]["id"] if page else "",
        last_id=page[-1]["id"] if page else "",
        has_more=len(ordered) > limit,
    )
