"""Service endpoints for operators: identity, liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import __version__
from app.api.deps import LimiterDep, RedisDep, SessionFactoryDep, SettingsDep
from app.api.problems import PROBLEM_JSON, problem_body, request_id_of
from app.core import metrics as app_metrics
from app.schemas.common import Schema

router = APIRouter(tags=["service"])


class ServiceInfo(Schema):
    name: str
    version: str
    environment: str
    docs: str


class Health(Schema):
    status: str


class Readiness(Schema):
    status: str
    checks: dict[str, str]


@router.get("/", response_model=ServiceInfo)
async def service_info(settings: SettingsDep) -> ServiceInfo:
    return ServiceInfo(
        name="chat-api", version=__version__, environment=settings.app_env.value, docs="/docs"
    )


@router.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers. Touches no dependency, so a slow database never kills pods."""
    return Health(status="ok")


async def _database_ok(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    try:
        async with sessionmaker() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def _redis_ok(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except Exception:
        return False


async def _within(seconds: float, check: Any) -> bool:
    try:
        async with asyncio.timeout(seconds):
            return bool(await check)
    except TimeoutError:
        return False


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"description": "the database is unreachable", "content": {PROBLEM_JSON: {}}}},
)
async def ready(
    request: Request,
    settings: SettingsDep,
    sessionmaker: SessionFactoryDep,
    redis: RedisDep,
    limiter: LimiterDep,
) -> Readiness | JSONResponse:
    """Readiness: the database answers within the timeout; a Redis outage only degrades.

    `rate_limits` reports the limiter's own Redis connection: "degraded" while it counts in
    this process's memory (each replica then allows the whole limit on its own).
    """
    timeout = settings.ready_timeout_seconds
    checks_to_run = [_within(timeout, _database_ok(sessionmaker))]
    if redis is not None:
        checks_to_run.append(_within(timeout, _redis_ok(redis)))
    if limiter.uses_redis:
        checks_to_run.append(_within(timeout, limiter.storage_reachable()))
    results = await asyncio.gather(*checks_to_run)
    checks = {"database": "ok" if results[0] else "unreachable"}
    if redis is not None:
        checks["redis"] = "ok" if results[1] else "degraded"
    if limiter.uses_redis:
        checks["rate_limits"] = "ok" if results[-1] else "degraded"
    if not results[0]:
        return JSONResponse(
            problem_body(
                503,
                "not_ready",
                "database is unreachable",
                request_id_of(request.scope),
                checks=checks,
            ),
            status_code=503,
            media_type=PROBLEM_JSON,
        )
    return Readiness(status="ready", checks=checks)


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics() -> Response:
    """Prometheus text format: this worker's metrics, or all workers' in multiprocess mode."""
    return Response(app_metrics.exposition(), media_type=app_metrics.EXPOSITION_CONTENT_TYPE)
