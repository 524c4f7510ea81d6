"""A turn whose provider fails: the client gets the contract's error, and nothing sent is lost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.errors import UpstreamError, UpstreamRateLimited
from app.providers.base import ChatRequest, StreamEvent
from app.providers.mock import MockProvider
from tests.factories import create_conversation
from tests.fakes.providers import (
    FAKE_MODEL,
    FAKE_PROVIDER,
    FailingProvider,
    StallingProvider,
    registry_with,
)

StartApp = Callable[..., Any]


@dataclass
class RecordingMockProvider:
    """The mock provider under its own name, keeping every request it was sent."""

    name: str = "mock"
    default_model: str = "mock"
    requests: list[ChatRequest] = field(default_factory=list)
    _inner: MockProvider = field(default_factory=MockProvider)

    def supports(self, model: str) -> bool:
        return self._inner.supports(model)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        async for event in self._inner.stream(request):
            yield event


async def fake_conversation(client: httpx.AsyncClient) -> str:
    conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
    conversation_id: str = conversation["id"]
    return conversation_id


async def send(client: httpx.AsyncClient, conversation_id: str, content: str) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": content}
    )


async def stored(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_turn_failed_and_kept(
    conversation: dict[str, Any], content: str, code: str
) -> dict[str, Any]:
    """The user's message is stored as sent; the reply is stored failed, free, with the code."""
    user, reply = conversation["messages"]
    assert user["role"] == "user"
    assert user["content"] == content
    assert user["status"] == "completed"
    assert reply["role"] == "assistant"
    assert reply["status"] == "failed"
    assert reply["content"] == ""
    assert reply["cost_usd"] == 0
    assert reply["total_tokens"] == 0
    assert reply["finish_reason"] == "error"
    assert reply["metadata"]["error"]["code"] == code
    # Only the count of stored messages moves; nothing is charged for a failed reply.
    assert conversation["message_count"] == 2
    assert conversation["total_tokens"] == 0
    assert conversation["total_cost_usd"] == 0
    return dict(reply)


class TestTurnWhenTheProviderFails:
    async def test_an_upstream_error_is_a_502_and_the_turn_is_stored_failed(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        provider = FailingProvider(UpstreamError("provider 'fake' returned 500"))
        client = await start_app(settings, providers=registry_with(provider))
        conversation_id = await fake_conversation(client)

        response = await send(client, conversation_id, "Will this be kept?")

        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "upstream_error"
        assert provider.calls == 1
        conversation = await stored(client, conversation_id)
        assert_turn_failed_and_kept(conversation, "Will this be kept?", "upstream_error")

    async def test_an_upstream_rate_limit_is_a_429_with_retry_after(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        provider = FailingProvider(UpstreamRateLimited(FAKE_PROVIDER, retry_after=7))
        client = await start_app(settings, providers=registry_with(provider))
        conversation_id = await fake_conversation(client)

        response = await send(client, conversation_id, "Too many of these?")

        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert response.json()["code"] == "upstream_rate_limited"
        conversation = await stored(client, conversation_id)
        assert_turn_failed_and_kept(conversation, "Too many of these?", "upstream_rate_limited")

    async def test_a_provider_that_never_answers_is_a_504_after_the_timeout(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()  # never released
        settings = make_settings(generation_timeout_seconds=0.2)
        client = await start_app(settings, providers=registry_with(provider))
        conversation_id = await fake_conversation(client)

        response = await send(client, conversation_id, "Anyone there?")

        assert response.status_code == 504
        assert response.json()["code"] == "upstream_timeout"
        assert provider.entered == 1
        conversation = await stored(client, conversation_id)
        reply = assert_turn_failed_and_kept(conversation, "Anyone there?", "upstream_timeout")
        assert reply["latency_ms"] >= 200

    async def test_an_unexpected_provider_crash_is_a_502_with_a_logged_traceback(
        self, start_app: StartApp, settings: Settings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        crash = RuntimeError("internal state sk-crash-detail-must-not-leak")
        client = await start_app(settings, providers=registry_with(FailingProvider(crash)))
        conversation_id = await fake_conversation(client)
        capsys.readouterr()

        response = await client.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"content": "Break, please."},
            headers={"X-Request-ID": "provider-crash-1"},
        )

        assert response.status_code == 502
        assert response.json()["code"] == "upstream_error"
        assert "sk-crash-detail-must-not-leak" not in response.text
        assert "RuntimeError" not in response.text
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        logged = next(
            line for line in lines if line["event"] == "provider raised an unexpected error"
        )
        assert logged["request_id"] == "provider-crash-1"
        assert "Traceback" in logged["exception"]
        assert "RuntimeError" in logged["exception"]
        conversation = await stored(client, conversation_id)
        assert_turn_failed_and_kept(conversation, "Break, please.", "upstream_error")

    async def test_the_next_turn_works_and_its_prompt_leaves_out_the_failed_reply(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        recorder = RecordingMockProvider()
        failing = FailingProvider(UpstreamError("provider 'fake' returned 500"))
        client = await start_app(settings, providers=registry_with(failing, recorder))
        conversation_id = await fake_conversation(client)
        assert (await send(client, conversation_id, "First try")).status_code == 502

        retried = await client.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"content": "Second try", "provider": "mock"},
        )

        assert retried.status_code == 201, retried.text
        assert retried.json()["message"]["status"] == "completed"
        [request] = recorder.requests
        assert [(m.role, m.content) for m in request.messages] == [
            ("user", "First try"),
            ("user", "Second try"),
        ]
        conversation = await stored(client, conversation_id)
        assert [m["status"] for m in conversation["messages"]] == [
            "completed",
            "failed",
            "completed",
            "completed",
        ]
        assert conversation["message_count"] == 4
        assert conversation["total_tokens"] == retried.json()["usage"]["total_tokens"]
        assert conversation["total_cost_usd"] == retried.json()["cost_usd"]

    async def test_text_streamed_before_a_failure_is_kept_on_the_failed_reply(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        provider = FailingProvider(UpstreamError("connection reset"), deltas_before=2)
        client = await start_app(settings, providers=registry_with(provider))
        conversation_id = await fake_conversation(client)

        assert (await send(client, conversation_id, "Tell me a story")).status_code == 502

        reply = (await stored(client, conversation_id))["messages"][1]
        assert reply["status"] == "failed"
        assert reply["content"] == "partial 0 partial 1 "
