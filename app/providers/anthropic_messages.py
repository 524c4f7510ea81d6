"""The Anthropic Messages provider: sends a request (translated by `anthropic_requests`) and
reads the reply, one-shot or streamed, back in OpenAI's terms: text, `tool_use` blocks as tool
calls, thinking blocks as reasoning with their signature, usage and stop reasons."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar

import anthropic
from anthropic.types import (
    InputJSONDelta,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    SignatureDelta,
    TextBlock,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
)
from anthropic.types import TextDelta as AnthropicTextDelta
from anthropic.types import Usage as AnthropicUsage

from app.errors import UpstreamError
from app.providers.anthropic_requests import SERVICE_TIERS, THINKING_BUDGETS, MessagesRequest
from app.providers.base import (
    ChatRequest,
    Finished,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
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

_NO_ARGUMENTS = "{}"


def _is_structured_output(value: object) -> bool:
    """`json_schema` with its schema, or plain text. `json_object` has no equivalent: the
    API's JSON output needs a schema, and one whose objects forbid unnamed properties."""
    if not isinstance(value, Mapping) or value.get("type") != "json_schema":
        return isinstance(value, Mapping) and value.get("type") == "text"
    spec = value.get("json_schema")
    return isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping)


ANTHROPIC_OPTIONS = OptionSupport(
    {
        "max_tokens": None,
        "max_completion_tokens": None,  # the Messages API's `max_tokens`
        "stop": None,  # `stop_sequences`
        "metadata": None,  # stored with the reply; the Messages API has no free-form metadata
        "user": None,  # `metadata.user_id`
        "safety_identifier": None,  # `metadata.user_id`, before `user`
        "reasoning_effort": lambda value: value == "none" or value in THINKING_BUDGETS,
        "service_tier": SERVICE_TIERS.__contains__,
        "tools": None,  # function tools: `tools[].input_schema`
        "tool_choice": None,  # auto, none, required (`any`), a named function (`tool`)
        "parallel_tool_calls": None,  # `tool_choice.disable_parallel_tool_use`
        "response_format": _is_structured_output,  # `output_config.format`
        # Anthropic's own `thinking`, from /v1/messages: sent as it came.
        "thinking": lambda value: isinstance(value, Mapping),
        # Anthropic's own `output_config` (effort, format), from /v1/messages: sent as it came.
        "output_config": lambda value: isinstance(value, Mapping),
    }
)


