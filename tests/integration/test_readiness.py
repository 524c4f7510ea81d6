"""/ready names each dependency: the database fails it, a Redis outage only degrades it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.config import Settings
from tests.databases import REDIS_URL

StartApp = Callable[..., Any]
# Nothing listens here: connections are refused at once.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


class TestRateLimitStorage:
    async def test_an_unreachable_limiter_redis_is_degraded_and_the_service_stays_ready(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=5, redis_url=UNREACHABLE_REDIS))

        ready = await client.get("/ready")
        # Requests are still served, counted in this process's memory.
        listed = await client.get("/api/v1/conversations")

        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "redis": "degraded", "rate_limits": "degraded"},
        }
        assert listed.status_code == 200
        assert listed.headers["RateLimit-Remaining"] == "4"

    async def test_a_reachable_limiter_redis_is_ok(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=5, redis_url=REDIS_URL))

        ready = await client.get("/ready")

        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "rate_limits": "ok"}

    async def test_without_limits_there_is_no_limiter_check(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(redis_url=REDIS_URL))

        ready = await client.get("/ready")

        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
