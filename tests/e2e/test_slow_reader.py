"""A client that stops reading holds up nothing (RELIABILITY.md promise 10, slow readers).

The generation writes every event to the reply's event log and listeners read the log at
their own pace: the socket fills, uvicorn stops writing (its flow control waits for the
client) and the listener stops reading the log, so nothing piles up per connection. The reply
still completes and is stored on time; the reader, when it reads again, gets all of it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.fakes.upstream import FakeUpstream, Reply, running_upstream
from tests.sse import parse_frames

# About 6 MB of events: more than the kernel's socket buffers on both ends can hold.
WORDS = 6_000
WORD = "x" * 999


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        fake.default = Reply(text=" ".join([WORD] * WORDS))
        yield fake


@pytest.fixture
def server(
    database_url: str, upstream: FakeUpstream, clean_database: None, tmp_path: Path
) -> Iterator[LiveServer]:
    env = {
        "DATABASE_URL": database_url,
        "OPENAI_API_KEY": upstream.api_key,
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "PROVIDER_MAX_RETRIES": "0",
    }
    live = start_server(env, tmp_path / "server.log")
    try:
        yield live
    finally:
        stop_server(live)


async def post_and_stop_reading(
    server: LiveServer, conversation_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a streamed turn on a socket with a tiny receive buffer, and read nothing yet."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    body = json.dumps({"content": "Say a lot.", "stream": True}).encode()
    writer.write(
        f"POST /api/v1/conversations/{conversation_id}/messages HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer


class TestSlowReader:
    async def test_a_reader_that_stops_reading_does_not_hold_up_its_reply(
        self, server: LiveServer
    ) -> None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            created = await http.post(
                "/api/v1/conversations", json={"provider": "openai", "model": "gpt-4o-mini"}
            )
            assert created.status_code == 201, created.text
            conversation_id = created.json()["id"]
            reader, writer = await post_and_stop_reading(server, conversation_id)
            try:
                # The reply finishes and is stored while its only reader reads nothing.
                async with asyncio.timeout(60):
                    while True:
                        page = await http.get(f"/api/v1/conversations/{conversation_id}/messages")
                        items = page.json()["items"]
                        reply = items[-1] if items else {"role": "user"}
                        if reply["role"] == "assistant" and reply["status"] != "in_progress":
                            break
                        await asyncio.sleep(0.2)
                assert reply["status"] == "completed"
                assert len(reply["content"]) == WORDS * (len(WORD) + 1) - 1
                assert (await http.get("/health")).status_code == 200

                # Reading again, the client gets every event, in order, then the end.
                async with asyncio.timeout(60):
                    raw = await reader.read()
            finally:
                writer.close()

        head, _, chunked = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        frames = parse_frames(dechunk(chunked).decode())
        events = [frame for frame in frames if frame.event is not None]
        assert events[-1].event == "done"
        text = "".join(frame.json()["content"] for frame in events if frame.event == "delta")
        assert text == reply["content"]


def dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body."""
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
