"""What the service adds on top of its upstream: throughput, latency overhead, streams, memory.

Everything on loopback, each in its own process: a fake OpenAI-compatible upstream
(bench/fake_upstream.py, fixed --latency-ms), the service (`python -m app`, provider `openai`
pointed at it, on a fresh Postgres database, auth on with an API key made by the CLI, rate
limits off) and the load generator (bench/load.py). The same load is also sent straight to
the upstream: that is the floor, and overhead = the service's latency - the floor's, per
percentile, at the same load.

Prints, for 1 and 2 workers: non-streaming turns/s and overhead p50/p99 at concurrency
1/16/64/256 and at fixed arrival rates (50 and 200 turns/s); then, on one worker, 1,000 and
5,000 concurrent 50-chunk streams (each verified complete against the upstream's text) with
time-to-first-token overhead, total stream time, peak server memory and memory per open
stream; 5,000 twice: with the service's default wait for a database connection (a start that
waits longer is refused, 503) and with starts allowed to wait 60 s; and 5,000 streams held
open together (starts spread over 40 s, 45 chunks 2 s apart); and one worker at 1 and 16
clients in front of an upstream that answers at once (the setting of the issue's yardstick,
a widely used gateway measured in front of a zero-latency fake). Every row also gives the
CPU the service's workers spent per turn (or per completed stream), read from /proc: on a
shared 2-core machine throughput and latency drift between runs, CPU per turn much less.

    .venv/bin/python bench/overhead.py [--quick] [--workers 1,2] [--levels 1,16,64,256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from server import (
    ROOT,
    Server,
    free_port,
    fresh_database,
    percentile,
    raise_fd_limit,
    wait_for_port,
)

BENCH = Path(__file__).resolve().parent
MIB = 1024 * 1024


@dataclass
class Upstream:
    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(cls, latency_ms: float, chunks: int, chunk_delay_ms: float) -> Upstream:
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "fake_upstream.py"),
                f"--port={port}",
                f"--latency-ms={latency_ms}",
                f"--chunks={chunks}",
                f"--chunk-delay-ms={chunk_delay_ms}",
            ]
        )
        wait_for_port(port)
        return cls(process, f"http://127.0.0.1:{port}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


async def run_load(args: list[str], server: Server | None = None) -> dict[str, object]:
    """Run bench/load.py; while it reports open streams, sample the server's memory."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / "load.py"),
            *args,
            f"--out={out.name}",
            stdout=asyncio.subprocess.PIPE,
            cwd=BENCH,
        )
        assert process.stdout is not None
        most_open, rss_at_most_open = 0, 0
        async for line in process.stdout:
            if line.startswith(b"OPEN "):
                now_open = int(line.split()[1])
                if server is not None and now_open >= most_open and now_open > 0:
                    most_open, rss_at_most_open = now_open, server.rss_bytes()
        if await process.wait() != 0:
            raise SystemExit(f"load generator failed: {' '.join(args)}")
        result: dict[str, object] = json.load(out)  # noqa: ASYNC230 - once, after the load
    result["most_open"] = most_open
    result["rss_at_most_open"] = rss_at_most_open
    return result


def ms(samples: object, fraction: float) -> float:
    assert isinstance(samples, list)
    return percentile([s * 1000 for s in samples], fraction)


def _code(failure: object) -> str:
    """`503 not_ready` from a failed turn's `<status> <body>`."""
    status, _, body = str(failure).partition(" ")
    found = re.search(r'"code":"([a-z_]+)"', body)
    return f"{status} {found.group(1)}" if found else status


def api_key_for(database_url: str) -> str:
    """A real key, made the way an operator makes one (`python -m app.cli keys create`)."""
    made = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--user", "bench"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        check=True,
        text=True,
    )
    return made.stdout.strip().splitlines()[-1]


