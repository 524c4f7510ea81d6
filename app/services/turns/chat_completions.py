"""OpenAI-compatible chat completions: an OpenAI request becomes a stored, charged turn.

OpenAI's semantics hold: the client owns the history and the provider sees exactly the
messages it sent (system messages become the system prompt). Every call is also stored as a
conversation of the caller, so `/api/v1` shows it: a new conversation holding the request's
messages and the reply, or, with `X-Conversation-ID`, the caller's conversation with the new
messages the model saw that its stored branch lacks appended (or branched, where the
client's history parts from the stored one), so the stored transcript is what it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.errors import ChatAPIError
from app.providers.base import SYSTEM_JOINER, ChatMessage, ToolCall
from app.providers.registry import ModelChoice, ProviderRegistry
from app.schemas.content import stored_parts
from app.schemas.messages import MessageRead, TurnResult
from app.schemas.openai_compat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionCreate,
    ChatMessageIn,
    Choice,
    CompletionTokensDetails,
    CompletionUsage,
    OpenAIFinishReason,
    OpenAIModel,
    OpenAIModelList,
    PromptTokensDetails,
    ToolCallOut,
)
from app.services.limits.idempotency import ResponseRecorder
from app.services.pricing.price_book import PriceBook
from app.services.turns.generations import Generations
from app.services.turns.prompt_turns import PromptTurn, open_prompt_turn
from app.services.turns.request_options import InvalidChatRequest, turn_options
from app.services.turns.turns import StartedGeneration, TurnContext, run_turn

R = TypeVar("R")

TITLE_CHARS = 80
COMPLETION_ID_PREFIX = "chatcmpl-"


@dataclass(frozen=True, slots=True)
class CompletedChat:
    completion: ChatCompletion
    conversation_id: UUID


def route_model(registry: ProviderRegistry, prices: PriceBook, model: str) -> ModelChoice:
    """The provider that answers `model` (see `ProviderRegistry.route`); 404 when none does."""

    def priced(provider: str, name: str) -> bool:
        price = prices.price_of(provider, name)
        # Self-hosted servers are "free" for any name: that says nothing about the model.
        return price is not None and price.source != "self-hosted"

    return registry.route(model, known=priced)


def plan_turn(
    choice: ModelChoice, body: ChatCompletionCreate, conversation_id: UUID | None
) -> PromptTurn:
    """The turn an OpenAI request asks for: prompt, what to store, and the options the
    provider is sent (a 400 naming the first one it cannot honour, before anything runs)."""
    options = turn_options(choice, body)
    system_parts: list[str] = []
    prompt: list[ChatMessage] = []
    for position, message in enumerate(body.messages):
        if message.role in ("system", "developer"):
            system_parts.append(message.text)
        else:
            prompt.append(_prompt_message(position, message))
    if not prompt or prompt[-1].role not in ("user", "tool"):
        raise InvalidChatRequest(
            "messages", "the last message must be a user message or a tool result"
        )
    first_said = next((m.content for m in prompt if m.role == "user" and m.content), "")
    return PromptTurn(
        choice=choice,
        messages=tuple(prompt),
        new_messages=tuple(prompt),
        system_prompt=SYSTEM_JOINER.join(system_parts) or None,
        conversation_id=conversation_id,
        title=_title_of(first_said) if first_said else None,
        owner=body.user,
        temperature=None if body.temperature is None else float(body.temperature),
        top_p=None if body.top_p is None else float(body.top_p),
        max_tokens=body.reply_token_limit,
        stop=body.stop_sequences,
        options=options,
        metadata=body.metadata or None,
    )


def _prompt_message(position: int, message: ChatMessageIn) -> ChatMessage:
    """A client's user, assistant or tool message as the provider and the store take it."""
    text = message.text
    if message.role == "assistant":
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
        )
        return ChatMessage("assistant", text, tool_calls=calls)
    if message.role == "tool":
        return ChatMessage("tool", text, tool_call_id=message.tool_call_id)
    parts = stored_parts(message.content)
    if not text and parts is None:
        raise InvalidChatRequest(f"messages.{position}.content", "must not be empty")
    return ChatMessage("user", text, parts=tuple(parts or ()))


