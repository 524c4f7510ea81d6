"""The OpenAI Chat Completions wire format: OpenAI, Azure OpenAI and OpenAI-compatible servers.

One adapter, three clients: what differs between them is only how the client is built (base
URL, key header, Azure's deployment URLs) and how a model name becomes the `model` field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import openai

from app.errors import UpstreamError
from app.providers.base import (
    ChatMessage,
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
from app.providers.options import OptionSupport, openai_option_support
from app.providers.upstream_errors import translate_upstream_error

# The SDK's platform telemetry: seven headers merged, encoded, sent and kept on every request
# and open stream (~3 KiB of a stream's memory with the rest), describing the SDK's host, not
# the request. Its retry count and read timeout, which do describe the request, still go.
# `Omit()` is the SDK's own way to leave a header out.
_UNSENT_SDK_HEADERS: Mapping[str, openai.Omit] = {
    name: openai.Omit()
    for name in (
        "X-Stainless-Lang",
        "X-Stainless-Package-Version",
        "X-Stainless-OS",
        "X-Stainless-Arch",
        "X-Stainless-Runtime",
        "X-Stainless-Runtime-Version",
        "X-Stainless-Async",
    )
}

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def to_openai_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The system prompt first, then the history in order, in OpenAI's shapes: content parts
    as stored, an assistant's tool calls, tool results. Reasoning is never sent back."""
    messages: list[dict[str, Any]] = []
    if request.system_prompt:
        messages.append({"role": "system", "content": request.system_prompt})
    for message in request.messages:
        if message.parts or message.tool_calls or message.role == "tool":
            messages.append(_openai_message(message))
        else:  # plain text, nearly every message: system, user and assistant alike
            messages.append({"role": message.role, "content": message.content})
    return messages


def _openai_message(message: ChatMessage) -> dict[str, Any]:
    """A message that is more than text: its parts, tool calls or tool result."""
    role = message.role
    if role == "user":
        return {"role": "user", "content": list(message.parts) or message.content}
    if role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            # OpenAI's own replies carry `null` beside tool calls when they say nothing.
            "content": message.content or None,
            "tool_calls": [call.as_openai() for call in message.tool_calls],
        }
    if role == "tool":
        # A missing id stays missing: the upstream's 400 names the message, a made-up id would not.
        if message.tool_call_id is None:
            return {"role": "tool", "content": message.content}
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    # Parts on a system or assistant message: OpenAI takes only text there.
    return {"role": role, "content": message.content}


