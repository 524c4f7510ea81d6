"""OpenTelemetry traces for HTTP, SQL and provider calls, exported over OTLP; off by default.

With `OTEL_EXPORTER_OTLP_ENDPOINT` unset, `setup_tracing` returns None: the SDK is never
imported, no tracer provider is installed and nothing is instrumented, so tracing costs
nothing. The tracer provider is the app's own, passed to each instrumentation, never made
global: tests start several apps in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import structlog

from app.core.config import Settings
from app.db.driver import observe_statements

if TYPE_CHECKING:
    import httpx2
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

# Probes and scrapes every few seconds would drown the traces that matter.
_UNTRACED_URLS = "/health$,/ready$,/metrics$"
# Attributes that carry the query string: a stream ticket travels there (`?ticket=`).
_URL_ATTRIBUTES = ("http.url", "url.full")
_TARGET_ATTRIBUTES = ("http.target",)
_QUERY_ATTRIBUTES = ("url.query",)


@dataclass
class Tracing:
    """One app's tracer provider and the instrumentations installed with it."""

    provider: TracerProvider
    _uninstall: list[Any] = field(default_factory=list)
    _removals: list[Callable[[], None]] = field(default_factory=list)

    @property
    def tracer(self) -> Tracer:
        """The tracer for this service's own spans (one per provider call)."""
        return self.provider.get_tracer("chat-api")

    def instrument_app(self, app: FastAPI) -> None:
        """A server span per HTTP request; none per SSE chunk, none for probes and scrapes."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            excluded_urls=_UNTRACED_URLS,
            server_request_hook=_without_query,
            exclude_spans=["receive", "send"],
        )

    def instrument_client(self, client: httpx2.AsyncClient) -> None:
        """A client span per request an SDK client sends (each provider has its own client).

        Per client, not per class: the clients run on the SDKs' aiohttp transport, which the
        class-wide instrumentation (it patches httpx2's own transport) would never see.
        """
        from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

        # Typed for httpx's client in the shared base class; the httpx2 subclass takes httpx2's.
        HTTPX2ClientInstrumentor.instrument_client(client, tracer_provider=self.provider)  # type: ignore[arg-type]

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A span per SQL statement (the statement with placeholders, never its values)."""
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        instrumentor = SQLAlchemyInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            # Its declared range stops below SQLAlchemy 2.1, but it only listens to the stable
            # cursor-execute events, which 2.1 keeps (test_tracing proves the spans arrive).
            instrumentor.instrument(
                engine=engine.sync_engine, tracer_provider=self.provider, skip_dep_check=True
            )
            self._uninstall.append(instrumentor)
        if engine.dialect.name == "postgresql":
            # The turn's statements run on the driver, below SQLAlchemy's events: the same
            # span for each, named and described as that instrumentation does.
            self._removals.append(observe_statements(engine, self._statement_span))

    def _statement_span(self, sql: str) -> AbstractContextManager[object]:
        from opentelemetry.trace import SpanKind

        return self.tracer.start_as_current_span(
            sql.split(None, 1)[0],
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": sql},
        )

    def shutdown(self) -> None:
        """Remove the instrumentations and flush the spans not yet exported."""
        for instrumentor in reversed(self._uninstall):
            instrumentor.uninstrument()
        self._uninstall.clear()
        for remove in self._removals:
            remove()
        self._removals.clear()
        self.provider.shutdown()


def setup_tracing(settings: Settings, exporter: SpanExporter | None = None) -> Tracing | None:
    """A tracer provider exporting to `OTEL_EXPORTER_OTLP_ENDPOINT`, or to `exporter` (tests).

    None when neither is given: then nothing is imported, installed or instrumented.
    """
    endpoint = settings.otel_exporter_otlp_endpoint
    if exporter is None and endpoint is None:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES (deployment.environment, ...).
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    if exporter is not None:
        # Synchronous, so a test sees every span as soon as it ends.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert endpoint is not None
        # OTLP/HTTP's traces path under the base endpoint, as the SDK builds it from the
        # variable; OTEL_EXPORTER_OTLP_HEADERS (auth) is read by the exporter itself.
        otlp = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
        # Batched off the request path: exporting never slows a reply.
        provider.add_span_processor(BatchSpanProcessor(otlp))
        log.info("tracing enabled", endpoint=endpoint, service=settings.otel_service_name)
    return Tracing(provider)


def _without_query(span: Span, _scope: dict[str, Any]) -> None:
    """Drop the query string from the server span: a stream ticket is a credential."""
    attributes = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        if isinstance(value := attributes.get(key), str):
            span.set_attribute(key, urlunsplit(urlsplit(value)._replace(query="")))
    for key in _TARGET_ATTRIBUTES:
        if isinstance(value := attributes.get(key), str):
            span.set_attribute(key, value.split("?", 1)[0])
    for key in _QUERY_ATTRIBUTES:
        if key in attributes:
            span.set_attribute(key, "")
