"""The Anthropic adapter against the fake Messages API over loopback: OpenAI's tools, tool
choices, tool calls and results, images, PDFs, structured output and reasoning become the
API's blocks and fields, and its tool_use and thinking blocks come back in OpenAI's shapes,
streamed and in one piece alike."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from app.errors import UpstreamRejected
from app.providers.anthropic_messages import ANTHROPIC_OPTIONS, AnthropicProvider
from app.providers.base import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    Finished,
    ReplyBuilder,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    WholeReply,
)
from tests.fakes.upstream import FakeToolCall, FakeUpstream, Reply
from tests.fakes.upstream_anthropic import thinking_signature

MODEL = "claude-sonnet-4-6"
REPLY_LIMIT = 1000
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": CITY,
        "strict": True,
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
PARIS = ToolCall("toolu_01PaRiS0000000000000001", "get_weather", '{"city": "Paris"}')
ZURICH = ToolCall("toolu_01ZuRiCh000000000000002", "get_weather", '{"city": "Zürich"}')
PNG = (  # one pixel
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PDF = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK"


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[AnthropicProvider]:
    client = anthropic.AsyncAnthropic(
        base_url=upstream.url, api_key=upstream.api_key, max_retries=0
    )
    adapter = AnthropicProvider(
        client=client, default_model=MODEL, default_max_tokens=REPLY_LIMIT, read_timeout_s=5
    )
    yield adapter
    await adapter.aclose()


def ask(*messages: ChatMessage, **options: Any) -> ChatRequest:
    return ChatRequest(MODEL, messages or (ChatMessage("user", "Hi"),), options=options)


async def streamed(provider: AnthropicProvider, request: ChatRequest) -> WholeReply:
    """The streamed reply put together as the service does (`ReplyBuilder`)."""
    reply = ReplyBuilder()
    async for event in provider.stream(request):
        if isinstance(event, Finished):
            return reply.whole(event)
        reply.add(event)
    raise AssertionError("the stream ended without finishing")


async def answer(provider: AnthropicProvider, request: ChatRequest, how: str) -> WholeReply:
    return await (streamed(provider, request) if how == "streamed" else provider.complete(request))


def sent(upstream: FakeUpstream) -> Any:
    return upstream.requests[-1].json


def user_with(*parts: ContentPart) -> ChatMessage:
    return ChatMessage("user", "", parts=parts)


BOTH_WAYS = pytest.mark.parametrize("how", ["one-shot", "streamed"])


class TestToolsSent:
    async def test_function_tools_become_tools_with_their_schema_description_and_strictness(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        await provider.complete(ask(tools=[WEATHER, CLOCK]))

        assert sent(upstream)["tools"] == [
            {
                "name": "get_weather",
                "description": "The weather in a city now.",
                "input_schema": CITY,
                "strict": True,
            },
            # A function without parameters takes an empty object.
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ]
        assert "tool_choice" not in sent(upstream)

    @pytest.mark.parametrize(
        ("choice", "expected"),
        [
            ("auto", {"type": "auto"}),
            ("none", {"type": "none"}),
            ("required", {"type": "any"}),
            (
                {"type": "function", "function": {"name": "get_time"}},
                {"type": "tool", "name": "get_time"},
            ),
        ],
        ids=["auto", "none", "required", "named"],
    )
    async def test_each_tool_choice_becomes_the_api_s(
        self,
        provider: AnthropicProvider,
        upstream: FakeUpstream,
        choice: object,
        expected: dict[str, str],
    ) -> None:
        await provider.complete(ask(tools=[WEATHER, CLOCK], tool_choice=choice))

        assert sent(upstream)["tool_choice"] == expected

    @pytest.mark.parametrize(
        ("choice", "expected"),
        [
            ("auto", {"type": "auto", "disable_parallel_tool_use": True}),
            ("required", {"type": "any", "disable_parallel_tool_use": True}),
            (
                {"type": "function", "function": {"name": "get_time"}},
                {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
            ),
            (None, {"type": "auto", "disable_parallel_tool_use": True}),
        ],
        ids=["auto", "required", "named", "no-choice"],
    )
    async def test_no_parallel_tool_calls_disables_parallel_use_on_the_choice(
        self,
        provider: AnthropicProvider,
        upstream: FakeUpstream,
        choice: object,
        expected: dict[str, object],
    ) -> None:
        options: dict[str, object] = {"tools": [WEATHER, CLOCK], "parallel_tool_calls": False}
        if choice is not None:
            options["tool_choice"] = choice

        await provider.complete(ask(**options))

        assert sent(upstream)["tool_choice"] == expected

    async def test_parallel_tool_calls_allowed_is_said_explicitly(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        await provider.complete(ask(tools=[WEATHER], parallel_tool_calls=True))

        assert sent(upstream)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": False}

    async def test_a_tool_choice_without_tools_is_the_upstream_s_400(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        # The service refuses it before a turn starts; the fake holds the adapter to it too.
        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(tool_choice="required"))

        assert refused.value.status == 400
        assert "tool_choice may only be specified while providing tools" in refused.value.detail
        assert sent(upstream)["tool_choice"] == {"type": "any"}


class TestHistoryWithToolCalls:
    async def test_calls_and_their_results_become_alternating_tool_use_and_tool_result_turns(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        history = (
            ChatMessage("user", "Weather in Paris and Zürich?"),
            ChatMessage("assistant", "Checking both.", tool_calls=(PARIS, ZURICH)),
            ChatMessage("tool", "18 °C, sunny", tool_call_id=PARIS.id),
            ChatMessage("tool", "9 °C, rain", tool_call_id=ZURICH.id),
            ChatMessage("user", "And tomorrow?"),
        )

        # The fake refuses turns that do not alternate and results without their call.
        reply = await provider.complete(ask(*history, tools=[WEATHER]))

        assert reply.text
        assert sent(upstream)["messages"] == [
            {"role": "user", "content": "Weather in Paris and Zürich?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking both."},
                    {
                        "type": "tool_use",
                        "id": PARIS.id,
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": ZURICH.id,
                        "name": "get_weather",
                        "input": {"city": "Zürich"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": PARIS.id, "content": "18 °C, sunny"},
                    {"type": "tool_result", "tool_use_id": ZURICH.id, "content": "9 °C, rain"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ]

    async def test_a_call_that_said_nothing_is_only_its_tool_use_block(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        history = (
            ChatMessage("user", "Time?"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("toolu_01T", "get_time", ""),)),
            ChatMessage("tool", "12:00", tool_call_id="toolu_01T"),
        )

        await provider.complete(ask(*history, tools=[CLOCK]))

        assert sent(upstream)["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_01T", "name": "get_time", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01T", "content": "12:00"}
                ],
            },
        ]

    async def test_a_result_for_a_call_never_made_is_the_upstream_s_400(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        history = (
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", tool_calls=(PARIS,)),
            ChatMessage("tool", "18 °C", tool_call_id="toolu_01Elsewhere"),
        )

        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(*history, tools=[WEATHER]))

        assert refused.value.status == 400
        assert "unexpected `tool_use_id`" in refused.value.detail
        assert len(upstream.requests) == 1

    async def test_a_call_left_without_its_result_is_the_upstream_s_400(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        history = (
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", tool_calls=(PARIS, ZURICH)),
            ChatMessage("tool", "18 °C", tool_call_id=PARIS.id),
        )

        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(*history, tools=[WEATHER]))

        assert f"without `tool_result` blocks immediately after: {ZURICH.id}" in (
            refused.value.detail
        )

    @pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"Paris"'])
    async def test_arguments_that_are_not_a_json_object_are_refused_before_sending(
        self, provider: AnthropicProvider, upstream: FakeUpstream, arguments: str
    ) -> None:
        call = ToolCall("toolu_01Bad", "get_weather", arguments)
        history = (
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "18 °C", tool_call_id=call.id),
        )

        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(*history, tools=[WEATHER]))

        assert refused.value.status == 400
        assert "toolu_01Bad" in refused.value.detail
        assert upstream.requests == []

    async def test_signed_reasoning_goes_back_first_in_its_turn_and_the_upstream_accepts_it(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                "",
                reasoning="Paris first.",
                tool_calls=(FakeToolCall("get_weather", '{"city": "Paris"}'),),
                finish_reason="tool_calls",
            )
        )
        first = await provider.complete(
            ask(ChatMessage("user", "Weather?"), tools=[WEATHER], reasoning_effort="low")
        )
        [call] = first.tool_calls
        history = (
            ChatMessage("user", "Weather?"),
            ChatMessage(
                "assistant",
                first.text,
                tool_calls=first.tool_calls,
                reasoning=first.reasoning,
                reasoning_signature=first.reasoning_signature,
            ),
            ChatMessage("tool", "18 °C", tool_call_id=call.id),
        )

        # The fake refuses a thinking block whose signature does not match its text.
        await provider.complete(ask(*history, tools=[WEATHER], reasoning_effort="low"))

        assistant = sent(upstream)["messages"][1]
        assert assistant["content"] == [
            {
                "type": "thinking",
                "thinking": "Paris first.",
                "signature": thinking_signature("Paris first."),
            },
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}},
        ]

    async def test_reasoning_without_a_signature_is_left_out(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        history = (
            ChatMessage("user", "Hi"),
            ChatMessage("assistant", "Hello.", reasoning="Greet back."),
            ChatMessage("user", "Bye"),
        )

        await provider.complete(ask(*history))

        assert sent(upstream)["messages"][1] == {"role": "assistant", "content": "Hello."}

    async def test_an_altered_thinking_block_is_the_upstream_s_400(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        history = (
            ChatMessage("user", "Weather?"),
            ChatMessage(
                "assistant",
                "",
                tool_calls=(PARIS,),
                reasoning="Rome first.",
                reasoning_signature=thinking_signature("Paris first."),
            ),
            ChatMessage("tool", "18 °C", tool_call_id=PARIS.id),
        )

        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(*history, tools=[WEATHER]))

        assert "Invalid `signature`" in refused.value.detail


class TestContentParts:
    async def test_a_data_url_image_becomes_a_base64_image_block(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        image = {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
        }

        await provider.complete(ask(user_with({"type": "text", "text": "What is this?"}, image)))

        assert sent(upstream)["messages"] == [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            }
        ]

    async def test_an_http_image_becomes_a_url_image_block(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        url = "https://example.com/cat.jpg"

        await provider.complete(ask(user_with({"type": "image_url", "image_url": {"url": url}})))

        assert sent(upstream)["messages"][0]["content"] == [
            {"type": "image", "source": {"type": "url", "url": url}}
        ]

    async def test_a_pdf_file_becomes_a_document_block_titled_by_its_name(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        pdf = {
            "type": "file",
            "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"},
        }

        await provider.complete(ask(user_with({"type": "text", "text": "Summarise."}, pdf)))

        assert sent(upstream)["messages"][0]["content"][1] == {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "a.pdf",
        }

    @pytest.mark.parametrize(
        "part",
        [
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
            {
                "type": "file",
                "file": {"file_data": "data:text/plain;base64,aGk=", "filename": "a.txt"},
            },
            {"type": "file", "file": {"file_id": "file-abc"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        ],
        ids=["bmp-image", "text-file", "file-id", "audio"],
    )
    async def test_a_part_the_api_cannot_take_is_refused_before_sending(
        self, provider: AnthropicProvider, upstream: FakeUpstream, part: ContentPart
    ) -> None:
        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(user_with({"type": "text", "text": "Look."}, part)))

        assert refused.value.status == 400
        assert refused.value.extra["param"] == "messages"
        assert upstream.requests == []


class TestStructuredOutputAndThinking:
    async def test_a_json_schema_becomes_structured_output(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        }
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        }

        await provider.complete(ask(response_format=response_format))

        assert sent(upstream)["output_config"] == {
            "format": {"type": "json_schema", "schema": schema}
        }

    async def test_a_schema_with_open_objects_is_sent_as_is_and_is_the_upstream_s_400(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        schema = {"type": "object", "properties": {"tags": {"type": "object"}}}
        response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(response_format=response_format))

        assert "'additionalProperties' must be explicitly set to false" in refused.value.detail
        assert sent(upstream)["output_config"]["format"]["schema"] == schema

    def test_json_object_is_not_honoured_since_the_api_needs_a_closed_schema(self) -> None:
        assert not ANTHROPIC_OPTIONS.honours("response_format", {"type": "json_object"})
        assert ANTHROPIC_OPTIONS.honours(
            "response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
        )

    @pytest.mark.parametrize(
        ("effort", "budget"),
        [
            ("minimal", 1024),
            ("low", 1024),
            ("medium", 4096),
            ("high", 16384),
            ("xhigh", 32000),
            ("max", 32000),
        ],
    )
    async def test_reasoning_effort_becomes_a_thinking_budget_on_top_of_the_reply_limit(
        self, provider: AnthropicProvider, upstream: FakeUpstream, effort: str, budget: int
    ) -> None:
        # The fake refuses a budget under 1024 or not under `max_tokens`.
        await provider.complete(ask(reasoning_effort=effort))

        body = sent(upstream)
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert body["max_tokens"] == budget + REPLY_LIMIT
        assert "output_config" not in body

    async def test_reasoning_effort_none_disables_thinking(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        await provider.complete(ask(reasoning_effort="none"))

        assert sent(upstream)["thinking"] == {"type": "disabled"}
        assert sent(upstream)["max_tokens"] == REPLY_LIMIT

    async def test_thinking_with_a_forced_tool_is_the_upstream_s_400(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(
                ask(tools=[WEATHER], tool_choice="required", reasoning_effort="low")
            )

        assert "forces tool use" in refused.value.detail


class TestRepliesWithToolCallsAndThinking:
    @BOTH_WAYS
    async def test_two_tool_use_blocks_come_back_as_exact_tool_calls(
        self, provider: AnthropicProvider, upstream: FakeUpstream, how: str
    ) -> None:
        upstream.script(
            Reply(
                "Let me look.",
                tool_calls=(
                    FakeToolCall(PARIS.name, PARIS.arguments, PARIS.id),
                    FakeToolCall(ZURICH.name, ZURICH.arguments, ZURICH.id),
                ),
                finish_reason="tool_calls",
            )
        )

        reply = await answer(provider, ask(tools=[WEATHER]), how)

        assert reply.tool_calls == (PARIS, ZURICH)
        assert reply.text == "Let me look."
        assert reply.finished.reason == "tool_calls"
        assert sent(upstream).get("stream", False) is (how == "streamed")

    @BOTH_WAYS
    async def test_the_api_s_tool_use_ids_are_kept(
        self, provider: AnthropicProvider, upstream: FakeUpstream, how: str
    ) -> None:
        upstream.script(
            Reply("", tool_calls=(FakeToolCall("get_time", "{}"),), finish_reason="tool_calls")
        )

        reply = await answer(provider, ask(tools=[CLOCK]), how)

        [call] = reply.tool_calls
        assert re.fullmatch(r"toolu_01[A-Za-z0-9]{22}", call.id)
        assert (call.name, call.arguments, reply.text) == ("get_time", "{}", "")

    async def test_streamed_calls_are_indexed_among_tool_calls_not_content_blocks(
        self, provider: AnthropicProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                "Looking.",
                reasoning="Two cities.",
                tool_calls=(
                    FakeToolCall(PARIS.name, PARIS.arguments, PARIS.id),
                    FakeToolCall(ZURICH.name, ZURICH.arguments, ZURICH.id),
                ),
                finish_reason="tool_calls",
            )
        )

        events: list[StreamEvent] = [event async for event in provider.stream(ask(tools=[WEATHER]))]

        # Blocks 0 and 1 are the thinking and the text: the calls are blocks 2 and 3.
        starts = [(e.index, e.id, e.name) for e in events if isinstance(e, ToolCallDelta) and e.id]
        assert starts == [(0, PARIS.id, "get_weather"), (1, ZURICH.id, "get_weather")]
        pieces = [e for e in events if isinstance(e, ToolCallDelta) and not e.id]
        assert len(pieces) > 2  # the arguments arrive in pieces
        assert "".join(e.arguments for e in pieces if e.index == 1) == ZURICH.arguments

    @BOTH_WAYS
    async def test_thinking_comes_back_as_reasoning_with_its_signature(
        self, provider: AnthropicProvider, upstream: FakeUpstream, how: str
    ) -> None:
        thinking = "The user greets me; a short greeting back fits."
        upstream.script(
            Reply("Hello!", reasoning=thinking, completion_tokens=40, reasoning_tokens=30)
        )

        reply = await answer(provider, ask(reasoning_effort="medium"), how)

        assert (reply.text, reply.reasoning) == ("Hello!", thinking)
        assert reply.reasoning_signature == thinking_signature(thinking)
        assert reply.finished.reason == "stop"
        assert (reply.finished.usage.completion_tokens, reply.finished.usage.reasoning_tokens) == (
            40,
            30,
        )
