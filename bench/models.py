"""Would Redis speed up model metadata reads? Time GET /api/v1/models against a Redis GET.

The catalog is built from the provider registry and the price book, both loaded once at
start-up and held in memory; a request touches no database and no network. This prints:

- `catalog()`: building the list (`services.pricing.usage.model_catalog`) alone;
- `GET /api/v1/models`: the whole request in-process (ASGI, middleware, JSON);
- `redis GET`: fetching the same JSON body from Redis, the floor of any Redis-backed cache.

    .venv/bin/python bench/models.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from app.providers.setup import build_registry  # noqa: E402
from app.services.pricing.price_book import build_price_book  # noqa: E402
from app.services.pricing.usage import model_catalog  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(samples) * 1000:7.1f} µs   p95 {p95 * 1000:7.1f} µs"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2000)
    repeat = parser.parse_args().repeat
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db",
        app_env="test",
        auth_enabled=False,
        log_level="WARNING",
        # Real providers configured (never called): the catalog lists their models and prices.
        openai_api_key="sk-bench",
        anthropic_api_key="sk-ant-bench",
    )
    prices = build_price_book(settings)
    registry = build_registry(settings, prices.context_window)

    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        model_catalog(registry, prices)
        samples.append((time.perf_counter() - started) * 1000)
    print(f"catalog() ({len(model_catalog(registry, prices))} models): {summary(samples)}")

    app = create_app(settings, providers=registry, prices=prices)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://bench"
        ) as client,
    ):
        body = (await client.get("/api/v1/models")).content
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = await client.get("/api/v1/models")
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        print(f"GET /api/v1/models in-process:    {summary(samples)}")

    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.set("bench:models", body, ex=60)
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            await redis.get("bench:models")
            samples.append((time.perf_counter() - started) * 1000)
        await redis.delete("bench:models")
    finally:
        await redis.aclose()
    print(f"redis GET of the same body:       {summary(samples)}")


if __name__ == "__main__":
    asyncio.run(main())
