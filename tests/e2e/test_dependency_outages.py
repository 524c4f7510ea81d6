"""Redis and Postgres stop and start under load (RELIABILITY.md promise 11).

Redis down degrades: turns are still stored and streams still end, limits count in memory,
`/ready` says "degraded" and stays 200; when Redis is back, `/ready` is "ok" again with no
restart. Postgres down fails fast: a quick 503 `not_ready`, never a 500 or a hang; when it is
back, requests succeed again with no restart. The machine's shared Redis and Postgres are
never touched: this Redis is a `redis-server` of the test's own, and Postgres is reached
through a TCP proxy the test can cut and restore.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from app.services.limits.rate_limits import KEY_PREFIX
from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.faults import CuttableProxy, OwnRedis
from tests.sse import read_stream

# ------------------------------------------------------------------ load


@dataclass
class Sent:
    """One turn sent under load, and what came of it."""

    conversation_id: str
    streamed: bool
    at: float  # time.monotonic() when its answer (or its stream's end) came
    status: int
    code: str | None = None  # a problem's code, or the stream's terminal event
    reply_id: str | None = None  # the reply a 2xx or a 503 names


@dataclass
class RecordingLoad:
    """Workers sending turns (plain and streamed) until stopped, recording every answer."""

    base_url: str
    conversations: list[str]
    sent: list[Sent] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, workers: int) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=120) as http:
            await asyncio.gather(*(self._work(http, n) for n in range(workers)))

    def stop(self) -> None:
        self._stop.set()

    def outcomes(self) -> Counter[str]:
        """How many got each answer: `turn:201:None`, `stream:200:done`, `turn:503:not_ready`."""
        return Counter(
            f"{'stream' if s.streamed else 'turn'}:{s.status}:{s.code}" for s in self.sent
        )

    async def _work(self, http: httpx.AsyncClient, n: int) -> None:
        conversation_id = self.conversations[n]
        url = f"/api/v1/conversations/{conversation_id}/messages"
        streamed = n % 2 == 1
        while not self._stop.is_set():
            if streamed:
                body = {"content": "Go on.", "stream": True}
                stream = await read_stream(http, "POST", url, json=body, within=120)
                if stream.status_code == 200:
                    start = stream.events[0].json()
                    ends = [e.event for e in stream.events if e.is_terminal]
                    assert len(ends) == 1, stream.body
                    sent = Sent(
                        conversation_id, True, time.monotonic(), 200, ends[0], start["message_id"]
                    )
                else:
                    problem = json.loads(stream.body)
                    sent = Sent(
                        conversation_id,
                        True,
                        time.monotonic(),
                        stream.status_code,
                        problem.get("code"),
                        problem.get("reply_id"),
                    )
            else:
                response = await http.post(url, json={"content": "Go on."})
                answer = response.json()
                reply_id = (
                    answer["message"]["id"]
                    if response.status_code == 201
                    else answer.get("reply_id")
                )
                sent = Sent(
                    conversation_id,
                    False,
                    time.monotonic(),
                    response.status_code,
                    answer.get("code"),
                    reply_id,
                )
            self.sent.append(sent)
            await asyncio.sleep(0.05)


async def stored_messages(database_url: str) -> list[dict[str, Any]]:
    """Every stored message, straight from the database (not through the service)."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT id::text, conversation_id::text, role, status, content, cost_usd, "
            "total_tokens, created_at, metadata::text AS metadata FROM messages"
        )
        totals = await connection.fetch(
            "SELECT c.id::text, c.total_cost_usd, c.total_tokens, "
            "COALESCE(SUM(m.cost_usd), 0) AS cost, COALESCE(SUM(m.total_tokens), 0) AS tokens "
            "FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id"
        )
    finally:
        await connection.close()
    for total in totals:
        assert (total["total_cost_usd"], total["total_tokens"]) == (
            total["cost"],
            total["tokens"],
        ), f"conversation {total['id']}: totals differ from the sum of its messages"
    return [dict(row) for row in rows]


