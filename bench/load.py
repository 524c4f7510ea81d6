"""The load generator, run as its own process so it never shares the server's event loop.

Raw asyncio HTTP/1.1 (uvloop when installed), one keep-alive connection per client: an
httpx client costs several times more CPU per request, and on a 2-core machine every cycle
the load generator spends is one the server does not get. Targets either the service
(`--target service`: turns on conversations it creates first, untimed) or the fake upstream
straight (`--target upstream`: the same requests' floor). Writes one JSON object to --out;
while streams run it also prints `OPEN <n>` lines, so the caller can sample server memory at
the moment the most streams are open.

    python bench/load.py --url http://127.0.0.1:8000 --target service --mode closed \
        --concurrency 16 --turns 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fake_upstream import reply_text

UPSTREAM_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "benchmark turn"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


class HttpError(Exception):
    pass


@dataclass
class Connection:
    host: str
    port: int
    headers: bytes
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    last_used: float = 0.0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        self.last_used = time.monotonic()

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        assert self.writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        ).encode()
        self.writer.write(head + self.headers + b"\r\n" + body)

    async def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def read_body(self, headers: dict[bytes, bytes], on_data: object = None) -> bytes:
        """The whole body (Content-Length or chunked); `on_data(piece)` sees each piece."""
        assert self.reader is not None
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
            if callable(on_data):
                on_data(body)
            return body
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            piece = await self.reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(piece[:-2])
            if callable(on_data):
                on_data(piece[:-2])

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        # A keep-alive connection idle past the server's timeout (uvicorn: 5 s) was closed by
        # it: open a new one rather than send into the closed one, as HTTP clients do. One
        # idle for nearly that long may be closing while the request goes out (a reset, seen
        # under load), so it is replaced too, the way pooling clients expire idle ones early.
        stale = time.monotonic() - self.last_used > 4.0
        if self.writer is None or stale or (self.reader is not None and self.reader.at_eof()):
            self.close()
            await self.open()
        self.send(method, path, body)
        status, headers = await self.read_head()
        body = await self.read_body(headers)
        self.last_used = time.monotonic()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Target:
    url: str
    kind: str  # service or upstream
    api_key: str | None
    turns_per_conversation: int = 10
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def connection(self) -> Connection:
        auth = f"authorization: Bearer {self.api_key}\r\n".encode() if self.api_key else b""
        return Connection(self.host, self.port, auth)

    async def conversations(self, connection: Connection, count: int) -> list[str]:
        if self.kind == "upstream":
            return [""] * count
        made = []
        for _ in range(count):
            for attempt in range(30):
                status, body = await connection.request(
                    "POST", "/api/v1/conversations", b'{"title":"bench"}'
                )
                if status != 503:
                    break
                # An overloaded server (the last level's backlog) sheds with 503: wait it out.
                await asyncio.sleep(1 + attempt)
            if status != 201:
                raise HttpError(f"create conversation: {status} {body[:200]!r}")
            made.append(json.loads(body)["id"])
        return made

    def turn(self, conversation_id: str, stream: bool = False) -> tuple[str, bytes]:
        if self.kind == "upstream":
            return "/v1/chat/completions", UPSTREAM_BODY
        body = json.dumps({"content": "benchmark turn", "stream": stream}).encode()
        return f"/api/v1/conversations/{conversation_id}/messages", body


async def closed_loop(
    target: Target, concurrency: int, turns: int, seconds: float
) -> dict[str, object]:
    """`concurrency` clients, each sending its next turn when the last one is answered.

    Stops after `turns` turns or `seconds`, whichever comes first. Every client starts with one
    conversation made before the clock starts and makes a new one (outside the timed turn)
    every --turns-per-conversation turns, so the history a turn sends stays chat-sized.
    """
    connections = [target.connection() for _ in range(concurrency)]
    gate = asyncio.Semaphore(32)

    async def prepare(connection: Connection) -> str:
        async with gate:
            await connection.open()
            return (await target.conversations(connection, 1))[0]

    first = await asyncio.gather(*(prepare(c) for c in connections))
    latencies: list[float] = []
    failures: list[str] = []
    remaining = turns
    deadline = time.perf_counter() + seconds

    async def client(connection: Connection, conversation: str) -> None:
        nonlocal remaining
        done = 0
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            if done and done % target.turns_per_conversation == 0:
                conversation = (await target.conversations(connection, 1))[0]
            path, body = target.turn(conversation)
            done += 1
            started = time.perf_counter()
            status, reply = await connection.request("POST", path, body)
            if status in (200, 201):
                latencies.append(time.perf_counter() - started)
            else:
                failures.append(f"{status} {reply[:200]!r}")

    began = time.perf_counter()
    await asyncio.gather(*(client(c, o) for c, o in zip(connections, first, strict=True)))
    elapsed = time.perf_counter() - began
    for connection in connections:
        connection.close()
    return _turns_result(latencies, failures, elapsed)


def _turns_result(latencies: list[float], failures: list[str], elapsed: float) -> dict[str, object]:
    """Answered turns per second (failures do not count) and the answered turns' latencies."""
    return {
        "rate": len(latencies) / elapsed,
        "latencies": latencies,
        "elapsed": elapsed,
        "failed": len(failures),
        "failure": failures[0] if failures else None,
    }


