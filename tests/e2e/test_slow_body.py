"""A client that never finishes its request body holds no connection (RELIABILITY.md 10).

uvicorn itself waits for a body for as long as the client keeps the socket open; with
BODY_READ_TIMEOUT_SECONDS the service answers 408 `request_timeout` once that time has
passed since the request began, and the connection is closed.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import LiveServer, start_server, stop_server

READ_TIMEOUT_S = 1


@pytest.fixture
def server(database_url: str, clean_database: None, tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(
        {"DATABASE_URL": database_url, "BODY_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_S)},
        tmp_path / "server.log",
    )
    try:
        yield live
    finally:
        stop_server(live)


def send_part_of_a_body(server: LiveServer, path: str) -> tuple[bytes, float]:
    """Declare 100 bytes, send 10, then wait: everything the server sends until it closes
    the connection, and how long that took."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=READ_TIMEOUT_S + 5) as sock:
        started = time.monotonic()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n".encode()
            + b'{"title": '
        )
        received = b""
        while chunk := sock.recv(65536):  # b"": the server closed the connection
            received += chunk
        return received, time.monotonic() - started


def status_headers_body(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, json.loads(body)


class TestSlowBody:
    def test_a_body_that_never_finishes_is_408_and_the_connection_is_closed(
        self, server: LiveServer
    ) -> None:
        raw, elapsed = send_part_of_a_body(server, "/api/v1/conversations")

        status, headers, problem = status_headers_body(raw)
        assert status == 408, raw
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert problem["code"] == "request_timeout"
        assert problem["request_id"] == headers["x-request-id"]
        assert READ_TIMEOUT_S - 0.1 <= elapsed < READ_TIMEOUT_S + 2

    def test_an_openai_request_that_never_finishes_gets_openais_408(
        self, server: LiveServer
    ) -> None:
        raw, elapsed = send_part_of_a_body(server, "/v1/chat/completions")

        status, headers, body = status_headers_body(raw)
        assert status == 408, raw
        assert headers["connection"] == "close"
        assert body["error"] == {
            "message": f"request body was not received within {READ_TIMEOUT_S} seconds",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_timeout",
        }
        assert elapsed < READ_TIMEOUT_S + 2
