"""The application factory and its lifespan: wiring only, no logic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from app import __version__
from app.api import health, playground, v1
from app.api.deps import AppState
from app.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.api.problems import install_problem_handlers
from app.api.security_headers import SecurityHeadersMiddleware
from app.core.config import Environment, Settings
from app.core.logging import configure_logging
from app.db.session import create_engine, make_sessionmaker
from app.providers.registry import ProviderRegistry
from app.providers.setup import build_registry
from app.services.event_log import EventLog, InProcessEventLog, RedisEventLog
from app.services.generations import Generations
from app.services.pricing import PriceBook, build_price_book
from app.services.rate_limits import RateLimiter
from app.services.recovery import sweep_forever
from app.services.stream_tickets import StreamTickets
from app.services.turns import TurnContext

log = structlog.get_logger(__name__)


def create_app(
    settings: Settings,
    *,
    providers: ProviderRegistry | None = None,
    prices: PriceBook | None = None,
) -> FastAPI:
    """Build the app; `providers` and `prices` replace the configured ones (for tests)."""
    configure_logging(settings)
    price_book = prices or build_price_book(settings)
    registry = providers or build_registry(settings, price_book.context_window)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        engine = create_engine(settings)
        sessionmaker = make_sessionmaker(engine)
        redis = (
            Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
            if settings.redis_url
            else None
        )
        log.info(
            "starting",
            environment=settings.app_env.value,
            database=engine.dialect.name,
            redis=redis is not None,
            default_provider=registry.default_provider,
        )
        # Blocking stream reads and the cancel channel wait longer than a command may.
        stream_redis = (
            Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=2,
                socket_timeout=settings.stream_heartbeat_seconds + 5,
            )
            if settings.redis_url
            else None
        )
        limiter = RateLimiter(
            rpm=settings.rate_limit_rpm,
            tpm=settings.rate_limit_tpm,
            redis_url=settings.redis_url,
        )
        turns = TurnContext(
            sessionmaker=sessionmaker,
            registry=registry,
            prices=price_book,
            generation_timeout_s=settings.generation_timeout_seconds,
            budget_usd=settings.user_budget_usd,
            limiter=limiter,
            redact_provider_text=settings.pii_redaction == "provider",
        )
        local_log = InProcessEventLog()
        events: EventLog = (
            RedisEventLog(stream_redis, local_log) if stream_redis is not None else local_log
        )
        generations = Generations(
            turns, events, flush_interval_s=settings.stream_flush_seconds, redis=stream_redis
        )
        stale_after_s = settings.abandoned_after_seconds
        background = [
            asyncio.create_task(generations.listen_for_cancels()),
            asyncio.create_task(
                sweep_forever(
                    sessionmaker, stale_after_s=stale_after_s, every_s=min(30, stale_after_s)
                )
            ),
        ]
        try:
            yield AppState(
                settings=settings,
                sessionmaker=sessionmaker,
                redis=redis,
                providers=registry,
                prices=price_book,
                turns=turns,
                generations=generations,
                limiter=limiter,
                stream_tickets=StreamTickets(redis),
            )
        finally:
            await generations.drain(grace_s=settings.shutdown_grace_seconds)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if stream_redis is not None:
                await stream_redis.aclose()
            await registry.aclose()
            await limiter.aclose()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="chat-api",
        version=__version__,
        summary="Conversations, messages and costs over any LLM provider.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    if settings.cors_origins:
        wildcard = settings.cors_origins == ["*"]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=not wildcard,  # browsers forbid credentials with "*"
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Last-Event-ID",
                "X-Request-ID",
            ],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Idempotency-Replayed",
            ],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    # Added last: outermost, so the 415 and 500 that RequestContextMiddleware writes get them too.
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.app_env is Environment.PRODUCTION)
    app.include_router(health.router)
    app.include_router(v1.router)
    app.include_router(playground.router)
    return app


def create_app_from_env() -> FastAPI:
    """Entry point for uvicorn workers (`--factory`): settings come from the environment."""
    return create_app(Settings())
