"""Turns through the Anthropic adapter, against the fake upstream: top-level system prompt,
alternating turns, max_tokens, cache token accounting and overload retries."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.factories import create_conversation, send_message
from tests.fakes.upstream import Fail, FakeUpstream, Reply
from tests.sse import stream_message

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

StartApp = Callable[..., Any]
MODEL = "claude-sonnet-4-5"
SNAPSHOT = "claude-sonnet-4-5-20250929"
SYSTEM = "You answer in one sentence."


def anthropic_settings(
    make_settings: Callable[..., Settings], fake: FakeUpstream, **overrides: Any
) -> Settings:
    return make_settings(anthropic_api_key=fake.api_key, anthropic_base_url=fake.url, **overrides)


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    settings = anthropic_settings(make_settings, upstream, provider_retry_max_wait_seconds=0.05)
    started: httpx.AsyncClient = await start_app(settings)
    return started


async def post_turn(
    client: httpx.AsyncClient, conversation_id: str, content: str, **fields: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": content, **fields}
    )


class TestTheRequestSent:
    async def test_the_system_prompt_is_top_level_and_not_a_message(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(
            client, provider="anthropic", model=MODEL, system_prompt=SYSTEM
        )
        upstream.script(Reply("First answer."))

        await send_message(client, conversation["id"], "First question")
        await send_message(client, conversation["id"], "Second question", temperature=0.5)

        [_, request] = upstream.requests
        assert request.path == "/v1/messages"
        assert request.json["model"] == MODEL
        assert request.json["system"] == SYSTEM
        # A non-streaming turn asks for the whole reply in one plain request.
        assert request.json.get("stream", False) is False
        assert request.json["messages"] == [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "Second question"},
        ]
        assert "temperature" not in request.json
        assert "top_p" not in request.json
        assert "stop_sequences" not in request.json

    async def test_max_tokens_defaults_to_the_configured_value(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="anthropic", model=MODEL)

        await send_message(client, conversation["id"], "Hi")

        assert upstream.requests[0].json["max_tokens"] == 4096
        assert "system" not in upstream.requests[0].json

    async def test_the_message_s_max_tokens_is_sent_when_given(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="anthropic", model=MODEL)

        await send_message(client, conversation["id"], "Hi", max_tokens=77)

        assert upstream.requests[0].json["max_tokens"] == 77

    async def test_two_user_messages_in_a_row_are_merged_into_one_turn(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        # The fake refuses turns that do not alternate, so the 201 proves they were merged.
        conversation = await create_conversation(client, provider="anthropic", model=MODEL)
        upstream.script(Fail(400))

        failed = await post_turn(client, conversation["id"], "First try")
        succeeded = await post_turn(client, conversation["id"], "Second try")

        # A provider's refusal reaches the client with its status, after one call.
        assert failed.status_code == 400, failed.text
        assert failed.json()["code"] == "upstream_rejected"
        assert succeeded.status_code == 201, succeeded.text
        assert len(upstream.requests) == 2
        assert upstream.requests[1].json["messages"] == [
            {"role": "user", "content": "First try\n\nSecond try"}
        ]


class TestTheStoredReply:
    async def test_cache_reads_and_writes_are_counted_and_priced_at_their_own_rates(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="anthropic", model=MODEL)
        upstream.script(
            Reply(
                "Cached.",
                model=SNAPSHOT,
                prompt_tokens=10_000,
                cached_tokens=6_000,
                cache_write_tokens=2_000,
                completion_tokens=500,
            )
        )

        result = await send_message(client, conversation["id"], "Hi")

        # 2,000 uncached at $3, 6,000 read at $0.30, 2,000 written at $3.75, 500 out at $15.
        expected = (
            2_000 * Decimal("3")
            + 6_000 * Decimal("0.3")
            + 2_000 * Decimal("3.75")
            + 500 * Decimal("15")
        ) / 1_000_000
        assert expected == Decimal("0.0228")
        message = result["message"]
        assert (message["provider"], message["model"]) == ("anthropic", SNAPSHOT)
        assert message["prompt_tokens"] == 10_000
        assert (message["cached_tokens"], message["cache_write_tokens"]) == (6_000, 2_000)
        assert (message["completion_tokens"], message["total_tokens"]) == (500, 10_500)
        assert Decimal(str(message["cost_usd"])) == expected
        assert message["pricing"] == {
            "input_per_mtok": 3.0,
            "cached_input_per_mtok": 0.3,
            "cache_write_per_mtok": 3.75,
            "cache_write_1h_per_mtok": 6.0,
            "output_per_mtok": 15.0,
            "source": "genai-prices 0.2.3",
        }
        read = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert Decimal(str(read["total_cost_usd"])) == expected
        assert read["messages"][1]["cache_write_tokens"] == 2_000
        [request] = upstream.requests
        assert request.json.get("stream", False) is False

    async def test_a_streamed_turn_streams_from_the_upstream_and_is_counted_the_same(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="anthropic", model=MODEL)
        upstream.script(
            Reply(
                "Cached.",
                model=SNAPSHOT,
                prompt_tokens=10_000,
                cached_tokens=6_000,
                cache_write_tokens=2_000,
                completion_tokens=500,
            )
        )

        stream = await stream_message(client, conversation["id"], "Hi")

        assert (stream.terminal.event, stream.text) == ("done", "Cached.")
        [request] = upstream.requests
        assert request.json["stream"] is True
        read = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        reply = read["messages"][1]
        assert (reply["prompt_tokens"], reply["completion_tokens"]) == (10_000, 500)
        assert (reply["cached_tokens"], reply["cache_write_tokens"]) == (6_000, 2_000)
        assert Decimal(str(read["total_cost_usd"])) == Decimal("0.0228")

    async def test_a_max_tokens_stop_is_stored_as_length(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="anthropic", model=MODEL)
        upstream.script(Reply("Cut", finish_reason="length"))

        result = await send_message(client, conversation["id"], "Hi", max_tokens=1)

        assert result["message"]["finish_reason"] == "length"
        assert result["message"]["content"] == "Cut"


class TestOverload:
    async def test_a_529_overloaded_is_retried_then_the_reply_is_served(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, provider="anthropic", model=MODEL)
        upstream.script(Fail(529), Reply("Back again."))

        result = await send_message(client, conversation["id"], "Hi")

        assert len(upstream.requests) == 2
        assert result["message"]["content"] == "Back again."
        assert result["message"]["status"] == "completed"
