"""The stack's own floor: the service next to a skeleton of it, under the same loads.

`bench/skeleton_app.py` is the least a turn can do on this stack (FastAPI, the official OpenAI
SDK on its aiohttp transport, asyncpg; see its docstring). This script runs it, with parts
left out, and the service beside it, in turn, against the same fake upstream and with the same
load generator as `make bench`, and prints what each costs: turns/s, overhead over the
upstream at p50/p99, worker CPU per turn, and RSS per open stream. What the skeleton cannot
reach on this machine, the service cannot either.

    .venv/bin/python bench/skeleton.py [--seconds 6] [--streams 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import overhead
from overhead import BENCH, MIB, Upstream, api_key_for, ms, run_load, service_env
from server import Server, fresh_database, raise_fd_limit

SKELETON = (sys.executable, str(BENCH / "skeleton_app.py"))


@dataclass(frozen=True)
class Subject:
    """What serves the load: the service, or the skeleton with some of its parts."""

    label: str
    parts: str = ""  # the skeleton's SKELETON_PARTS; empty for the service

    @property
    def is_service(self) -> bool:
        return not self.parts

    @property
    def calls_upstream(self) -> bool:
        return self.is_service or "sdk" in self.parts


SERVICE = Subject("service")
SKELETONS = (
    Subject("skeleton: FastAPI + SDK call + 3 statements", "http+sdk+db"),
    Subject("skeleton: FastAPI + SDK call", "http+sdk"),
    Subject("skeleton: FastAPI only", "http"),
)


@asynccontextmanager
async def serving(
    subject: Subject, upstream: Upstream, workers: int, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Server, list[str]]]:
    """The subject started on a fresh database; yields it and bench/load.py's target args."""
    async with fresh_database() as database_url:
        settings = service_env(database_url, upstream, workers, auth=True) | (env or {})
        if subject.is_service:
            server = Server.start(settings)
        else:
            server = Server.start(settings | {"SKELETON_PARTS": subject.parts}, command=SKELETON)
        try:
            await server.wait_healthy(workers)
            target = ["--url", server.base_url, "--target", "service"]
            if subject.is_service:
                target += ["--api-key", api_key_for(database_url)]
            yield server, target
        finally:
            server.stop()


class Bench(overhead.Bench):
    """`make bench`'s floors (the same load straight to the upstream, once per load) and
    rows, for the service and the skeleton one after the other."""

    async def subject_turns(
        self, upstream: Upstream, subject: Subject, workers: int, name: str, load: list[str]
    ) -> None:
        turns = int(next(a for a in load if a.startswith("--turns=")).split("=")[1])
        floor = await self.floor(upstream, load)
        async with serving(subject, upstream, workers) as (server, target):
            warm = [a if not a.startswith("--turns=") else f"--turns={turns // 5}" for a in load]
            await run_load([*target, *warm])
            cpu_before = server.cpu_seconds()
            got = await run_load([*target, *load])
            cpu_s = server.cpu_seconds() - cpu_before
        latencies = got["latencies"]
        assert isinstance(latencies, list)
        cpu_ms = cpu_s * 1000 / max(1, len(latencies))
        l50, l99 = ms(latencies, 0.5), ms(latencies, 0.99)
        f50, f99 = ms(floor["latencies"], 0.5), ms(floor["latencies"], 0.99)
        # Without an upstream call there is nothing to subtract the upstream's latency from.
        upstream_overhead = (
            f"**{l50 - f50:.1f} / {l99 - f99:.1f}**" if subject.calls_upstream else "-"
        )
        failed = f" ({got['failed']} failed)" if got["failed"] else ""
        self.emit(
            f"| {subject.label} | {workers} | {name} | {got['rate']:.0f}{failed} "
            f"| {l50:.1f} / {l99:.1f} | {upstream_overhead} | {cpu_ms:.2f} |"
        )

    async def subject_streams(self, upstream: Upstream, subject: Subject, clients: int) -> None:
        o = self.options
        load = ["--mode", "streams", f"--concurrency={clients}", f"--chunks={o.stream_chunks}"]
        load += [f"--ramp={o.stream_ramp}"]
        # Starts spread over the ramp may wait for a database connection longer than 10 s.
        async with serving(subject, upstream, 1, {"DB_POOL_TIMEOUT_SECONDS": "60"}) as (
            server,
            target,
        ):
            await run_load([*target, "--mode", "streams", "--concurrency=20"])  # warm-up
            await asyncio.sleep(0.5)
            before = server.rss_bytes()
            got = await run_load([*target, *load], server)
        lost = got["lost"]
        assert isinstance(lost, dict)
        most_open = int(str(got["most_open"]))
        per_stream = (int(str(got["rss_at_most_open"])) - before) / max(1, most_open)
        self.emit(
            f"| {subject.label} | {got['completed']}/{clients} | {sum(lost.values())} "
            f"| {most_open} | {before / MIB:.0f} MiB | **{per_stream / 1024:.1f} KiB** |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6, help="seconds per closed-loop level")
    parser.add_argument("--rate", type=float, default=200, help="open-loop arrival rate")
    parser.add_argument("--latency-ms", type=float, default=20, help="the upstream's own latency")
    parser.add_argument("--streams", type=int, default=1000, help="streams held open at once")
    parser.add_argument("--stream-chunks", type=int, default=50)
    parser.add_argument("--stream-chunk-delay-ms", type=float, default=200)
    parser.add_argument("--stream-ramp", type=float, default=2, help="spread starts (s)")
    o = parser.parse_args()
    raise_fd_limit(65536)
    print(
        f"chat-api skeleton bench: {os.cpu_count()} CPUs ({platform.machine()}), Python "
        f"{platform.python_version()}, upstream latency {o.latency_ms:g} ms; the subjects, "
        "upstream, load generator and Postgres share the machine\n",
        flush=True,
    )
    bench = Bench(o)
    closed = ["--mode", "closed", f"--seconds={o.seconds}", "--turns=20000"]
    upstream = Upstream.start(o.latency_ms, o.stream_chunks, 0)
    try:
        print("| server | workers | load | turns/s | latency p50 / p99 ms ", end="")
        print("| overhead p50 / p99 ms | worker CPU per turn ms |\n|---|---|---|---|---|---|---|")
        rated = ["--mode", "open", f"--rate={o.rate}", f"--turns={int(o.rate * o.seconds)}"]
        for subject in (SERVICE, *SKELETONS):
            await bench.subject_turns(upstream, subject, 1, "c=16", [*closed, "--concurrency=16"])
            await bench.subject_turns(upstream, subject, 1, f"{o.rate:g}/s", rated)
        for subject in (SERVICE, SKELETONS[0]):
            await bench.subject_turns(upstream, subject, 2, "c=256", [*closed, "--concurrency=256"])
    finally:
        upstream.stop()
    upstream = Upstream.start(o.latency_ms, o.stream_chunks, o.stream_chunk_delay_ms)
    try:
        print(
            f"\n| streams held open (1 worker; {o.stream_chunks} chunks "
            f"{o.stream_chunk_delay_ms:g} ms apart, starts over {o.stream_ramp:g} s) "
            "| complete | lost | most open | RSS before | RSS per open stream |"
        )
        print("|---|---|---|---|---|---|")
        for subject in (SERVICE, *SKELETONS[:2]):
            await bench.subject_streams(upstream, subject, o.streams)
    finally:
        upstream.stop()


if __name__ == "__main__":
    asyncio.run(main())