async def open_loop(target: Target, rate: float, turns: int) -> dict[str, object]:
    """Turns started at a fixed `rate`, whether or not earlier ones were answered.

    Latency counts from the scheduled start, so a stalled server cannot hide its queue.
    """
    setup = target.connection()
    await setup.open()
    # A conversation takes one turn at a time (409 otherwise): a turn takes a free one, and
    # a second's worth are made up front so that a free one is nearly always there.
    free = await target.conversations(setup, max(1, math.ceil(rate)))
    idle: list[Connection] = []
    latencies: list[float] = []
    # (seconds after the first scheduled start, latency): do slow turns cluster in time?
    timeline: list[tuple[float, float]] = []
    failures: list[str] = []

    async def one(index: int, scheduled: float) -> None:
        connection = idle.pop() if idle else target.connection()
        conversation = free.pop(0) if free else (await target.conversations(connection, 1))[0]
        path, body = target.turn(conversation)
        status, reply = await connection.request("POST", path, body)
        if status in (200, 201):
            latencies.append(time.perf_counter() - scheduled)
            timeline.append((scheduled - began, latencies[-1]))
        else:
            failures.append(f"{status} {reply[:200]!r}")
        idle.append(connection)
        free.append(conversation)

    began = time.perf_counter()
    tasks = []
    for index in range(turns):
        scheduled = began + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    setup.close()
    for connection in idle:
        connection.close()
    return {**_turns_result(latencies, failures, elapsed), "timeline": timeline}


async def streams(target: Target, clients: int, chunks: int, ramp: float) -> dict[str, object]:
    """`clients` streams at once, each read to its end and checked complete.

    Complete: the service's stream has `start`, deltas adding up to exactly the upstream's
    reply text, one `done` last, and event ids `<reply id>/1..n`; the upstream's own stream
    has every content chunk and `[DONE]`.
    """
    expected = reply_text(chunks)
    setup = [target.connection() for _ in range(min(32, clients))]
    for connection in setup:
        await connection.open()
    per = math.ceil(clients / len(setup))
    made = await asyncio.gather(*(target.conversations(c, per) for c in setup))
    conversations = [c for group in made for c in group][:clients]
    for connection in setup:
        connection.close()

    open_now = 0
    open_peak = 0
    ttft: list[float] = []
    total: list[float] = []
    lost: dict[str, int] = {}

    async def one(index: int, conversation_id: str) -> None:
        nonlocal open_now, open_peak
        await asyncio.sleep(ramp * index / clients)
        connection = target.connection()
        began = time.perf_counter()
        first: list[float] = []
        opened = False
        try:
            await connection.open()
            path, body = target.turn(conversation_id, stream=True)
            connection.send("POST", path, body)
            status, headers = await connection.read_head()
            if status != 200:
                raise HttpError(f"HTTP {status}")
            open_now += 1
            opened = True
            open_peak = max(open_peak, open_now)
            marker = b"event: delta" if target.kind == "service" else b'"content":"tok'

            def on_data(piece: bytes) -> None:
                if not first and marker in piece:
                    first.append(time.perf_counter() - began)

            raw = await connection.read_body(headers, on_data)
            problem = _check_service(raw, expected) if target.kind == "service" else None
            if target.kind == "upstream" and (
                raw.count(b'"content":"tok') != chunks or b"[DONE]" not in raw
            ):
                problem = "upstream stream incomplete"
            if problem is not None:
                raise HttpError(problem)
            total.append(time.perf_counter() - began)
            ttft.append(first[0] if first else float("nan"))
        except (OSError, asyncio.IncompleteReadError, HttpError, ValueError) as error:
            why = str(error) if isinstance(error, HttpError) else type(error).__name__
            lost[why] = lost.get(why, 0) + 1
        finally:
            if opened:
                open_now -= 1
            connection.close()

    async def report_open() -> None:
        while True:
            print(f"OPEN {open_now}", flush=True)
            await asyncio.sleep(0.1)

    reporter = asyncio.create_task(report_open())
    began = time.perf_counter()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(conversations)))
    elapsed = time.perf_counter() - began
    reporter.cancel()
    return {
        "completed": len(total),
        "lost": lost,
        "ttft": ttft,
        "total": total,
        "open_peak": open_peak,
        "elapsed": elapsed,
    }


def _check_service(raw: bytes, expected: str) -> str | None:
    """Why a service stream is incomplete, or None when it is whole."""
    names: list[str] = []
    ids: list[str] = []
    text: list[str] = []
    reply_id = None
    error_code = None
    for frame in raw.decode().split("\n\n"):
        name = data = event_id = None
        for line in frame.split("\n"):
            key, _, value = line.partition(": ")
            if key == "event":
                name = value
            elif key == "data":
                data = value
            elif key == "id":
                event_id = value
        if name is None:
            continue
        names.append(name)
        ids.append(event_id or "")
        body = json.loads(data or "null")
        if name == "start":
            reply_id = body["message_id"]
        elif name == "delta":
            text.append(body["content"])
        elif name == "error":
            error_code = body.get("code") if isinstance(body, dict) else None
    if error_code is not None:
        return f"error event {error_code}"
    if not names or names[-1] != "done" or names.count("done") != 1 or "error" in names:
        return f"terminal events {[n for n in names if n in ('done', 'error')]}"
    if ids != [f"{reply_id}/{position}" for position in range(1, len(ids) + 1)]:
        return "event ids skip or repeat"
    if "".join(text) != expected:
        return "streamed text differs from the upstream's"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--target", choices=("service", "upstream"), required=True)
    parser.add_argument("--mode", choices=("closed", "open", "streams"), required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3600, help="closed loop: stop after")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--ramp", type=float, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--turns-per-conversation", type=int, default=10)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    target = Target(args.url, args.target, args.api_key, args.turns_per_conversation)
    if args.mode == "closed":
        result = asyncio.run(closed_loop(target, args.concurrency, args.turns, args.seconds))
    elif args.mode == "open":
        result = asyncio.run(open_loop(target, args.rate, args.turns))
    else:
        result = asyncio.run(streams(target, args.concurrency, args.chunks, args.ramp))
    # A file, not stdout: a large result through a pipe can arrive cut.
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
