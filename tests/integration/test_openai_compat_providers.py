"""/v1/chat/completions routed to OpenAI and Anthropic through the fake upstreams: the
request each provider receives, usage and cost as OpenAI reports them, and upstream failures
as OpenAI's errors (the official `openai` SDK is the client, over the ASGI app)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from app.core.config import Settings
from tests.fakes.upstream import CutStream, Fail, FakeUpstream, Reply

StartApp = Callable[..., Any]
CLAUDE = "claude-sonnet-4-6"
PROMPT: list[Any] = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "First question"},
    {"role": "assistant", "content": "First answer."},
    {"role": "user", "content": "Second question"},
]


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    """OpenAI and Anthropic both configured against the fake, with no retries of ours."""
    settings = make_settings(**upstream.provider_settings(), provider_max_retries=0)
    started: httpx.AsyncClient = await start_app(settings)
    return started


def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
    )


async def conversation_of(client: httpx.AsyncClient, conversation_id: str) -> Any:
    response = await client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()


class TestOpenAI:
    async def test_the_provider_receives_exactly_the_client_s_messages_and_options(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        await sdk(client).chat.completions.create(
            model="gpt-4o",
            messages=PROMPT,
            temperature=0.3,
            top_p=0.5,
            stop=["END"],
            max_completion_tokens=64,
        )

        [request] = upstream.requests
        assert request.path == "/v1/chat/completions"
        assert request.json["model"] == "gpt-4o"
        assert request.json["messages"] == [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "Second question"},
        ]
        assert (request.json["temperature"], request.json["top_p"]) == (0.3, 0.5)
        # The current name, as sent: OpenAI's reasoning models refuse `max_tokens`.
        assert (request.json["stop"], request.json["max_completion_tokens"]) == (["END"], 64)
        assert "max_tokens" not in request.json

    async def test_cached_tokens_are_reported_and_the_exact_cost_is_stored(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                "Cached hello.",
                model="gpt-4o-2024-08-06",
                prompt_tokens=1000,
                completion_tokens=200,
                cached_tokens=400,
            )
        )

        raw = await sdk(client).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=PROMPT[1:2]
        )
        completion = raw.parse()

        assert completion.model == "gpt-4o-2024-08-06"
        assert completion.choices[0].message.content == "Cached hello."
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (1000, 200)
        assert completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == 400
        conversation = await conversation_of(client, raw.headers["x-conversation-id"])
        reply = conversation["messages"][-1]
        # genai-prices' gpt-4o: 2.5 input, 1.25 cached input, 10 output USD per million.
        assert Decimal(str(reply["cost_usd"])) == Decimal("0.004")
        assert Decimal(str(conversation["total_cost_usd"])) == Decimal("0.004")
        assert (reply["provider"], reply["cached_tokens"]) == ("openai", 400)

    async def test_a_stream_reports_usage_with_cached_tokens_when_asked(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply("One two three.", prompt_tokens=50, completion_tokens=4, cached_tokens=10)
        )

        stream = await sdk(client).chat.completions.create(
            model="gpt-4o",
            messages=PROMPT[1:2],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "One two three."
        usage = chunks[-1].usage
        assert usage is not None
        assert chunks[-1].choices == []
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (50, 4, 54)
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 10

    async def test_a_failure_mid_stream_is_an_error_event_and_the_reply_is_stored_failed(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(CutStream(after_chunks=2))
        pieces: list[str] = []
        stream = await sdk(client).chat.completions.create(
            model="gpt-4o", messages=PROMPT[1:2], stream=True
        )

        async def read_all() -> None:
            async for chunk in stream:
                pieces.extend(c.delta.content or "" for c in chunk.choices)

        with pytest.raises(openai.APIError) as raised:
            await read_all()

        assert raised.value.code == "upstream_error"

        listed = (await client.get("/api/v1/conversations")).json()["items"]
        reply = (await conversation_of(client, listed[0]["id"]))["messages"][-1]
        assert reply["status"] == "failed"
        assert reply["content"] == "".join(pieces) != ""
        assert reply["cost_usd"] == 0

    async def test_an_upstream_rate_limit_is_a_429_with_retry_after(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(429, retry_after="7"))

        with pytest.raises(openai.RateLimitError) as raised:
            await sdk(client).chat.completions.create(model="gpt-4o", messages=PROMPT[1:2])

        assert raised.value.code == "rate_limit_exceeded"
        assert raised.value.response.headers["retry-after"] == "7"

    async def test_an_upstream_failure_is_a_502_api_error(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(500, message="bad things"))

        with pytest.raises(openai.InternalServerError) as raised:
            await sdk(client).chat.completions.create(model="gpt-4o", messages=PROMPT[1:2])

        assert raised.value.status_code == 502
        assert raised.value.type == "api_error"


class TestAnthropic:
    async def test_an_openai_client_talks_to_claude_with_system_and_stop_translated(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Reply("Claude here.", prompt_tokens=120, completion_tokens=3))

        raw = await sdk(client).chat.completions.with_raw_response.create(
            model=CLAUDE, messages=PROMPT, stop="END", max_tokens=32
        )
        completion = raw.parse()

        [request] = upstream.requests
        assert request.path == "/v1/messages"
        assert request.json["model"] == CLAUDE
        assert request.json["system"] == "Be terse."
        assert request.json["messages"] == [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer."},
            {"role": "user", "content": "Second question"},
        ]
        assert (request.json["stop_sequences"], request.json["max_tokens"]) == (["END"], 32)
        assert completion.choices[0].message.content == "Claude here."
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (120, 3)
        conversation = await conversation_of(client, raw.headers["x-conversation-id"])
        reply = conversation["messages"][-1]
        assert (reply["provider"], reply["model"]) == ("anthropic", CLAUDE)
        assert Decimal(str(reply["cost_usd"])) > 0
        assert conversation["total_cost_usd"] == reply["cost_usd"]

    async def test_a_claude_reply_streams_as_openai_chunks(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Reply("Streamed from Claude."))

        stream = await sdk(client).chat.completions.create(
            model=CLAUDE, messages=PROMPT[1:2], stream=True
        )
        chunks = [chunk async for chunk in stream]

        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Streamed from Claude."
        assert chunks[-1].choices[0].finish_reason == "stop"


class TestRedaction:
    async def test_provider_mode_masks_what_the_provider_gets_not_what_is_stored(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client = await start_app(
            make_settings(
                openai_api_key=upstream.api_key,
                openai_base_url=f"{upstream.url}/v1",
                pii_redaction="provider",
            )
        )
        said = "Write to jane.doe@example.com please"

        raw = await sdk(client).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": said}]
        )

        [request] = upstream.requests
        assert request.json["messages"] == [{"role": "user", "content": "Write to [email] please"}]
        conversation = await conversation_of(client, raw.headers["x-conversation-id"])
        assert conversation["messages"][0]["content"] == said


class TestRouting:
    async def test_models_lists_both_providers_under_names_that_route_to_them(
        self, client: httpx.AsyncClient
    ) -> None:
        page = await sdk(client).models.list()

        owners = {m.id: m.owned_by for m in page.data}
        assert owners["gpt-4o"] == "openai"
        assert owners[CLAUDE] == "anthropic"
        assert owners["mock"] == "mock"
