"""A conversation's stored turns, read back over HTTP: order, paging, usage and costs."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.factories import create_conversation, send_message, without_siblings

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
MESSAGE_FIELDS = {
    "id",
    "conversation_id",
    "parent_id",
    "sibling_ids",
    "role",
    "content",
    "parts",
    "tool_calls",
    "tool_call_id",
    "reasoning",
    "status",
    "provider",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "pricing",
    "cost_usd",
    "latency_ms",
    "time_to_first_token_ms",
    "finish_reason",
    "metadata",
    "created_at",
}


def messages_url(conversation_id: str) -> str:
    return f"/api/v1/conversations/{conversation_id}/messages"


def expect_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


def money(value: float) -> Decimal:
    """A JSON money number as the exact decimal it was written from."""
    return Decimal(str(value))


async def history(client: httpx.AsyncClient, conversation_id: str, limit: int) -> list[Any]:
    """Every page of a conversation's messages, as a list of pages."""
    pages: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(messages_url(conversation_id), params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


class TestMessageHistory:
    async def test_messages_page_oldest_first_without_gaps_after_several_turns(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        sent = [f"question {i}" for i in range(5)]
        replies = [
            (await send_message(client, conversation["id"], text))["message"]["id"] for text in sent
        ]

        pages = await history(client, conversation["id"], limit=3)

        assert [len(page) for page in pages] == [3, 3, 3, 1]
        items = [item for page in pages for item in page]
        assert [m["role"] for m in items] == ["user", "assistant"] * 5
        assert [m["content"] for m in items[::2]] == sent
        assert [m["id"] for m in items[1::2]] == replies
        assert len({m["id"] for m in items}) == 10
        detail = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert detail["messages"] == items

    async def test_a_user_message_has_null_provider_fields_and_zero_cost(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "Hello there", metadata={"k": "v"})

        user = (await client.get(messages_url(conversation["id"]))).json()["items"][0]

        assert set(user) == MESSAGE_FIELDS
        assert user["role"] == "user"
        assert user["status"] == "completed"
        assert user["content"] == "Hello there"
        assert user["metadata"] == {"k": "v"}
        for field in ("provider", "model", "latency_ms", "time_to_first_token_ms"):
            assert user[field] is None, field
        assert user["finish_reason"] is None
        assert user["cost_usd"] == 0.0
        for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"):
            assert user[field] == 0, field
        assert RFC3339_UTC.match(user["created_at"]), user["created_at"]

    async def test_an_assistant_reply_has_usage_cost_and_timing(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        turn = await send_message(client, conversation["id"], "Tell me something")

        reply = (await client.get(messages_url(conversation["id"]))).json()["items"][1]

        assert set(reply) == MESSAGE_FIELDS
        assert without_siblings(reply) == turn["message"]
        assert reply["role"] == "assistant"
        assert reply["status"] == "completed"
        assert reply["content"]
        assert (reply["provider"], reply["model"]) == ("mock", "mock")
        assert reply["prompt_tokens"] > 0
        assert reply["completion_tokens"] > 0
        assert reply["total_tokens"] == reply["prompt_tokens"] + reply["completion_tokens"]
        assert reply["cost_usd"] > 0
        assert reply["finish_reason"] == "stop"
        assert isinstance(reply["latency_ms"], int)
        assert reply["latency_ms"] >= 0
        assert turn["conversation_id"] == conversation["id"]
        assert turn["usage"] == {
            "prompt_tokens": reply["prompt_tokens"],
            "completion_tokens": reply["completion_tokens"],
            "total_tokens": reply["total_tokens"],
        }
        assert turn["cost_usd"] == reply["cost_usd"]

    async def test_max_tokens_cuts_the_reply_short_with_finish_reason_length(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        reply = (await send_message(client, conversation["id"], "hi", max_tokens=1))["message"]
        assert reply["finish_reason"] == "length"
        assert reply["completion_tokens"] <= 1

    async def test_conversation_totals_equal_the_sum_of_its_messages(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        for text in ("one", "two two", "three three three", "ünïcödé 👋"):
            await send_message(client, conversation["id"], text)

        items = [m for page in await history(client, conversation["id"], limit=50) for m in page]
        detail = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        listed = (await client.get("/api/v1/conversations")).json()["items"][0]

        assert detail["message_count"] == len(items) == 8
        assert detail["total_tokens"] == sum(m["total_tokens"] for m in items)
        assert money(detail["total_cost_usd"]) == sum(money(m["cost_usd"]) for m in items)
        assert detail["total_cost_usd"] > 0
        assert {**listed, "messages": detail["messages"]} == detail

    async def test_the_conversations_defaults_are_used_for_its_turns(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, provider="mock", model="mock")
        reply = (await send_message(client, conversation["id"], "hi"))["message"]
        assert (reply["provider"], reply["model"]) == ("mock", "mock")


class TestMessageHistoryErrors:
    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"cursor": "%%%"}])
    async def test_bad_paging_parameters_are_validation_errors(
        self, client: httpx.AsyncClient, params: dict[str, Any]
    ) -> None:
        conversation = await create_conversation(client)
        response = await client.get(messages_url(conversation["id"]), params=params)
        expect_problem(response, 422, "validation_error")

    async def test_the_largest_page_is_allowed(self, client: httpx.AsyncClient) -> None:
        conversation = await create_conversation(client)
        response = await client.get(messages_url(conversation["id"]), params={"limit": 200})
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "next_cursor": None}

    async def test_an_unknown_conversation_has_no_history_and_takes_no_turn(
        self, client: httpx.AsyncClient
    ) -> None:
        url = messages_url(str(uuid.uuid4()))
        expect_problem(await client.get(url), 404, "conversation_not_found")
        response = await client.post(url, json={"content": "hello"})
        expect_problem(response, 404, "conversation_not_found")
