"""A provider's refusal of the request (a 4xx other than 408, 409, 429) reaches the client
with the provider's status and masked message, after exactly one upstream call, stored once;
a stream that fails before its first token is an HTTP error, not 200 plus an `error` event.
The official `openai` SDK (its default retries on) and plain HTTP are the clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from app.core.config import Settings
from tests.factories import create_conversation
from tests.fakes.upstream import CutStream, Fail, FakeUpstream, Reply
from tests.sse import stream_message

StartApp = Callable[..., Any]
CLAUDE = "claude-sonnet-4-6"
HELLO: list[Any] = [{"role": "user", "content": "Hello"}]
TOO_LONG = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted "
    "in 130532 tokens. Please reduce the length of the messages."
)
CLAUDE_TOO_LONG = "prompt is too long: 210345 tokens > 200000 maximum"
LEAKED_KEY = "sk-proj-Zx81Qm2Lp0Rt7Vb4Nc6Hd9Kf3Ws5Yj1"


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    """OpenAI and Anthropic against the fake, with the service's own retries on (2)."""
    settings = make_settings(
        **upstream.provider_settings(),
        provider_max_retries=2,
        provider_retry_max_wait_seconds=0.05,
    )
    started: httpx.AsyncClient = await start_app(settings)
    return started


def sdk(client: httpx.AsyncClient, max_retries: int = openai.DEFAULT_MAX_RETRIES) -> Any:
    return openai.AsyncOpenAI(
        base_url="http://testserver/v1", api_key="unused", http_client=client,
        max_retries=max_retries,
    )  # fmt: skip


