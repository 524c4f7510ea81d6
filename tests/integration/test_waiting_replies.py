"""Replies that wait on their provider: alive to the abandoned-reply sweep however long the
wait, and queued, not refused, for an upstream connection past PROVIDER_MAX_CONNECTIONS.

Against the fake upstream, driven through the official SDK as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.services.turns.recovery import fail_abandoned_replies
from tests.factories import create_conversation
from tests.fakes.upstream import FakeUpstream, Stall
from tests.integration.test_provider_failures import stored, upstream_settings
from tests.sse import stream_message

StartApp = Callable[..., Any]
StateOf = Callable[[httpx.AsyncClient], dict[str, Any]]
SLOW_S = 1.5  # the upstream's wait before it answers


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    settings = upstream_settings(
        make_settings,
        upstream,
        upstream.api_key,
        provider_timeout_seconds=10.0,
        stream_flush_seconds=0.1,  # a sign of life every 0.2 s
    )
    started: httpx.AsyncClient = await start_app(settings)
    return started


async def sweep_while_waiting(client: httpx.AsyncClient, state_of: StateOf) -> int:
    """Once the reply has waited a second, end every reply untouched for half a second, as
    the sweep of a process that thinks the reply's own died would."""
    await asyncio.sleep(1.0)
    return await fail_abandoned_replies(state_of(client)["sessionmaker"], stale_after_s=0.5)


class TestAReplyWaitingOnItsProviderIsAlive:
    async def test_a_non_streaming_turn(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, state_of: StateOf
    ) -> None:
        upstream.script(Stall(seconds=SLOW_S))
        conversation = await create_conversation(client)
        url = f"/api/v1/conversations/{conversation['id']}/messages"
        turn = asyncio.create_task(client.post(url, json={"content": "Hello"}))

        assert await sweep_while_waiting(client, state_of) == 0

        response = await turn
        assert response.status_code == 201, response.text
        assert response.json()["message"]["status"] == "completed"
        _, reply = await stored(client, conversation["id"])
        assert reply["status"] == "completed"

    async def test_a_stream_waiting_for_its_first_token(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, state_of: StateOf
    ) -> None:
        upstream.script(Stall(seconds=SLOW_S))
        conversation = await create_conversation(client)
        stream = asyncio.create_task(stream_message(client, conversation["id"], "Hello"))

        assert await sweep_while_waiting(client, state_of) == 0

        events = await stream
        assert events.names[0] == "start"
        assert events.names[-1] == "done"
        _, reply = await stored(client, conversation["id"])
        assert reply["status"] == "completed"


class TestProviderConnectionLimit:
    async def test_replies_past_the_limit_wait_for_a_connection_then_complete(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        upstream: FakeUpstream,
    ) -> None:
        settings = upstream_settings(
            make_settings,
            upstream,
            upstream.api_key,
            provider_timeout_seconds=10.0,
            provider_max_connections=2,
        )
        client = await start_app(settings)
        upstream.script(*[Stall(seconds=0.8)] * 3)
        conversations = [await create_conversation(client) for _ in range(3)]
        turns = [
            asyncio.create_task(
                client.post(f"/api/v1/conversations/{c['id']}/messages", json={"content": "Hello"})
            )
            for c in conversations
        ]

        await upstream.wait_for_requests(2)
        await asyncio.sleep(0.4)
        assert len(upstream.requests) == 2  # the third waits for one of the two connections

        responses = await asyncio.gather(*turns)
        assert [r.status_code for r in responses] == [201] * 3
        assert len(upstream.requests) == 3  # one call each: waiting is not a failed attempt

    def test_the_default_lets_thousands_of_replies_run_at_once(self) -> None:
        assert Settings(_env_file=None).provider_max_connections == 10_000
