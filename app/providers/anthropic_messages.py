"""The Anthropic Messages wire format: top-level `system`, alternating turns, `max_tokens`;
OpenAI's tools, tool calls, images, PDFs, structured output and reasoning, both ways."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast, get_args

import anthropic
from anthropic.types import (
    ContentBlockParam,
    DocumentBlockParam,
    ImageBlockParam,
    InputJSONDelta,
    MessageParam,
    MetadataParam,
    OutputConfigParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    SignatureDelta,
    TextBlock,
    ThinkingBlock,
    ThinkingConfigParam,
    ThinkingDelta,
    ToolChoiceAnyParam,
    ToolChoiceAutoParam,
    ToolChoiceParam,
    ToolChoiceToolParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlock,
    ToolUseBlockParam,
)
from anthropic.types import TextDelta as AnthropicTextDelta
from anthropic.types import Usage as AnthropicUsage

from app.errors import UpstreamError, UpstreamRejected
from app.providers.base import (
    ChatMessage,
    ChatRequest,
    ContentPart,
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

# OpenAI's `reasoning_effort` as an extended-thinking budget ("none": thinking disabled).
# Only the budget is sent, not `output_config.effort`: fewer models take `effort` than take a
# budget (Haiku 4.5 and Sonnet 4.5 refuse it), so sending both would refuse reasoning there.
# The budget is added to the reply's own limit, since thinking counts towards `max_tokens`.
_THINKING_BUDGETS: Mapping[object, int] = {
    "minimal": 1024,  # the API's least
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32000,
    "max": 32000,
}
# OpenAI's `service_tier` -> the Messages API's: "default" is standard capacity only.
_SERVICE_TIERS: Mapping[object, Literal["auto", "standard_only"]] = {
    "auto": "auto",
    "default": "standard_only",
}
_ImageType = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
_IMAGE_TYPES: frozenset[str] = frozenset(get_args(_ImageType))
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
        "reasoning_effort": lambda value: value == "none" or value in _THINKING_BUDGETS,
        "service_tier": _SERVICE_TIERS.__contains__,
        "tools": None,  # function tools: `tools[].input_schema`
        "tool_choice": None,  # auto, none, required (`any`), a named function (`tool`)
        "parallel_tool_calls": None,  # `tool_choice.disable_parallel_tool_use`
        "response_format": _is_structured_output,  # `output_config.format`
    }
)


def _refused(provider: str, detail: str) -> UpstreamRejected:
    """A prompt the Messages API cannot take, refused before it is sent (a 400)."""
    return UpstreamRejected(
        provider, 400, f"the {provider!r} provider cannot take {detail}", param="messages"
    )


# A turn's content while it is put together: plain text, or blocks once it has more.
_Item = str | ContentBlockParam


def to_anthropic_messages(
    messages: Sequence[ChatMessage], provider: str = "anthropic"
) -> list[MessageParam]:
    """Alternating user/assistant turns starting with the user, as the Messages API requires.

    Consecutive turns of one role are joined (text with a blank line: a failed reply leaves
    two user messages in a row); tool results become `tool_result` blocks of a user turn,
    ahead of its other content; assistant turns before the first user turn are left out;
    system messages inside the history become user text, since only the top-level `system`
    exists. A turn of text only is sent as a string, any other as content blocks.
    """
    turns: list[tuple[Literal["user", "assistant"], list[_Item]]] = []
    for message in messages:
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        if not turns and role == "assistant":
            continue
        items = _items_of(message, provider)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(items)
        else:
            turns.append((role, items))
    return [_message_of(role, items) for role, items in turns]


def _message_of(role: Literal["user", "assistant"], items: list[_Item]) -> MessageParam:
    if all(isinstance(item, str) for item in items):
        text = "\n\n".join(cast(list[str], items))
        if role == "user":
            return {"role": "user", "content": text}
        return {"role": "assistant", "content": text}
    blocks: list[ContentBlockParam] = [
        {"type": "text", "text": item} if isinstance(item, str) else item
        for item in items
        if item != ""  # the API refuses empty text blocks
    ]
    if role == "user":
        # The API wants a turn's tool results before anything else in it (stable sort).
        blocks.sort(key=lambda block: block["type"] != "tool_result")
        return {"role": "user", "content": blocks}
    return {"role": "assistant", "content": blocks}


def _items_of(message: ChatMessage, provider: str) -> list[_Item]:
    if message.role == "assistant":
        if not message.tool_calls and not message.reasoning_signature:
            return [message.content]
        items: list[_Item] = []
        if message.reasoning_signature:
            # Sent back as received (a tool-use loop with thinking needs it); reasoning
            # without the provider's signature cannot be, and is left out.
            items.append(
                {
                    "type": "thinking",
                    "thinking": message.reasoning or "",
                    "signature": message.reasoning_signature,
                }
            )
        items.append(message.content)
        items.extend(_tool_use_of(call, provider) for call in message.tool_calls)
        return items
    if message.role == "tool":
        if not message.tool_call_id:
            raise _refused(provider, "a tool result without the `tool_call_id` it answers")
        result: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            result["content"] = message.content
        return [result]
    if any(part.get("type") != "text" for part in message.parts):
        return [_block_of(part, provider) for part in message.parts]
    return [message.content]


def _tool_use_of(call: ToolCall, provider: str) -> ToolUseBlockParam:
    """A call the model made, its `input` parsed from the arguments' JSON text.

    Arguments that are not a JSON object are refused rather than replaced by `{}`: the model
    would be told it called the tool with something it never wrote.
    """
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise _refused(provider, f"tool call {call.id!r}: its arguments are not a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _block_of(part: ContentPart, provider: str) -> _Item:
    """One of OpenAI's content parts as the Messages API's block (text stays text)."""
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text") or "")
    if kind == "image_url":
        # OpenAI's `detail` has no counterpart: the API sizes images itself.
        url = str((part.get("image_url") or {}).get("url") or "")
        if url.startswith(("https://", "http://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        media_type, data = _data_url(url)
        if media_type not in _IMAGE_TYPES:
            raise _refused(
                provider, f"an image of type {media_type} (only JPEG, PNG, GIF and WebP)"
            )
        image: ImageBlockParam = {
            "type": "image",
            "source": {"type": "base64", "media_type": cast(_ImageType, media_type), "data": data},
        }
        return image
    if kind == "file":
        file = part.get("file") or {}
        if not file.get("file_data"):
            raise _refused(provider, "a file by `file_id` (send its `file_data`)")
        media_type, data = _data_url(str(file["file_data"]))
        if media_type != "application/pdf":
            raise _refused(provider, f"a file of type {media_type} (only PDF)")
        document: DocumentBlockParam = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        }
        if file.get("filename"):
            document["title"] = str(file["filename"])
        return document
    raise _refused(provider, f"a content part of type {kind!r}")


def _data_url(url: str) -> tuple[str, str]:
    """The media type and base64 payload of a `data:<type>;base64,...` URL."""
    header, comma, data = url.removeprefix("data:").partition(",")
    if not url.startswith("data:") or not comma or not header.endswith(";base64"):
        return "unknown", ""
    return header.removesuffix(";base64").lower(), data


@dataclass(frozen=True, slots=True)
class _Wire:
    """What one request sends besides the model: the options translated to the API's."""

    messages: list[MessageParam]
    max_tokens: int
    system: str | anthropic.Omit
    stop_sequences: list[str] | anthropic.Omit
    metadata: MetadataParam | anthropic.Omit
    service_tier: Literal["auto", "standard_only"] | anthropic.Omit
    tools: list[ToolParam] | anthropic.Omit
    tool_choice: ToolChoiceParam | anthropic.Omit
    thinking: ThinkingConfigParam | anthropic.Omit
    output_config: OutputConfigParam | anthropic.Omit

    @classmethod
    def of(cls, provider: str, request: ChatRequest, default_max_tokens: int) -> _Wire:
        options = request.options
        effort = options.get("reasoning_effort")
        budget = _THINKING_BUDGETS.get(effort, 0)
        thinking: ThinkingConfigParam | anthropic.Omit = anthropic.omit
        if budget:
            thinking = {"type": "enabled", "budget_tokens": budget}
        elif effort == "none":
            thinking = {"type": "disabled"}
        user = options.get("safety_identifier") or options.get("user")
        return cls(
            messages=to_anthropic_messages(request.messages, provider),
            max_tokens=(request.max_tokens or default_max_tokens) + budget,
            system=request.system_prompt or anthropic.omit,
            stop_sequences=list(request.stop) if request.stop else anthropic.omit,
            metadata={"user_id": str(user)} if user else anthropic.omit,
            service_tier=_SERVICE_TIERS.get(options.get("service_tier"), anthropic.omit),
            tools=_tools_of(options.get("tools")),
            tool_choice=_tool_choice_of(options),
            thinking=thinking,
            output_config=_output_config_of(options.get("response_format")),
        )


