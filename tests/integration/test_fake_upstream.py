"""The fake upstream speaks the providers' wire protocols: proved through the official SDKs.

Each failure test also pins down what the SDK itself raises for that failure, which is what
the provider adapters have to handle (several are not the SDK's own error classes).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.lib.streaming import AsyncMessageStreamManager
from anthropic.types import MessageParam
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.fakes.upstream import (
    CutStream,
    Fail,
    FakeUpstream,
    Malformed,
    Reply,
    Stall,
    StallMidStream,
    running_upstream,
)

PROMPT = "Say hello, please."
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
USER_TURN: list[MessageParam] = [{"role": "user", "content": PROMPT}]
AZURE_API_VERSION = "2024-10-21"
CLAUDE = "claude-sonnet-4-6"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        yield fake


def make_openai(fake: FakeUpstream) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key=fake.api_key, max_retries=0)


def make_azure(fake: FakeUpstream) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=fake.url,
        api_key=fake.api_key,
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )


def make_anthropic(fake: FakeUpstream) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.url, api_key=fake.api_key, max_retries=0)


@pytest.fixture
async def openai_client(upstream: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with make_openai(upstream) as client:
        yield client


@pytest.fixture
async def azure_client(upstream: FakeUpstream) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with make_azure(upstream) as client:
        yield client


@pytest.fixture
async def anthropic_client(upstream: FakeUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with make_anthropic(upstream) as client:
        yield client


@pytest.fixture
async def ask(upstream: FakeUpstream) -> AsyncIterator[Any]:
    """`await ask(provider, **client_options)`: one non-streaming turn through that
    provider's SDK (with `max_retries=0` unless given), its text. Clients are made on first
    use (each costs tens of milliseconds) and closed after the test."""
    async with AsyncExitStack() as stack:
        clients: dict[str, Any] = {}

        async def client_for(provider: str) -> Any:
            if provider not in clients:
                make: dict[str, Callable[[FakeUpstream], Any]] = {
                    "openai": make_openai,
                    "azure": make_azure,
                    "anthropic": make_anthropic,
                }
                clients[provider] = await stack.enter_async_context(make[provider](upstream))
            return clients[provider]

        async def ask(provider: str, **options: Any) -> str:
            client = (await client_for(provider)).with_options(**options)
            if provider == "anthropic":
                message = await client.messages.create(
                    model=CLAUDE, max_tokens=256, messages=USER_TURN
                )
                block = message.content[0]
                assert block.type == "text"
                return str(block.text)
            completion = await client.chat.completions.create(model="gpt-4o", messages=USER)
            return str(completion.choices[0].message.content or "")

        yield ask


async def collect_openai(stream: AsyncStream[ChatCompletionChunk], into: list[str]) -> None:
    """Read a chat completion stream to its end, its text into `into` as it arrives."""
    async for chunk in stream:
        into.extend(choice.delta.content or "" for choice in chunk.choices)


async def collect_anthropic(manager: AsyncMessageStreamManager[Any], into: list[str]) -> None:
    """Read a message stream to its end, its text into `into` as it arrives."""
    async with manager as stream:
        async for text in stream.text_stream:
            into.append(text)


def sdk(provider: str) -> Any:
    """The SDK module whose error classes a provider's client raises."""
    return anthropic if provider == "anthropic" else openai


PROVIDERS = ["openai", "azure", "anthropic"]


