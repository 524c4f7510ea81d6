"""The official `openai` SDK, sync and async, against `python -m app` on loopback.

One server per backend for the module (auth on, OpenAI and Anthropic pointed at the fake
upstream): the mock, OpenAI and Anthropic answer an OpenAI client, the call is stored and
charged (read back through /api/v1), and failures are the SDK's own exception types.
The sync client runs in a thread: the fake upstream lives on this test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import delete

from app.core.config import Settings
from app.db.models import ApiKey
from app.db.session import create_engine, make_sessionmaker
from app.services.access import api_keys
from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.fakes.upstream import Fail, FakeUpstream, Reply, running_upstream

HI: list[Any] = [{"role": "user", "content": "Hello over the wire"}]
USER = "sdk-user"


@pytest.fixture(scope="module")
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
async def api_key(database_url: str) -> AsyncIterator[str]:
    engine = create_engine(Settings(_env_file=None, database_url=database_url))
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        _, secret = await api_keys.issue(session, user_id=USER)
        await session.commit()
    yield secret
    async with sessionmaker() as session:
        await session.execute(delete(ApiKey).where(ApiKey.user_id == USER))
        await session.commit()
    await engine.dispose()


@pytest.fixture(scope="module")
def server(
    database_url: str,
    fake_upstream: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    env = {
        "DATABASE_URL": database_url,
        "AUTH_ENABLED": "true",
        "OPENAI_API_KEY": fake_upstream.api_key,
        "OPENAI_BASE_URL": f"{fake_upstream.url}/v1",
        "ANTHROPIC_API_KEY": fake_upstream.api_key,
        "ANTHROPIC_BASE_URL": fake_upstream.url,
        "PROVIDER_MAX_RETRIES": "0",
        # About half a second per mock reply: long enough to leave one mid-stream.
        "MOCK_CHUNK_DELAY_MS": "20",
    }
    live = start_server(env, tmp_path_factory.mktemp("openai-sdk") / "server.log")
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    fake_upstream.reset()
    return fake_upstream


def sync_client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def async_client(server: LiveServer, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


async def stored(server: LiveServer, key: str, conversation_id: str) -> Any:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.get(
            f"/api/v1/conversations/{conversation_id}",
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def finished(server: LiveServer, key: str, conversation_id: str) -> Any:
    """The conversation once its last reply has ended (fails after 5 s)."""
    async with asyncio.timeout(5):
        while True:
            conversation = await stored(server, key, conversation_id)
            if conversation["messages"][-1]["status"] != "in_progress":
                return conversation
            await asyncio.sleep(0.1)


class TestOpenAISDK:
    async def test_the_sync_client_gets_mock_replies_streamed_and_not_each_stored_and_charged(
        self, server: LiveServer, api_key: str, clean_database: None
    ) -> None:
        client = sync_client(server, api_key)

        def run() -> tuple[Any, Any, str]:
            raw = client.chat.completions.with_raw_response.create(model="mock", messages=HI)
            with client.chat.completions.with_streaming_response.create(
                model="mock",
                messages=HI,
                stream=True,
                stream_options={"include_usage": True},
            ) as streamed:
                conversation_id = streamed.headers["x-conversation-id"]
                chunks = list(streamed.parse())
            return raw, chunks, conversation_id

        raw, chunks, streamed_id = await asyncio.to_thread(run)

        completion = raw.parse()
        plain = await stored(server, api_key, raw.headers["x-conversation-id"])
        assert plain["user_id"] == USER
        assert plain["messages"][-1]["content"] == completion.choices[0].message.content
        assert Decimal(str(plain["total_cost_usd"])) > 0
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None
        streamed = await stored(server, api_key, streamed_id)
        reply = streamed["messages"][-1]
        assert (reply["content"], reply["status"]) == (text, "completed")
        assert chunks[-1].usage.completion_tokens == reply["completion_tokens"]
        assert Decimal(str(streamed["total_cost_usd"])) == Decimal(str(reply["cost_usd"])) > 0

    async def test_the_async_client_talks_to_openai_and_to_claude(
        self, server: LiveServer, api_key: str, upstream: FakeUpstream, clean_database: None
    ) -> None:
        upstream.script(
            Reply("From GPT.", prompt_tokens=1000, completion_tokens=200, cached_tokens=400),
            Reply("From Claude."),
        )
        client = async_client(server, api_key)

        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        stream = await client.chat.completions.create(
            model="claude-sonnet-4-6",
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

        completion = raw.parse()
        assert completion.choices[0].message.content == "From GPT."
        assert completion.usage is not None
        assert completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == 400
        gpt = await stored(server, api_key, raw.headers["x-conversation-id"])
        assert Decimal(str(gpt["total_cost_usd"])) == Decimal("0.004")
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "From Claude."
        )
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens > 0
        assert [r.path for r in upstream.requests] == ["/v1/chat/completions", "/v1/messages"]

    async def test_failures_are_the_sdk_s_own_exception_types(
        self, server: LiveServer, api_key: str, upstream: FakeUpstream, clean_database: None
    ) -> None:
        client = async_client(server, api_key)
        upstream.script(Fail(429, retry_after="3"))

        with pytest.raises(openai.AuthenticationError):
            await async_client(server, "sk-wrong").chat.completions.create(
                model="mock", messages=HI
            )
        with pytest.raises(openai.NotFoundError) as unknown_model:
            await client.chat.completions.create(model="no-such-model", messages=HI)
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="mock",
                messages=HI,
                extra_headers={"X-Conversation-ID": "01a21398-0000-7000-8000-000000000000"},
            )
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="mock", messages=HI, n=2)
        await client.chat.completions.create(
            model="mock", messages=HI, extra_headers={"Idempotency-Key": "once"}
        )
        with pytest.raises(openai.UnprocessableEntityError) as reused:
            await client.chat.completions.create(
                model="mock",
                messages=[{"role": "user", "content": "another body"}],
                extra_headers={"Idempotency-Key": "once"},
            )
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="gpt-4o", messages=HI)

        assert unknown_model.value.code == "model_not_found"
        assert (bad.value.type, bad.value.param) == ("invalid_request_error", "n")
        assert reused.value.code == "idempotency_key_reused"
        assert limited.value.response.headers["retry-after"] == "3"

    async def test_a_streamed_reply_is_stored_and_charged_once_when_the_client_leaves(
        self, server: LiveServer, api_key: str, clean_database: None
    ) -> None:
        client = async_client(server, api_key)
        received = ""

        async with client.chat.completions.with_streaming_response.create(
            model="mock", messages=HI, stream=True
        ) as response:
            conversation_id = response.headers["x-conversation-id"]
            async for chunk in await response.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    received = chunk.choices[0].delta.content
                    break

        conversation = await finished(server, api_key, conversation_id)
        reply = conversation["messages"][-1]
        assert reply["status"] == "completed"
        assert reply["content"].startswith(received)
        assert len(reply["content"]) > len(received)
        assert Decimal(str(reply["cost_usd"])) > 0
        assert Decimal(str(conversation["total_cost_usd"])) == Decimal(str(reply["cost_usd"]))
