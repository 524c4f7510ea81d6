"""What an upstream failure does to a turn: how many calls it costs, what the client gets,
what is stored, and that the provider key never leaks. Counted at the fake upstream."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.factories import create_conversation
from tests.fakes.upstream import (
    CutStream,
    Fail,
    FakeUpstream,
    HangUp,
    Malformed,
    Reply,
    Stall,
    StallMidStream,
)
from tests.sse import EventStream, stream_message

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

StartApp = Callable[..., Any]
OPENAI_PATH = "/v1/chat/completions"
WRONG_KEY = "sk-wrong-key-c0ffee-9a8b7c6d5e4f"
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "azure": "gpt-4o"}
PROVIDERS = list(MODELS)
SNAPSHOT = "claude-sonnet-4-5-20250929"


def upstream_settings(
    make_settings: Callable[..., Settings], fake: FakeUpstream, key: str, **overrides: Any
) -> Settings:
    """OpenAI (the default), Anthropic and Azure, all served by the fake, all with `key`."""
    values: dict[str, Any] = {
        "openai_api_key": key,
        "openai_base_url": f"{fake.url}/v1",
        "anthropic_api_key": key,
        "anthropic_base_url": fake.url,
        "azure_openai_api_key": key,
        "azure_openai_endpoint": fake.url,
        "azure_openai_deployments": {"gpt-4o": "gpt-4o"},
        # Small on purpose: every attempt times out fast and backoff never waits long. Not
        # smaller: a non-streaming attempt is bounded whole, and a loaded CI machine can take
        # a few hundred milliseconds over an answer that does come.
        "provider_timeout_seconds": 1.0,
        "provider_max_retries": 2,
        "provider_retry_max_wait_seconds": 0.05,
    }
    return make_settings(**{**values, **overrides})


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    settings = upstream_settings(make_settings, upstream, upstream.api_key)
    started: httpx.AsyncClient = await start_app(settings)
    return started


async def turn(client: httpx.AsyncClient, provider: str = "openai") -> tuple[httpx.Response, str]:
    """Post "Hello" in a new conversation with `provider`: the response and conversation id."""
    conversation = await create_conversation(client, provider=provider, model=MODELS[provider])
    response = await client.post(
        f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hello"}
    )
    return response, conversation["id"]


async def streamed_turn(
    client: httpx.AsyncClient, provider: str = "openai"
) -> tuple[EventStream, str]:
    """`turn`, with the reply streamed (`stream: true`): the upstream is streamed from too."""
    conversation = await create_conversation(client, provider=provider, model=MODELS[provider])
    stream = await stream_message(client, conversation["id"], "Hello")
    return stream, conversation["id"]


def assert_one_shot(upstream: FakeUpstream) -> None:
    """Every upstream request asked for the whole reply in one piece, not for a stream."""
    assert upstream.requests
    assert [r.json.get("stream", False) for r in upstream.requests] == [False] * len(
        upstream.requests
    )


async def stored(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (
        await client.get(f"/api/v1/conversations/{conversation_id}")
    ).json()["messages"]
    return messages


async def assert_stored_failed(
    client: httpx.AsyncClient, conversation_id: str, code: str, content: str = ""
) -> None:
    """The user's message is kept and the reply is `failed` with the text that had arrived."""
    user, reply = await stored(client, conversation_id)
    assert (user["role"], user["content"], user["status"]) == ("user", "Hello", "completed")
    assert (reply["role"], reply["status"], reply["content"]) == ("assistant", "failed", content)
    assert reply["metadata"]["error"]["code"] == code
    assert reply["finish_reason"] == "error"


