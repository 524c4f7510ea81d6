"""The OpenAI wire adapter carries tool calls, content parts and reasoning both ways, streamed
and in one piece, against the fake OpenAI and Azure servers on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from app.errors import UpstreamRejected
from app.providers.base import (
    ChatMessage,
    ChatRequest,
    Finished,
    ReasoningDelta,
    ReplyBuilder,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    WholeReply,
)
from app.providers.openai_chat import OpenAIChatProvider
from tests.fakes.upstream import FakeToolCall, FakeUpstream, RawBody, Reply

AZURE_API_VERSION = "2024-10-21"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    },
}
PARIS = ToolCall("call_paris", "get_weather", '{"city": "Paris"}')
TOKYO = ToolCall("call_tokyo", "get_weather", '{"city": "Tokyo", "unit": "celsius"}')
# Two calls in one reply, as a model that calls tools in parallel asks for them.
PARALLEL = Reply(
    text="",
    finish_reason="tool_calls",
    tool_calls=(
        FakeToolCall(PARIS.name, PARIS.arguments, PARIS.id),
        FakeToolCall(TOKYO.name, TOKYO.arguments, TOKYO.id),
    ),
)
THINKING = "The user greets me. A short greeting back is enough."
REASONING = Reply(text="Hello!", reasoning=THINKING, completion_tokens=40, reasoning_tokens=32)
# A history that has been through one tool round: the question, the calls, their results.
TOOL_ROUND = (
    ChatMessage("user", "Weather in Paris and Tokyo?"),
    ChatMessage("assistant", "", tool_calls=(PARIS, TOKYO), reasoning="Two cities: two calls."),
    ChatMessage("tool", '{"temp_c": 18}', tool_call_id=PARIS.id),
    ChatMessage("tool", '{"temp_c": 24}', tool_call_id=TOKYO.id),
)


def openai_provider(fake: FakeUpstream) -> OpenAIChatProvider:
    return OpenAIChatProvider(
        name="openai",
        client=openai.AsyncOpenAI(
            base_url=f"{fake.url}/v1",
            api_key=fake.api_key,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(),  # the service's own transport
        ),
        default_model="gpt-4o",
        read_timeout_s=5.0,
    )


def azure_provider(fake: FakeUpstream) -> OpenAIChatProvider:
    return OpenAIChatProvider(
        name="azure",
        client=openai.AsyncAzureOpenAI(
            azure_endpoint=fake.url,
            api_key=fake.api_key,
            api_version=AZURE_API_VERSION,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(),
        ),
        default_model="gpt-4o",
        read_timeout_s=5.0,
        deployments={"gpt-4o": "gpt-4o"},
    )


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[OpenAIChatProvider]:
    adapter = openai_provider(upstream)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def azure(upstream: FakeUpstream) -> AsyncIterator[OpenAIChatProvider]:
    adapter = azure_provider(upstream)
    yield adapter
    await adapter.aclose()


def ask(*messages: ChatMessage, **options: Any) -> ChatRequest:
    return ChatRequest(
        model="gpt-4o",
        messages=messages or (ChatMessage("user", "Weather in Paris and Tokyo?"),),
        options=options,
    )


async def events_of(provider: OpenAIChatProvider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request)]


def assembled(events: list[StreamEvent]) -> WholeReply:
    """The reply a caller puts together from the stream, as `whole_reply` does."""
    builder = ReplyBuilder()
    for event in events[:-1]:
        assert not isinstance(event, Finished), events
        builder.add(event)
    finished = events[-1]
    assert isinstance(finished, Finished), events
    return builder.whole(finished)


def sent_messages(fake: FakeUpstream) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fake.requests[-1].json["messages"]
    return messages


class TestTheRequestSent:
    async def test_tool_and_output_options_reach_the_upstream_as_sent(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        options = {
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
            },
            "reasoning_effort": "low",
        }

        await provider.complete(ask(**options))
        await events_of(provider, ask(**options))

        for request in upstream.requests:
            assert {name: request.json[name] for name in options} == options

    async def test_a_tool_round_is_sent_back_in_openais_shape_without_the_reasoning(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        await provider.complete(ask(*TOOL_ROUND, tools=[WEATHER_TOOL]))

        assert sent_messages(upstream) == [
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_paris",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_tokyo",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Tokyo", "unit": "celsius"}',
                        },
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_paris", "content": '{"temp_c": 18}'},
            {"role": "tool", "tool_call_id": "call_tokyo", "content": '{"temp_c": 24}'},
        ]

    async def test_text_said_beside_tool_calls_is_sent_with_them(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        said = ChatMessage("assistant", "Let me look that up.", tool_calls=(PARIS,))
        answered = ChatMessage("tool", "18 degrees", tool_call_id=PARIS.id)

        await provider.complete(ask(ChatMessage("user", "Paris?"), said, answered))

        assert sent_messages(upstream)[1] == {
            "role": "assistant",
            "content": "Let me look that up.",
            "tool_calls": [PARIS.as_openai()],
        }

    async def test_image_and_file_parts_are_sent_as_the_stored_list(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        parts = (
            {"type": "text", "text": "What is in this picture and this file?"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
            },
            {
                "type": "file",
                "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
            },
        )
        question = ChatMessage("user", "What is in this picture and this file?", parts=parts)

        await events_of(provider, ask(ChatMessage("user", "Hi"), question))

        assert sent_messages(upstream) == [
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": list(parts)},
        ]

    async def test_the_fake_counts_the_text_of_parts_and_tool_messages_in_the_prompt(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        reply = await provider.complete(ask(*TOOL_ROUND))

        calls = "".join(f"{call.name}{call.arguments}" for call in (PARIS, TOKYO))
        text = f'Weather in Paris and Tokyo?{calls}{{"temp_c": 18}}{{"temp_c": 24}}'
        assert reply.finished.usage.prompt_tokens == len(text) // 4 + 1


class TestStreamedReplies:
    async def test_parallel_tool_calls_arrive_as_deltas_that_assemble_into_the_exact_calls(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(PARALLEL)

        events = await events_of(provider, ask(tools=[WEATHER_TOOL]))

        deltas = [event for event in events if isinstance(event, ToolCallDelta)]
        # Each call opens with its id and name, then its arguments come in pieces.
        openings = [delta for delta in deltas if delta.id is not None]
        assert [(d.index, d.id, d.name, d.arguments) for d in openings] == [
            (0, "call_paris", "get_weather", ""),
            (1, "call_tokyo", "get_weather", ""),
        ]
        assert len(deltas) > 2 * len(openings)
        assert not any(isinstance(event, TextDelta | ReasoningDelta) for event in events)
        reply = assembled(events)
        assert reply.tool_calls == (PARIS, TOKYO)
        assert reply.text == ""
        assert reply.finished.reason == "tool_calls"

    async def test_calls_without_ids_get_openais_kind_of_id(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(Reply(text="", tool_calls=(FakeToolCall("now", "{}"),)))

        reply = assembled(await events_of(provider, ask(tools=[WEATHER_TOOL])))

        [call] = reply.tool_calls
        assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id), call
        assert (call.name, call.arguments) == ("now", "{}")

    async def test_text_before_a_tool_call_arrives_first_and_both_are_kept(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                text="Checking the weather.",
                finish_reason="tool_calls",
                tool_calls=(FakeToolCall(PARIS.name, PARIS.arguments, PARIS.id),),
            )
        )

        events = await events_of(provider, ask(tools=[WEATHER_TOOL]))

        kinds = [type(event) for event in events]
        assert kinds.index(ToolCallDelta) > max(
            index for index, kind in enumerate(kinds) if kind is TextDelta
        )
        reply = assembled(events)
        assert (reply.text, reply.tool_calls) == ("Checking the weather.", (PARIS,))

    async def test_reasoning_content_arrives_as_reasoning_deltas_before_the_text(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(REASONING)

        events = await events_of(provider, ask())

        kinds = [type(event) for event in events]
        assert kinds.index(TextDelta) > max(
            index for index, kind in enumerate(kinds) if kind is ReasoningDelta
        )
        reply = assembled(events)
        assert (reply.reasoning, reply.text) == (THINKING, "Hello!")
        assert reply.reasoning_signature is None  # OpenAI-compatible servers seal nothing

    async def test_reasoning_tokens_land_in_usage(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(REASONING)

        reply = assembled(await events_of(provider, ask()))

        assert reply.finished.usage.completion_tokens == 40
        assert reply.finished.usage.reasoning_tokens == 32


class TestOneShotReplies:
    async def test_parallel_tool_calls_come_back_whole(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(PARALLEL)

        reply = await provider.complete(ask(tools=[WEATHER_TOOL]))

        assert upstream.requests[-1].json["stream"] is False
        assert reply.tool_calls == (PARIS, TOKYO)
        assert reply.text == ""
        assert reply.finished.reason == "tool_calls"

    async def test_it_agrees_with_the_assembled_stream(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        answer = Reply(
            text="Both, at once.",
            reasoning="Two cities.",
            reasoning_tokens=5,
            completion_tokens=30,
            finish_reason="tool_calls",
            tool_calls=PARALLEL.tool_calls,
        )
        upstream.script(answer, answer)

        whole = await provider.complete(ask(tools=[WEATHER_TOOL]))
        streamed = assembled(await events_of(provider, ask(tools=[WEATHER_TOOL])))

        assert whole.text == streamed.text == "Both, at once."
        assert whole.tool_calls == streamed.tool_calls == (PARIS, TOKYO)
        assert whole.reasoning == streamed.reasoning == "Two cities."
        assert whole.finished.usage == streamed.finished.usage

    async def test_reasoning_content_and_its_tokens_come_back(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(REASONING)

        reply = await provider.complete(ask())

        assert (reply.reasoning, reply.text) == (THINKING, "Hello!")
        assert reply.finished.usage.reasoning_tokens == 32


class TestOpenAICompatibleServers:
    async def test_a_reasoning_field_is_read_as_reasoning_too(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        # Ollama and OpenRouter name it `reasoning`, vLLM and DeepSeek `reasoning_content`.
        message = {"role": "assistant", "content": "Hi.", "reasoning": "Greet back."}
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "qwen3",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        upstream.script(RawBody(json.dumps(body).encode()))

        reply = await provider.complete(ask())

        assert (reply.reasoning, reply.text) == ("Greet back.", "Hi.")

    async def test_streamed_tool_calls_without_an_index_are_placed_by_position(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        calls = [PARIS.as_openai(), TOKYO.as_openai()]  # whole, in one chunk, no `index`
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": calls}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ]
        stream = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks)
        upstream.script(RawBody(f"{stream}data: [DONE]\n\n".encode(), "text/event-stream"))

        reply = assembled(await events_of(provider, ask()))

        assert reply.tool_calls == (PARIS, TOKYO)


class TestTheFakeSpeaksOpenAI:
    async def test_the_sdks_own_stream_accumulator_reads_its_tool_calls_and_reasoning(
        self, upstream: FakeUpstream
    ) -> None:
        upstream.script(PARALLEL)
        client = openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key=upstream.api_key)

        async with (
            client,
            client.chat.completions.stream(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Weather in Paris and Tokyo?"}],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
            ) as stream,
        ):
            completion = await stream.get_final_completion()

        [choice] = completion.choices
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert [
            (call.id, call.function.name, call.function.arguments)
            for call in choice.message.tool_calls or ()
        ] == [(PARIS.id, PARIS.name, PARIS.arguments), (TOKYO.id, TOKYO.name, TOKYO.arguments)]


class TestAzure:
    async def test_a_tool_round_trip_streamed_and_whole(
        self, azure: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        upstream.script(PARALLEL, PARALLEL, Reply("18 and 24 degrees."))

        streamed = assembled(await events_of(azure, ask(tools=[WEATHER_TOOL])))
        whole = await azure.complete(ask(tools=[WEATHER_TOOL]))
        answer = await azure.complete(ask(*TOOL_ROUND, tools=[WEATHER_TOOL]))

        assert streamed.tool_calls == whole.tool_calls == (PARIS, TOKYO)
        assert streamed.finished.reason == whole.finished.reason == "tool_calls"
        assert answer.text == "18 and 24 degrees."
        last = upstream.requests[-1]
        assert last.path == "/openai/deployments/gpt-4o/chat/completions"
        assert [m["role"] for m in last.json["messages"]] == ["user", "assistant", "tool", "tool"]
        assert last.json["messages"][1]["tool_calls"][1] == TOKYO.as_openai()


class TestWhatOpenAIRefuses:
    """The fake refuses the histories and options OpenAI refuses, so a wrong shape fails here
    as it would in production; the refusal reaches the caller with OpenAI's `param`."""

    @pytest.mark.parametrize(
        ("messages", "options", "param"),
        [
            pytest.param(
                (ChatMessage("assistant", "", tool_calls=(PARIS,)), ChatMessage("tool", "18")),
                {},
                "messages.[1].tool_call_id",
                id="tool-result-without-call-id",
            ),
            pytest.param(
                (
                    ChatMessage("assistant", "", tool_calls=(ToolCall("", "get_weather", "{}"),)),
                    ChatMessage("tool", "18", tool_call_id=""),
                ),
                {},
                "messages[0].tool_calls[0].id",
                id="tool-call-without-id",
            ),
            pytest.param(
                (ChatMessage("user", "Hi"), ChatMessage("tool", "18", tool_call_id="call_x")),
                {},
                "messages.[1].role",
                id="tool-result-without-a-call",
            ),
            pytest.param(
                (
                    ChatMessage("assistant", "", tool_calls=(PARIS, TOKYO)),
                    ChatMessage("tool", "18", tool_call_id=PARIS.id),
                    ChatMessage("user", "And?"),
                ),
                {},
                "messages.[0].role",
                id="call-left-unanswered",
            ),
            pytest.param(
                (ChatMessage("user", "Hi"),),
                {"tool_choice": "auto"},
                "tool_choice",
                id="tool-choice-without-tools",
            ),
            pytest.param(
                (ChatMessage("user", "Hi"),),
                {"parallel_tool_calls": True},
                "parallel_tool_calls",
                id="parallel-tool-calls-without-tools",
            ),
            pytest.param(
                (ChatMessage("user", "Hi", parts=({"type": "image_url", "image_url": {}},)),),
                {},
                "messages[0].content[0].image_url.url",
                id="image-without-url",
            ),
        ],
    )
    async def test_a_request_openai_would_refuse_is_refused(
        self,
        provider: OpenAIChatProvider,
        upstream: FakeUpstream,
        messages: tuple[ChatMessage, ...],
        options: dict[str, Any],
        param: str,
    ) -> None:
        with pytest.raises(UpstreamRejected) as refused:
            await provider.complete(ask(*messages, **options))

        assert refused.value.status == 400
        assert refused.value.extra["param"] == param
        assert len(upstream.requests) == 1  # refused once, not retried

    async def test_a_whole_tool_round_is_accepted(
        self, provider: OpenAIChatProvider, upstream: FakeUpstream
    ) -> None:
        reply = await provider.complete(ask(*TOOL_ROUND, tools=[WEATHER_TOOL], tool_choice="auto"))

        assert reply.finished.reason == "stop"
        assert json.loads(sent_messages(upstream)[2]["content"]) == {"temp_c": 18}
