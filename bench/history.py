"""Does caching a conversation's prompt history in Redis pay? Time the read both ways.

On a fresh, migrated Postgres database, builds conversations of 10, 100 and 1000 messages
(about 400 characters each, like chat turns) and times, per size:

- `db`: `MessageRepo.prompt_history` as a turn runs it (own transaction, ORM rows), plus
  turning the rows into `ChatMessage`s;
- `redis`: a GET of the same history stored as JSON, decoded into `ChatMessage`s (what a
  write-through cache would serve; its writes, one per stored message, are not counted).

Prints the median and p95 of each in milliseconds; compare them with a provider's time to
first token (hundreds of ms) before deciding anything.

    .venv/bin/python bench/history.py [--sizes 10,100,1000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.config import Settings  # noqa: E402
from app.db.base import utcnow  # noqa: E402
from app.db.models import Conversation, Message, MessageRole, MessageStatus  # noqa: E402
from app.db.session import create_engine, make_sessionmaker  # noqa: E402
from app.providers.base import ChatMessage  # noqa: E402
from app.providers.context import counter_for  # noqa: E402
from app.repositories.messages import MessageRepo  # noqa: E402
from tests.databases import postgres_database  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
TEXT = ("The quick brown fox jumps over the lazy dog, again and again. " * 7)[:400]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def seed(sessionmaker: object, size: int) -> uuid.UUID:
    """A conversation of `size` completed messages, alternating user and assistant."""
    now = utcnow()
    async with sessionmaker.begin() as session:  # type: ignore[attr-defined]
        conversation = Conversation(
            user_id="bench", title="bench", metadata_={}, created_at=now, updated_at=now
        )
        session.add(conversation)
        await session.flush()
        session.add_all(
            Message(
                conversation_id=conversation.id,
                role=MessageRole.USER if index % 2 == 0 else MessageRole.ASSISTANT,
                content=f"{index} {TEXT}",
                status=MessageStatus.COMPLETED,
                metadata_={},
                cost_usd=Decimal(0),
                created_at=now + timedelta(microseconds=index),
            )
            for index in range(size)
        )
        conversation_id: uuid.UUID = conversation.id
    return conversation_id


async def time_db(sessionmaker: object, conversation_id: uuid.UUID, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with sessionmaker.begin() as session:  # type: ignore[attr-defined]
            history = await MessageRepo(session).prompt_history(conversation_id)
            _ = [ChatMessage(m.role.value, m.content) for m in history]
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def time_db_columns(
    sessionmaker: object, conversation_id: uuid.UUID, repeat: int
) -> list[float]:
    """The same query selecting only (role, content): no ORM objects to build."""
    statement = (
        select(Message.role, Message.content)
        .where(
            Message.conversation_id == conversation_id,
            Message.status.in_((MessageStatus.COMPLETED, MessageStatus.CANCELLED)),
            Message.content != "",
        )
        .order_by(Message.created_at, Message.id)
    )
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with sessionmaker.begin() as session:  # type: ignore[attr-defined]
            rows = (await session.execute(statement)).all()
            _ = [ChatMessage(role.value, content) for role, content in rows]
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def time_token_count(history: list[ChatMessage]) -> float:
    """What fitting the prompt to a context window costs anyway: counting its tokens."""
    count = counter_for("openai", "gpt-4o")
    started = time.perf_counter()
    for message in history:
        count(message.content)
    return (time.perf_counter() - started) * 1000


async def time_redis(
    redis: Redis, sessionmaker: object, conversation_id: uuid.UUID, repeat: int
) -> list[float]:
    async with sessionmaker.begin() as session:  # type: ignore[attr-defined]
        history = await MessageRepo(session).prompt_history(conversation_id)
    key = f"bench:history:{conversation_id}"
    await redis.set(key, json.dumps([[m.role.value, m.content] for m in history]), ex=600)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        raw = await redis.get(key)
        assert raw is not None
        _ = [ChatMessage(role, content) for role, content in json.loads(raw)]
        samples.append((time.perf_counter() - started) * 1000)
    await redis.delete(key)
    return samples


def summary(samples: list[float]) -> str:
    return f"median {statistics.median(samples):7.2f} ms   p95 {percentile(samples, 0.95):7.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=200)
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    redis = Redis.from_url(REDIS_URL)
    async with postgres_database() as url:
        engine = create_engine(Settings(_env_file=None, database_url=url))
        sessionmaker = make_sessionmaker(engine)
        try:
            print(f"prompt history read, {options.repeat} reads per size (Postgres vs Redis)")
            for size in sizes:
                conversation_id = await seed(sessionmaker, size)
                await time_db(sessionmaker, conversation_id, 10)  # warm the pool and plans
                database = await time_db(sessionmaker, conversation_id, options.repeat)
                columns = await time_db_columns(sessionmaker, conversation_id, options.repeat)
                cached = await time_redis(redis, sessionmaker, conversation_id, options.repeat)
                history = [ChatMessage("user", f"{i} {TEXT}") for i in range(size)]
                time_token_count(history[:1])  # load the encoding first
                print(f"{size:5d} messages  db (ORM rows):      {summary(database)}")
                print(f"{size:5d} messages  db (role, content): {summary(columns)}")
                print(f"{size:5d} messages  redis GET + decode: {summary(cached)}")
                counting = time_token_count(history)
                print(f"{size:5d} messages  token count once:   {counting:7.2f} ms")
        finally:
            await engine.dispose()
            await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