async def new_conversations(http: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        created = await http.post("/api/v1/conversations", json={"title": "outage"})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return ids


async def ready_checks(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/ready")
    body = response.json()
    return response.status_code, body.get("checks", {})


async def wait_for_ready(
    http: httpx.AsyncClient, expected: dict[str, str], *, within: float
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        status, checks = await ready_checks(http)
        if status == 200 and checks == expected:
            return checks
        assert time.monotonic() < deadline, f"/ready is still {status} {checks}"
        await asyncio.sleep(0.25)


async def one_turn_each_way(http: httpx.AsyncClient, conversation_id: str) -> None:
    url = f"/api/v1/conversations/{conversation_id}/messages"
    turn = await http.post(url, json={"content": "Still there?"})
    assert turn.status_code == 201, turn.text
    assert turn.json()["message"]["status"] == "completed"
    stream = await read_stream(http, "POST", url, json={"content": "Stream?", "stream": True})
    assert stream.status_code == 200, stream.body
    assert stream.terminal.event == "done"


# ------------------------------------------------------------------ the tests


class TestRedisOutage:
    async def test_turns_go_on_while_redis_is_down_and_ready_recovers_when_it_returns(
        self, own_redis: OwnRedis, own_postgres_database: str, tmp_path: Path
    ) -> None:
        server = await asyncio.to_thread(
            start_server,
            {
                "DATABASE_URL": own_postgres_database,
                "REDIS_URL": own_redis.url,
                "RATE_LIMIT_RPM": "100000",
                # Counted in Redis, then in memory while it is down.
                "MAX_CONCURRENT_STREAMS_PER_USER": "50",
                "MAX_CONCURRENT_GENERATIONS_PER_USER": "50",
                "MOCK_CHUNK_DELAY_MS": "5",
            },
            tmp_path / "server.log",
        )
        all_ok = {"database": "ok", "redis": "ok", "rate_limits": "ok"}
        degraded = {"database": "ok", "redis": "degraded", "rate_limits": "degraded"}
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                assert await ready_checks(http) == (200, all_ok)
                conversations = await new_conversations(http, 7)
                await one_turn_each_way(http, conversations[0])
                load = RecordingLoad(server.base_url, conversations[1:])
                running = asyncio.create_task(load.run(workers=6))
                await asyncio.sleep(1)

                own_redis.kill()
                await asyncio.sleep(2)
                during_outage = await wait_for_ready(http, degraded, within=10)
                await one_turn_each_way(http, conversations[0])
                served_while_down = len(load.sent)
                await asyncio.sleep(2)
                served_while_down = len(load.sent) - served_while_down

                own_redis.start()
                await wait_for_ready(http, all_ok, within=30)
                await one_turn_each_way(http, conversations[0])
                await asyncio.sleep(1)
                load.stop()
                await running
        finally:
            await asyncio.to_thread(stop_server, server)

        assert during_outage == degraded
        assert served_while_down > 0
        # Every turn under load was stored and every stream ended with `done`.
        outcomes = load.outcomes()
        assert set(outcomes) <= {"turn:201:None", "stream:200:done"}, outcomes
        # Counting went back to the restarted Redis.
        redis = Redis.from_url(own_redis.url)
        try:
            assert [key async for key in redis.scan_iter(match=f"{KEY_PREFIX}*")]
        finally:
            await redis.aclose()


def server_errors(server: LiveServer) -> list[str]:
    """The server's logged crashes (their exception text), to say why a 500 happened."""
    return [line[-3000:] for line in server.log().splitlines() if "Traceback" in line]


class TestPostgresOutage:
    async def test_an_outage_under_load_strands_nothing_and_blocks_no_conversation(
        self, own_postgres_database: str, tmp_path: Path
    ) -> None:
        """Postgres gone for 10 s under 20 clients (half streaming, replies ~2 s long):
        requests fail fast with 503, replies finished meanwhile are stored when it returns,
        nothing is left `in_progress`, and every conversation takes turns again at once."""
        proxy = CuttableProxy(target_port=5432)
        await proxy.start()
        through_proxy = own_postgres_database.replace(":5432/", f":{proxy.port}/", 1)
        assert through_proxy != own_postgres_database
        server = await asyncio.to_thread(
            start_server,
            {"DATABASE_URL": through_proxy, "MOCK_CHUNK_DELAY_MS": "40"},
            tmp_path / "server.log",
        )
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                conversations = await new_conversations(http, 21)
                await one_turn_each_way(http, conversations[0])
                load = RecordingLoad(server.base_url, conversations[1:])
                running = asyncio.create_task(load.run(workers=20))
                await asyncio.sleep(3)

                proxy.cut()
                began = time.monotonic()
                listed = await http.get("/api/v1/conversations")
                took_s = time.monotonic() - began
                not_ready = await http.get("/ready")
                await asyncio.sleep(10)

                proxy.restore()
                returned_at, returned_at_utc = time.monotonic(), datetime.now(UTC)
                await wait_for_ready(http, {"database": "ok"}, within=30)
                await asyncio.sleep(10)
                # Replies started before the database returned (new ones may be running).
                in_progress_10s_after = [
                    m
                    for m in await stored_messages(own_postgres_database)
                    if m["status"] == "in_progress"
                    and m["role"] == "assistant"
                    and m["created_at"] < returned_at_utc
                ]
                await asyncio.sleep(2)
                load.stop()
                await running
                await one_turn_each_way(http, conversations[0])
        finally:
            await asyncio.to_thread(stop_server, server)
            await proxy.aclose()

        assert listed.status_code == 503, listed.text
        assert listed.json()["code"] == "not_ready"
        assert listed.headers["retry-after"]
        assert took_s < 10, "a dead database must fail requests fast, not queue them"
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["database"] == "unreachable"

        outcomes = load.outcomes()
        print("outcomes under the outage:", dict(outcomes))  # noqa: T201
        unexpected = [line for line in server.log().splitlines() if '"status": 500' in line]
        assert not unexpected, server_errors(server)
        assert all(s.status in (200, 201, 409, 503) for s in load.sent), outcomes
        late_409s = [s for s in load.sent if s.status == 409 and s.at > returned_at + 10]
        assert not late_409s, f"{len(late_409s)} turns refused with 409 after the outage"
        assert not in_progress_10s_after, "replies left in_progress 10 s after the outage"

        messages = await stored_messages(own_postgres_database)
        by_id = {m["id"]: m for m in messages}
        for sent in load.sent:
            if sent.status in (200, 201):
                reply = by_id[sent.reply_id]  # every accepted turn is stored
                assert reply["status"] in ("completed", "failed"), reply
                if sent.code == "done" or sent.status == 201:
                    assert reply["status"] == "completed", (sent, reply)
        # Every stored user message is one a client was told about: a 2xx, or a 503 that
        # names the reply its turn may have stored with it (its claim's connection dropped).
        for conversation_id in conversations[1:]:
            answers = [s for s in load.sent if s.conversation_id == conversation_id]
            accepted = sum(1 for s in answers if s.status in (200, 201))
            named = sum(1 for s in answers if s.status == 503 and s.reply_id)
            stored_questions = sum(
                1
                for m in messages
                if m["conversation_id"] == conversation_id and m["role"] == "user"
            )
            assert accepted <= stored_questions <= accepted + named, conversation_id
        for reply in messages:
            if reply["role"] == "assistant":
                assert reply["status"] in ("completed", "failed"), reply
        assert outcomes["turn:201:None"] + outcomes["stream:200:done"] > 0
