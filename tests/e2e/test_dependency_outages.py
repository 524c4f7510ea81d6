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
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.services.rate_limits import KEY_PREFIX
from tests.databases import postgres_database
from tests.e2e.conftest import LiveServer, free_port, start_server, stop_server
from tests.sse import read_stream

# ------------------------------------------------------------------ a Redis of our own


@dataclass
class OwnRedis:
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """Gone at once, as in a crash: no clean shutdown, connections reset."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    redis = OwnRedis(free_port(), tmp_path / "redis.log")
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


# ------------------------------------------------------------------ a Postgres we can cut


class CuttableProxy:
    """A TCP forwarder to Postgres: `cut()` resets every connection and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.is_cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


# ------------------------------------------------------------------ load


@dataclass
class Load:
    """Workers sending turns (plain and streamed) until stopped; every outcome is counted."""

    base_url: str
    conversations: list[str]
    outcomes: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, workers: int) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            await asyncio.gather(*(self._work(http, n) for n in range(workers)))

    def stop(self) -> None:
        self._stop.set()

    async def _work(self, http: httpx.AsyncClient, n: int) -> None:
        url = f"/api/v1/conversations/{self.conversations[n]}/messages"
        streamed = n % 2 == 1
        while not self._stop.is_set():
            try:
                if streamed:
                    stream = await read_stream(
                        http, "POST", url, json={"content": "Go on.", "stream": True}, within=30
                    )
                    if stream.status_code == 200:
                        ends = [e.event for e in stream.events if e.is_terminal]
                        ended = ends[0] if ends == stream.names[-1:] else f"ended-{ends}"
                        self.outcomes[f"stream:{ended}"] += 1
                    else:
                        self.outcomes[f"stream:{stream.status_code}"] += 1
                else:
                    response = await http.post(url, json={"content": "Go on."})
                    self.outcomes[f"turn:{response.status_code}"] += 1
            except httpx.TransportError as error:
                self.outcomes[f"transport:{type(error).__name__}"] += 1
            await asyncio.sleep(0.02)


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


async def eventually_a_turn(http: httpx.AsyncClient, conversation_id: str, within: float) -> None:
    url = f"/api/v1/conversations/{conversation_id}/messages"
    deadline = time.monotonic() + within
    while True:
        turn = await http.post(url, json={"content": "Back?"})
        if turn.status_code == 201:
            return
        assert turn.status_code == 409, turn.text
        assert time.monotonic() < deadline, f"{conversation_id} still refuses turns"
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------ the tests


@pytest.fixture
async def database_url_for_outages() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


class TestRedisOutage:
    async def test_turns_go_on_while_redis_is_down_and_ready_recovers_when_it_returns(
        self, own_redis: OwnRedis, database_url_for_outages: str, tmp_path: Path
    ) -> None:
        server = await asyncio.to_thread(
            start_server,
            {
                "DATABASE_URL": database_url_for_outages,
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
                load = Load(server.base_url, conversations[1:])
                running = asyncio.create_task(load.run(workers=6))
                await asyncio.sleep(1)

                own_redis.kill()
                await asyncio.sleep(2)
                during_outage = await wait_for_ready(http, degraded, within=10)
                await one_turn_each_way(http, conversations[0])
                served_while_down = sum(load.outcomes.values())
                await asyncio.sleep(2)
                served_while_down = sum(load.outcomes.values()) - served_while_down

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
        assert set(load.outcomes) <= {"turn:201", "stream:done"}, load.outcomes
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
    async def test_requests_fail_fast_while_postgres_is_cut_and_recover_when_it_returns(
        self, database_url_for_outages: str, tmp_path: Path
    ) -> None:
        proxy = CuttableProxy(target_port=5432)
        await proxy.start()
        through_proxy = database_url_for_outages.replace(":5432/", f":{proxy.port}/", 1)
        assert through_proxy != database_url_for_outages
        server = await asyncio.to_thread(
            start_server,
            {
                "DATABASE_URL": through_proxy,
                "MOCK_CHUNK_DELAY_MS": "5",
                # A reply whose end could not be stored is ended by the sweep after this long.
                "STREAM_FLUSH_SECONDS": "0.5",
                "ABANDONED_REPLY_SECONDS": "4",
            },
            tmp_path / "server.log",
        )
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                conversations = await new_conversations(http, 5)
                await one_turn_each_way(http, conversations[0])
                load = Load(server.base_url, conversations[1:])
                running = asyncio.create_task(load.run(workers=4))
                await asyncio.sleep(1)

                proxy.cut()
                began = time.monotonic()
                listed = await http.get("/api/v1/conversations")
                took_s = time.monotonic() - began
                not_ready = await http.get("/ready")
                await asyncio.sleep(2)

                proxy.restore()
                await wait_for_ready(http, {"database": "ok"}, within=30)
                await one_turn_each_way(http, conversations[0])
                after = await http.get("/api/v1/conversations")
                load.stop()
                await running
                # Every conversation takes turns again, with no restart.
                for conversation_id in conversations[1:]:
                    await eventually_a_turn(http, conversation_id, within=30)
        finally:
            await asyncio.to_thread(stop_server, server)
            await proxy.aclose()

        assert listed.status_code == 503, listed.text
        assert listed.json()["code"] == "not_ready"
        assert listed.headers["retry-after"]
        print(f"503 while Postgres was cut came in {took_s:.2f} s")  # noqa: T201
        assert took_s < 10, "a dead database must fail requests fast, not queue them"
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["database"] == "unreachable"
        assert after.status_code == 200
        assert len(after.json()["items"]) == 5
        # Under load: stored, refused with 503, or (a stream already running) ended by an
        # `error` event; never a 500 and never a hang. A reply whose end could not be stored
        # holds its conversation (409) until the abandoned-reply sweep ends it.
        allowed = {
            "turn:201",
            "turn:503",
            "turn:409",
            "stream:done",
            "stream:error",
            "stream:503",
            "stream:409",
        }
        unexpected = [line for line in server.log().splitlines() if '"status": 500' in line]
        assert set(load.outcomes) <= allowed, (load.outcomes, unexpected, server_errors(server))
        assert load.outcomes["turn:201"] + load.outcomes["stream:done"] > 0