@dataclass
class OpenAIChatProvider:
    """Streams a reply from any server that speaks OpenAI's `/chat/completions`.

    `models` is what the provider offers (`None`: any name, the server decides);
    `deployments` maps model names to Azure deployment names. The request's options go out
    under OpenAI's names, or the name `wire_names` gives (a server that only knows
    `max_tokens`); `option_support` says which this server takes.
    """

    name: str
    client: openai.AsyncOpenAI
    default_model: str
    read_timeout_s: float
    models: Collection[str] | None = None
    deployments: Mapping[str, str] = field(default_factory=dict)
    include_usage: bool = True
    option_support: OptionSupport = field(default_factory=openai_option_support)
    wire_names: Mapping[str, str] = field(default_factory=dict)
    one_shot: ClassVar[bool] = True
    _options: openai.RequestOptions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # What `chat.completions.create` sends: the client's bearer key. The client's own
        # headers, retries and timeout are spelled out (the values the SDK falls back to):
        # left out, the SDK deep-copies a `NotGiven` default for each on every request.
        self._options = {
            "security": {"bearer_auth": True},
            "headers": dict(_UNSENT_SDK_HEADERS),
            "max_retries": self.client.max_retries,
            "timeout": self.client.timeout,
        }

    def supports(self, model: str) -> bool:
        if self.deployments:
            return model in self.deployments or model in self.deployments.values()
        return self.models is None or model in self.models

    async def aclose(self) -> None:
        await self.client.close()

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, object]:
        """The `/chat/completions` body, built as the SDK's `create` would build it.

        Sent through the SDK's `post` rather than `create`: `create` walks every message
        through its TypedDict transform (about 1 ms a turn, a third of this adapter's CPU),
        which does nothing to a body of plain JSON values like this one.
        """
        body: dict[str, object] = {
            "model": self.deployments.get(request.model, request.model),
            "messages": to_openai_messages(request),
            "stream": stream,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None and "max_completion_tokens" not in request.options:
            body["max_tokens"] = request.max_tokens
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        for name, value in request.options.items():
            body[self.wire_names.get(name, name)] = value
        if stream:
            body["stream_options"] = {"include_usage": self.include_usage}
        return body

    async def complete(self, request: ChatRequest) -> WholeReply:
        """The whole reply from one non-streaming request (`stream: false`)."""
        try:
            response = await self.client.post(
                "/chat/completions",
                body=self._body(request, stream=False),
                cast_to=object,  # the decoded JSON, read below: see `_fields`
                options=self._options,
            )
        except Exception as error:
            translated = translate_upstream_error(self.name, error, timeout_s=self.read_timeout_s)
            if translated is None:
                raise
            raise translated from error
        completion = _fields(response)
        # Only one choice is ever asked for (no `n`), as the stream's deltas assume too.
        choices = completion.get("choices")
        choice = _fields(choices[0]) if isinstance(choices, list) and choices else {}
        finish_reason = choice.get("finish_reason")
        if not isinstance(finish_reason, str):
            # Retryable, as a stream that ends unfinished: nothing has reached the caller.
            raise UpstreamError(
                f"provider {self.name!r} answered without finishing", retryable=True
            )
        finished = Finished(
            reason=_FINISH_REASONS.get(finish_reason, "stop"),
            usage=_usage_of(completion.get("usage")),
            model=_text(completion.get("model")) or request.model,
            provider=self.name,
            system_fingerprint=_text(completion.get("system_fingerprint")) or None,
        )
        message = _fields(choice.get("message"))
        calls = _listed(message.get("tool_calls"))
        return WholeReply(
            _text(message.get("content")),
            finished,
            tool_calls=tuple(
                ToolCall.of_openai(item)
                for item in calls
                if isinstance(_fields(item).get("function"), dict)
            ),
            reasoning=_reasoning_of(message),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        reported_model = request.model
        fingerprint: str | None = None
        reason: FinishReason | None = None
        usage = Usage()
        try:
            stream = await self.client.post(
                "/chat/completions",
                body=self._body(request, stream=True),
                cast_to=object,
                options=self._options,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            async with stream:
                async for data in stream:
                    chunk = _fields(data)
                    reported_model = _text(chunk.get("model")) or reported_model
                    fingerprint = _text(chunk.get("system_fingerprint")) or fingerprint
                    if chunk.get("usage"):
                        usage = _usage_of(chunk["usage"])
                    choices = chunk.get("choices")
                    for choice in choices if isinstance(choices, list) else ():
                        fields = _fields(choice)
                        delta = _fields(fields.get("delta"))
                        # Nearly every chunk is plain text (`{"content": ...}`): kept cheap.
                        if len(delta) == 1 and isinstance(content := delta.get("content"), str):
                            if content:
                                yield TextDelta(content)
                        else:
                            for event in _events_of(delta):
                                yield event
                        if isinstance(finished_as := fields.get("finish_reason"), str):
                            reason = _FINISH_REASONS.get(finished_as, "stop")
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
        yield Finished(
            reason=reason,
            usage=usage,
            model=reported_model,
            provider=self.name,
            system_fingerprint=fingerprint,
        )


# Responses and stream chunks are read as the SDK decoded them (`cast_to=object`): building
# its pydantic model for each one cost ~150 µs a chunk, a fifth of relaying it. Read
# defensively, since OpenAI-compatible servers vary: a field of the wrong type counts as absent.
def _fields(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _listed(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _reasoning_of(message: dict[str, Any]) -> str:
    """The visible reasoning of a message or delta: `reasoning_content` (vLLM, DeepSeek) or
    `reasoning` (Ollama, OpenRouter). OpenAI's own models show none."""
    return _text(message.get("reasoning_content")) or _text(message.get("reasoning"))


def _events_of(delta: dict[str, Any]) -> list[TextDelta | ToolCallDelta | ReasoningDelta]:
    """What a stream chunk's `delta` says, in reply order: reasoning, text, tool calls.

    A tool call's first piece carries its `index`, `id` and `function.name`, later pieces
    slices of `function.arguments`; an item without an `index` is placed by position.
    """
    events: list[TextDelta | ToolCallDelta | ReasoningDelta] = []
    if reasoning := _reasoning_of(delta):
        events.append(ReasoningDelta(reasoning))
    if content := _text(delta.get("content")):
        events.append(TextDelta(content))
    for position, raw in enumerate(_listed(delta.get("tool_calls"))):
        item = _fields(raw)
        function = _fields(item.get("function"))
        index = item.get("index")
        events.append(
            ToolCallDelta(
                index=index if isinstance(index, int) and not isinstance(index, bool) else position,
                arguments=_text(function.get("arguments")),
                id=_text(item.get("id")) or None,
                name=_text(function.get("name")) or None,
            )
        )
    return events


def _usage_of(raw: object) -> Usage:
    usage = _fields(raw)
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_count(_fields(usage.get("prompt_tokens_details")).get("cached_tokens")),
        reasoning_tokens=_count(
            _fields(usage.get("completion_tokens_details")).get("reasoning_tokens")
        ),
    )
