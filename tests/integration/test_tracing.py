"""Traces: one trace per request holding its HTTP, SQL and provider spans; log lines carry its id.

Spans are collected by an in-memory exporter installed through the app's own tracing set-up
(`create_app(..., span_exporter=...)`), the path `OTEL_EXPORTER_OTLP_ENDPOINT` takes with OTLP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.core.config import Settings
from app.core.tracing import setup_tracing
from app.main import create_app
from tests.factories import create_conversation
from tests.fakes.upstream import FakeUpstream, Reply

StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
Lines = list[dict[str, Any]]
MARKER = "okapi-marker-58d1"  # message text: never in a span


@pytest.fixture
def read_log(capsys: pytest.CaptureFixture[str]) -> Callable[[], Lines]:
    def read() -> Lines:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    return read


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced_settings(make_settings: MakeSettings, upstream: FakeUpstream) -> Settings:
    return make_settings(openai_api_key=upstream.api_key, openai_base_url=f"{upstream.url}/v1")


@pytest.fixture
async def client(
    start_app: StartApp,
    make_settings: MakeSettings,
    upstream: FakeUpstream,
    spans: InMemorySpanExporter,
) -> httpx.AsyncClient:
    settings = traced_settings(make_settings, upstream)
    started: httpx.AsyncClient = await start_app(settings, span_exporter=spans)
    return started


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def trace_of(spans: tuple[ReadableSpan, ...], server: ReadableSpan) -> list[ReadableSpan]:
    assert server.context is not None
    return [
        s for s in spans if s.context is not None and s.context.trace_id == server.context.trace_id
    ]


def server_span(spans: tuple[ReadableSpan, ...], method: str, route: str) -> ReadableSpan:
    [span] = [
        s
        for s in spans
        if s.kind is SpanKind.SERVER
        and s.attributes
        and s.attributes.get("http.route") == route
        and s.attributes.get("http.method", s.attributes.get("http.request.method")) == method
    ]
    return span


MESSAGES_ROUTE = "/api/v1/conversations/{conversation_id}/messages"


class TestATurnThroughTheUpstream:
    async def test_http_sql_provider_and_httpx_spans_share_one_trace(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, spans: InMemorySpanExporter
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Reply("Traced."))
        spans.clear()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
        )

        assert response.status_code == 201, response.text
        finished = spans.get_finished_spans()
        server = server_span(finished, "POST", MESSAGES_ROUTE)
        in_trace = trace_of(finished, server)
        sql = [s for s in in_trace if s.attributes and "db.system" in s.attributes]
        assert len(sql) >= 2  # the user's message is stored before the call, the reply after
        [call] = [s for s in in_trace if s.name == "chat gpt-4o"]
        assert call.attributes is not None
        assert call.attributes["gen_ai.provider.name"] == "openai"
        assert call.attributes["gen_ai.request.model"] == "gpt-4o"
        usage = response.json()["usage"]
        assert call.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
        assert call.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
        assert call.attributes["chat_api.retries"] == 0
        [upstream_call] = [
            s for s in in_trace if s.kind is SpanKind.CLIENT and s.name.startswith("POST")
        ]
        assert upstream_call.parent is not None
        assert call.context is not None
        assert upstream_call.parent.span_id == call.context.span_id

    async def test_the_log_lines_of_the_request_carry_its_trace_id(
        self,
        start_app: StartApp,
        make_settings: MakeSettings,
        upstream: FakeUpstream,
        spans: InMemorySpanExporter,
        read_log: Callable[[], Lines],
    ) -> None:
        # Started here, not in a fixture: its log handler must bind to the captured stdout.
        settings = traced_settings(make_settings, upstream)
        client = await start_app(settings, span_exporter=spans)
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Reply("Logged."))
        spans.clear()
        read_log()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
        )

        assert response.status_code == 201, response.text
        server = server_span(spans.get_finished_spans(), "POST", MESSAGES_ROUTE)
        assert server.context is not None
        request_id = response.headers["X-Request-ID"]
        lines = [line for line in read_log() if line.get("request_id") == request_id]
        events = {line["event"] for line in lines}
        assert {"request", "provider call", "turn completed"} <= events
        assert {line.get("trace_id") for line in lines} == {hex_id(server.context.trace_id, 32)}
        assert all(len(line["span_id"]) == 16 for line in lines)

    async def test_message_text_in_the_query_string_never_reaches_a_span(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, spans: InMemorySpanExporter
    ) -> None:
        conversation = await create_conversation(client, provider="openai", model="gpt-4o")
        upstream.script(Reply("Quiet."))
        spans.clear()

        async with client.stream(
            "GET", f"/api/v1/conversations/{conversation['id']}/stream", params={"content": MARKER}
        ) as response:
            await response.aread()

        assert response.status_code == 200
        finished = spans.get_finished_spans()
        assert any(s.kind is SpanKind.SERVER for s in finished)
        for span in finished:
            assert MARKER not in json.dumps(dict(span.attributes or {}), default=str)
            assert MARKER not in span.name


class TestWithoutAnEndpoint:
    def test_no_tracer_provider_is_set_up(self, settings: Settings) -> None:
        assert settings.otel_exporter_otlp_endpoint is None

        assert setup_tracing(settings) is None
        assert not type(trace.get_tracer_provider()).__module__.startswith("opentelemetry.sdk")

    async def test_requests_leave_no_trace_ids_in_the_log(
        self, start_app: StartApp, settings: Settings, read_log: Callable[[], Lines]
    ) -> None:
        client = await start_app(settings)
        read_log()

        response = await client.post("/api/v1/conversations", json={})

        assert response.status_code == 201
        request_id = response.headers["X-Request-ID"]
        lines = [line for line in read_log() if line.get("request_id") == request_id]
        assert lines
        assert all("trace_id" not in line for line in lines)


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver that only records what reaches it."""

    received: ClassVar[list[tuple[str, str, int]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, self.headers.get("content-type", ""), len(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


class TestWithAnEndpoint:
    async def test_spans_are_exported_over_otlp_http_when_the_app_stops(
        self, make_settings: MakeSettings, clean_database: None
    ) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _Collector.received.clear()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            app = create_app(make_settings(otel_exporter_otlp_endpoint=endpoint))
            async with (
                LifespanManager(app) as manager,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
                ) as client,
            ):
                response = await client.post("/api/v1/conversations", json={})
                assert response.status_code == 201
        finally:
            server.shutdown()
            server.server_close()

        assert _Collector.received
        path, content_type, size = _Collector.received[0]
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        assert size > 0