def service_env(database_url: str, upstream: Upstream, workers: int, auth: bool) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "APP_ENV": "production" if auth else "test",
        "AUTH_ENABLED": "true" if auth else "false",
        "JWT_SECRET": "bench-jwt-secret-" + "x" * 32,
        "WEB_CONCURRENCY": str(workers),
        "DEFAULT_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "DB_POOL_SIZE": os.environ.get("BENCH_DB_POOL_SIZE", "20"),
        # One API key plays every client: per-user caps are limits, off like RATE_LIMIT_*.
        "MAX_CONCURRENT_STREAMS_PER_USER": "0",
        "MAX_CONCURRENT_GENERATIONS_PER_USER": "0",
        "RATE_LIMIT_RPM": "",
        "RATE_LIMIT_TPM": "",
        "REDIS_URL": "",
        "CORS_ORIGINS": "",
    }


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.rows: list[str] = []
        self.floor_cache: dict[str, dict[str, object]] = {}

    def emit(self, row: str) -> None:
        print(row, flush=True)
        self.rows.append(row)

    async def floor(self, upstream: Upstream, load: list[str], runs: int = 2) -> dict[str, object]:
        """The load straight to the upstream; `runs` - 1 warm-up runs first."""
        key = " ".join([upstream.url, *load])
        if key not in self.floor_cache:
            base = ["--url", upstream.url, "--target", "upstream"]
            for _ in range(runs - 1):
                await run_load([*base, *load])  # warm-up
            self.floor_cache[key] = await run_load([*base, *load])
        return self.floor_cache[key]

    async def turns(
        self,
        upstream: Upstream,
        workers: int,
        auth: bool,
        levels: list[int],
        *,
        rates: str | None = None,
        note: str = "",
    ) -> None:
        o = self.options
        async with fresh_database() as database_url:
            server = Server.start(service_env(database_url, upstream, workers, auth))
            try:
                await server.wait_healthy(workers)
                base = ["--url", server.base_url, "--target", "service"]
                if auth:
                    base += ["--api-key", api_key_for(database_url)]
                label = (
                    f"{workers} worker{'s' if workers > 1 else ''}, auth {'on' if auth else 'off'}"
                    + note
                )
                loads = [
                    (f"c={c}", ["--mode", "closed", f"--concurrency={c}", f"--seconds={o.seconds}"])
                    for c in levels
                ]
                chosen_rates = o.rates if rates is None else rates
                for rate in (float(r) for r in filter(None, chosen_rates.split(","))):
                    loads.append((f"{rate:g}/s", ["--mode", "open", f"--rate={rate}"]))
                for name, load in loads:
                    rate = float(name[:-2]) if "open" in load else 0
                    turns = max(50, int(rate * o.seconds)) if "open" in load else o.turns
                    floor = await self.floor(upstream, [*load, f"--turns={turns}"])
                    warm = max(50, turns // 10) if "open" in load else 2 * int(name[2:])
                    await run_load([*base, *load, f"--turns={warm}"])  # warm-up
                    cpu_before = server.cpu_seconds()
                    got = await run_load([*base, *load, f"--turns={turns}"])
                    served = got["latencies"]
                    assert isinstance(served, list)
                    cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(1, len(served))
                    l50, l99 = ms(got["latencies"], 0.5), ms(got["latencies"], 0.99)
                    f50, f99 = ms(floor["latencies"], 0.5), ms(floor["latencies"], 0.99)
                    failed = ""
                    if got["failed"]:
                        failed = f" ({got['failed']} failed, {_code(got['failure'])})"
                    self.emit(
                        f"| {label} | {name} | {got['rate']:.0f}{failed} | {floor['rate']:.0f} "
                        f"| {l50:.1f} / {l99:.1f} | {f50:.1f} / {f99:.1f} "
                        f"| **{l50 - f50:.1f} / {l99 - f99:.1f}** | {cpu_ms:.2f} |"
                    )
                peak = server.peak_rss_bytes() / MIB
                self.emit(f"| {label} | peak RSS (all processes) | {peak:.0f} MiB | | | | | |")
            finally:
                server.stop()

    async def streams(
        self,
        upstream: Upstream,
        clients: int,
        pool_wait_s: str,
        *,
        chunks: int,
        ramp: float,
        label: str = "",
        floor_runs: int = 2,
        warm_up: bool = True,
    ) -> None:
        async with fresh_database() as database_url:
            env = service_env(database_url, upstream, 1, True)
            if pool_wait_s:
                env["DB_POOL_TIMEOUT_SECONDS"] = pool_wait_s
            server = Server.start(env)
            try:
                await server.wait_healthy()
                key = api_key_for(database_url)
                base = ["--url", server.base_url, "--target", "service", "--api-key", key]
                load = ["--mode", "streams", f"--concurrency={clients}", f"--chunks={chunks}"]
                load += [f"--ramp={ramp}"]
                if warm_up:
                    warm = [*base, "--mode", "streams", "--concurrency=20", f"--chunks={chunks}"]
                    await run_load(warm)
                floor = await self.floor(upstream, load, runs=floor_runs)
                await asyncio.sleep(0.5)
                before = server.rss_bytes()
                cpu_before = server.cpu_seconds()
                began = time.perf_counter()
                got = await run_load([*base, *load], server)
                wall = time.perf_counter() - began
                completed = int(str(got["completed"]))
                cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(1, completed)
                peak = server.peak_rss_bytes()
                lost = got["lost"]
                assert isinstance(lost, dict)
                most_open = int(str(got["most_open"]))
                per_stream = (int(str(got["rss_at_most_open"])) - before) / max(1, most_open)
                t50, t99 = ms(got["ttft"], 0.5), ms(got["ttft"], 0.99)
                f50, f99 = ms(floor["ttft"], 0.5), ms(floor["ttft"], 0.99)
                d50, d99 = ms(got["total"], 0.5), ms(got["total"], 0.99)
                g50, g99 = ms(floor["total"], 0.5), ms(floor["total"], 0.99)
                label = label or (
                    f"{clients}" + (f", pool wait {pool_wait_s} s" if pool_wait_s else "")
                )
                self.emit(
                    f"| {label} | {got['completed']}/{clients} | {sum(lost.values())} "
                    f"| {t50 - f50:.0f} / {t99 - f99:.0f} | {d50:.0f} / {d99:.0f} "
                    f"| {g50:.0f} / {g99:.0f} | {most_open} "
                    f"| {before / MIB:.0f} / {peak / MIB:.0f} MiB "
                    f"| {per_stream / 1024:.1f} KiB | {cpu_ms:.1f} | {wall:.1f} s |"
                )
                for why, count in lost.items():
                    self.emit(f"  ! {count} x {why}")
            finally:
                server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer turns and streams (~1 min)")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--levels", default="1,16,64,256")
    parser.add_argument("--turns", type=int, default=20000, help="most turns per level")
    parser.add_argument("--seconds", type=float, default=8, help="seconds per level")
    parser.add_argument(
        "--rates", default="50,200", help="fixed arrival rates (turns/s), one row each"
    )
    parser.add_argument("--latency-ms", type=float, default=20, help="the upstream's own latency")
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per reply")
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=20, help="upstream pace between stream chunks"
    )
    parser.add_argument(
        "--streams",
        default="1000,5000,5000:60",
        help="concurrent stream counts; `n:s` also lets a start wait s seconds for a database "
        "connection (DB_POOL_TIMEOUT_SECONDS; the service's default refuses after 10 s)",
    )
    parser.add_argument("--ramp", type=float, default=0, help="spread stream starts (s)")
    parser.add_argument(
        "--held-streams",
        type=int,
        default=5000,
        help="streams held open at once on one worker, 0 for none: starts spread over "
        "--held-ramp s, --held-chunks chunks a --held-chunk-delay-ms apart, so that every "
        "one is open together for a while (each its own upstream connection)",
    )
    parser.add_argument("--held-ramp", type=float, default=40)
    parser.add_argument("--held-chunks", type=int, default=45)
    parser.add_argument("--held-chunk-delay-ms", type=float, default=2000)
    parser.add_argument("--auth-off", action="store_true", help="also 1 worker with auth off")
    parser.add_argument(
        "--zero-latency-levels",
        default="1,16",
        help="also these concurrencies, 1 worker, against an upstream that answers at once",
    )
    parser.add_argument("--no-turns", action="store_true")
    parser.add_argument("--no-streams", action="store_true")
    options = parser.parse_args()
    if options.quick:
        options.seconds = min(options.seconds, 3)
        options.streams = "1000"
        options.held_streams = 0
    raise_fd_limit(65536)
    print(
        f"chat-api overhead bench: {os.cpu_count()} CPUs ({platform.machine()}, "
        f"{platform.processor() or platform.platform()}), Python {platform.python_version()}, "
        f"upstream latency {options.latency_ms:g} ms, {options.chunks} chunks per reply, "
        f"{options.seconds:g} s per level; service, upstream, load generator and Postgres "
        "share the machine",
        flush=True,
    )
    bench = Bench(options)
    if not options.no_turns:
        upstream = Upstream.start(options.latency_ms, options.chunks, 0)
        try:
            bench.emit(
                "\n| service | load | turns/s | floor turns/s | latency p50 / p99 ms "
                "| floor p50 / p99 ms | overhead p50 / p99 ms | service CPU per turn ms |"
            )
            bench.emit("|---|---|---|---|---|---|---|---|")
            levels = [int(x) for x in options.levels.split(",")]
            for workers in (int(x) for x in filter(None, options.workers.split(","))):
                await bench.turns(upstream, workers, True, levels)
            if options.auth_off:
                await bench.turns(upstream, 1, False, [16])
        finally:
            upstream.stop()
        if options.zero_latency_levels:
            # The yardstick: a gateway measured in front of a zero-latency fake.
            upstream = Upstream.start(0, options.chunks, 0)
            try:
                levels = [int(x) for x in options.zero_latency_levels.split(",")]
                await bench.turns(upstream, 1, True, levels, rates="", note=", upstream 0 ms")
            finally:
                upstream.stop()
    if not options.no_streams:
        upstream = Upstream.start(options.latency_ms, options.chunks, options.chunk_delay_ms)
        try:
            bench.emit(
                f"\n| streams (1 worker, upstream {options.latency_ms:g} ms + {options.chunks} "
                f"x {options.chunk_delay_ms:g} ms) | complete | lost | TTFT overhead p50 / p99 ms "
                "| stream time p50 / p99 ms | floor stream time p50 / p99 ms | most open "
                "| server RSS before / peak | RSS per open stream "
                "| service CPU per completed stream ms | wall |"
            )
            bench.emit("|---|---|---|---|---|---|---|---|---|---|---|")
            for entry in filter(None, options.streams.split(",")):
                clients, _, pool_wait_s = entry.partition(":")
                await bench.streams(
                    upstream, int(clients), pool_wait_s, chunks=options.chunks, ramp=options.ramp
                )
        finally:
            upstream.stop()
    if not options.no_streams and options.held_streams:
        delay = options.held_chunk_delay_ms
        upstream = Upstream.start(options.latency_ms, options.held_chunks, delay)
        try:
            label = (
                f"{options.held_streams} held open: starts over {options.held_ramp:g} s, "
                f"{options.held_chunks} chunks {delay:g} ms apart"
            )
            await bench.streams(
                upstream,
                options.held_streams,
                "",
                chunks=options.held_chunks,
                ramp=options.held_ramp,
                label=label,
                # Minutes-long runs: the first of 5,000 streams weigh nothing in them.
                floor_runs=1,
                warm_up=False,
            )
        finally:
            upstream.stop()


if __name__ == "__main__":
    asyncio.run(main())