async def stored_replies(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every assistant message of every conversation of the caller."""
    replies = []
    for listed in (await client.get("/api/v1/conversations")).json()["items"]:
        conversation = (await client.get(f"/api/v1/conversations/{listed['id']}")).json()
        replies += [m for m in conversation["messages"] if m["role"] == "assistant"]
    return replies


async def assert_failed_once(client: httpx.AsyncClient, code: str) -> None:
    [reply] = await stored_replies(client)
    assert (reply["status"], reply["metadata"]["error"]["code"]) == ("failed", code)


class TestOpenAIClients:
    async def test_context_too_long_is_one_upstream_call_and_a_bad_request_error(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Fail(400, message=TOO_LONG, code="context_length_exceeded", param="messages")
        )

        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(client).chat.completions.create(model="gpt-4o", messages=HELLO)

        assert len(upstream.requests) == 1
        error = raised.value
        assert (error.status_code, error.code, error.param) == (
            400,
            "context_length_exceeded",
            "messages",
        )
        assert error.type == "invalid_request_error"
        assert error.body["message"] == TOO_LONG
        await assert_failed_once(client, "upstream_rejected")

    async def test_claude_s_invalid_request_is_a_bad_request_error_with_its_message(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(400, message=CLAUDE_TOO_LONG))

        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(client).chat.completions.create(model=CLAUDE, messages=HELLO)

        assert len(upstream.requests) == 1
        assert raised.value.body["message"] == CLAUDE_TOO_LONG
        assert raised.value.type == "invalid_request_error"
        await assert_failed_once(client, "upstream_rejected")

    @pytest.mark.parametrize(
        ("status", "raised"),
        [
            (404, openai.NotFoundError),
            (413, openai.APIStatusError),
            (422, openai.UnprocessableEntityError),
        ],
    )
    async def test_other_refusals_keep_their_status_and_are_not_retried(
        self,
        client: httpx.AsyncClient,
        upstream: FakeUpstream,
        status: int,
        raised: type[Exception],
    ) -> None:
        upstream.script(Fail(status, message="No such thing here.", code="no_such_thing"))

        with pytest.raises(raised) as caught:
            await sdk(client).chat.completions.create(model="gpt-4o", messages=HELLO)

        assert isinstance(caught.value, openai.APIStatusError)
        assert caught.value.status_code == status
        assert caught.value.body["message"] == "No such thing here."
        assert len(upstream.requests) == 1

    async def test_a_refused_key_stays_a_502_in_our_words(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(*[Fail(401)] * 3)

        with pytest.raises(openai.InternalServerError) as raised:
            await sdk(client, max_retries=0).chat.completions.create(model="gpt-4o", messages=HELLO)

        assert raised.value.status_code == 502
        text = raised.value.response.text
        assert "Incorrect API key" not in text
        assert "sk-te" not in text
        assert len(upstream.requests) == 1

    async def test_a_key_in_the_provider_s_message_is_masked(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(400, message=f"Bad value for 'user': {LEAKED_KEY} write to a@b.io"))

        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(client).chat.completions.create(model="gpt-4o", messages=HELLO)

        message = raised.value.body["message"]
        assert message == "Bad value for 'user': [secret] write to [email]"
        [reply] = await stored_replies(client)
        assert LEAKED_KEY not in str(reply)


class TestProblemDetails:
    async def test_claude_s_invalid_request_is_a_400_upstream_rejected(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(400, message=CLAUDE_TOO_LONG))
        conversation = await create_conversation(client, provider="anthropic", model=CLAUDE)

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hello"}
        )

        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["code"], problem["detail"]) == ("upstream_rejected", CLAUDE_TOO_LONG)
        assert (problem["provider"], problem["provider_type"]) == (
            "anthropic",
            "invalid_request_error",
        )
        assert len(upstream.requests) == 1
        await assert_failed_once(client, "upstream_rejected")


# What the client gets when the upstream answers `status` before any token.
EARLY_FAILURES = [
    (400, "upstream_rejected", openai.BadRequestError),
    (429, "upstream_rate_limited", openai.RateLimitError),
    (500, "upstream_error", openai.InternalServerError),
]
EXPECTED_STATUS = {400: 400, 429: 429, 500: 502}


@pytest.fixture
async def no_retries(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    """As `client`, without the service's retries: one upstream answer decides."""
    settings = make_settings(
        openai_api_key=upstream.api_key,
        openai_base_url=f"{upstream.url}/v1",
        provider_max_retries=0,
    )
    started: httpx.AsyncClient = await start_app(settings)
    return started


class TestStreamsFailingBeforeTheirFirstToken:
    @pytest.mark.parametrize(("status", "code", "raised"), EARLY_FAILURES)
    async def test_api_v1_answers_with_the_http_status(
        self, no_retries: httpx.AsyncClient, upstream: FakeUpstream, status: int, code: str,
        raised: type[Exception],
    ) -> None:  # fmt: skip
        upstream.script(Fail(status, retry_after="3" if status == 429 else None))
        conversation = await create_conversation(no_retries, provider="openai", model="gpt-4o")

        response = await stream_message(no_retries, conversation["id"], "Hello")

        assert response.status_code == EXPECTED_STATUS[status]
        assert response.headers["content-type"] == "application/problem+json"
        assert response.frames == []
        assert json_of(response.body)["code"] == code
        if status == 429:
            assert response.headers["retry-after"] == "3"
        assert len(upstream.requests) == 1
        await assert_failed_once(no_retries, code)

    @pytest.mark.parametrize(("status", "code", "raised"), EARLY_FAILURES)
    async def test_v1_answers_with_the_http_status_the_sdk_raises_on(
        self, no_retries: httpx.AsyncClient, upstream: FakeUpstream, status: int, code: str,
        raised: type[Exception],
    ) -> None:  # fmt: skip
        upstream.script(Fail(status, retry_after="3" if status == 429 else None))

        with pytest.raises(raised) as caught:
            await sdk(no_retries, max_retries=0).chat.completions.create(
                model="gpt-4o", messages=HELLO, stream=True
            )

        assert isinstance(caught.value, openai.APIStatusError)
        assert caught.value.status_code == EXPECTED_STATUS[status]
        if status == 429:
            assert caught.value.response.headers["retry-after"] == "3"
        assert len(upstream.requests) == 1
        await assert_failed_once(no_retries, code)

    async def test_a_stream_failing_after_a_token_still_ends_with_an_error_event(
        self, no_retries: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(CutStream(after_chunks=2))
        conversation = await create_conversation(no_retries, provider="openai", model="gpt-4o")

        response = await stream_message(no_retries, conversation["id"], "Hello")

        assert response.status_code == 200
        assert response.names[0] == "start"
        assert response.names[-1] == "error"
        assert response.names.count("error") == 1
        assert "delta" in response.names
        await assert_failed_once(no_retries, "upstream_error")

    async def test_an_idempotent_replay_of_an_early_failure_is_the_same_error(
        self, no_retries: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Fail(400, message=TOO_LONG), Reply("not reached"))
        conversation = await create_conversation(no_retries, provider="openai", model="gpt-4o")
        headers = {"Idempotency-Key": "early-failure-1"}

        first = await stream_message(no_retries, conversation["id"], "Hello", headers=headers)
        again = await stream_message(no_retries, conversation["id"], "Hello", headers=headers)

        assert first.status_code == again.status_code == 400
        assert json_of(first.body)["detail"] == json_of(again.body)["detail"] == TOO_LONG
        assert len(upstream.requests) == 1
        await assert_failed_once(no_retries, "upstream_rejected")

    async def test_a_normal_stream_still_opens_with_start(
        self, no_retries: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Reply("All good here."))
        conversation = await create_conversation(no_retries, provider="openai", model="gpt-4o")

        response = await stream_message(no_retries, conversation["id"], "Hello")

        assert response.status_code == 200
        assert response.names[0] == "start"
        assert response.names[-1] == "done"


def json_of(body: bytes) -> Any:
    return json.loads(body)