class TestOpenAI:
    async def test_a_reply_parses_with_its_usage_and_reported_model(
        self, upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        upstream.script(
            Reply(
                "Hi there.",
                model="gpt-4o-2024-08-06",
                prompt_tokens=1200,
                completion_tokens=3,
                cached_tokens=1024,
            )
        )
        raw = await openai_client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=USER
        )
        completion = raw.parse()

        assert raw.headers["x-request-id"].startswith("req_")
        assert raw.headers["content-type"] == "application/json"
        assert completion.id.startswith("chatcmpl-")
        assert completion.object == "chat.completion"
        assert completion.model == "gpt-4o-2024-08-06"
        choice = completion.choices[0]
        assert (choice.message.role, choice.message.content) == ("assistant", "Hi there.")
        assert choice.message.refusal is None
        assert choice.finish_reason == "stop"
        usage = completion.usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1200, 3, 1203)
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 1024
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 0

        request = upstream.requests[0]
        assert (request.method, request.path) == ("POST", "/v1/chat/completions")
        assert request.headers["authorization"] == f"Bearer {upstream.api_key}"
        assert request.json["messages"] == USER

    async def test_by_default_it_echoes_the_model_and_estimates_usage(
        self, openai_client: openai.AsyncOpenAI
    ) -> None:
        completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER)

        assert completion.model == "gpt-4o-mini"
        assert completion.choices[0].message.content == "Hello from the fake upstream."
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == len(PROMPT) // 4 + 1
        assert completion.usage.completion_tokens == len("Hello from the fake upstream.") // 4 + 1

    async def test_a_stream_delivers_the_text_in_pieces_then_the_usage(
        self, upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        upstream.script(Reply("One two three four.", prompt_tokens=10, completion_tokens=5))
        stream = await openai_client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]

        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[0].choices[0].delta.content == ""
        pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
        assert len(pieces) > 1
        assert "".join(p or "" for p in pieces) == "One two three four."
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (10, 5)
        assert all(c.usage is None for c in chunks[:-1])
        assert stream.response.headers["content-type"].startswith("text/event-stream")

    async def test_a_length_stop_is_reported(
        self, upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        upstream.script(Reply("Cut", finish_reason="length"))
        completion = await openai_client.chat.completions.create(model="gpt-4o", messages=USER)

        assert completion.choices[0].finish_reason == "length"


class TestAzure:
    async def test_a_deployment_is_called_with_api_version_and_api_key(
        self, upstream: FakeUpstream, azure_client: openai.AsyncAzureOpenAI
    ) -> None:
        raw = await azure_client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=USER
        )
        completion = raw.parse()

        request = upstream.requests[0]
        assert request.path == "/openai/deployments/gpt-4o/chat/completions"
        assert request.query == {"api-version": AZURE_API_VERSION}
        assert request.headers["api-key"] == upstream.api_key
        assert "authorization" not in request.headers
        assert completion.model == "gpt-4o-2024-11-20"  # the deployment's model, not its name
        assert completion.choices[0].message.content == "Hello from the fake upstream."
        assert raw.headers["apim-request-id"]

    async def test_a_stream_opens_with_azure_s_chunk_that_has_no_choices(
        self, azure_client: openai.AsyncAzureOpenAI
    ) -> None:
        stream = await azure_client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True
        )
        chunks = [chunk async for chunk in stream]

        assert chunks[0].choices == []  # only `prompt_filter_results`: `choices[0]` would fail
        text = "".join(c.choices[0].delta.content or "" for c in chunks[1:])
        assert text == "Hello from the fake upstream."
        assert chunks[-1].choices[0].finish_reason == "stop"

    async def test_an_unknown_deployment_is_not_found(
        self, upstream: FakeUpstream, azure_client: openai.AsyncAzureOpenAI
    ) -> None:
        with pytest.raises(openai.NotFoundError) as caught:
            await azure_client.chat.completions.create(model="gpt-5-nope", messages=USER)

        assert caught.value.body == {
            "code": "DeploymentNotFound",
            "message": caught.value.body["message"],  # type: ignore[index]
        }
        assert upstream.pending == 0

    async def test_a_missing_api_version_is_not_found(self, upstream: FakeUpstream) -> None:
        async with httpx.AsyncClient(base_url=upstream.url) as client:
            response = await client.post(
                "/openai/deployments/gpt-4o/chat/completions",
                headers={"api-key": upstream.api_key},
                json={"messages": USER},
            )

        assert response.status_code == 404
        assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