def _tools_of(tools: object) -> list[ToolParam] | anthropic.Omit:
    """OpenAI's function tools as the API's tools (a function without parameters takes an
    empty object)."""
    if not tools:
        return anthropic.omit
    translated: list[ToolParam] = []
    for tool in cast(list[Mapping[str, Any]], tools):
        function = tool["function"]
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        param: ToolParam = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            param["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            param["strict"] = function["strict"]
        translated.append(param)
    return translated


def _tool_choice_of(options: Mapping[str, Any]) -> ToolChoiceParam | anthropic.Omit:
    """OpenAI's `tool_choice` and `parallel_tool_calls` as the API's one `tool_choice`
    (either without `tools` is refused before a turn starts, on every provider)."""
    choice = options.get("tool_choice")
    parallel = options.get("parallel_tool_calls")
    if choice is None and parallel is None:
        return anthropic.omit
    if choice == "none":
        return {"type": "none"}  # no calls, so none in parallel either
    translated: ToolChoiceAutoParam | ToolChoiceAnyParam | ToolChoiceToolParam
    if isinstance(choice, Mapping):
        translated = {"type": "tool", "name": str(choice["function"]["name"])}
    elif choice == "required":
        translated = {"type": "any"}
    else:
        translated = {"type": "auto"}
    if isinstance(parallel, bool):
        translated["disable_parallel_tool_use"] = not parallel
    return translated


def _output_config_of(response_format: object) -> OutputConfigParam | anthropic.Omit:
    """A `json_schema` response format as the API's structured output (the schema as sent:
    the API refuses one it cannot enforce, and that refusal reaches the client)."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return anthropic.omit
    schema = dict(response_format["json_schema"]["schema"])
    return {"format": {"type": "json_schema", "schema": schema}}


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
        wire = _Wire.of(self.name, request, self.default_max_tokens)
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
        wire = _Wire.of(self.name, request, self.default_max_tokens)
        reported_model = request.model
        reason: FinishReason | None = None
        prompt = cached = cache_write = completion = reasoning = 0
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
            reasoning_tokens=reasoning,
        )
        yield Finished(reason=reason, usage=usage_total, model=reported_model, provider=self.name)


def _usage_of(usage: AnthropicUsage) -> Usage:
    """The API's usage in OpenAI's terms: every input token is a prompt token."""
    cached = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    details = usage.output_tokens_details
    return Usage(
        prompt_tokens=usage.input_tokens + cached + cache_write,
        completion_tokens=usage.output_tokens or 0,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=details.thinking_tokens if details is not None else 0,
    )


def _arguments_of(arguments: object) -> str:
    """A call's input as JSON text, spaced as the API streams it (so both paths agree)."""
    return json.dumps(arguments, ensure_ascii=False)
