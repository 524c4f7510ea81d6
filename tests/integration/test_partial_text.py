"""Running replies' partial text: saved for all of them by one statement per interval.

`PartialTextSaver` on the app's own pool (both backends): what it writes, what it leaves
alone (ended replies, replies that did not grow lately), that a reply which stops growing is
still shown alive to the abandoned-reply sweep, and that a failed save is tried again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.db.base import utcnow
from app.db.driver import statements
from app.db.models import Message, MessageStatus
from app.providers.base import TextDelta
from app.repositories.turns import TurnRepo
from app.services.turns.generated_text import Generation
from app.services.turns.partial_text import PartialTextSaver
from app.services.turns.recovery import fail_abandoned_replies
from tests.factories import create_conversation
from tests.integration.test_turn_claims import turn_messages

StateOf = Callable[[httpx.AsyncClient], dict[str, Any]]


def generation_of(*pieces: str) -> Generation:
    """A generation that has produced `pieces` of text so far."""
    generation = Generation()
    for piece in pieces:
        generation.add(TextDelta(piece))
    return generation


Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def client(
    start_app: Callable[..., Any], make_settings: Callable[..., Any]
) -> httpx.AsyncClient:
    """The app with its own sweep out of the way: it runs every couple of seconds and ends
    ownerless replies untouched for ABANDONED_REPLY_SECONDS, which would race the sweeps
    these tests run themselves on replies made to look ten minutes old."""
    started: httpx.AsyncClient = await start_app(make_settings(abandoned_reply_seconds=86_400))
    return started


async def running_replies(client: httpx.AsyncClient, sessions: Sessions, count: int) -> list[UUID]:
    """`count` conversations, each with a user message and an `in_progress` reply."""
    replies = []
    for _ in range(count):
        conversation_id = UUID((await create_conversation(client))["id"])
        said, reply = turn_messages(conversation_id, "Hello")
        async with statements(sessions, single_statements=False) as run:
            await TurnRepo(run).claim(conversation_id, 0, (said, reply))
        replies.append(reply.id)
    return replies


async def stored(sessions: Sessions, reply_ids: list[UUID]) -> dict[UUID, tuple[str, str]]:
    async with sessions() as session:
        rows = await session.execute(
            select(Message.id, Message.status, Message.content).where(Message.id.in_(reply_ids))
        )
        return {row.id: (row.status, row.content) for row in rows}


class TestPartialTextSaver:
    async def test_one_save_writes_every_reply_that_grew_and_only_those_still_running(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        sessions: Sessions = state_of(client)["sessionmaker"]
        grew, silent, ended = await running_replies(client, sessions, 3)
        async with sessions.begin() as session:
            await session.execute(
                update(Message)
                .where(Message.id == ended)
                .values(status=MessageStatus.COMPLETED, content="The whole reply.")
            )
        saver = PartialTextSaver(sessions, interval_s=60)
        generations = {reply_id: Generation() for reply_id in (grew, silent, ended)}
        for reply_id, generation in generations.items():
            saver.track(reply_id, generation)
        for piece in ["Once ", "upon 🙂 ", "'; DROP TABLE messages; --"]:
            generations[grew].add(TextDelta(piece))
        generations[ended].add(TextDelta("Once"))

        saved = await saver.save_now()

        assert saved == 2  # the silent reply had nothing new to save
        assert await stored(sessions, [grew, silent, ended]) == {
            grew: ("in_progress", "Once upon 🙂 '; DROP TABLE messages; --"),
            silent: ("in_progress", ""),
            ended: ("completed", "The whole reply."),
        }
        assert await saver.save_now() == 0  # nothing grew since

    async def test_a_forgotten_reply_is_not_saved_again(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        sessions: Sessions = state_of(client)["sessionmaker"]
        (reply_id,) = await running_replies(client, sessions, 1)
        saver = PartialTextSaver(sessions, interval_s=60)
        generation = generation_of("Once")
        saver.track(reply_id, generation)
        saver.forget(reply_id)

        assert await saver.save_now() == 0
        assert await stored(sessions, [reply_id]) == {reply_id: ("in_progress", "")}

    async def test_a_reply_that_stops_growing_is_still_saved_as_alive(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        """One waiting on its provider (first token, retries, a full connection pool) or a
        non-streaming turn: the sweep must not take it for the reply of a dead process."""
        sessions: Sessions = state_of(client)["sessionmaker"]
        waiting, orphan = await running_replies(client, sessions, 2)
        # Both untouched for ten minutes; only `waiting` belongs to a live generation.
        async with sessions.begin() as session:
            await session.execute(
                update(Message)
                .where(Message.id.in_([waiting, orphan]))
                .values(updated_at=utcnow() - timedelta(minutes=10))
            )
        saver = PartialTextSaver(sessions, interval_s=0.02)
        saver.track(waiting, Generation())  # no text yet
        assert await saver.save_now() == 0  # nothing new, and it only just began

        await asyncio.sleep(saver.alive_every_s)
        assert await saver.save_now() == 1  # still nothing new, but alive
        assert await saver.save_now() == 0  # and saved a moment ago

        assert await fail_abandoned_replies(sessions, stale_after_s=60) == 1
        assert await stored(sessions, [waiting, orphan]) == {
            waiting: ("in_progress", ""),
            orphan: ("failed", ""),
        }

    async def test_a_failed_save_is_tried_again_at_the_next_interval(self) -> None:
        engine = create_async_engine(
            "postgresql+asyncpg://postgres@127.0.0.1:1/gone", connect_args={"timeout": 1}
        )
        saver = PartialTextSaver(async_sessionmaker(engine), interval_s=60)
        saver.track(uuid4(), generation_of("Once ", "upon"))
        try:
            with pytest.raises(OSError, match="(?i)connect"):
                await saver.save_now()
            # Still owed: had the failed save counted as done, this would save nothing (0).
            with pytest.raises(OSError, match="(?i)connect"):
                await saver.save_now()
        finally:
            await engine.dispose()
