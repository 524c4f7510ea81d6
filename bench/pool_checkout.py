"""What validating a pooled connection costs per checkout (a turn checks out three).

Compares, on a fresh Postgres database, one process checking out and returning a pooled
connection and running one trivial statement on it:

- `none`: the pool as SQLAlchemy configures it, no validation;
- `closed-check` (what the service does, app/db/session.py): asyncpg is asked whether the
  server has closed the connection, and a closed one is replaced; no round trip;
- `pool_pre_ping`: SQLAlchemy's pessimistic ping, a round trip before every checkout.

    .venv/bin/python bench/pool_checkout.py [--checkouts 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server import fresh_database  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from app.core.config import Settings  # noqa: E402
from app.db.session import _refuse_closed_connection, create_engine  # noqa: E402


async def measure(
    url: str, checkouts: int, *, checked: bool, pre_ping: bool
) -> tuple[float, float]:
    """Wall and CPU microseconds per checkout + `SELECT 1` + return."""
    settings = Settings(_env_file=None, database_url=url, app_env="test")
    engine = create_engine(settings, pool_pre_ping=pre_ping)
    if not checked:  # the service always adds its check: off for the other rows
        event.remove(engine.sync_engine, "checkout", _refuse_closed_connection)
    statement = text("SELECT 1")
    try:
        for _ in range(200):  # warm the pool and the statement cache
            async with engine.connect() as connection:
                await connection.execute(statement)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(checkouts):
            async with engine.connect() as connection:
                await connection.execute(statement)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await engine.dispose()
    return wall / checkouts * 1e6, cpu / checkouts * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkouts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    variants = (
        ("none", False, False),
        ("closed-check (the service)", True, False),
        ("pool_pre_ping", False, True),
    )
    # Interleaved rounds, medians: the machine's drift lands on every variant alike.
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    async with fresh_database() as url:
        for _ in range(options.rounds):
            for name, checked, pre_ping in variants:
                samples[name].append(
                    await measure(url, options.checkouts, checked=checked, pre_ping=pre_ping)
                )
    rows = [
        (
            name,
            statistics.median(wall for wall, _ in samples[name]),
            statistics.median(cpu for _, cpu in samples[name]),
        )
        for name, _, _ in variants
    ]
    base_wall, base_cpu = rows[0][1], rows[0][2]
    print(
        f"pool checkout + SELECT 1 + return, {options.checkouts} times x {options.rounds} "
        "interleaved rounds (medians), one process"
    )
    print("| validation | wall µs | CPU µs | added wall µs | added CPU µs | per turn (3) CPU µs |")
    print("|---|---|---|---|---|---|")
    for name, wall, cpu in rows:
        print(
            f"| {name} | {wall:.0f} | {cpu:.0f} | {wall - base_wall:+.0f} | "
            f"{cpu - base_cpu:+.0f} | {3 * (cpu - base_cpu):+.0f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
