"""The Anthropic Messages wire format: top-level `system`, alternating turns, max_tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import anthropic
from anthropic.types import (
    MessageParam,
    MetadataParam,
    OutputConfigParam,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
)
from anthropic.types import TextDelta as AnthropicTextDelta

from app.errors import UpstreamError
from app.providers.base import (
    ChatMessage,
    ChatRequest,
    Finished,
    FinishReason,
    StreamEvent,
    TextDelta,
    Usage,
    WholeReply,
)
from app.providers.options import OptionSupport
from app.providers.upstream_errors import translate_upstream_error

_STOP_REASONS: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# OpenAI's `reasoning_effort` levels that the Messages API's `output_config.effort` has too.
_EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
# OpenAI's `service_tier` -> the Messages API's: "default" is standard capacity only.
_SERVICE_TIERS: Mapping[object, Literal["auto", "standard_only"]] = {
    "auto": "auto",
    "default": "standard_only",
}
ANTHROPIC_OPTIONS = OptionSupport(
    {
        "max_tokens": None,
        "max_completion_tokens": None,  # the Messages API's `max_tokens`
        "stop": None,  # `stop_sequences`
        "metadata": None,  # stored with the reply; the Messages API has no free-form metadata
        "user": None,  # `metadata.user_id`
        "safety_identifier": None,  # `metadata.user_id`, before `user`
        "reasoning_effort": _EFFORTS.__contains__,  # `output_config.effort`
        "service_tier": _SERVICE_TIERS.__contains__,
    }
)


def to_anthropic_messages(messages: tuple[ChatMessage, ...]) -> list[MessageParam]:
    """Alternating user/assistant turns starting with the user, as the Messages API requires.

    Consecutive turns of one role are joined with a blank line (a failed reply leaves two user
    messages in a row); assistant turns before the first user turn are left out; system
    messages inside the history become user text, since only the top-level `system` exists.
    """
    turns: list[tuple[Literal["user", "assistant"], list[str]]] = []
    for message in messages:
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        if not turns and role == "assistant":
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].append(message.content)
        else:
            turns.append((role, [message.content]))
    return [
        {"role": "user", "content": "\n\n".join(parts)}
        if role == "user"
        else {"role": "assistant", "content": "\n\n".join(parts)}
        for role, parts in turns
    ]


@dataclass
class AnthropicProvider:
    """Streams a reply from Anthropic's `/v1/messages`; `models=None` accepts any model name.

    The current Messages API takes no sampling parameters, so `temperature` and `top_p` are
    refused before a turn starts (`option_support`). `stop` becomes `stop_sequences`; the
    other options map as `ANTHROPIC_OPTIONS` says.
    """

    client: anthropic.AsyncAnthropic
    default_model: str
    default_max_tokens: int
    read_timeout_s: float
    models: Collection[str] | None = None
    name: str = "anthropic"
    one_shot: ClassVar[bool] = True
    option_support: ClassVar[OptionSupport] = ANTHROPIC_OPTIONS

    def supports(self, model: str) -> bool:
        return self.models is None or model in self.models

    async def aclose(self) -> None:
        await self.client.close()

    async def complete(self, request: ChatRequest) -> WholeReply:
        """The whole reply from one non-streaming request."""
        try:
            message = await self.client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens or self.default_max_tokens,
                messages=to_anthropic_messages(request.messages),
                system=request.system_prompt or anthropic.omit,
                stop_sequences=list(request.stop) if request.stop else anthropic.omit,
                metadata=_metadata_of(request),
                output_config=_output_config_of(request),
                service_tier=_SERVICE_TIERS.get(
                    request.options.get("service_tier"), anthropic.omit
                ),
                # Given explicitly: without it, a client left on the SDK's default timeout
                # refuses large `max_tokens` without streaming; ours bounds the call anyway.
                timeout=self.client.timeout,
            )
        except Exception as error:
            translated = translate_upstream_error(self.name, error, timeout_s=self.read_timeout_s)
            if translated is None:
                raise
            raise translated from error
        if message.stop_reason is None:
            # Retryable, as a stream that ends unfinished: nothing has reached the caller.
            raise UpstreamError(
                f"provider {self.name!r} answered without finishing", retryable=True
            )
        usage = message.usage
        cached = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        usage_total = Usage(
            prompt_tokens=usage.input_tokens + cached + cache_write,
            completion_tokens=usage.output_tokens or 0,
            cached_tokens=cached,
            cache_write_tokens=cache_write,
        )
        finished = Finished(
            reason=_STOP_REASONS.get(message.stop_reason, "stop"),
            usage=usage_total,
            model=message.model or request.model,
            provider=self.name,
        )
        text = "".join(block.text for block in message.content if block.type == "text")
        return WholeReply(text, finished)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        reported_model = request.model
        reason: FinishReason | None = None
        prompt = cached = cache_write = completion = 0
        try:
            stream = await self.client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens or self.default_max_tokens,
                messages=to_anthropic_messages(request.messages),
                stream=True,
                system=request.system_prompt or anthropic.omit,
                stop_sequences=list(request.stop) if request.stop else anthropic.omit,
                metadata=_metadata_of(request),
                output_config=_output_config_of(request),
                service_tier=_SERVICE_TIERS.get(
                    request.options.get("service_tier"), anthropic.omit
                ),
            )
            async with stream:
                async for event in stream:
                    if isinstance(event, RawMessageStartEvent):
                        reported_model = event.message.model or reported_model
                        usage = event.message.usage
                        cached = usage.cache_read_input_tokens or 0
                        cache_write = usage.cache_creation_input_tokens or 0
                        prompt = usage.input_tokens + cached + cache_write
                        completion = usage.output_tokens or 0
                    elif isinstance(event, RawContentBlockDeltaEvent):
                        if isinstance(event.delta, AnthropicTextDelta) and event.delta.text:
                            yield TextDelta(event.delta.text)
                    elif isinstance(event, RawMessageDeltaEvent):
                        completion = event.usage.output_tokens or completion
                        if event.delta.stop_reason is not None:
                            reason = _STOP_REASONS.get(event.delta.stop_reason, "stop")
        except Exception as error:
            translated = translate_upstream_error(self.name, error, timeout_s=self.read_timeout_s)
            if translated is None:
                raise
            raise translated from error
        if reason is None:
            # Retryable: the retry layer only retries while no text has reached the caller.
            raise UpstreamError(
                f"provider {self.name!r} ended the stream before finishing", retryable=True
            )
        usage_total = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=cache_write,
        )
        yield Finished(reason=reason, usage=usage_total, model=reported_model, provider=self.name)


def _metadata_of(request: ChatRequest) -> MetadataParam | anthropic.Omit:
    """OpenAI's end-user id (`safety_identifier`, else `user`) as `metadata.user_id`."""
    user = request.options.get("safety_identifier") or request.options.get("user")
    return {"user_id": str(user)} if user else anthropic.omit


def _output_config_of(request: ChatRequest) -> OutputConfigParam | anthropic.Omit:
    effort = request.options.get("reasoning_effort")
    if effort in _EFFORTS:
        return {"effort": effort}
    return anthropic.omit
