"""Tool calls and reasoning from a real provider's wire (the fake OpenAI upstream), through the
whole service: what the provider receives on the next turn, what is stored, and what it
costs. Reasoning tokens are part of the completion and priced at the output rate."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from app.core.config import Settings
from tests.factories import create_conversation, send_message
from tests.fakes.upstream import FakeToolCall, FakeUpstream, Reply
from tests.sse import read_stream

StartApp = Callable[..., Any]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = FakeToolCall("get_weather", '{"city": "Paris"}', id="call_weather_1")
# gpt-4o's list price, USD per million tokens.
INPUT_RATE, OUTPUT_RATE = Decimal("2.5"), Decimal("10")


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    settings = make_settings(**upstream.provider_settings(), provider_max_retries=0)
    started: httpx.AsyncClient = await start_app(settings)
    return started


def cost_of(message: dict[str, Any]) -> Decimal:
    rates = message["pricing"]
    return (
        message["prompt_tokens"] * Decimal(str(rates["input_per_mtok"]))
        + message["completion_tokens"] * Decimal(str(rates["output_per_mtok"]))
    ) / 1_000_000


class TestToolCallsFromTheProvider:
    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_call_is_stored_and_the_next_turn_sends_call_and_result_back(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
    ) -> None:
        conversation = await create_conversation(client, model="gpt-4o", tools=[WEATHER])
        upstream.script(
            Reply(text="", tool_calls=(CALL,), finish_reason="tool_calls"),
            Reply("It is sunny in Paris."),
        )
        url = f"/api/v1/conversations/{conversation['id']}/messages"

        if stream:
            events = await read_stream(
                client, "POST", url, json={"content": "Weather in Paris?", "stream": True}
            )
            assert "tool_call" in events.names, events.names
            reply = events.terminal.json()["message"]
        else:
            reply = (await send_message(client, conversation["id"], "Weather in Paris?"))["message"]
        assert reply["tool_calls"] == [
            {
                "id": "call_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ]
        assert reply["finish_reason"] == "tool_calls"
        assert upstream.requests[0].json["tools"] == [WEATHER]

        await send_message(
            client,
            conversation["id"],
            None,
            tool_results=[{"tool_call_id": "call_weather_1", "content": "sunny, 21°C"}],
        )

        sent = upstream.requests[1].json["messages"]
        assert sent[-2] == {
            "role": "assistant",
            "content": None,
            "tool_calls": reply["tool_calls"],
        }
        assert sent[-1] == {
            "role": "tool",
            "tool_call_id": "call_weather_1",
            "content": "sunny, 21°C",
        }


class TestReasoningTokens:
    async def test_reasoning_is_stored_counted_and_priced_at_the_output_rate(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, model="gpt-4o")
        upstream.script(
            Reply(
                "42.",
                reasoning="Six times seven.",
                prompt_tokens=100,
                completion_tokens=250,
                reasoning_tokens=240,
            )
        )

        turn = await send_message(client, conversation["id"], "What is 6 x 7?")

        reply = turn["message"]
        assert (reply["reasoning"], reply["reasoning_tokens"]) == ("Six times seven.", 240)
        assert reply["completion_tokens"] == 250
        assert Decimal(str(reply["cost_usd"])) == cost_of(reply)
        assert Decimal(str(reply["cost_usd"])) == (100 * INPUT_RATE + 250 * OUTPUT_RATE) / 10**6

    async def test_v1_reports_reasoning_tokens_and_content_as_openai_does(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Reply("42.", reasoning="Six times seven.", reasoning_tokens=12))
        sdk = openai.AsyncOpenAI(
            base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
        )

        completion = await sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "6 x 7?"}]
        )

        assert completion.usage is not None
        assert completion.usage.completion_tokens_details is not None
        assert completion.usage.completion_tokens_details.reasoning_tokens == 12
        message = completion.choices[0].message.model_dump()
        assert message["reasoning_content"] == "Six times seven."
        assert json.loads(completion.model_dump_json())["choices"][0]["message"]["content"] == "42."


class TestThroughV1OnAnthropic:
    """The OpenAI SDK against /v1, answered by Claude: OpenAI's shapes both ways."""

    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_tool_round_trip_and_an_image(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
    ) -> None:
        sdk = openai.AsyncOpenAI(
            base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
        )
        upstream.script(
            Reply(text="", tool_calls=(CALL,), finish_reason="tool_calls"),
            Reply("Sunny, and the picture is red."),
        )
        image = {"type": "image_url", "image_url": {"url": "https://example.com/red.png"}}
        asked: list[Any] = [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}, image]}
        ]

        if stream:
            chunks = await sdk.chat.completions.create(
                model="claude-sonnet-4-6", messages=asked, tools=[WEATHER], stream=True
            )
            pieces = [c.choices[0].delta async for c in chunks if c.choices]
            calls = [call for delta in pieces for call in delta.tool_calls or ()]
            call_id = next(call.id for call in calls if call.id)
            arguments = "".join(call.function.arguments or "" for call in calls if call.function)
        else:
            first = await sdk.chat.completions.create(
                model="claude-sonnet-4-6", messages=asked, tools=[WEATHER]
            )
            [made] = first.choices[0].message.tool_calls or []
            assert first.choices[0].finish_reason == "tool_calls"
            call_id, arguments = made.id, made.function.arguments  # type: ignore[union-attr]
        assert call_id == "call_weather_1"
        assert json.loads(arguments) == {"city": "Paris"}
        sent = upstream.requests[0].json
        assert sent["tools"][0]["name"] == "get_weather"
        assert sent["messages"][0]["content"][1] == {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/red.png"},
        }

        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
        final = await sdk.chat.completions.create(
            model="claude-sonnet-4-6",
            tools=[WEATHER],
            messages=[
                *asked,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
            ],
        )

        assert final.choices[0].message.content == "Sunny, and the picture is red."
        turns = upstream.requests[1].json["messages"]
        assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
        assert turns[1]["content"] == [
            {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}
        ]
        assert turns[2]["content"][0]["type"] == "tool_result"
        assert turns[2]["content"][0]["tool_use_id"] == call_id
