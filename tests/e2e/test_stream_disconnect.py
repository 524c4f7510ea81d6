"""A client that leaves mid-stream, over real HTTP: the reply belongs to the server.

Run against `python -m app` on loopback (the ASGI test transport would buffer the stream), with
the mock provider slowed to 50 ms a word so that a reply takes about a second.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from redis.exceptions import RedisError
from sqlalchemy import select

from app.core.config import Settings
from app.db.models import UserMonthlyUsage
from app.db.session import create_engine
from tests.databases import REDIS_URL, unavailable
from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.factories import without_siblings
from tests.sse import Frame, aiter_frames, read_stream


@pytest.fixture(scope="module", params=["in_process", "redis"])
def streaming_server(
    request: pytest.FixtureRequest, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The service with slow mock replies, on each event log; shared: it starts slowly."""
    env = {"DATABASE_URL": database_url, "MOCK_CHUNK_DELAY_MS": "50"}
    if request.param == "redis":
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        except RedisError as error:
            unavailable("Redis", error)
        env["REDIS_URL"] = REDIS_URL
    server = start_server(env, tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


async def conversation_of(http: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def finished_reply(http: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    """The conversation once its reply has ended (fails after 5 s)."""
    async with asyncio.timeout(5):
        while True:
            conversation = await conversation_of(http, conversation_id)
            # A client that left early may ask before the turn is even stored: wait for it too.
            messages = conversation["messages"]
            if messages and messages[-1]["status"] != "in_progress":
                return conversation
            await asyncio.sleep(0.1)


async def months_charged(database_url: str, user_id: str) -> list[tuple[int, Decimal]]:
    """The user's `user_monthly_usage` rows, as (requests, cost) pairs."""
    engine = create_engine(Settings(_env_file=None, database_url=database_url))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(UserMonthlyUsage.requests, UserMonthlyUsage.cost_usd).where(
                    UserMonthlyUsage.user_id == user_id
                )
            )
            return [(requests, cost) for requests, cost in rows]
    finally:
        await engine.dispose()


class TestClientDisconnect:
    async def test_reply_is_completed_stored_and_charged_once_when_the_client_disconnects(
        self, streaming_server: LiveServer, database_url: str, clean_database: None
    ) -> None:
        user_id = f"leaver-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(base_url=streaming_server.base_url, timeout=10) as http:
            created = await http.post("/api/v1/conversations", json={"user_id": user_id})
            conversation_id = created.json()["id"]
            seen: list[Frame] = []
            async with http.stream(
                "POST",
                f"/api/v1/conversations/{conversation_id}/messages",
                json={"content": "Tell me everything", "stream": True},
            ) as response:
                assert response.status_code == 200
                async for frame in aiter_frames(response):
                    seen.append(frame)
                    if frame.event == "delta":
                        break
            # The connection is closed now, one piece into the reply.
            left_at = await conversation_of(http, conversation_id)
            assert left_at["messages"][1]["status"] == "in_progress"

            conversation = await finished_reply(http, conversation_id)
            replay = await read_stream(
                http, "GET", f"/api/v1/conversations/{conversation_id}/stream"
            )

        reply = conversation["messages"][1]
        assert reply["status"] == "completed"
        assert reply["content"].startswith(seen[-1].json()["content"])
        cost = Decimal(str(reply["cost_usd"]))
        assert cost > 0
        assert Decimal(str(conversation["total_cost_usd"])) == cost
        assert await months_charged(database_url, user_id) == [(1, cost)]
        assert replay.names[0] == "start"
        assert replay.names.count("delta") > 1
        assert replay.terminal.event == "done"
        assert replay.text == reply["content"]
        assert replay.terminal.json()["message"] == without_siblings(reply)

    async def test_a_client_leaving_before_the_first_token_stops_nothing(
        self, streaming_server: LiveServer, clean_database: None
    ) -> None:
        # The response waits for the first token (50 ms away): the client gives up first.
        async with httpx.AsyncClient(base_url=streaming_server.base_url, timeout=10) as http:
            created = await http.post("/api/v1/conversations", json={})
            conversation_id = created.json()["id"]
            with pytest.raises(httpx.ReadTimeout):
                await http.post(
                    f"/api/v1/conversations/{conversation_id}/messages",
                    json={"content": "Tell me everything", "stream": True},
                    timeout=httpx.Timeout(10, read=0.01),
                )

            conversation = await finished_reply(http, conversation_id)

        reply = conversation["messages"][1]
        assert reply["status"] == "completed"
        assert reply["content"]
        assert Decimal(str(reply["cost_usd"])) > 0

    async def test_deltas_reach_the_client_while_the_reply_is_generated(
        self, streaming_server: LiveServer, clean_database: None
    ) -> None:
        async with httpx.AsyncClient(base_url=streaming_server.base_url, timeout=10) as http:
            created = await http.post("/api/v1/conversations", json={})
            conversation_id = created.json()["id"]
            frames: list[Frame] = []
            status_at_first_delta = None
            async with http.stream(
                "GET",
                f"/api/v1/conversations/{conversation_id}/stream",
                params={"content": "Tell me everything"},
            ) as response:
                assert response.status_code == 200
                async for frame in aiter_frames(response):
                    frames.append(frame)
                    if frame.event == "delta" and status_at_first_delta is None:
                        conversation = await conversation_of(http, conversation_id)
                        status_at_first_delta = conversation["messages"][1]["status"]

        # Unbuffered: the first piece is read while the rest is still being generated.
        assert status_at_first_delta == "in_progress"
        assert [frame.event for frame in frames if frame.is_terminal] == ["done"]
        assert sum(frame.event == "delta" for frame in frames) > 10
