"""One request budget shared by two server processes through Redis.

Two `python -m app` processes on different ports, one Postgres database and one Redis, with
`RATE_LIMIT_RPM=N`: requests alternating between them get exactly N successes in the window,
then 429 `rate_limited` with `Retry-After` and `RateLimit-*` headers, on either replica.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.services.limits.rate_limits import KEY_PREFIX
from tests.databases import REDIS_URL, postgres_database, unavailable
from tests.e2e.conftest import LiveServer, create_key, start_server, stop_server

LIMIT = 5
LIST = "/api/v1/conversations"


def _start(env: dict[str, str], log_path: Path) -> LiveServer:
    """Start a replica; once more if two imports at once were too slow on a busy machine."""
    try:
        return start_server(env, log_path)
    except RuntimeError as error:
        if "did not become healthy" not in str(error):
            raise
        return start_server(env, log_path.with_suffix(".retry.log"))


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, LiveServer, str]]:
    """Two replicas with auth on and RATE_LIMIT_RPM=5; a key for a user of this test alone."""
    redis = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await redis.ping()
    except (RedisError, OSError) as error:
        await redis.aclose()
        unavailable("Redis", error)
    user = f"limited-{uuid.uuid4().hex[:8]}"
    async with postgres_database() as database_url:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "AUTH_ENABLED": "true",
            "RATE_LIMIT_RPM": str(LIMIT),
        }
        started = await asyncio.gather(
            asyncio.to_thread(_start, env, tmp_path / "a.log"),
            asyncio.to_thread(_start, env, tmp_path / "b.log"),
            return_exceptions=True,
        )
        servers = [s for s in started if isinstance(s, LiveServer)]
        try:
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            key = await asyncio.to_thread(create_key, database_url, user)
            yield servers[0], servers[1], key
        finally:
            await asyncio.gather(*(asyncio.to_thread(stop_server, s) for s in servers))
            keys = [k async for k in redis.scan_iter(match=f"{KEY_PREFIX}*{user}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


class TestSharedRequestBudget:
    async def test_alternating_replicas_get_exactly_the_limit_then_429(
        self, replicas: tuple[LiveServer, LiveServer, str]
    ) -> None:
        a, b, key = replicas
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx.AsyncClient(base_url=a.base_url, headers=headers, timeout=10) as on_a,
            httpx.AsyncClient(base_url=b.base_url, headers=headers, timeout=10) as on_b,
        ):
            responses = [await (on_a, on_b)[n % 2].get(LIST) for n in range(2 * LIMIT + 2)]

        allowed = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert len(allowed) == LIMIT, [r.status_code for r in responses]
        assert responses[:LIMIT] == allowed  # the first N, whichever replica served them
        # One budget: what is left counts down across the two processes.
        assert [r.headers["RateLimit-Remaining"] for r in allowed] == [
            str(LIMIT - n) for n in range(1, LIMIT + 1)
        ]
        assert {str(r.url).split("/api")[0] for r in refused} == {a.base_url, b.base_url}
        for response in refused:
            assert response.status_code == 429, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "rate_limited"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert response.headers["RateLimit-Limit"] == str(LIMIT)
            assert response.headers["RateLimit-Remaining"] == "0"
            assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
