"""A real server process (`python -m app`, as `make run` starts it) on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.databases import postgres_database
from tests.faults import OwnRedis
from tests.openai_schema.traffic import Recorder

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LiveServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(env_overrides: dict[str, str], log_path: Path) -> LiveServer:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "APP_ENV": "test",
        "AUTH_ENABLED": "false",  # on by default outside development
        "LOG_FORMAT": "json",
        **env_overrides,
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return healthy(LiveServer(f"http://127.0.0.1:{port}", process, log_path))


def healthy(server: LiveServer) -> LiveServer:
    """`server` once `/health` answers 200; killed, and the test failed with its log, if it
    exits or does not answer within 90 s (importing the SDKs is slow on a loaded machine)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.process.kill()
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server({"DATABASE_URL": database_url}, tmp_path / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


def run_cli(database_url: str, *args: str) -> str:
    """What `python -m app.cli <args>` prints, run as an operator would (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def create_key(database_url: str, user: str) -> str:
    """An API key issued by `python -m app.cli keys create`."""
    key = run_cli(database_url, "keys", "create", "--user", user)
    assert key
    return key


@pytest.fixture
async def own_postgres_database() -> AsyncIterator[str]:
    """A Postgres database of the test's own, for a server started by the test."""
    async with postgres_database() as url:
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    redis = OwnRedis(free_port(), tmp_path / "redis.log")
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


# The live server and wire recorder the client tests (test_clients_*.py) share: the mock
# provider, this run's database. A module may define its own (test_clients_upstreams.py).
@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        {"DATABASE_URL": database_url}, tmp_path_factory.mktemp("clients") / "server.log"
    )
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recording = Recorder()
    yield recording
    await recording.aclose()
