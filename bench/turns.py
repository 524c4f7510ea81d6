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

from load import Target, closed_loop
from server import Server, fresh_database, percentile


async def run_level(
    base_url: str, concurrency: int, turns: int, turns_per_conversation: int
) -> tuple[float, list[float]]:
    """Time `turns` turns from `concurrency` clients; each starts a new conversation every
    `turns_per_conversation` turns, so the history a turn reads stays chat-sized.

    The clients are bench/load.py's raw asyncio HTTP/1.1 ones: an httpx client in this
    process spent more CPU per request than the server, and at 64 clients it, not the
    server, set the rate (101 turns/s against 431-458 with these).
    """
    target = Target(base_url, "service", None, turns_per_conversation)
    result = await closed_loop(target, concurrency, turns, seconds=3600)
    if result["failed"]:
        raise SystemExit(f"turn failed: {result['failure']}")
    latencies = result["latencies"]
    assert isinstance(latencies, list)
    rate = result["rate"]
    assert isinstance(rate, float)
    return rate, latencies


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
