"""Prometheus metrics, labelled by route template, provider and model (bounded cardinality, no ids).

With several uvicorn workers (`WEB_CONCURRENCY`), set `PROMETHEUS_MULTIPROC_DIR` to an empty
directory: prometheus_client then keeps every worker's values in files there (it reads the
variable when it is first imported) and `/metrics` sums them, whichever worker answers.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST
# Model names come from callers (any name a provider accepts): past this many per provider and
# process, new ones are counted as "other", so a caller cannot grow the series without bound.
MAX_MODELS_PER_PROVIDER = 100
OTHER_MODEL = "other"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Provider calls last seconds to minutes; the first token comes within seconds.
_CALL_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 15, 30, 60)

HTTP_REQUESTS = Counter(
    "chat_api_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "chat_api_http_request_duration_seconds",
    "Time to serve an HTTP request",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_CALLS = Counter(
    "chat_api_provider_calls_total",
    "Calls to a model provider, by outcome: ok, cancelled or the error code",
    ["provider", "model", "status"],
)
PROVIDER_ERRORS = Counter(
    "chat_api_provider_errors_total",
    "Provider calls that ended in an error, by error code",
    ["provider", "model", "code"],
)
PROVIDER_RETRIES = Counter(
    "chat_api_provider_retries_total",
    "Attempts repeated after a retryable provider error",
    ["provider", "model"],
)
PROVIDER_LATENCY = Histogram(
    "chat_api_provider_call_duration_seconds",
    "Time from asking a provider to its last event, retries included",
    ["provider", "model"],
    buckets=_CALL_BUCKETS,
)
PROVIDER_TTFT = Histogram(
    "chat_api_provider_time_to_first_token_seconds",
    "Time from asking a provider to its first piece of text",
    ["provider", "model"],
    buckets=_TTFT_BUCKETS,
)
TOKENS = Counter(
    "chat_api_tokens_total",
    "Tokens billed for stored replies, by kind (prompt or completion)",
    ["provider", "model", "kind"],
)
COST = Counter(
    "chat_api_cost_usd_total",
    "USD charged for stored replies (replies without a known price add nothing)",
    ["provider", "model"],
)
# livesum: across workers, the sum over the processes that are alive.
OPEN_STREAMS = Gauge(
    "chat_api_open_streams",
    "Server-sent event streams being written to clients",
    multiprocess_mode="livesum",
)
# A streamed reply holds an upstream connection for its whole length: against
# PROVIDER_MAX_CONNECTIONS (per worker), this shows how close a provider's pool is to full.
PROVIDER_CALLS_IN_FLIGHT = Gauge(
    "chat_api_provider_calls_in_flight",
    "Provider calls running (retries and their waits included), by provider",
    ["provider"],
    multiprocess_mode="livesum",
)
DB_POOL_IN_USE = Gauge(
    "chat_api_db_pool_connections_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)
# Observed only when a request had to wait: pressure on the pool shows here before the
# 503s that DB_POOL_TIMEOUT_SECONDS ends such waits with.
DB_POOL_WAIT = Histogram(
    "chat_api_db_pool_wait_seconds",
    "Time a request waited for a pooled database connection, when none was free",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# livesum: the workers alive and listening for API-key changes, so using their key cache;
# fewer than the workers running means the others read every request's key from the database.
KEY_CHANGE_LISTENERS = Gauge(
    "chat_api_key_change_listeners",
    "Worker processes listening for API-key changes (their key cache is in use)",
    multiprocess_mode="livesum",
)
REJECTIONS = Counter(
    "chat_api_rejections_total",
    "Requests refused by a per-user limit, by code: rate_limited or budget_exceeded",
    ["code"],
)
REJECTION_CODES = frozenset({"rate_limited", "budget_exceeded"})

_models_seen: dict[str, set[str]] = {}


class TokenCounts(Protocol):
    """What a reply was billed (`app.providers.base.Usage` satisfies it)."""

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...


def model_label(provider: str, model: str) -> str:
    """`model`, or "other" once this provider has used up its label budget in this process."""
    seen = _models_seen.setdefault(provider, set())
    if model in seen:
        return model
    if len(seen) >= MAX_MODELS_PER_PROVIDER:
        return OTHER_MODEL
    seen.add(model)
    return model


def observe_request(method: str, route: str, status: int, duration_s: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(duration_s)


def record_provider_call(
    provider: str,
    model: str,
    status: str,
    *,
    duration_s: float,
    time_to_first_token_s: float | None,
) -> None:
    """One finished provider call; `status` is "ok", "cancelled" or the contract error code."""
    label = model_label(provider, model)
    PROVIDER_CALLS.labels(provider, label, status).inc()
    if status not in ("ok", "cancelled"):
        PROVIDER_ERRORS.labels(provider, label, status).inc()
    PROVIDER_LATENCY.labels(provider, label).observe(duration_s)
    if time_to_first_token_s is not None:
        PROVIDER_TTFT.labels(provider, label).observe(time_to_first_token_s)


def record_provider_retry(provider: str, model: str) -> None:
    PROVIDER_RETRIES.labels(provider, model_label(provider, model)).inc()


def record_reply_usage(
    provider: str | None, model: str | None, usage: TokenCounts, cost_usd: Decimal | None
) -> None:
    """The tokens and cost of one stored reply, as it was priced and charged."""
    provider_label = provider or "unknown"
    label = model_label(provider_label, model or "unknown")
    TOKENS.labels(provider_label, label, "prompt").inc(usage.prompt_tokens)
    TOKENS.labels(provider_label, label, "completion").inc(usage.completion_tokens)
    if cost_usd is not None:
        COST.labels(provider_label, label).inc(float(cost_usd))


def record_rejection(code: str) -> None:
    """Counts a refusal by a per-user limit; other error codes are not rejections."""
    if code in REJECTION_CODES:
        REJECTIONS.labels(code).inc()


def watch_pool(engine: AsyncEngine) -> None:
    """Keep `DB_POOL_IN_USE` equal to the connections this engine has checked out.

    Pool events rather than a collector reading `pool.checkedout()`: collectors do not work in
    multiprocess mode, and the events cost two gauge writes per checkout.
    """
    pool = engine.sync_engine.pool

    def checked_out(*_: Any) -> None:
        DB_POOL_IN_USE.inc()

    def checked_in(*_: Any) -> None:
        DB_POOL_IN_USE.dec()

    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_VARIABLE))


def exposition() -> bytes:
    """The text exposition: this process's registry, or every worker's files in multiprocess."""
    if not multiprocess_enabled():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def mark_process_dead() -> None:
    """At shutdown in multiprocess mode: drop this worker's live gauges from the sums."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
