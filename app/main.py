"""The application factory and its lifespan: wiring only, no logic."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import BlockingConnectionPool, Redis

from app import __version__
from app.api import anthropic_compat, health, openai_compat, playground, v1
from app.api.anthropic_compat.errors import ANTHROPIC_ERRORS, is_messages_path
from app.api.deps import AppState
from app.api.error_shapes import ErrorShape, ErrorShapeMiddleware, under
from app.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.api.openai_compat.errors import OPENAI_ERRORS, OPENAI_PREFIX
from app.api.problems import install_problem_handlers
from app.api.security_headers import SecurityHeadersMiddleware
from app.core import metrics
from app.core.config import Environment, Settings
from app.core.logging import configure_logging
from app.core.tracing import setup_tracing
from app.db.session import create_engine, make_sessionmaker
from app.providers.caching import build_response_cache
from app.providers.context import warm_up as warm_up_tokenizers
from app.providers.instrumented import instrument_providers
from app.providers.registry import ProviderRegistry
from app.providers.setup import build_registry
from app.services.access.known_keys import KnownKeys, listen_for_key_changes
from app.services.conversations.titles import TitleWriter
from app.services.limits.rate_limits import RateLimiter
from app.services.limits.stream_quota import Quotas
from app.services.pricing.price_book import PriceBook, build_price_book
from app.services.streaming.event_log import EventLog, InProcessEventLog, RedisEventLog
from app.services.streaming.stream_tickets import StreamTickets
from app.services.turns.generations import Generations
from app.services.turns.leases import GenerationLease
from app.services.turns.outcomes import OutcomeWriter
from app.services.turns.partial_text import PartialTextSaver
from app.services.turns.recovery import sweep_forever
from app.services.turns.turns import TurnContext

log = structlog.get_logger(__name__)
if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

# How long a Redis command waits for a pooled connection before it counts as a Redis error.
_REDIS_POOL_WAIT_S = 5.0


def error_shape_of(path: str) -> ErrorShape | None:
    """The error format of the wire format `path` speaks; None for the service's own."""
    if is_messages_path(path):
        return ANTHROPIC_ERRORS
    if under(OPENAI_PREFIX, path):
        return OPENAI_ERRORS
    return None


