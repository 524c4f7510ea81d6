"""Many concurrent SSE streams against one worker, with the mock provider.

Starts `python -m app` (one worker) on a fresh Postgres database (or SQLite with --sqlite),
optionally with Redis as the event log (--redis), pre-creates one conversation per client, then
has every client POST a `stream: true` message at once and read its stream to the end. Reports
streams completed / failed / lost, time to first token and total duration percentiles,
throughput, and the server's memory per open stream.

A stream is failed when the server refused it (an HTTP error) or ended it with `error`; it is
lost when it ends without exactly one terminal event (last), its event ids skip or repeat
(`<reply id>/1..n`, or 1..n-1 and the fixed end position of a replay from the database), it
is cut, it does not end within --deadline, or its deltas do not add up to the stored reply.
Memory per open stream is the growth of the server's RSS from before the load to the moment
the most streams were open, divided by that number.

    .venv/bin/python bench/streams.py [--clients 1000] [--sqlite] [--redis] [--ramp 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sqlite3
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
import httpx
from server import Server, fresh_database, percentile, raise_fd_limit

# The id position app.services.streaming.streams gives the end of a reply replayed from the
# database.
REPLAY_END_POSITION = 2**31 - 1
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


@dataclass
class Outcome:
    """One client's stream as it saw it."""

    conversation_id: str
    status: str = "failed"  # completed, failed (HTTP or error event) or lost
    why: str = ""
    reply_id: str | None = None
    text: str = ""
    replayed: bool = False  # served as a replay of the stored reply, not live
    ttft_s: float | None = None
    total_s: float | None = None
    events: int = 0


@dataclass
class Load:
    """What the clients share while they run: how many streams are open right now."""

    open_now: int = 0
    open_peak: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    def opened(self) -> None:
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)

    def closed(self) -> None:
        self.open_now -= 1


async def stream_once(
    http: httpx.AsyncClient,
    load: Load,
    outcome: Outcome,
    content: str,
    *,
    delay_s: float,
    deadline_s: float,
) -> None:
    """POST a streamed message and read it to the end, timing the first delta and the end."""
    await asyncio.sleep(delay_s)
    try:
        async with asyncio.timeout(deadline_s):
            await _stream(http, load, outcome, content)
    except TimeoutError:
        outcome.status, outcome.why = "lost", f"no terminal event within {deadline_s:g} s"


async def _stream(http: httpx.AsyncClient, load: Load, outcome: Outcome, content: str) -> None:
    began = time.perf_counter()
    ids: list[str | None] = []
    names: list[str] = []
    parts: list[str] = []
    is_open = False
    try:
        async with http.stream(
            "POST",
            f"/api/v1/conversations/{outcome.conversation_id}/messages",
            json={"content": content, "stream": True},
        ) as response:
            if response.status_code != 200:
                outcome.why = f"HTTP {response.status_code}"
                await response.aread()
                return
            load.opened()
            is_open = True
            event_id: str | None = None
            name: str | None = None
            data: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    field_name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field_name == "id":
                        event_id = value
                    elif field_name == "event":
                        name = value
                    elif field_name == "data":
                        data.append(value)
                    continue
                if name is not None:
                    ids.append(event_id)
                    names.append(name)
                    body = json.loads("\n".join(data))
                    if name == "start":
                        outcome.reply_id = body["message_id"]
                    elif name == "delta":
                        if outcome.ttft_s is None:
                            outcome.ttft_s = time.perf_counter() - began
                        parts.append(body["content"])
                event_id, name, data = None, None, []
    except (httpx.HTTPError, ValueError, KeyError) as error:
        # Cut after the 200 without a terminal event: lost; before it: failed.
        outcome.status = "lost" if is_open else "failed"
        outcome.why = type(error).__name__
        return
    finally:
        if is_open:
            load.closed()
    outcome.total_s = time.perf_counter() - began
    outcome.events = len(names)
    outcome.text = "".join(parts)
    terminals = [n for n in names if n in ("done", "error")]
    positions = _positions(ids, outcome.reply_id)
    outcome.replayed = bool(positions) and positions[-1] == REPLAY_END_POSITION
    if len(terminals) != 1 or names[-1] not in ("done", "error"):
        outcome.status, outcome.why = "lost", f"terminal events: {terminals}"
    elif not positions or positions[0] != 1:
        outcome.status, outcome.why = "lost", f"first event id {ids[0] if ids else None}"
    elif positions[:-1] != list(range(1, len(positions))) or positions[-1] not in (
        len(positions),
        REPLAY_END_POSITION,
    ):
        # A live stream's ids are 1..n; a replay from the database ends at a fixed position.
        outcome.status, outcome.why = "lost", "event ids skip or repeat"
    elif names[-1] == "error":
        outcome.status, outcome.why = "failed", "error event"
    else:
        outcome.status = "completed"