def _title_of(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


async def complete_prompt_turn(
    ctx: TurnContext,
    principal: Principal,
    turn: PromptTurn,
    render: Callable[[TurnResult], R],
    *,
    record: ResponseRecorder | None = None,
) -> R:
    """Run the turn to the end; the reply is stored and charged before this returns.

    `render` makes the caller's answer (a completion, an Anthropic message) of the finished
    turn; `record` (an `Idempotency-Key`'s) gets that answer in the transaction that charges
    it, and the same answer is returned: rendered once.
    """
    rendered: list[R] = []

    async def record_rendered(session: AsyncSession, result: TurnResult) -> None:
        assert record is not None
        rendered.append(render(result))
        await record(session, rendered[0])

    opened = await open_prompt_turn(ctx, principal, turn)
    result = await run_turn(ctx, opened, record=None if record is None else record_rendered)
    return rendered[0] if rendered else render(result)


def completed_chat(result: TurnResult) -> CompletedChat:
    """A finished turn as `/v1/chat/completions` answers it."""
    return CompletedChat(completion_of(result), result.conversation_id)


async def start_chat_stream(
    ctx: TurnContext,
    generations: Generations,
    principal: Principal,
    turn: PromptTurn,
    *,
    record: ResponseRecorder | None = None,
) -> StartedGeneration:
    """Store the turn and run its reply as a server-owned generation (it outlives the client).

    Everything that can fail before the first byte (404, 409, 429, budget) raises here.
    `record` (an `Idempotency-Key`'s) stores the started reply with the turn's messages.
    """
    return await generations.launch(await open_prompt_turn(ctx, principal, turn, record=record))


def completion_id(reply_id: UUID) -> str:
    """OpenAI's id for a completion: the stored reply's id, so the two can be matched."""
    return f"{COMPLETION_ID_PREFIX}{reply_id}"


def created_of(reply_id: UUID) -> int:
    """Unix seconds the reply was created: read from its UUIDv7, so every chunk agrees."""
    if reply_id.version == 7:
        return (reply_id.int >> 80) // 1000
    return int(time.time())


_OPENAI_FINISH_REASONS: dict[str, OpenAIFinishReason] = {
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
}


def finish_reason_of(reason: str | None) -> OpenAIFinishReason:
    """A stored finish reason in OpenAI's terms (a cancelled reply simply stopped)."""
    return _OPENAI_FINISH_REASONS.get(reason or "", "stop")


def usage_of(message: MessageRead) -> CompletionUsage:
    """A reply's tokens as OpenAI reports them, cached prompt tokens included."""
    return CompletionUsage(
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        total_tokens=message.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=message.cached_tokens),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=message.reasoning_tokens
        ),
    )


def completion_of(result: TurnResult) -> ChatCompletion:
    """A finished turn as a `chat.completion` object."""
    message = result.message
    return ChatCompletion(
        id=completion_id(message.id),
        created=created_of(message.id),
        model=message.model or "",
        choices=[
            Choice(
                message=AssistantMessage(
                    content=message.content or (None if message.tool_calls else ""),
                    tool_calls=(
                        [ToolCallOut.model_validate(call) for call in message.tool_calls]
                        if message.tool_calls
                        else None
                    ),
                    reasoning_content=message.reasoning or None,
                ),
                finish_reason=finish_reason_of(message.finish_reason),
            )
        ],
        usage=usage_of(message),
        system_fingerprint=system_fingerprint_of(message),
    )


def system_fingerprint_of(message: MessageRead) -> str | None:
    """The backend configuration the provider reported for the reply, when it did."""
    fingerprint = message.metadata.get("system_fingerprint")
    return fingerprint if isinstance(fingerprint, str) else None


def model_list(registry: ProviderRegistry, prices: PriceBook) -> OpenAIModelList:
    """Every configured model under the name that routes to it, else as `provider/model`."""
    listed: dict[str, OpenAIModel] = {}
    for provider, model in registry.catalog():
        try:
            routed = route_model(registry, prices, model).provider.name == provider
        except ChatAPIError:
            routed = False
        name = model if routed else f"{provider}/{model}"
        listed.setdefault(name, OpenAIModel(id=name, owned_by=provider))
    return OpenAIModelList(data=list(listed.values()))


def model_of(registry: ProviderRegistry, prices: PriceBook, model_id: str) -> OpenAIModel:
    """One model as `GET /v1/models/{id}` shows it: listed, or any name that routes to a
    provider (OpenAI and Anthropic take any name they know); `UnknownModel` (404) else."""
    for listed in model_list(registry, prices).data:
        if listed.id == model_id:
            return listed
    return OpenAIModel(id=model_id, owned_by=route_model(registry, prices, model_id).provider.name)
