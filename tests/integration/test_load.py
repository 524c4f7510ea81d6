"""Heavy: many slow turns at once on a small pool (`make test-slow`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.models import Message
from app.db.session import create_engine
from tests.factories import create_conversation

pytestmark = pytest.mark.slow

TURNS = 100


async def test_a_pool_of_five_serves_a_hundred_slow_turns_and_stays_ready(
    start_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # ~30 words at 20 ms each: every turn holds the provider for over half a second.
    settings = make_settings(db_pool_size=5, db_max_overflow=0, mock_chunk_delay_ms=20)
    client = await start_app(settings)
    conversations = [await create_conversation(client) for _ in range(TURNS)]

    turns = [
        asyncio.create_task(
            client.post(f"/api/v1/conversations/{c['id']}/messages", json={"content": "hi"})
        )
        for c in conversations
    ]
    await asyncio.sleep(0.2)  # all of them are now waiting on the provider
    ready = await client.get("/ready")
    responses = await asyncio.gather(*turns)

    assert ready.status_code == 200, ready.text
    assert [r.status_code for r in responses] == [201] * TURNS
    engine = create_engine(settings)
    async with engine.connect() as connection:
        stored = await connection.scalar(select(func.count()).select_from(Message))
    await engine.dispose()
    assert stored == 2 * TURNS
