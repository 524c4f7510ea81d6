"""openai-python's tool calling, structured output, images and streamed tool calls against
`python -m app` on loopback (the mock provider, the e2e conftest's database).

Every conversation made is read back through /api/v1: the tool calls, tool results and images
are stored and the conversation's cost is exactly the sum of its messages' costs. Every body
and stream chunk the SDK received must be valid under OpenAI's own pinned schema
(tests/openai_schema). The read-back helpers here serve the other client tests too.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import httpx
import openai
from pydantic import BaseModel

from tests.e2e.conftest import LiveServer
from tests.openai_schema.traffic import Recorder


class WeatherQuery(BaseModel):
    """The weather now in a city."""

    city: str


class TimeQuery(BaseModel):
    """The local time in a city."""

    city: str


class Forecast(BaseModel):
    city: str
    temperature_c: int
    conditions: Literal["sunny", "cloudy", "rain"]
    hourly_c: list[float]


# Strict, as OpenAI's helpers (`.parse`, `.stream`) want them: additionalProperties false.
GET_WEATHER = openai.pydantic_function_tool(WeatherQuery, name="get_weather")
GET_TIME = openai.pydantic_function_tool(TimeQuery, name="get_time")


@dataclass(frozen=True)
class Stored:
    """A conversation as /api/v1 returns it, money read as `Decimal`."""

    conversation: dict[str, Any]
    messages: list[dict[str, Any]]

    @property
    def roles(self) -> list[str]:
        return [message["role"] for message in self.messages]

    def assert_charged_exactly(self) -> None:
        """The conversation's total is its messages' costs added up, to the last digit."""
        total = self.conversation["total_cost_usd"]
        assert total == sum(Decimal(m["cost_usd"] or 0) for m in self.messages)
        assert total > 0


async def read_back(server: LiveServer, conversation_id: str) -> Stored:
    """The conversation and its messages (`GET .../messages`), oldest first."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        conversation = await http.get(f"/api/v1/conversations/{conversation_id}")
        messages = await http.get(
            f"/api/v1/conversations/{conversation_id}/messages", params={"limit": 100}
        )
    assert conversation.status_code == 200, conversation.text
    assert messages.status_code == 200, messages.text
    page = json.loads(messages.text, parse_float=Decimal)
    assert page["next_cursor"] is None
    return Stored(json.loads(conversation.text, parse_float=Decimal), page["items"])


def assert_openai_shaped(recorder: Recorder) -> None:
    """Every completion and chunk the client got is valid under OpenAI's pinned schema."""
    assert recorder.completions, "the client sent nothing to /v1/chat/completions"
    violations = recorder.schema_violations()
    assert not violations, "\n\n".join(violations)


def calls_of(tool_calls: Any) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each OpenAI tool call: SDK objects or stored JSON."""
    return [
        (call["id"], call["function"]["name"], call["function"]["arguments"])
        if isinstance(call, dict)
        else (call.id, call.function.name, call.function.arguments)
        for call in tool_calls
    ]


def tiny_png() -> bytes:
    """A valid 2x2 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def openai_client(server: LiveServer, recorder: Recorder) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="not-checked",  # the server runs with auth off, as the e2e conftest starts it
        max_retries=0,
        http_client=recorder.client(),
    )