class TestAnthropic:
    async def test_a_reply_parses_with_its_cache_usage(
        self, upstream: FakeUpstream, anthropic_client: anthropic.AsyncAnthropic
    ) -> None:
        upstream.script(
            Reply(
                "Hi there.",
                model="claude-sonnet-4-6-snapshot",
                prompt_tokens=1500,
                completion_tokens=4,
                cached_tokens=1000,
                cache_write_tokens=300,
                finish_reason="length",
            )
        )
        raw = await anthropic_client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=256, system="Be brief.", messages=USER_TURN
        )
        message = await raw.parse()

        assert raw.headers["request-id"].startswith("req_")
        assert message.id.startswith("msg_")
        assert (message.type, message.role) == ("message", "assistant")
        assert message.model == "claude-sonnet-4-6-snapshot"
        assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
            ("text", "Hi there.")
        ]
        assert message.stop_reason == "max_tokens"
        assert message.stop_sequence is None
        usage = message.usage
        assert usage.input_tokens == 200  # what is neither read from nor written to the cache
        assert usage.cache_read_input_tokens == 1000
        assert usage.cache_creation_input_tokens == 300
        assert usage.output_tokens == 4

        request = upstream.requests[0]
        assert request.path == "/v1/messages"
        assert request.headers["anthropic-version"]
        # anthropic 2.x sends the API key as a bearer token, not as `x-api-key`.
        assert request.headers["authorization"] == f"Bearer {upstream.api_key}"
        assert request.json["system"] == "Be brief."

    async def test_a_stream_ends_in_a_final_message_with_its_usage(
        self, upstream: FakeUpstream, anthropic_client: anthropic.AsyncAnthropic
    ) -> None:
        upstream.script(
            Reply(
                "Streamed words arrive.", prompt_tokens=50, cached_tokens=30, cache_write_tokens=5
            )
        )
        async with anthropic_client.messages.stream(
            model=CLAUDE, max_tokens=256, messages=USER_TURN
        ) as stream:
            pieces = [text async for text in stream.text_stream]
            message = await stream.get_final_message()

        assert len(pieces) > 1
        assert "".join(pieces) == "Streamed words arrive."
        assert message.stop_reason == "end_turn"
        usage = message.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens) == (15, 30)
        assert usage.cache_creation_input_tokens == 5
        assert usage.output_tokens == len("Streamed words arrive.") // 4 + 1
        assert upstream.requests[0].json["stream"] is True

    async def test_the_raw_stream_has_the_api_s_events_in_order(
        self, anthropic_client: anthropic.AsyncAnthropic
    ) -> None:
        stream = await anthropic_client.messages.create(
            model=CLAUDE, max_tokens=256, messages=USER_TURN, stream=True
        )
        async with stream:
            events = [event.type async for event in stream]

        deltas = events.count("content_block_delta")
        assert deltas > 1
        assert events == [  # the SDK drops `ping`
            "message_start",
            "content_block_start",
            *["content_block_delta"] * deltas,
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]

    @pytest.mark.parametrize(
        ("messages", "complaint"),
        [
            (
                [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                "roles must alternate",
            ),
            ([{"role": "assistant", "content": "a"}], 'first message must use the "user" role'),
            (
                [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ],
                'multiple "assistant" roles in a row',
            ),
            ([{"role": "user", "content": ""}], "must have non-empty content"),
        ],
        ids=["two-users", "assistant-first", "two-assistants", "empty-content"],
    )
    async def test_an_invalid_conversation_is_a_bad_request(
        self,
        upstream: FakeUpstream,
        anthropic_client: anthropic.AsyncAnthropic,
        messages: list[MessageParam],
        complaint: str,
    ) -> None:
        upstream.script(Reply("never sent"))
        with pytest.raises(anthropic.BadRequestError) as caught:
            await anthropic_client.messages.create(
                model=CLAUDE,
                max_tokens=256,
                messages=messages,
            )

        assert caught.value.type == "invalid_request_error"
        assert complaint in (caught.value.api_message or "")
        assert upstream.pending == 1  # refused before any scripted behaviour was used

    async def test_x_api_key_is_accepted_and_max_tokens_required(
        self, upstream: FakeUpstream
    ) -> None:
        headers = {"x-api-key": upstream.api_key, "anthropic-version": "2023-06-01"}
        async with httpx.AsyncClient(base_url=upstream.url, headers=headers) as client:
            ok = await client.post(
                "/v1/messages",
                json={"model": CLAUDE, "max_tokens": 8, "messages": USER},
            )
            no_max = await client.post("/v1/messages", json={"model": CLAUDE, "messages": USER})
            no_version = await client.post(
                "/v1/messages",
                headers={"anthropic-version": ""},
                json={"model": CLAUDE, "max_tokens": 8, "messages": USER},
            )

        assert ok.status_code == 200
        assert ok.headers["request-id"].startswith("req_")
        assert no_max.status_code == 400
        assert no_max.json()["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required",
        }
        assert no_max.json()["type"] == "error"
        assert no_max.headers["request-id"] == no_max.json()["request_id"]
        assert no_version.status_code == 400


class TestFailures:
    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_429_is_a_rate_limit_error_with_its_retry_after(
        self, upstream: FakeUpstream, ask: Any, provider: str
    ) -> None:
        upstream.script(Fail(429, retry_after="7"))
        with pytest.raises(sdk(provider).RateLimitError) as caught:
            await ask(provider)

        assert caught.value.status_code == 429
        assert caught.value.response.headers["retry-after"] == "7"
        if provider == "openai":
            assert caught.value.code == "rate_limit_exceeded"
        elif provider == "anthropic":
            assert caught.value.type == "rate_limit_error"

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_500_is_an_internal_server_error(
        self, upstream: FakeUpstream, ask: Any, provider: str
    ) -> None:
        upstream.script(Fail(500))
        with pytest.raises(sdk(provider).InternalServerError) as caught:
            await ask(provider)

        assert caught.value.status_code == 500

    async def test_an_anthropic_529_is_the_sdk_s_overloaded_error(
        self, upstream: FakeUpstream, ask: Any
    ) -> None:
        upstream.script(Fail(529))
        with pytest.raises(anthropic.OverloadedError) as caught:
            await ask("anthropic")

        assert isinstance(caught.value, anthropic.InternalServerError)
        assert caught.value.status_code == 529
        assert caught.value.type == "overloaded_error"
        assert caught.value.api_message == "Overloaded"

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_stall_is_a_timeout(
        self, upstream: FakeUpstream, ask: Any, provider: str
    ) -> None:
        upstream.script(Stall(30))
        started = time.monotonic()
        with pytest.raises(sdk(provider).APITimeoutError):
            await ask(provider, timeout=0.3)

        assert time.monotonic() - started < 2

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_short_stall_is_then_answered(
        self, upstream: FakeUpstream, ask: Any, provider: str
    ) -> None:
        upstream.script(Stall(0.05))

        assert await ask(provider) == "Hello from the fake upstream."

    @pytest.mark.parametrize("provider", PROVIDERS)
    @pytest.mark.parametrize("behaviour", [Malformed(), CutStream()], ids=["malformed", "cut"])
    async def test_a_body_that_is_not_json_escapes_as_a_json_decode_error(
        self, upstream: FakeUpstream, ask: Any, provider: str, behaviour: Malformed | CutStream
    ) -> None:
        # Neither SDK wraps this: the adapter gets the bare `json.JSONDecodeError` (a
        # ValueError), not an `APIError` nor an `APIResponseValidationError`.
        upstream.script(behaviour)
        with pytest.raises(json.JSONDecodeError):
            await ask(provider)

    @pytest.mark.parametrize("provider", ["openai", "azure"])
    async def test_an_openai_stream_cut_short_is_a_connection_error(
        self,
        upstream: FakeUpstream,
        openai_client: openai.AsyncOpenAI,
        azure_client: openai.AsyncAzureOpenAI,
        provider: str,
    ) -> None:
        # The openai SDK wraps the transport's error: `APIConnectionError` (not a timeout),
        # raised by the stream's iteration after the pieces that did arrive.
        client = openai_client if provider == "openai" else azure_client
        upstream.script(CutStream(after_chunks=2, text="One two three four five."))
        received: list[str] = []
        stream = await client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        with pytest.raises(openai.APIConnectionError) as caught:
            await collect_openai(stream, received)

        assert "".join(received) == "One two"
        assert not isinstance(caught.value, openai.APITimeoutError)

    async def test_an_anthropic_stream_cut_short_is_a_bare_transport_error(
        self, upstream: FakeUpstream, anthropic_client: anthropic.AsyncAnthropic
    ) -> None:
        # The anthropic SDK does not wrap it: `httpx2.RemoteProtocolError` ("incomplete
        # chunked read") escapes its stream, not an `anthropic.APIConnectionError`.
        upstream.script(CutStream(after_chunks=2, text="One two three four five."))
        received: list[str] = []
        manager = anthropic_client.messages.stream(model=CLAUDE, max_tokens=256, messages=USER_TURN)
        with pytest.raises(httpx2.RemoteProtocolError):
            await collect_anthropic(manager, received)

        assert "".join(received) == "One two"

    async def test_an_openai_stream_that_goes_silent_is_a_timeout(
        self, upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        upstream.script(StallMidStream(after_chunks=1, seconds=30, text="One two three."))
        received: list[str] = []
        stream = await openai_client.with_options(timeout=0.3).chat.completions.create(
            model="gpt-4o", messages=USER, stream=True
        )
        with pytest.raises(openai.APITimeoutError):
            await collect_openai(stream, received)

        assert "".join(received) == "One"

    async def test_an_anthropic_stream_that_goes_silent_is_a_bare_read_timeout(
        self, upstream: FakeUpstream, anthropic_client: anthropic.AsyncAnthropic
    ) -> None:
        # Unwrapped as well: `httpx2.ReadTimeout`, not `anthropic.APITimeoutError`.
        upstream.script(StallMidStream(after_chunks=1, seconds=30, text="One two three."))
        received: list[str] = []
        manager = anthropic_client.with_options(timeout=0.3).messages.stream(
            model=CLAUDE, max_tokens=256, messages=USER_TURN
        )
        with pytest.raises(httpx2.ReadTimeout):
            await collect_anthropic(manager, received)

        assert "".join(received) == "One"

    async def test_a_short_silence_mid_stream_then_finishes(
        self, upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        upstream.script(StallMidStream(after_chunks=1, seconds=0.05, text="One two three."))
        stream = await openai_client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True
        )
        chunks = [chunk async for chunk in stream]

        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "One two three."
        assert chunks[-1].choices[0].finish_reason == "stop"

    async def test_a_wrong_openai_key_is_an_authentication_error_with_the_key_masked(
        self, upstream: FakeUpstream, openai_client: openai.AsyncOpenAI
    ) -> None:
        wrong = "sk-wrong-key-0123456789abcdef"
        with pytest.raises(openai.AuthenticationError) as caught:
            await openai_client.with_options(api_key=wrong).chat.completions.create(
                model="gpt-4o", messages=USER
            )

        # The SDK's message is the body's `error.message`: OpenAI masks the key in it.
        assert caught.value.code == "invalid_api_key"
        assert "Incorrect API key provided: sk-wr" in str(caught.value)
        assert wrong not in str(caught.value)
        assert str(caught.value).count("*") > 0

    async def test_a_wrong_azure_key_is_an_authentication_error(
        self, azure_client: openai.AsyncAzureOpenAI
    ) -> None:
        with pytest.raises(openai.AuthenticationError) as caught:
            await azure_client.with_options(api_key="wrong").chat.completions.create(
                model="gpt-4o", messages=USER
            )

        assert caught.value.body["code"] == "401"  # type: ignore[index]

    async def test_a_wrong_anthropic_key_is_an_authentication_error(
        self, anthropic_client: anthropic.AsyncAnthropic
    ) -> None:
        wrong = "sk-ant-wrong-0123456789abcdef"
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await anthropic_client.with_options(api_key=wrong).messages.create(
                model=CLAUDE, max_tokens=256, messages=USER_TURN
            )

        # The SDK's message is "Error code: 401 - <the whole body>"; the body names no key.
        assert caught.value.api_message == "invalid x-api-key"
        assert wrong not in str(caught.value)
        assert caught.value.request_id == caught.value.response.headers["request-id"]

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_the_sdk_s_own_retries_reach_the_upstream(
        self, upstream: FakeUpstream, ask: Any, provider: str
    ) -> None:
        upstream.script(*[Fail(500, retry_after="0.01")] * 3, Reply("not reached"))
        with pytest.raises(sdk(provider).InternalServerError):
            await ask(provider, max_retries=2)

        assert len(upstream.requests) == 3
        retries = [r.headers.get("x-stainless-retry-count") for r in upstream.requests]
        assert retries == ["0", "1", "2"]
        assert upstream.pending == 1


class TestScripting:
    async def test_behaviours_are_used_in_order_then_the_default(
        self, upstream: FakeUpstream, ask: Any
    ) -> None:
        upstream.script(Reply("first"), Fail(500), Reply("third"))

        assert await ask("openai") == "first"
        with pytest.raises(anthropic.InternalServerError):
            await ask("anthropic")
        assert await ask("azure") == "third"
        assert await ask("anthropic") == "Hello from the fake upstream."
        assert [r.path for r in upstream.requests] == [
            "/v1/chat/completions",
            "/v1/messages",
            "/openai/deployments/gpt-4o/chat/completions",
            "/v1/messages",
        ]

        upstream.script(Fail(500))
        upstream.reset()
        assert (upstream.requests, upstream.pending) == ([], 0)
        assert await ask("openai") == "Hello from the fake upstream."

    async def test_an_unknown_route_is_not_found(self, upstream: FakeUpstream) -> None:
        async with httpx.AsyncClient(base_url=upstream.url) as client:
            response = await client.get("/v1/models")

        assert response.status_code == 404
        assert response.json()["error"]["message"] == "Invalid URL (GET /v1/models)"

    async def test_shutdown_does_not_wait_for_a_stalled_request(self) -> None:
        async with running_upstream() as fake:
            fake.script(Stall(60))
            client = make_openai(fake)
            call = asyncio.create_task(
                client.chat.completions.create(model="gpt-4o", messages=USER)
            )
            await fake.wait_for_requests(1)
            started = time.monotonic()
        stopping = time.monotonic() - started

        try:
            with pytest.raises(openai.APIConnectionError):
                await call
        finally:
            await client.close()
        assert stopping < 1