def _positions(ids: list[str | None], reply_id: str | None) -> list[int]:
    """The positions in ids `<reply id>/<position>`; empty when any id is not of that form."""
    positions = []
    for event_id in ids:
        reply, _, position = (event_id or "").partition("/")
        if reply != reply_id or not position.isdigit():
            return []
        positions.append(int(position))
    return positions


async def verify_stored(base_url: str, outcomes: list[Outcome], sample: int) -> int:
    """Compare streamed text with the stored reply; a mismatch makes the stream lost.

    Returns how many were compared (a reply that cannot be fetched is left uncompared).
    """
    completed = [o for o in outcomes if o.status == "completed"]
    chosen = completed if sample <= 0 else completed[:: max(1, len(completed) // sample)]
    compared = 0

    async def check(http: httpx.AsyncClient, outcome: Outcome) -> None:
        nonlocal compared
        url = f"/api/v1/conversations/{outcome.conversation_id}/messages"
        for _ in range(3):
            try:
                page = await http.get(url)
                page.raise_for_status()
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
        else:
            return
        compared += 1
        reply = page.json()["items"][-1]
        if reply["id"] != outcome.reply_id or reply["content"] != outcome.text:
            outcome.status, outcome.why = "lost", "streamed text differs from the stored reply"
        elif reply["status"] != "completed":
            outcome.status, outcome.why = "lost", f"stored as {reply['status']}"

    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
        await asyncio.gather(*(check(http, o) for o in chosen))
    return compared


@dataclass
class Memory:
    """The server's RSS before the load, at its peak, and when the most streams were open."""

    baseline: int
    peak: int
    at_most_open: int = 0
    most_open: int = 0

    @property
    def per_open_stream(self) -> float:
        if not self.most_open:
            return float("nan")
        return (self.at_most_open - self.baseline) / self.most_open


async def sample_memory(server: Server, load: Load, stop: asyncio.Event, memory: Memory) -> None:
    """Sample the server's RSS every 20 ms while the clients run."""
    while not stop.is_set():
        rss = server.rss_bytes()
        memory.peak = max(memory.peak, rss)
        if load.open_now >= memory.most_open:
            memory.most_open, memory.at_most_open = load.open_now, rss
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


async def set_up(base_url: str, clients: int, users: int) -> list[str]:
    """Warm the server up (imports, pools, tokenizers), then one conversation per client."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

        async def post(url: str, body: dict[str, str]) -> dict[str, str]:
            for attempt in range(5):
                try:
                    response = await http.post(url, json=body)
                    response.raise_for_status()
                    created: dict[str, str] = response.json()
                    return created
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)
            raise AssertionError("unreachable")

        warm = await post("/api/v1/conversations", {"title": "warm-up"})
        await post(f"/api/v1/conversations/{warm['id']}/messages", {"content": "warm up"})
        gate = asyncio.Semaphore(50)

        async def create(user: str) -> str:
            async with gate:
                created = await post("/api/v1/conversations", {"title": "bench", "user_id": user})
            return str(created["id"])

        return await asyncio.gather(*(create(f"bench-user-{i % users}") for i in range(clients)))


async def run(args: argparse.Namespace, server: Server) -> list[Outcome]:
    base_url = server.base_url
    clients = args.clients
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    timeout = httpx.Timeout(args.timeout, connect=args.timeout, pool=args.timeout)
    conversation_ids = await set_up(base_url, clients, args.users or clients)
    # A fresh client: no kept-alive connection from the set-up is reused (and found closed).
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:
        load = Load(outcomes=[Outcome(c) for c in conversation_ids])
        await asyncio.sleep(0.5)
        baseline = server.rss_bytes()
        memory = Memory(baseline, baseline)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_memory(server, load, stop, memory))

        began = time.perf_counter()
        await asyncio.gather(
            *(
                stream_once(
                    http,
                    load,
                    outcome,
                    f"benchmark stream {index}",
                    delay_s=args.ramp * index / clients,
                    deadline_s=args.deadline,
                )
                for index, outcome in enumerate(load.outcomes)
            )
        )
        elapsed = time.perf_counter() - began
        stop.set()
        await sampler
    verified = await verify_stored(base_url, load.outcomes, args.verify)
    report(args, load, elapsed, memory, verified)
    return load.outcomes


def report(
    args: argparse.Namespace,
    load: Load,
    elapsed: float,
    memory: Memory,
    verified: int,
) -> None:
    outcomes = load.outcomes
    by_status = {s: [o for o in outcomes if o.status == s] for s in ("completed", "failed", "lost")}
    done = by_status["completed"]
    ttft = [o.ttft_s * 1000 for o in done if o.ttft_s is not None]
    total = [o.total_s * 1000 for o in done if o.total_s is not None]
    events = sum(o.events for o in done)
    mib = 1024 * 1024
    print(
        f"chat-api streams: {args.clients} clients ({args.users or args.clients} users), "
        "1 worker, "
        f"{'SQLite' if args.sqlite else 'Postgres'}, "
        f"event log {_event_log(args)}, "
        f"mock {args.chunk_delay_ms:g} ms/token, "
        f"DB pool {args.pool_size}, starts spread over {args.ramp:g} s, "
        f"{os.cpu_count()} CPUs ({platform.machine()}), "
        f"client on the same machine, load average {os.getloadavg()[0]:.1f}"
    )
    rows = [
        ("streams completed", f"{len(done)}"),
        ("streams failed", f"{len(by_status['failed'])}"),
        ("streams lost", f"{len(by_status['lost'])}"),
        ("verified against stored reply", f"{verified}"),
        ("completed as a database replay", f"{sum(o.replayed for o in done)}"),
        ("time to first token p50 / p99", f"{_ms(ttft, 0.5)} / {_ms(ttft, 0.99)} ms"),
        ("stream duration p50 / p99", f"{_ms(total, 0.5)} / {_ms(total, 0.99)} ms"),
        ("wall time", f"{elapsed:.2f} s"),
        ("throughput", f"{len(done) / elapsed:.0f} streams/s, {events / elapsed:.0f} events/s"),
        ("most streams open at once", f"{load.open_peak}"),
        (
            "server RSS before / most open / peak",
            f"{memory.baseline / mib:.0f} / {memory.at_most_open / mib:.0f} / "
            f"{memory.peak / mib:.0f} MiB",
        ),
        ("server memory per open stream", _per_stream(memory)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    reasons: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.status != "completed":
            reasons[outcome.why] = reasons.get(outcome.why, 0) + 1
    for why, count in sorted(reasons.items(), key=lambda item: -item[1]):
        print(f"  ! {count} x {why}")


def _per_stream(memory: Memory) -> str:
    if memory.most_open < 50:
        return "n/a (too few streams open at once to tell)"
    return f"{memory.per_open_stream / 1024:.0f} KiB"


def _event_log(args: argparse.Namespace) -> str:
    if not args.redis:
        return "in-process"
    pool = args.redis_max_connections
    return "Redis" + (" (default pool)" if pool is None else f" (pool {pool})")


def _ms(samples: list[float], fraction: float) -> str:
    return f"{percentile(samples, fraction):.0f}"


async def reply_ids(database_url: str) -> list[str]:
    """Every reply in the run's own (fresh) database: whose event logs this run made."""
    query = "SELECT id FROM messages WHERE role = 'assistant'"
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as connection:
            return [str(uuid.UUID(str(row[0]))) for row in connection.execute(query)]
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        return [str(row["id"]) for row in await connection.fetch(query)]
    finally:
        await connection.close()


async def forget_event_logs(replies: list[str]) -> None:
    """Delete the Redis keys of this run's replies (never anything else)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [f"chat:events:{reply}{suffix}" for reply in replies for suffix in ("", ":seq")]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    finally:
        await redis.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--sqlite", action="store_true", help="use SQLite instead of Postgres")
    parser.add_argument("--redis", action="store_true", help=f"event log in Redis ({REDIS_URL})")
    parser.add_argument(
        "--redis-max-connections",
        type=int,
        default=None,
        help="the server's Redis pool size, set through REDIS_URL (redis-py's default is 100)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        help="distinct users the clients belong to (0: one each); 1 makes every reply charge "
        "the same usage row",
    )
    parser.add_argument("--chunk-delay-ms", type=float, default=20)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument(
        "--ramp", type=float, default=0, help="spread the clients' starts over this many seconds"
    )
    parser.add_argument(
        "--deadline", type=float, default=300, help="seconds a stream may take before it is lost"
    )
    parser.add_argument("--timeout", type=float, default=120, help="httpx timeouts (seconds)")
    parser.add_argument("--verify", type=int, default=0, help="stored replies to compare (0: all)")
    args = parser.parse_args()

    raise_fd_limit(4 * args.clients + 1024)  # client sockets, server sockets, Redis, DB
    async with fresh_database(sqlite=args.sqlite) as database_url:
        env = {
            "DATABASE_URL": database_url,
            # Auth off (so not `production`, which refuses that): the streams are measured.
            "APP_ENV": "test",
            "AUTH_ENABLED": "false",
            "WEB_CONCURRENCY": "1",
            "DEFAULT_PROVIDER": "mock",
            "MOCK_CHUNK_DELAY_MS": str(args.chunk_delay_ms),
            "DB_POOL_SIZE": str(args.pool_size),
            "REDIS_URL": "",  # empty: unset
        }
        if args.redis:
            pool = args.redis_max_connections
            env["REDIS_URL"] = REDIS_URL if pool is None else f"{REDIS_URL}?max_connections={pool}"
        server = Server.start(env)
        try:
            await server.wait_healthy()
            await run(args, server)
        finally:
            server.stop()
            if args.redis:
                await forget_event_logs(await reply_ids(database_url))


if __name__ == "__main__":
    asyncio.run(main())
