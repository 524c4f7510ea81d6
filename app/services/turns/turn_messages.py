"""What a turn stores and what it sends: the client's tool results, message and parts as
rows, what the reply may do (tools, their choice, a response format) checked against the
provider, stored messages as the provider sees them, and the provider's copy with personal
data masked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from app.core.redaction import redact
from app.db.base import new_id, utcnow
from app.db.models import Message, MessageRole, MessageStatus
from app.providers.base import CacheBreak, ChatMessage, ChatRequest, text_pieces
from app.providers.options import option_support_of
from app.providers.registry import ModelChoice
from app.repositories.messages import prompt_message
from app.schemas.content import stored_parts, text_of, tools_of, wire
from app.schemas.messages import MessageCreate
from app.services.turns.request_options import (
    InvalidChatRequest,
    refuse_tool_settings_without_tools,
)


def check_tool_results(body: MessageCreate, history: Sequence[ChatMessage]) -> None:
    """A reply that called tools is answered by a result for each call, and results answer
    only those calls, each once: anything else is a 422 naming `tool_results` (every
    provider refuses a prompt whose calls and results do not pair up)."""
    last = history[-1] if history else None
    asked = [call.id for call in last.tool_calls] if last and last.role == "assistant" else []
    seen: set[str] = set()
    for position, result in enumerate(body.tool_results):
        if result.tool_call_id not in asked or result.tool_call_id in seen:
            raise InvalidChatRequest(
                f"tool_results.{position}.tool_call_id",
                "answers no tool call of the conversation's last reply"
                if result.tool_call_id not in asked
                else "answers a tool call another result already answers",
            )
        seen.add(result.tool_call_id)
    if unanswered := [call_id for call_id in asked if call_id not in seen]:
        raise InvalidChatRequest(
            "tool_results",
            f"the last reply called tools: send a result for each ({', '.join(unanswered)})",
        )


def reply_options(
    choice: ModelChoice, body: MessageCreate, default_tools: list[Any] | None
) -> dict[str, Any]:
    """What a turn asks of its reply beyond text (tools, their choice, a response format),
    under OpenAI's names; a 422 naming the first one `choice`'s provider cannot honour."""
    options: dict[str, Any] = {}
    tools = tools_of(body.tools) if body.tools is not None else default_tools
    if tools:
        options["tools"] = tools
    if body.tool_choice is not None:
        options["tool_choice"] = (
            body.tool_choice if isinstance(body.tool_choice, str) else wire(body.tool_choice)
        )
    if body.parallel_tool_calls is not None:
        options["parallel_tool_calls"] = body.parallel_tool_calls
    if body.response_format is not None and body.response_format.type != "text":
        options["response_format"] = wire(body.response_format)
    if not options:
        return options
    refuse_tool_settings_without_tools(options)
    refused = option_support_of(choice.provider).first_refused(options, ())
    if refused is not None:
        raise InvalidChatRequest(
            refused, f"the {choice.provider.name!r} provider does not support {refused}"
        )
    return options


def turn_messages(
    conversation_id: UUID,
    body: MessageCreate,
    choice: ModelChoice,
    owner: UUID | None,
    *,
    parent: UUID | None,
    regenerating: bool = False,
) -> list[Message]:
    """What a turn stores before calling the model: the tool results it carries, the user's
    message (if any) and the in-progress reply, in that order, each following the one
    before, the first following `parent`. A regeneration stores only the reply."""
    now = utcnow()
    said: list[ChatMessage] = []
    if not regenerating:
        said = [
            ChatMessage("tool", r.content, tool_call_id=r.tool_call_id) for r in body.tool_results
        ]
        if body.content is not None:
            parts = stored_parts(body.content)
            said.append(ChatMessage("user", text_of(body.content), parts=tuple(parts or ())))
    # Distinct times keep the order: history is read by (created_at, id).
    stored = [
        stored_message(message, now + timedelta(microseconds=position))
        for position, message in enumerate(said)
    ]
    if stored:
        stored[-1].metadata_ = body.metadata  # the turn's metadata goes with what was said
    reply = Message(
        conversation_id=conversation_id,
        role=MessageRole.ASSISTANT,
        content="",
        status=MessageStatus.IN_PROGRESS,
        provider=choice.provider.name,
        model=choice.model,
        metadata_=body.metadata if regenerating else {},
        # 0 until charged (what the column default stored anyway): setting the same columns
        # as the user's message lets both go in one INSERT.
        cost_usd=Decimal(0),
        created_at=now + timedelta(microseconds=len(said)),
        generation_owner=owner,
    )
    chain(parent, [*stored, reply])
    for message in stored:
        message.conversation_id = conversation_id
    return [*stored, reply]


def chain(parent: UUID | None, messages: Sequence[Message]) -> None:
    """Each message follows the one before it, the first `parent`; ids are given here so a
    child can name its parent before either is stored."""
    for message in messages:
        if message.id is None:
            message.id = new_id()
        message.parent_id = parent
        parent = message.id


def stored_message(message: ChatMessage, created_at: datetime) -> Message:
    """A message the client sent, as stored (completed, free): its parts, calls and call id
    only when it has them. Its prompt-caching breakpoints are not: they were hints for the
    request that carried them."""
    return Message(
        role=MessageRole(message.role),
        content=message.content,
        parts=list(message.parts) if message.parts else None,
        tool_calls=[call.as_openai() for call in message.tool_calls] or None,
        tool_call_id=message.tool_call_id,
        status=MessageStatus.COMPLETED,
        metadata_={},
        cost_usd=Decimal(0),
        created_at=created_at,
    )


def prompt_message_of(message: Message) -> ChatMessage:
    """A stored message as the provider sees it."""
    return prompt_message(
        message.role, message.content, message.parts, message.tool_calls, message.tool_call_id
    )


def redacted_request(request: ChatRequest) -> ChatRequest:
    """The request with personal data and keys masked; the stored messages keep the original."""
    system, system_breaks = request.system_prompt, request.system_cache_breaks
    if system is not None:
        system, system_breaks = _redacted_text(system, system_breaks)
    return replace(
        request,
        messages=tuple(_redacted(message) for message in request.messages),
        system_prompt=system,
        system_cache_breaks=system_breaks,
    )


def _redacted(message: ChatMessage) -> ChatMessage:
    """Its text masked wherever it travels: `content`, text parts, tool-call arguments."""
    content, breaks = message.content, message.cache_breaks
    if message.parts:
        content = redact(content)  # breakpoints count parts: masking moves none
    else:
        content, breaks = _redacted_text(content, breaks)
    if not message.parts and not message.tool_calls:
        return replace(message, content=content, cache_breaks=breaks)
    parts = tuple(
        {**part, "text": redact(str(part.get("text", "")))} if part.get("type") == "text" else part
        for part in message.parts
    )
    calls = tuple(replace(call, arguments=redact(call.arguments)) for call in message.tool_calls)
    return replace(message, content=content, parts=parts, tool_calls=calls, cache_breaks=breaks)


def _redacted_text(text: str, breaks: tuple[CacheBreak, ...]) -> tuple[str, tuple[CacheBreak, ...]]:
    """`text` masked, with its breakpoints' offsets where their places moved to: each piece
    between two is masked alone (a client's block is masked as the block it was)."""
    on_text = [mark for mark in breaks if not mark.tool_call]
    if not on_text:
        return redact(text), breaks
    masked: list[str] = []
    moved = [mark for mark in breaks if mark.tool_call]
    end = 0
    for piece, mark in text_pieces(text, on_text):
        masked.append(redact(piece))
        end += len(masked[-1])
        if mark is not None:
            moved.append(replace(mark, at=end))
    return "".join(masked), tuple(moved)