@dataclass
class AnthropicProvider:
    """Streams a reply from Anthropic's `/v1/messages`; `models=None` accepts any model name.

    The current Messages API takes no sampling parameters, so `temperature` and `top_p` are
    refused before a turn starts (`option_support`). `stop` becomes `stop_sequences`; the
    other options map as `ANTHROPIC_OPTIONS` says. A request the API cannot take (an audio
    part, a file other than a PDF, tool-call arguments that are not a JSON object) is a 400
    (`UpstreamRejected`) before anything is sent.
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
        wire = MessagesRequest.of(self.name, request, self.default_max_tokens)
        try:
            message = await self.client.messages.create(
                model=request.model,
                max_tokens=wire.max_tokens,
                messages=wire.messages,
                system=wire.system,
                stop_sequences=wire.stop_sequences,
                metadata=wire.metadata,
                service_tier=wire.service_tier,
                tools=wire.tools,
                tool_choice=wire.tool_choice,
                thinking=wire.thinking,
                output_config=wire.output_config,
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
        finished = Finished(
            reason=_STOP_REASONS.get(message.stop_reason, "stop"),
            usage=_usage_of(message.usage),
            model=message.model or request.model,
            provider=self.name,
        )
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        signature = None
        for block in message.content:
            if isinstance(block, TextBlock):
                text.append(block.text)
            elif isinstance(block, ToolUseBlock):
                calls.append(ToolCall(block.id, block.name, _arguments_of(block.input)))
            elif isinstance(block, ThinkingBlock):
                reasoning.append(block.thinking)
                signature = block.signature or signature
        return WholeReply("".join(text), finished, tuple(calls), "".join(reasoning), signature)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        wire = MessagesRequest.of(self.name, request, self.default_max_tokens)
        reported_model = request.model
        reason: FinishReason | None = None
        prompt = cached = cache_write = cache_write_1h = completion = reasoning = 0
        # Block index -> the call's ordinal among the reply's tool calls; blocks whose
        # arguments have begun.
        calls: dict[int, int] = {}
        argued: set[int] = set()
        try:
            stream = await self.client.messages.create(
                model=request.model,
                max_tokens=wire.max_tokens,
                messages=wire.messages,
                stream=True,
                system=wire.system,
                stop_sequences=wire.stop_sequences,
                metadata=wire.metadata,
                service_tier=wire.service_tier,
                tools=wire.tools,
                tool_choice=wire.tool_choice,
                thinking=wire.thinking,
                output_config=wire.output_config,
            )
            async with stream:
                async for event in stream:
                    # Text deltas first: nearly every event of a reply is one.
                    if isinstance(event, RawContentBlockDeltaEvent):
                        delta = event.delta
                        if isinstance(delta, AnthropicTextDelta):
                            if delta.text:
                                yield TextDelta(delta.text)
                        elif isinstance(delta, InputJSONDelta):
                            ordinal = calls.get(event.index)
                            if ordinal is not None and delta.partial_json:
                                argued.add(event.index)
                                yield ToolCallDelta(ordinal, delta.partial_json)
                        elif isinstance(delta, ThinkingDelta):
                            if delta.thinking:
                                yield ReasoningDelta(delta.thinking)
                        elif isinstance(delta, SignatureDelta):
                            yield ReasoningDelta("", delta.signature)
                    elif isinstance(event, RawContentBlockStartEvent):
                        block = event.content_block
                        if isinstance(block, ToolUseBlock):
                            ordinal = calls[event.index] = len(calls)
                            yield ToolCallDelta(ordinal, "", block.id, block.name)
                            if block.input:
                                argued.add(event.index)
                                yield ToolCallDelta(ordinal, _arguments_of(block.input))
                    elif isinstance(event, RawContentBlockStopEvent):
                        if event.index in calls and event.index not in argued:
                            # A call without arguments streams none: OpenAI's shape has `{}`.
                            yield ToolCallDelta(calls[event.index], _NO_ARGUMENTS)
                    elif isinstance(event, RawMessageStartEvent):
                        reported_model = event.message.model or reported_model
                        usage = _usage_of(event.message.usage)
                        prompt, completion = usage.prompt_tokens, usage.completion_tokens
                        cached, cache_write = usage.cached_tokens, usage.cache_write_tokens
                        cache_write_1h = usage.cache_write_1h_tokens
                        reasoning = usage.reasoning_tokens
                    elif isinstance(event, RawMessageDeltaEvent):
                        completion = event.usage.output_tokens or completion
                        details = event.usage.output_tokens_details
                        if details is not None:
                            reasoning = details.thinking_tokens
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
            cache_write_1h_tokens=cache_write_1h,
            reasoning_tokens=reasoning,
        )
        yield Finished(reason=reason, usage=usage_total, model=reported_model, provider=self.name)


def _usage_of(usage: AnthropicUsage) -> Usage:
    """The API's usage in OpenAI's terms: every input token is a prompt token."""
    cached = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    # The split by cache lifetime, when the API gives it: one-hour writes cost more.
    by_ttl = usage.cache_creation
    details = usage.output_tokens_details
    return Usage(
        prompt_tokens=usage.input_tokens + cached + cache_write,
        completion_tokens=usage.output_tokens or 0,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=by_ttl.ephemeral_1h_input_tokens if by_ttl is not None else 0,
        reasoning_tokens=details.thinking_tokens if details is not None else 0,
    )


def _arguments_of(arguments: object) -> str:
    """A call's input as JSON text, spaced as the API streams it (so both paths agree)."""
    return json.dumps(arguments, ensure_ascii=False)