def create_app(
    settings: Settings,
    *,
    providers: ProviderRegistry | None = None,
    prices: PriceBook | None = None,
    span_exporter: SpanExporter | None = None,
    tune_garbage_collector: bool = False,
) -> FastAPI:
    """Build the app; `providers`, `prices` and `span_exporter` replace the configured ones
    (for tests). `tune_garbage_collector` is for a process that serves only this app (see
    `_tune_garbage_collector`)."""
    configure_logging(settings)
    price_book = prices or build_price_book(settings)
    # None unless OTEL_EXPORTER_OTLP_ENDPOINT (or a test's exporter) is set: then no spans at all.
    tracing = setup_tracing(settings, span_exporter)
    registry = providers or build_registry(
        settings,
        price_book.context_window,
        on_http_client=None if tracing is None else tracing.instrument_client,
    )
    instrument_providers(
        registry,
        cost_of=price_book.cost_of,
        tracer=None if tracing is None else tracing.tracer,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        await asyncio.to_thread(warm_up_tokenizers, registry.catalog())
        engine = create_engine(settings)
        metrics.watch_pool(engine)
        if tracing is not None:
            tracing.instrument_engine(engine)
        sessionmaker = make_sessionmaker(engine)
        redis = (
            _redis_client(settings.redis_url, settings.redis_max_connections, socket_timeout=2)
            if settings.redis_url
            else None
        )
        reply_cache = build_response_cache(settings.response_cache_ttl_seconds, redis)
        registry.use_response_cache(reply_cache)
        log.info(
            "starting",
            environment=settings.app_env.value,
            database=engine.dialect.name,
            redis=redis is not None,
            default_provider=registry.default_provider,
        )
        # Blocking stream reads and the cancel channel wait longer than a command may.
        stream_redis = (
            _redis_client(
                settings.redis_url,
                settings.redis_max_connections,
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
        lease = GenerationLease(sessionmaker, settings.generation_lease_seconds)
        outcomes = OutcomeWriter(sessionmaker, settings.generation_timeout_seconds)
        local_log = InProcessEventLog()
        titles = (
            TitleWriter(
                sessionmaker,
                registry,
                price_book,
                model=settings.title_model,
                provider=settings.title_provider,
                events=local_log,
                timeout_s=settings.provider_timeout_seconds,
            )
            if settings.title_model
            else None
        )
        turns = TurnContext(
            sessionmaker=sessionmaker,
            registry=registry,
            prices=price_book,
            generation_timeout_s=settings.generation_timeout_seconds,
            partials=PartialTextSaver(sessionmaker, settings.stream_flush_seconds),
            outcomes=outcomes,
            generation_owner=lease.owner_id,
            budget_usd=settings.user_budget_usd,
            limiter=limiter,
            redact_provider_text=settings.pii_redaction == "provider",
            titles=titles,
        )
        redis_log = RedisEventLog(stream_redis, local_log) if stream_redis is not None else None
        events: EventLog = redis_log or local_log
        generations = Generations(turns, events, redis=stream_redis)
        stale_after_s = settings.abandoned_after_seconds
        # Trusted, so used, only while a change can be heard at once (see known_keys): never
        # on SQLite, nor with auth off.
        known_keys = KnownKeys()
        # Taken before the first reply is started: a reply's owner always has a lease row.
        try:
            await lease.renew()
        except Exception as error:  # the database is away: the renewals go on trying
            log.warning("could not take the generation lease", error=type(error).__name__)
        background = [
            asyncio.create_task(generations.listen_for_cancels()),
            asyncio.create_task(turns.partials.save_forever()),
            asyncio.create_task(lease.renew_forever()),
            asyncio.create_task(
                sweep_forever(
                    sessionmaker,
                    stale_after_s=stale_after_s,
                    # As often as a lease is renewed: a dead owner's replies end within about
                    # a lease and a quarter of its last renewal.
                    every_s=min(lease.renew_every_s, stale_after_s),
                    lease=lease,
                    events=events,
                )
            ),
        ]
        if settings.auth_enabled and engine.dialect.name == "postgresql":
            background.append(asyncio.create_task(listen_for_key_changes(engine, known_keys)))
        if tune_garbage_collector:
            _tune_garbage_collector()
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
                quotas=Quotas.build(
                    streams=settings.stream_cap,
                    generations=settings.generation_cap,
                    redis=redis,
                ),
                known_keys=known_keys,
            )
        finally:
            # Titles still being asked for get the same grace as the replies, side by side.
            drains = [generations.drain(grace_s=settings.shutdown_grace_seconds)]
            if titles is not None:
                drains.append(titles.drain(grace_s=settings.shutdown_grace_seconds))
            await asyncio.gather(*drains)
            await outcomes.aclose()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            # Nothing runs here any more: what is left `in_progress` is another's to end now.
            await lease.release()
            if redis_log is not None:
                await redis_log.aclose()
            if stream_redis is not None:
                await stream_redis.aclose()
            await registry.aclose()
            await limiter.aclose()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()
            if tracing is not None:
                tracing.shutdown()
            metrics.mark_process_dead()

    app = FastAPI(
        title="chat-api",
        version=__version__,
        summary="Conversations, messages and costs over any LLM provider.",
        lifespan=lifespan,
        # Traces come from OpenTelemetry's FastAPI instrumentation on the app's own provider
        # (app.core.tracing). FastAPI's built-in telemetry would only look for global
        # providers, several environment lookups on every request, to find none.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    if tracing is not None:
        tracing.instrument_app(app)
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
                "X-Conversation-ID",
            ],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Idempotency-Replayed",
                "X-Conversation-ID",
            ],
        )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        read_timeout_s=settings.body_read_timeout_seconds,
    )
    app.add_middleware(RequestContextMiddleware)
    # Outside RequestContextMiddleware: its 415s and 500s under /v1 get OpenAI's (or, under
    # /v1/messages, Anthropic's) format too.
    app.add_middleware(ErrorShapeMiddleware, shape_of=error_shape_of)
    # Added last: outermost, so the 415 and 500 that RequestContextMiddleware writes get them too.
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.app_env is Environment.PRODUCTION)
    app.include_router(health.router)
    app.include_router(v1.router)
    app.include_router(openai_compat.router)
    app.include_router(anthropic_compat.router)
    app.include_router(playground.router)
    return app


def _redis_client(url: str, max_connections: int, *, socket_timeout: float) -> Redis:
    """A client whose pool makes callers wait briefly for a free connection, not fail at once."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=_REDIS_POOL_WAIT_S,
        socket_connect_timeout=2,
        socket_timeout=socket_timeout,
    )
    return Redis.from_pool(pool)


def create_app_from_env() -> FastAPI:
    """Entry point for uvicorn workers (`--factory`): settings come from the environment."""
    return create_app(Settings(), tune_garbage_collector=True)


def _tune_garbage_collector() -> None:
    """Keep the garbage collector off what start-up built and every request only reads, and
    let it run less often.

    The modules, SDK types, schemas and tables of a started worker are ~200,000 tracked
    objects, and each full collection walked them all: ~100 ms with the event loop stopped,
    whenever enough in-flight requests' objects had outlived two young collections (it was
    the p99 at 16 clients: 181 ms, 74 ms frozen). Frozen, they are never walked again; a full
    collection then walks only what requests keep. Not for tests: one process starts many
    apps, and whatever a frozen one held would never be freed.
    """
    gc.collect()
    gc.freeze()
    # Young collections every 10,000 new objects instead of 700: most of a request's objects
    # are gone by then and never walked at all. 1,000 streams: ~7 % less CPU; turns: the same.
    gc.set_threshold(10_000, 10, 10)
