"""Turns through the OpenAI adapter, against the fake upstream: the request it sends, and
the usage, cost and timings stored for the reply."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.factories import create_conversation, send_message
from tests.fakes.upstream import FakeUpstream, Reply
from tests.sse import stream_message

StartApp = Callable[..., Any]
SYSTEM = "You are terse."
# genai-prices' list price for gpt-4o, USD per million tokens.
GPT_4O_INPUT, GPT_4O_CACHED, GPT_4O_OUTPUT = Decimal("2.5"), Decimal("1.25"), Decimal("10")


def openai_settings(
    make_settings: Callable[..., Settings], fake: FakeUpstream, **overrides: Any
) -> Settings:
    return make_settings(openai_api_key=fake.api_key, openai_base_url=f"{fake.url}/v1", **overrides)


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    started: httpx.AsyncClient = await start_app(openai_settings(make_settings, upstream))
    return started


async def stored_messages(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


class TestTheRequestSent:
    async def test_it_carries_the_model_the_key_and_asks_for_the_whole_reply_at_once(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")

        await send_message(client, conversation["id"], "Hi")

        # A non-streaming turn needs no stream from the upstream: one plain request.
        [request] = upstream.requests
        assert (request.method, request.path) == ("POST", "/v1/chat/completions")
        assert request.headers["authorization"] == f"Bearer {upstream.api_key}"
        assert request.json["model"] == "gpt-4o"
        assert request.json.get("stream", False) is False
        assert "stream_options" not in request.json
        assert "max_tokens" not in request.json
        assert "temperature" not in request.json
        assert "top_p" not in request.json
        assert "stop" not in request.json

    async def test_it_sends_the_headers_that_matter_and_not_the_sdks_telemetry(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")

        await send_message(client, conversation["id"], "Hi")
        await stream_message(client, conversation["id"], "Again")

        for request in upstream.requests:
            assert request.headers["content-type"] == "application/json"
            assert request.headers["authorization"] == f"Bearer {upstream.api_key}"
            assert request.headers["user-agent"].startswith("AsyncOpenAI/Python")
            assert request.headers["x-stainless-retry-count"] == "0"  # about this request
            # The SDK's platform telemetry, kept with every open stream, is not sent.
            platform = [name for name in request.headers if name.startswith("x-stainless")]
            assert sorted(platform) == ["x-stainless-read-timeout", "x-stainless-retry-count"]

    async def test_a_streamed_turn_asks_for_a_stream_with_usage(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Reply("Streamed back.", prompt_tokens=20, completion_tokens=3))

        stream = await stream_message(client, conversation["id"], "Hi")

        assert stream.terminal.event == "done"
        assert stream.text == "Streamed back."
        [request] = upstream.requests
        assert request.json["stream"] is True
        assert request.json["stream_options"] == {"include_usage": True}
        [_, stored] = await stored_messages(client, conversation["id"])
        assert (stored["prompt_tokens"], stored["completion_tokens"]) == (20, 3)

    async def test_the_system_prompt_comes_first_then_the_whole_history_in_order(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(
            client, provider="openai", model="gpt-4o", system_prompt=SYSTEM
        )
        upstream.script(Reply("First answer."), Reply("Second answer."))

        await send_message(client, conversation["id"], "First question")
        await send_message(client, conversation["id"], "Second question")

        assert len(upstream.requests) == 2
        assert upstream.requests[1].json["messages"] == [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "Second question"},
        ]

    async def test_max_tokens_and_temperature_are_passed_when_the_message_sets_them(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")

        await send_message(client, conversation["id"], "Hi", max_tokens=50, temperature=0.2)

        [request] = upstream.requests
        assert request.json["max_tokens"] == 50
        assert request.json["temperature"] == 0.2


class TestTheStoredReply:
    async def test_usage_reported_model_and_exact_cost_are_stored(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(
            Reply(
                "Cached hello.",
                model="gpt-4o-2024-08-06",
                prompt_tokens=1000,
                completion_tokens=200,
                cached_tokens=400,
            )
        )

        result = await send_message(client, conversation["id"], "Hi")

        [request] = upstream.requests  # one call, not streamed, billed as a streamed one was
        assert request.json.get("stream", False) is False
        expected = (600 * GPT_4O_INPUT + 400 * GPT_4O_CACHED + 200 * GPT_4O_OUTPUT) / 1_000_000
        assert expected == Decimal("0.004")
        message = result["message"]
        assert (message["provider"], message["model"]) == ("openai", "gpt-4o-2024-08-06")
        assert (message["content"], message["status"]) == ("Cached hello.", "completed")
        assert (message["prompt_tokens"], message["completion_tokens"]) == (1000, 200)
        assert (message["cached_tokens"], message["total_tokens"]) == (400, 1200)
        assert Decimal(str(message["cost_usd"])) == expected
        assert Decimal(str(result["cost_usd"])) == expected
        assert result["usage"] == {
            "prompt_tokens": 1000,
            "completion_tokens": 200,
            "total_tokens": 1200,
        }
        [_, stored] = await stored_messages(client, conversation["id"])
        assert stored["model"] == "gpt-4o-2024-08-06"
        assert Decimal(str(stored["cost_usd"])) == expected
        assert stored["pricing"] == {
            "input_per_mtok": 2.5,
            "cached_input_per_mtok": 1.25,
            "cache_write_per_mtok": None,
            "cache_write_1h_per_mtok": None,
            "output_per_mtok": 10.0,
            "source": "genai-prices 0.2.3",
        }

    async def test_the_conversation_total_equals_the_reply_cost(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Reply("Hi.", prompt_tokens=1000, completion_tokens=200, cached_tokens=400))

        result = await send_message(client, conversation["id"], "Hi")

        read = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert Decimal(str(read["total_cost_usd"])) == Decimal("0.004")
        assert read["total_cost_usd"] == result["cost_usd"]
        assert read["total_tokens"] == 1200
        assert read["message_count"] == 2

    async def test_a_length_finish_is_stored_as_length(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Reply("Cut", finish_reason="length"))

        result = await send_message(client, conversation["id"], "Hi", max_tokens=1)

        assert result["message"]["finish_reason"] == "length"
        [_, stored] = await stored_messages(client, conversation["id"])
        assert (stored["finish_reason"], stored["status"]) == ("length", "completed")

    async def test_latency_and_time_to_first_token_are_measured(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")

        message = (await send_message(client, conversation["id"], "Hi"))["message"]

        assert isinstance(message["latency_ms"], int)
        assert isinstance(message["time_to_first_token_ms"], int)
        assert 0 <= message["time_to_first_token_ms"] <= message["latency_ms"]

    async def test_a_model_without_a_known_price_is_stored_with_a_null_cost_and_a_warning(
        self,
        client: httpx.AsyncClient,
        upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="my-finetune-xyz")
        upstream.script(Reply("Tuned.", prompt_tokens=30, completion_tokens=5))

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
        )

        assert response.status_code == 201, response.text
        assert upstream.requests[0].json["model"] == "my-finetune-xyz"
        body = response.json()
        assert body["cost_usd"] is None
        message = body["message"]
        assert (message["model"], message["cost_usd"], message["pricing"]) == (
            "my-finetune-xyz",
            None,
            None,
        )
        assert (message["prompt_tokens"], message["completion_tokens"]) == (30, 5)
        [warning] = [r for r in caplog.records if "no price known" in r.getMessage()]
        assert warning.levelname == "WARNING"
        assert "my-finetune-xyz" in warning.getMessage()
        read = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert (read["total_tokens"], read["total_cost_usd"]) == (35, 0)


class TestChoosingAProvider:
    async def test_a_provider_without_credentials_is_a_422_provider_not_configured(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "Hi", "provider": "anthropic"},
        )

        assert response.status_code == 422
        assert response.json()["code"] == "provider_not_configured"
        assert upstream.requests == []
        assert await stored_messages(client, conversation["id"]) == []

    async def test_an_unknown_provider_is_a_422_unknown_model(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "Hi", "provider": "no-such-provider"},
        )

        assert response.status_code == 422
        assert response.json()["code"] == "unknown_model"
        assert upstream.requests == []
