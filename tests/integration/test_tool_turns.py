"""`/api/v1` turns beyond text, on both databases: tool calls and their results, a
conversation's default tools, images, structured output, and the SSE `tool_call` event.

The mock provider calls a tool named in the user's message, so all of it runs with no key.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from app.db.models import Message, MessageRole, MessageStatus
from app.services.streaming.streams import replay_of
from tests.factories import create_conversation, send_message
from tests.sse import read_stream

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


def messages_url(conversation_id: str) -> str:
    return f"/api/v1/conversations/{conversation_id}/messages"


async def stored_messages(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    response = await client.get(messages_url(conversation_id), params={"limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def tiny_png(width: int, height: int) -> str:
    """A valid PNG of one colour, as a data URL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


async def expect_422(response: httpx.Response, loc: list[Any]) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == loc, response.text


class TestToolRoundTrip:
    async def test_a_tool_call_and_its_result_are_stored_and_charged_in_order(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, tools=[WEATHER])
        assert conversation["tools"] == [WEATHER]

        asked = await send_message(client, conversation["id"], "Use get_weather for city: Paris")
        reply = asked["message"]
        assert reply["finish_reason"] == "tool_calls"
        assert reply["content"] == ""
        [call] = reply["tool_calls"]
        assert call["type"] == "function"
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

        answered = await send_message(
            client,
            conversation["id"],
            None,
            tool_results=[{"tool_call_id": call["id"], "content": "18°C and sunny"}],
        )

        assert answered["message"]["finish_reason"] == "stop"
        assert "18°C and sunny" in answered["message"]["content"]
        stored = await stored_messages(client, conversation["id"])
        assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
        assert stored[1]["tool_calls"] == reply["tool_calls"]
        assert (stored[2]["tool_call_id"], stored[2]["content"]) == (call["id"], "18°C and sunny")
        detail = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert detail["message_count"] == 4
        costs = sum(Decimal(str(m["cost_usd"])) for m in stored)
        assert Decimal(str(detail["total_cost_usd"])) == costs

    async def test_parallel_calls_and_results_with_a_follow_up_question(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        turn = {"tools": [WEATHER, TIME], "parallel_tool_calls": True}

        asked = await send_message(
            client, conversation["id"], "get_weather and get_time for Oslo", **turn
        )
        calls = asked["message"]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
        assert len({c["id"] for c in calls}) == 2

        results = [{"tool_call_id": c["id"], "content": f"result {i}"} for i, c in enumerate(calls)]
        answered = await send_message(
            client, conversation["id"], "And briefly?", tool_results=results, **turn
        )

        stored = await stored_messages(client, conversation["id"])
        assert [m["role"] for m in stored] == [
            "user",
            "assistant",
            "tool",
            "tool",
            "user",
            "assistant",
        ]
        assert answered["message"]["status"] == "completed"

    async def test_a_turn_with_no_tools_gets_plain_text_even_when_a_tool_is_named(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, tools=[WEATHER])

        reply = await send_message(client, conversation["id"], "get_weather please", tools=[])

        assert reply["message"]["tool_calls"] is None
        assert reply["message"]["finish_reason"] == "stop"

    async def test_a_result_for_a_call_nobody_made_is_refused_and_stores_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, tools=[WEATHER])
        asked = await send_message(client, conversation["id"], "get_weather for Rome")
        [call] = asked["message"]["tool_calls"]
        url = messages_url(conversation["id"])

        forged = [{"tool_call_id": "call_forged'); DROP TABLE messages;--", "content": "x"}]
        await expect_422(
            await client.post(url, json={"tool_results": forged}),
            ["body", "tool_results", "0", "tool_call_id"],
        )
        twice = [{"tool_call_id": call["id"], "content": "a"}] * 2
        await expect_422(
            await client.post(url, json={"tool_results": twice}),
            ["body", "tool_results", "1", "tool_call_id"],
        )
        unanswered = await client.post(url, json={"content": "Never mind, what time is it?"})
        await expect_422(unanswered, ["body", "tool_results"])
        assert call["id"] in unanswered.json()["errors"][0]["msg"]
        assert len(await stored_messages(client, conversation["id"])) == 2

    async def test_tool_settings_without_tools_and_empty_turns_are_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        url = messages_url(conversation["id"])

        await expect_422(
            await client.post(url, json={"content": "hi", "tool_choice": "required"}),
            ["body", "tool_choice"],
        )
        response = await client.post(url, json={})
        assert response.status_code == 422, response.text
        response = await client.post(url, json={"content": "hi", "tools": [{"type": "custom"}]})
        assert response.status_code == 422, response.text
        assert await stored_messages(client, conversation["id"]) == []

    async def test_tool_schemas_the_database_cannot_store_are_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        nul = {"type": "function", "function": {"name": "f", "parameters": {"d": "a\u0000b"}}}
        response = await client.post("/api/v1/conversations", json={"tools": [nul]})
        assert response.status_code == 422, response.text
        nan = b'{"tools": [{"type": "function", "function": {"name": "f", "parameters": '
        nan += b'{"x": NaN}}}]}'
        response = await client.post(
            "/api/v1/conversations", content=nan, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        extra = {"type": "function", "function": {"name": "f"}, "x-note": "\u0000"}
        response = await client.post("/api/v1/conversations", json={"tools": [extra]})
        assert response.status_code == 422, response.text

    async def test_a_conversations_tools_can_be_changed_and_cleared(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        url = f"/api/v1/conversations/{conversation['id']}"

        assert (await client.patch(url, json={"tools": [TIME]})).json()["tools"] == [TIME]
        asked = await send_message(client, conversation["id"], "get_time in Lima")
        assert asked["message"]["tool_calls"][0]["function"]["name"] == "get_time"
        assert (await client.patch(url, json={"tools": None})).json()["tools"] is None


class TestStreamedToolCalls:
    async def test_tool_call_events_carry_the_call_and_resume_from_the_stored_reply(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, tools=[WEATHER])

        stream = await read_stream(
            client,
            "POST",
            messages_url(conversation["id"]),
            json={"content": "get_weather for city: Lagos", "stream": True},
        )

        assert stream.status_code == 200, stream.body
        pieces = [frame.json() for frame in stream.events if frame.event == "tool_call"]
        assert (pieces[0]["index"], pieces[0]["name"]) == (0, "get_weather")
        assert json.loads("".join(p["arguments"] for p in pieces)) == {"city": "Lagos"}
        done = stream.terminal.json()["message"]
        assert done["tool_calls"][0]["id"] == pieces[0]["id"]
        assert done["finish_reason"] == "tool_calls"
        # A client that comes back after the end gets the same call again.
        replay = await read_stream(
            client, "GET", f"/api/v1/conversations/{conversation['id']}/stream"
        )
        again = [frame.json() for frame in replay.events if frame.event == "tool_call"]
        assert again[0]["id"] == pieces[0]["id"]
        assert json.loads("".join(p["arguments"] for p in again)) == {"city": "Lagos"}


class TestContentParts:
    async def test_an_image_turn_is_stored_with_its_parts_and_counted(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        image = tiny_png(1024, 1024)
        parts = [
            {"type": "text", "text": "What colour is this? 🎨"},
            {"type": "image_url", "image_url": {"url": image, "detail": "high"}},
        ]
        plain = await send_message(client, conversation["id"], "What colour is this? 🎨")

        reply = await send_message(client, conversation["id"], parts)

        stored = await stored_messages(client, conversation["id"])
        user = stored[2]
        assert user["content"] == "What colour is this? 🎨"
        assert user["parts"] == parts
        assert "1 image" in reply["message"]["content"]
        # OpenAI's formula: a 1024x1024 high-detail image is 765 tokens.
        grown = reply["message"]["prompt_tokens"] - plain["message"]["prompt_tokens"]
        assert grown >= 765

    async def test_bad_images_are_refused_with_their_field(self, client: httpx.AsyncClient) -> None:
        conversation = await create_conversation(client)
        url = messages_url(conversation["id"])
        for url_value in ("data:image/png;base64,@@not-base64@@", "ftp://x/y.png"):
            parts = [{"type": "image_url", "image_url": {"url": url_value}}]
            response = await client.post(url, json={"content": parts})
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["loc"][:3] == ["body", "content", "0"]
        assert await stored_messages(client, conversation["id"]) == []


class TestStructuredOutput:
    async def test_a_json_schema_reply_is_valid_json_of_that_shape(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            "required": ["name", "age"],
            "additionalProperties": False,
        }
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        }

        reply = await send_message(
            client, conversation["id"], "Describe someone", response_format=response_format
        )

        person = json.loads(reply["message"]["content"])
        assert set(person) == {"name", "age"}
        assert (type(person["name"]), type(person["age"])) == (str, int)


def test_a_stored_reply_replays_its_reasoning_text_and_whole_calls_in_order() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    reply = Message(
        id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        role=MessageRole.ASSISTANT,
        content="Let me look.",
        reasoning="The user wants f.",
        tool_calls=[call],
        status=MessageStatus.COMPLETED,
        finish_reason="tool_calls",
        metadata_={},
        cost_usd=Decimal(0),
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        cache_write_tokens=0,
        cache_write_1h_tokens=0,
        reasoning_tokens=0,
        total_tokens=0,
        created_at=datetime.now(UTC),
    )

    replayed = replay_of(reply)

    assert [name for name, _ in replayed] == ["start", "reasoning", "delta", "tool_call", "done"]
    assert json.loads(replayed[3][1]) == {
        "index": 0,
        "id": "call_1",
        "name": "f",
        "arguments": "{}",
    }
    assert json.loads(replayed[-1][1])["message"]["tool_calls"] == [call]
