"""A minimal, fast OpenAI-compatible upstream for benchmarks: `POST /v1/chat/completions`.

A raw asyncio Protocol (uvloop when installed), HTTP/1.1 keep-alive, in --processes processes
sharing the port (SO_REUSEPORT). Every request waits --latency-ms, then answers: with
`"stream": true`, --chunks content chunks (--chunk-delay-ms apart; 0 sends them in one write),
a usage chunk and `[DONE]`; otherwise one chat.completion JSON. The reply text is fixed, so
a client can check what it got: `reply_text(chunks)`.

    .venv/bin/python bench/fake_upstream.py --port 8100 --latency-ms 20 [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import time

CHUNK_TEXT = "tok{} "


def reply_text(chunks: int) -> str:
    return "".join(CHUNK_TEXT.format(i) for i in range(chunks))


def _sse_parts(chunks: int) -> tuple[bytes, list[bytes], bytes]:
    """The stream, pre-encoded: head (status + first role chunk), content chunks, tail."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1}
    base["model"] = "gpt-4o-mini"

    def event(choices: list[object], **extra: object) -> bytes:
        payload = json.dumps({**base, "choices": choices, **extra}, separators=(",", ":"))
        return b"data: " + payload.encode() + b"\n\n"

    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    ) + _chunked(event([{"index": 0, "delta": {"role": "assistant", "content": ""}}]))
    body = [
        _chunked(event([{"index": 0, "delta": {"content": CHUNK_TEXT.format(i)}}]))
        for i in range(chunks)
    ]
    usage = {"prompt_tokens": 20, "completion_tokens": chunks, "total_tokens": 20 + chunks}
    tail = (
        _chunked(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        + _chunked(event([], usage=usage))
        + _chunked(b"data: [DONE]\n\n")
        + b"0\r\n\r\n"
    )
    return head, body, tail


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _json_reply(chunks: int) -> bytes:
    body = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply_text(chunks)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": chunks,
                "total_tokens": 20 + chunks,
            },
        },
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Upstream(asyncio.Protocol):
    """One connection: parse requests by Content-Length, answer each after the latency."""

    def __init__(self, options: argparse.Namespace, sse: tuple[bytes, list[bytes], bytes]) -> None:
        self.options = options
        self.sse = sse
        self.json = _json_reply(options.chunks)
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[bool] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's is no subclass
        self.worker = asyncio.get_running_loop().create_task(self._answer())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end >= 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            compact = body.replace(b" ", b"")
            self.queue.put_nowait(b'"stream":true' in compact)

    async def _answer(self) -> None:
        """Answers in request order (HTTP/1.1), each after the latency from its arrival."""
        latency = self.options.latency_ms / 1000
        delay = self.options.chunk_delay_ms / 1000
        head, body, tail = self.sse
        while True:
            streaming = await self.queue.get()
            arrived = time.monotonic()
            await asyncio.sleep(max(0.0, latency - (time.monotonic() - arrived)))
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            if not streaming:
                transport.write(self.json)
            elif delay <= 0:
                transport.write(head + b"".join(body) + tail)
            else:
                transport.write(head)
                for piece in body:
                    await asyncio.sleep(delay)
                    if transport.is_closing():
                        return
                    transport.write(piece)
                transport.write(tail)


def _serve(options: argparse.Namespace) -> None:
    sock = _listener(options.port)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sse = _sse_parts(options.chunks)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Upstream(options, sse), sock=sock, backlog=8192)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(8192)
    return sock


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--chunk-delay-ms", type=float, default=0)
    parser.add_argument("--processes", type=int, default=1)
    return parser.parse_args(argv)


def main() -> None:
    options = parse_args()
    if options.processes <= 1:
        _serve(options)
        return
    children = [
        multiprocessing.Process(target=_serve, args=(options,)) for _ in range(options.processes)
    ]
    for child in children:
        child.start()
    signal.signal(signal.SIGTERM, lambda *_: [c.terminate() for c in children])
    for child in children:
        child.join()


if __name__ == "__main__":
    main()