class TestOpenAIPython:
    async def test_a_tool_call_and_its_result_come_back_as_an_answer_stored_and_charged(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        client = openai_client(server, recorder)
        question: Any = {"role": "user", "content": "What is the get_weather in Paris?"}

        first = await client.chat.completions.create(
            model="mock", messages=[question], tools=[GET_WEATHER]
        )
        asked = first.choices[0]
        assert asked.finish_reason == "tool_calls"
        assert asked.message.tool_calls is not None
        [call] = asked.message.tool_calls
        assert call.type == "function"
        WeatherQuery.model_validate_json(call.function.arguments)
        conversation_id = recorder.completions[0].conversation_id
        assert conversation_id is not None
        second = await client.chat.completions.create(
            model="mock",
            # The SDK's own message object goes back as it is, as OpenAI's guide does it.
            messages=[
                question,
                asked.message,
                {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
            ],
            tools=[GET_WEATHER],
            extra_headers={"X-Conversation-ID": conversation_id},
        )

        answer = second.choices[0]
        assert answer.finish_reason == "stop"
        assert answer.message.content == "The tool get_weather returned: Sunny, 21 C."
        assert recorder.conversation_ids() == [conversation_id, conversation_id]
        stored = await read_back(server, conversation_id)
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        assert calls_of(stored.messages[1]["tool_calls"]) == calls_of([call])
        assert stored.messages[1]["finish_reason"] == "tool_calls"
        assert (stored.messages[2]["tool_call_id"], stored.messages[2]["content"]) == (
            call.id,
            "Sunny, 21 C",
        )
        assert stored.messages[3]["content"] == answer.message.content
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_two_tools_named_in_one_message_are_called_in_one_reply(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        client = openai_client(server, recorder)
        question: Any = {"role": "user", "content": "Use get_weather and get_time for city: Paris"}

        both = await client.chat.completions.create(
            model="mock", messages=[question], tools=[GET_WEATHER, GET_TIME]
        )
        one = await client.chat.completions.create(
            model="mock",
            messages=[question],
            tools=[GET_WEATHER, GET_TIME],
            parallel_tool_calls=False,
        )
        calls = both.choices[0].message.tool_calls or []
        answer = await client.chat.completions.create(
            model="mock",
            messages=[
                question,
                both.choices[0].message,
                {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny"},
                {"role": "tool", "tool_call_id": calls[1].id, "content": "14:05"},
            ],
            tools=[GET_WEATHER, GET_TIME],
            extra_headers={"X-Conversation-ID": recorder.conversation_ids()[0]},
        )

        assert [(name, json.loads(arguments)) for _, name, arguments in calls_of(calls)] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"city": "Paris"}),
        ]
        assert calls[0].id != calls[1].id
        assert [call.function.name for call in one.choices[0].message.tool_calls or []] == [
            "get_weather"
        ]
        assert answer.choices[0].message.content == (
            "The tool get_weather returned: Sunny. The tool get_time returned: 14:05."
        )
        parallel_id, single_id, _ = recorder.conversation_ids()
        stored = await read_back(server, parallel_id)
        assert stored.roles == ["user", "assistant", "tool", "tool", "assistant"]
        assert calls_of(stored.messages[1]["tool_calls"]) == calls_of(calls)
        assert [m["tool_call_id"] for m in stored.messages[2:4]] == [calls[0].id, calls[1].id]
        stored.assert_charged_exactly()
        single = await read_back(server, single_id)
        assert [name for _, name, _ in calls_of(single.messages[1]["tool_calls"])] == [
            "get_weather"
        ]
        single.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_parse_returns_an_instance_of_the_pydantic_model(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        client = openai_client(server, recorder)

        completion = await client.chat.completions.parse(
            model="mock",
            messages=[{"role": "user", "content": "Tomorrow's forecast for Oslo, please."}],
            response_format=Forecast,
        )

        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Forecast)
        sent = recorder.completions[0].request_json()["response_format"]
        assert (sent["type"], sent["json_schema"]["name"]) == ("json_schema", "Forecast")
        stored = await read_back(server, recorder.conversation_ids()[0])
        assert stored.roles == ["user", "assistant"]
        assert Forecast.model_validate_json(stored.messages[1]["content"]) == parsed
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_an_image_is_answered_stored_as_a_part_and_counted_in_the_prompt(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        client = openai_client(server, recorder)
        image_url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
        parts: Any = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": image_url, "detail": "low"}},
        ]

        text_only = await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "What is in this picture?"}]
        )
        seen = await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": parts}]
        )

        assert seen.choices[0].message.content is not None
        assert seen.choices[0].message.content.startswith("I see 1 image.")
        assert seen.usage is not None
        assert text_only.usage is not None
        # A low-detail image is OpenAI's flat 85 tokens.
        assert seen.usage.prompt_tokens - text_only.usage.prompt_tokens >= 85
        stored = await read_back(server, recorder.conversation_ids()[1])
        question, reply = stored.messages
        assert (question["role"], question["content"]) == ("user", "What is in this picture?")
        assert question["parts"] == parts
        assert reply["prompt_tokens"] == seen.usage.prompt_tokens
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_streamed_tool_call_deltas_add_up_to_the_calls_of_the_whole_reply(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        client = openai_client(server, recorder)
        question: Any = [{"role": "user", "content": "get_weather and get_time, city: Lima"}]
        tools = [GET_WEATHER, GET_TIME]

        whole = await client.chat.completions.create(model="mock", messages=question, tools=tools)
        stream = await client.chat.completions.create(
            model="mock",
            messages=question,
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: dict[int, dict[str, Any]] = {}
        finish_reasons: list[str] = []
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.finish_reason is not None:
                    finish_reasons.append(choice.finish_reason)
                for delta in choice.delta.tool_calls or ():
                    call = pieces.setdefault(
                        delta.index, {"id": "", "function": {"name": "", "arguments": ""}}
                    )
                    call["id"] += delta.id or ""
                    if delta.function is not None:
                        call["function"]["name"] += delta.function.name or ""
                        call["function"]["arguments"] += delta.function.arguments or ""
        async with client.chat.completions.stream(
            model="mock", messages=question, tools=tools
        ) as helper:
            events = [event.type async for event in helper]
            final = await helper.get_final_completion()

        expected = calls_of(whole.choices[0].message.tool_calls or [])
        assert len(expected) == 2
        assert calls_of([pieces[index] for index in sorted(pieces)]) == expected
        assert finish_reasons == ["tool_calls"]
        helped = final.choices[0].message.tool_calls or []
        assert calls_of(helped) == expected
        assert [call.function.parsed_arguments for call in helped] == [
            WeatherQuery(city="Lima"),
            TimeQuery(city="Lima"),
        ]
        assert events.count("tool_calls.function.arguments.done") == 2
        for conversation_id in recorder.conversation_ids():
            stored = await read_back(server, conversation_id)
            assert stored.roles == ["user", "assistant"]
            assert calls_of(stored.messages[1]["tool_calls"]) == expected
            stored.assert_charged_exactly()
        assert_openai_shaped(recorder)