class TestRetries:
    async def test_a_rate_limit_with_retry_after_zero_is_retried_once_then_succeeds(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(429, retry_after="0"), Reply("Second time lucky."))

        response, _ = await turn(client)

        assert response.status_code == 201, response.text
        assert response.json()["message"]["content"] == "Second time lucky."
        assert [r.path for r in upstream.requests] == [OPENAI_PATH] * 2
        assert_one_shot(upstream)

    async def test_anthropic_rate_limits_and_overloads_are_retried_then_it_answers(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(429, retry_after="0"), Fail(529), Reply("Third time lucky."))

        response, _ = await turn(client, "anthropic")

        assert response.status_code == 201, response.text
        assert response.json()["message"]["content"] == "Third time lucky."
        assert [r.path for r in upstream.requests] == ["/v1/messages"] * 3
        assert_one_shot(upstream)

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_server_errors_are_retried_until_the_retries_run_out(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        upstream.script(*[Fail(500, retry_after="0")] * 3, Reply("not reached"))

        response, conversation_id = await turn(client, provider)

        assert response.status_code == 502
        assert response.json()["code"] == "upstream_error"
        assert len(upstream.requests) == 3
        assert upstream.pending == 1
        # Each call is a first attempt as far as the SDK knows: ours is the only retry loop.
        assert [r.headers["x-stainless-retry-count"] for r in upstream.requests] == ["0"] * 3
        assert_one_shot(upstream)
        await assert_stored_failed(client, conversation_id, "upstream_error")

    async def test_a_persistent_rate_limit_is_a_429_with_retry_after(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(*[Fail(429)] * 3)

        response, conversation_id = await turn(client)

        assert response.status_code == 429
        assert response.json()["code"] == "upstream_rate_limited"
        assert response.headers["retry-after"] == "1"
        assert len(upstream.requests) == 3
        await assert_stored_failed(client, conversation_id, "upstream_rate_limited")

    async def test_a_retry_after_longer_than_the_cap_is_passed_to_the_client_untried(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(429, retry_after="7"), Reply("not reached"))

        response, _ = await turn(client)

        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert len(upstream.requests) == 1

    async def test_a_bad_request_is_not_retried(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(400), Reply("not reached"))

        response, conversation_id = await turn(client)

        assert response.status_code == 400
        assert response.json()["code"] == "upstream_rejected"
        assert len(upstream.requests) == 1
        await assert_stored_failed(client, conversation_id, "upstream_rejected")

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_malformed_body_is_retried_then_a_502(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        upstream.script(Malformed(), Malformed(), Malformed())

        response, conversation_id = await turn(client, provider)

        assert response.status_code == 502
        assert response.json()["code"] == "upstream_error"
        assert len(upstream.requests) == 3
        await assert_stored_failed(client, conversation_id, "upstream_error")


class TestConnections:
    """A connection that fails is a 502 `upstream_error`, never a timeout: the SDKs' aiohttp
    transport reports both a refused and a dropped connection as a connect timeout."""

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_an_upstream_hanging_up_before_answering_is_retried_then_a_502(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        upstream.script(*[HangUp()] * 3)

        response, conversation_id = await turn(client, provider)

        assert response.status_code == 502
        assert response.json()["code"] == "upstream_error"
        assert len(upstream.requests) == 3
        await assert_stored_failed(client, conversation_id, "upstream_error")

    async def test_a_streamed_turn_whose_upstream_hangs_up_is_retried_and_the_retry_answers(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(HangUp(), Reply(text="Back again."))

        stream, conversation_id = await streamed_turn(client)

        assert stream.text == "Back again."
        assert len(upstream.requests) == 2
        assert [m["status"] for m in await stored(client, conversation_id)] == [
            "completed",
            "completed",
        ]

    async def test_an_upstream_nobody_listens_on_is_a_502_not_a_504(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        settings = upstream_settings(
            make_settings, upstream, upstream.api_key, openai_base_url=f"http://127.0.0.1:{port}/v1"
        )
        client = await start_app(settings)

        response, conversation_id = await turn(client)

        assert response.status_code == 502
        assert response.json()["code"] == "upstream_error"
        await assert_stored_failed(client, conversation_id, "upstream_error")


class TestTimeouts:
    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_silent_upstream_is_retried_then_a_504(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        upstream.script(*[Stall(10)] * 3)
        started = time.monotonic()

        response, conversation_id = await turn(client, provider)

        assert response.status_code == 504
        assert response.json()["code"] == "upstream_timeout"
        assert len(upstream.requests) == 3
        assert time.monotonic() - started < 8  # three 1 s attempts, not the SDK's 600 s
        await assert_stored_failed(client, conversation_id, "upstream_timeout")

    async def test_the_whole_generation_is_bounded_by_its_own_timeout(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        settings = upstream_settings(
            make_settings,
            upstream,
            upstream.api_key,
            provider_timeout_seconds=5,
            generation_timeout_seconds=0.4,
        )
        client: httpx.AsyncClient = await start_app(settings)
        upstream.script(Stall(10))
        started = time.monotonic()

        response, conversation_id = await turn(client)

        assert response.status_code == 504
        assert response.json()["code"] == "upstream_timeout"
        assert time.monotonic() - started < 2
        assert len(upstream.requests) == 1
        await assert_stored_failed(client, conversation_id, "upstream_timeout")

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_silence_after_the_first_token_is_a_504_with_the_text_kept_and_no_retry(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        upstream.script(StallMidStream(after_chunks=1, seconds=10, text="Partial reply here."))

        stream, conversation_id = await streamed_turn(client, provider)

        assert stream.terminal.event == "error"
        assert stream.terminal.json()["code"] == "upstream_timeout"
        assert [r.json["stream"] for r in upstream.requests] == [True]
        await assert_stored_failed(client, conversation_id, "upstream_timeout", "Partial")

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_stream_cut_mid_reply_is_a_502_with_the_text_kept_and_no_retry(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        upstream.script(CutStream(after_chunks=2, text="One two three four."))

        stream, conversation_id = await streamed_turn(client, provider)

        assert stream.terminal.event == "error"
        assert stream.terminal.json()["code"] == "upstream_error"
        assert [r.json["stream"] for r in upstream.requests] == [True]
        await assert_stored_failed(client, conversation_id, "upstream_error", "One two")

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_one_shot_reply_stalled_mid_body_is_retried_then_a_504_with_no_text(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        # A non-streaming turn asks for the whole reply: nothing reached the client yet.
        upstream.script(*[StallMidStream(after_chunks=1, seconds=10, text="Partial.")] * 3)

        response, conversation_id = await turn(client, provider)

        assert response.status_code == 504
        assert response.json()["code"] == "upstream_timeout"
        assert len(upstream.requests) == 3
        assert_one_shot(upstream)
        await assert_stored_failed(client, conversation_id, "upstream_timeout")

    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_one_shot_reply_cut_mid_body_is_retried_and_the_retry_answers(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
    ) -> None:
        upstream.script(CutStream(text="One two three four."), Reply("Whole this time."))

        response, _ = await turn(client, provider)

        assert response.status_code == 201, response.text
        assert response.json()["message"]["content"] == "Whole this time."
        assert len(upstream.requests) == 2
        assert_one_shot(upstream)


class TestWrongKey:
    @pytest.mark.parametrize("provider", PROVIDERS)
    async def test_a_rejected_key_is_a_502_that_never_shows_the_key(
        self,
        capsys: pytest.CaptureFixture[str],
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        upstream: FakeUpstream,
        provider: str,
    ) -> None:
        # Requested before `start_app`, so the app's log lines go to the captured stdout.
        client: httpx.AsyncClient = await start_app(
            upstream_settings(make_settings, upstream, WRONG_KEY)
        )

        response, conversation_id = await turn(client, provider)
        messages = await stored(client, conversation_id)

        assert response.status_code == 502
        assert response.json()["code"] == "upstream_error"
        assert len(upstream.requests) == 1
        assert WRONG_KEY in json.dumps(upstream.requests[0].headers)
        assert WRONG_KEY not in response.text
        assert WRONG_KEY not in json.dumps(messages)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert any(line["event"] == "turn failed" for line in lines)
        assert WRONG_KEY not in json.dumps(lines)
        assert WRONG_KEY[:12] not in json.dumps(lines)

    async def test_a_provider_error_quoting_the_key_is_neither_passed_on_nor_logged(
        self,
        capsys: pytest.CaptureFixture[str],
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        upstream: FakeUpstream,
    ) -> None:
        upstream.api_key = WRONG_KEY  # accepted, then a scripted 403 quotes it back
        client: httpx.AsyncClient = await start_app(
            upstream_settings(make_settings, upstream, WRONG_KEY)
        )
        upstream.script(Fail(403, message=f"Key {WRONG_KEY} may not use this model"))

        response, conversation_id = await turn(client)
        messages = await stored(client, conversation_id)

        assert response.status_code == 502
        assert WRONG_KEY not in response.text
        assert WRONG_KEY not in json.dumps(messages)
        assert WRONG_KEY not in capsys.readouterr().out


class TestFallback:
    @pytest.fixture
    async def client(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> httpx.AsyncClient:
        settings = upstream_settings(
            make_settings, upstream, upstream.api_key, fallback_models="anthropic:claude-sonnet-4-5"
        )
        started: httpx.AsyncClient = await start_app(settings)
        return started

    async def test_when_the_primary_fails_the_fallback_serves_and_prices_the_reply(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        claude = Reply("From Claude.", model=SNAPSHOT, prompt_tokens=1000, completion_tokens=100)
        upstream.script(*[Fail(500, retry_after="0")] * 3, claude)

        response, conversation_id = await turn(client)

        assert response.status_code == 201, response.text
        assert [r.path for r in upstream.requests] == [OPENAI_PATH] * 3 + ["/v1/messages"]
        assert upstream.requests[-1].json["model"] == "claude-sonnet-4-5"
        message = response.json()["message"]
        assert (message["provider"], message["model"]) == ("anthropic", SNAPSHOT)
        assert message["content"] == "From Claude."
        expected = (1000 * Decimal("3") + 100 * Decimal("15")) / 1_000_000
        assert Decimal(str(message["cost_usd"])) == expected
        assert message["pricing"]["output_per_mtok"] == 15
        [_, reply] = await stored(client, conversation_id)
        assert (reply["provider"], reply["status"]) == ("anthropic", "completed")

    async def test_no_fallback_once_the_primary_has_produced_text(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(CutStream(after_chunks=2, text="One two three four."))

        stream, conversation_id = await streamed_turn(client)

        assert stream.terminal.json()["code"] == "upstream_error"
        assert [r.path for r in upstream.requests] == [OPENAI_PATH]
        await assert_stored_failed(client, conversation_id, "upstream_error", "One two")
