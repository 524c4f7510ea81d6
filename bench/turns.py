"""Turn throughput and latency through the real server process with the mock provider.

Starts `python -m app` on a fresh Postgres database (or SQLite with --sqlite), then sends
non-streaming turns at several concurrency levels and prints turns/s and latency percentiles.
Every turn stores two messages and updates the conversation totals.

    .venv/bin/python bench/turns.py [--sqlite] [--turns 2000] [--levels 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import httpx
from server import Server, fresh_database, percentile


async def run_level(
    base_url: str, concurrency: int, turns: int, turns_per_conversation: int
) -> tuple[float, list[float]]:
    """Time `turns` turns from `concurrency` clients; each starts a new conversation every
    `turns_per_conversation` turns, so the history a turn reads stays chat-sized."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
        latencies: list[float] = []
        remaining = turns

        async def worker() -> None:
            nonlocal remaining
            conversation_id = ""
            done = 0
            while remaining > 0:
                remaining -= 1
                if done % turns_per_conversation == 0:
                    created = await http.post("/api/v1/conversations", json={"title": "bench"})
                    conversation_id = created.json()["id"]
                done += 1
                started = time.perf_counter()
                response = await http.post(
                    f"/api/v1/conversations/{conversation_id}/messages",
                    json={"content": f"benchmark turn {remaining}"},
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 201:
                    raise SystemExit(f"turn failed: {response.status_code} {response.text}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return turns / elapsed, latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sqlite", action="store_true", help="use SQLite instead of Postgres")
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--turns-per-conversation", type=int, default=10)
    args = parser.parse_args()

    async with fresh_database(sqlite=args.sqlite) as database_url:
        server = Server.start(
            {
                "DATABASE_URL": database_url,
                "APP_ENV": "test",
                "AUTH_ENABLED": "false",
                "DEFAULT_PROVIDER": "mock",
                "DB_POOL_SIZE": "20",
            }
        )
        try:
            await server.wait_healthy()
            await measure(args, server.base_url)
        finally:
            server.stop()


async def measure(args: argparse.Namespace, base_url: str) -> None:
    backend = "SQLite" if args.sqlite else "Postgres"
    print(
        f"chat-api turns, mock provider, {backend}, 1 worker, {os.cpu_count()} CPUs, "
        f"{args.turns_per_conversation} turns per conversation"
    )
    print(f"{'concurrency':>11} {'turns':>6} {'turns/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for level in (int(x) for x in args.levels.split(",")):
        per_conversation = args.turns_per_conversation
        await run_level(base_url, level, min(200, args.turns), per_conversation)  # warm-up
        rate, latencies = await run_level(base_url, level, args.turns, per_conversation)
        ms = [x * 1000 for x in latencies]
        print(
            f"{level:>11} {args.turns:>6} {rate:>8.0f} "
            f"{statistics.median(ms):>7.2f} {percentile(ms, 0.99):>7.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
