"""What a turn's read costs: `TurnRepo.view` and the prompt history it yields, by size.

On a fresh, migrated Postgres database, builds conversations of 10, 100 and 1000 messages
(about 400 characters each, like chat turns) stored as one path, and, with --branches, the
same sizes where every reply was regenerated once (twice the messages, half of them off the
active path). Times, per conversation, the read a turn makes before it is claimed (the
conversation, its month's spending, whether a reply runs, and the prompt along the active
branch) on the driver connection a turn uses, plus turning it into `ChatMessage`s.

Prints the median and p95 wall time of a read and the CPU this process spent per read (the
service's share; Postgres' is not counted). Compare revisions by running the script in each
checkout: it needs only `TurnRepo.view(...).history`.

    .venv/bin/python bench/history.py [--sizes 10,100,1000] [--repeat 300] [--branches]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.config import Settings  # noqa: E402
from app.db.base import utcnow  # noqa: E402
from app.db.driver import statements  # noqa: E402
from app.db.models import Conversation, Message, MessageRole, MessageStatus  # noqa: E402
from app.db.session import create_engine, make_sessionmaker  # noqa: E402
from app.repositories.turns import TurnRepo  # noqa: E402
from tests.databases import postgres_database  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog, again and again. " * 7)[:400]
MONTH = "2026-12"
# Revisions before conversations became trees have no `parent_id`: the script runs on both.
HAS_PARENTS = hasattr(Message, "parent_id")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _message(conversation_id: uuid.UUID, index: int, parent: uuid.UUID | None) -> Message:
    message = Message(
        id=uuid.uuid4(),
        conversation_id=conversation_id,
        role=MessageRole.USER if index % 2 == 0 else MessageRole.ASSISTANT,
        content=f"{index} {TEXT}",
        status=MessageStatus.COMPLETED,
        metadata_={},
        cost_usd=Decimal(0),
        created_at=utcnow() + timedelta(microseconds=index),
    )
    if HAS_PARENTS:
        message.parent_id = parent
    return message


async def seed(sessionmaker: object, size: int, *, branches: bool) -> uuid.UUID:
    """A conversation whose active path holds `size` completed messages, alternating user
    and assistant; with `branches`, each reply has an older sibling off the path."""
    now = utcnow()
    async with sessionmaker.begin() as session:  # type: ignore[attr-defined]
        conversation = Conversation(
            user_id="bench", title="bench", metadata_={}, created_at=now, updated_at=now
        )
        session.add(conversation)
        await session.flush()
        messages: list[Message] = []
        parent: uuid.UUID | None = None
        for index in range(size):
            if branches and index % 2 == 1:
                messages.append(_message(conversation.id, len(messages), parent))
            message = _message(conversation.id, len(messages), parent)
            messages.append(message)
            parent = message.id
        session.add_all(messages)
        conversation.message_count = len(messages)
        if HAS_PARENTS:
            conversation.active_leaf_id = parent
        conversation_id: uuid.UUID = conversation.id
    return conversation_id


async def time_view(
    sessionmaker: object, conversation_id: uuid.UUID, size: int, repeat: int
) -> tuple[list[float], float]:
    """Wall time of each read (ms) and this process's CPU per read (ms)."""
    samples = []
    async with statements(sessionmaker, single_statements=True) as run:  # type: ignore[arg-type]
        turns = TurnRepo(run)
        cpu_started = time.process_time()
        for _ in range(repeat):
            started = time.perf_counter()
            view = await turns.view(conversation_id, "bench", MONTH)
            if view is None or len(view.history) != size:
                raise RuntimeError("the read did not return the conversation's whole path")
            samples.append((time.perf_counter() - started) * 1000)
        cpu = (time.process_time() - cpu_started) * 1000 / repeat
    return samples, cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--branches", action="store_true", help="also regenerated replies")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    shapes = [False, True] if options.branches else [False]
    async with postgres_database() as url:
        engine = create_engine(Settings(_env_file=None, database_url=url))
        sessionmaker = make_sessionmaker(engine)
        try:
            print(f"a turn's read (TurnRepo.view + history), {options.repeat} reads per row")
            print("| path messages | stored messages | wall median / p95 ms | CPU per read ms |")
            print("|---|---|---|---|")
            for branched in shapes:
                for size in sizes:
                    conversation_id = await seed(sessionmaker, size, branches=branched)
                    await time_view(sessionmaker, conversation_id, size, 20)  # warm up
                    wall, cpu = await time_view(sessionmaker, conversation_id, size, options.repeat)
                    stored = size + size // 2 if branched else size
                    print(
                        f"| {size} | {stored} | {statistics.median(wall):.3f} / "
                        f"{percentile(wall, 0.95):.3f} | {cpu:.3f} |"
                    )
        finally:
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
