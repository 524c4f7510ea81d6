"""A request body that never finishes is cut off: 408 `request_timeout`, connection closed.

Driven in process through raw ASGI, with a `receive` that hands over part of a body and then
stalls, as a client that stops sending does; BODY_READ_TIMEOUT_SECONDS is tiny here.
tests/e2e/test_slow_body.py proves the same over a real socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from app.core.config import Settings
from tests.factories import create_conversation
from tests.sse import parse_frames

StartApp = Callable[..., Any]
READ_TIMEOUT_S = 0.3
JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass
class RawExchange:
    """What an app sent back to one raw ASGI request."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def starts(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "http.response.start"]

    @property
    def status(self) -> int:
        assert len(self.starts) == 1, self.starts  # one response, never a second one
        return int(self.starts[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.starts[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] != "http.response.start"
        )


async def send_raw(
    app: FastAPI,
    state: dict[str, Any],
    path: str,
    chunks: list[bytes],
    *,
    declared: int,
    pause_s: float = 0.0,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RawExchange:
    """POST `chunks` (`pause_s` apart) of a body declared `declared` bytes long, then stall:
    the client neither sends more nor goes away."""
    exchange = RawExchange()
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            await asyncio.sleep(pause_s)
            chunk = pending.pop(0)
            done = not pending and sum(map(len, chunks)) >= declared
            return {"type": "http.request", "body": chunk, "more_body": not done}
        await asyncio.Event().wait()  # stalls for good
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        exchange.messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-length", str(declared).encode()),
            *JSON_HEADERS,
            *(headers or []),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": dict(state),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return exchange


@dataclass
class RawApp:
    app: FastAPI
    state: dict[str, Any]
    client: httpx.AsyncClient


async def raw_app(
    start_app: StartApp,
    make_settings: Callable[..., Settings],
    app_of: Callable[[httpx.AsyncClient], FastAPI],
    state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    **settings: Any,
) -> RawApp:
    client = await start_app(make_settings(body_read_timeout_seconds=READ_TIMEOUT_S, **settings))
    return RawApp(app_of(client), state_of(client), client)


def expect_timeout_problem(exchange: RawExchange) -> None:
    assert exchange.status == 408, exchange.body
    assert exchange.headers["connection"] == "close"
    assert exchange.headers["content-type"] == "application/problem+json"
    problem = json.loads(exchange.body)
    assert problem["code"] == "request_timeout"
    assert problem["status"] == 408
    assert problem["request_id"] == exchange.headers["x-request-id"]


class TestBodyReadTimeout:
    async def test_a_body_that_stops_arriving_is_408_with_connection_close(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        app_of: Callable[[httpx.AsyncClient], FastAPI],
        state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    ) -> None:
        served = await raw_app(start_app, make_settings, app_of, state_of)
        started = asyncio.get_running_loop().time()

        exchange = await send_raw(
            served.app, served.state, "/api/v1/conversations", [b'{"title": '], declared=100
        )

        expect_timeout_problem(exchange)
        assert asyncio.get_running_loop().time() - started < READ_TIMEOUT_S + 1
        listed = (await served.client.get("/api/v1/conversations")).json()
        assert listed["items"] == []

    async def test_a_keyed_turn_whose_body_stops_is_408_and_leaves_no_claim(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        app_of: Callable[[httpx.AsyncClient], FastAPI],
        state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    ) -> None:
        # The Idempotency-Key dependency reads the body itself, before FastAPI parses it.
        served = await raw_app(start_app, make_settings, app_of, state_of)
        conversation = await create_conversation(served.client)
        url = f"/api/v1/conversations/{conversation['id']}/messages"

        exchange = await send_raw(
            served.app,
            served.state,
            url,
            [b'{"content": "Hel'],
            declared=100,
            headers=[(b"idempotency-key", b"slow-1")],
        )
        retried = await served.client.post(
            url, json={"content": "Hello"}, headers={"Idempotency-Key": "slow-1"}
        )

        expect_timeout_problem(exchange)
        assert retried.status_code == 201, retried.text

    async def test_an_openai_request_whose_body_stops_gets_openais_error_shape(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        app_of: Callable[[httpx.AsyncClient], FastAPI],
        state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    ) -> None:
        served = await raw_app(start_app, make_settings, app_of, state_of)

        exchange = await send_raw(
            served.app, served.state, "/v1/chat/completions", [b'{"model": "mock", '], declared=100
        )

        assert exchange.status == 408, exchange.body
        assert exchange.headers["connection"] == "close"
        error = json.loads(exchange.body)["error"]
        assert error["code"] == "request_timeout"
        assert error["type"] == "invalid_request_error"

    async def test_a_slow_body_that_is_all_in_before_the_deadline_is_served(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        app_of: Callable[[httpx.AsyncClient], FastAPI],
        state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    ) -> None:
        served = await raw_app(start_app, make_settings, app_of, state_of)
        body = json.dumps({"title": "slow but steady"}).encode()
        chunks = [body[:5], body[5:12], body[12:]]

        exchange = await send_raw(
            served.app,
            served.state,
            "/api/v1/conversations",
            chunks,
            declared=len(body),
            pause_s=READ_TIMEOUT_S / 6,
        )

        assert exchange.status == 201, exchange.body
        assert json.loads(exchange.body)["title"] == "slow but steady"

    async def test_a_stream_that_outlasts_the_deadline_is_never_cut(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        app_of: Callable[[httpx.AsyncClient], FastAPI],
        state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    ) -> None:
        # The reply streams for longer than the read timeout while the client sends nothing.
        served = await raw_app(start_app, make_settings, app_of, state_of, mock_chunk_delay_ms=60)
        conversation = await create_conversation(served.client)
        body = json.dumps({"content": "Tell me a long story.", "stream": True}).encode()
        started = asyncio.get_running_loop().time()

        exchange = await send_raw(
            served.app,
            served.state,
            f"/api/v1/conversations/{conversation['id']}/messages",
            [body],
            declared=len(body),
        )

        assert asyncio.get_running_loop().time() - started > READ_TIMEOUT_S
        assert exchange.status == 200
        assert "connection" not in exchange.headers
        events = [frame.event for frame in parse_frames(exchange.body.decode()) if frame.event]
        assert events[0] == "start"
        assert events[-1] == "done"
