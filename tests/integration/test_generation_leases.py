"""Running replies are owned by a process's lease; a lapsed lease frees its conversations.

On both databases: a reply whose owner stopped renewing is failed (`generation_abandoned`,
text kept) within seconds, a reply whose owner renews is never touched however long it is
silent, and a process that has not itself reached the database for half a lease in a row
judges no one (after an outage every lease has lapsed, owners alive or not).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.db.base import utcnow
from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.db.models import GenerationLease as LeaseRow
from app.db.session import create_engine, make_sessionmaker
from app.services.turns.leases import GenerationLease
from app.services.turns.recovery import fail_abandoned_replies
from tests.integration.test_cancel_and_recovery import redis_log
from tests.sse import read_stream

LEASE_S = 0.4


@pytest.fixture
async def sessions(
    settings: Settings, clean_database: None
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings)
    try:
        yield make_sessionmaker(engine)
    finally:
        async with make_sessionmaker(engine).begin() as session:
            await session.execute(LeaseRow.__table__.delete())
        await engine.dispose()


async def running_reply(
    sessions: async_sessionmaker[AsyncSession],
    owner: uuid.UUID | None,
    *,
    untouched_for: timedelta = timedelta(0),
    text: str = "Half a rep",
) -> tuple[str, str]:
    touched = utcnow() - untouched_for
    async with sessions.begin() as session:
        conversation = Conversation(user_id="anonymous", provider="mock", model="mock")
        session.add(conversation)
        await session.flush()
        reply = Message(
            conversation_id=conversation.id,
            role=MessageRole.ASSISTANT,
            content=text,
            status=MessageStatus.IN_PROGRESS,
            provider="mock",
            model="mock",
            created_at=touched,
            updated_at=touched,
            generation_owner=owner,
        )
        session.add(reply)
    return str(conversation.id), str(reply.id)


async def status_of(sessions: async_sessionmaker[AsyncSession], reply_id: str) -> Message:
    async with sessions() as session:
        reply = await session.scalar(select(Message).where(Message.id == uuid.UUID(reply_id)))
    assert reply is not None
    return reply


async def judging_lease(sessions: async_sessionmaker[AsyncSession]) -> GenerationLease:
    """A sweeper's lease that has reached the database for half a lease in a row."""
    lease = GenerationLease(sessions, LEASE_S)
    await lease.renew()
    await asyncio.sleep(LEASE_S / 2)
    await lease.renew()
    assert lease.may_judge_others()
    return lease


class TestLeases:
    async def test_a_reply_whose_owner_stopped_renewing_is_failed_with_its_text(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        dead = GenerationLease(sessions, LEASE_S)
        await dead.renew()
        _, reply_id = await running_reply(sessions, dead.owner_id)
        sweeper = await judging_lease(sessions)
        await asyncio.sleep(LEASE_S)  # the dead owner's lease lapses; the sweeper renews
        await sweeper.renew()

        ended = await fail_abandoned_replies(sessions, stale_after_s=3600, lease=sweeper)

        reply = await status_of(sessions, reply_id)
        assert ended == 1
        assert (reply.status, reply.content) == (MessageStatus.FAILED, "Half a rep")
        assert reply.metadata_["error"]["code"] == "generation_abandoned"

    async def test_a_reply_whose_owner_never_had_a_lease_row_is_failed(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        """A process that released its lease at shutdown (or never took one) owns nothing."""
        _, reply_id = await running_reply(sessions, uuid.uuid4())
        sweeper = await judging_lease(sessions)

        assert await fail_abandoned_replies(sessions, stale_after_s=3600, lease=sweeper) == 1
        assert (await status_of(sessions, reply_id)).status == MessageStatus.FAILED

    async def test_a_silent_reply_of_a_live_owner_is_never_failed(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        owner = GenerationLease(sessions, LEASE_S)
        await owner.renew()
        _, reply_id = await running_reply(
            sessions, owner.owner_id, untouched_for=timedelta(hours=1)
        )
        sweeper = await judging_lease(sessions)
        await owner.renew()

        assert await fail_abandoned_replies(sessions, stale_after_s=1, lease=sweeper) == 0
        assert (await status_of(sessions, reply_id)).status == MessageStatus.IN_PROGRESS

    async def test_a_process_never_fails_its_own_replies(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        """Its own renewal may lag (a stalled event loop) while it still runs the reply."""
        sweeper = await judging_lease(sessions)
        _, reply_id = await running_reply(sessions, sweeper.owner_id)
        async with sessions.begin() as session:  # its own row looks lapsed
            await session.execute(
                LeaseRow.__table__.update().values(renewed_at=utcnow() - timedelta(hours=1))
            )

        assert await fail_abandoned_replies(sessions, stale_after_s=3600, lease=sweeper) == 0
        assert (await status_of(sessions, reply_id)).status == MessageStatus.IN_PROGRESS

    async def test_a_process_just_back_from_an_outage_judges_no_one_yet(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        owner = GenerationLease(sessions, LEASE_S)
        await owner.renew()
        _, reply_id = await running_reply(sessions, owner.owner_id)
        await asyncio.sleep(LEASE_S * 1.5)  # "the outage": nobody renewed
        sweeper = GenerationLease(sessions, LEASE_S)
        await sweeper.renew()  # its first renewal since: not yet half a lease of health

        assert not sweeper.may_judge_others()
        assert await fail_abandoned_replies(sessions, stale_after_s=3600, lease=sweeper) == 0
        assert (await status_of(sessions, reply_id)).status == MessageStatus.IN_PROGRESS

    async def test_ownerless_rows_from_before_leases_are_judged_by_their_age(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        _, old = await running_reply(sessions, None, untouched_for=timedelta(minutes=10))
        _, fresh = await running_reply(sessions, None)
        sweeper = await judging_lease(sessions)

        assert await fail_abandoned_replies(sessions, stale_after_s=60, lease=sweeper) == 1
        assert (await status_of(sessions, old)).status == MessageStatus.FAILED
        assert (await status_of(sessions, fresh)).status == MessageStatus.IN_PROGRESS


class TestTheApp:
    async def test_a_turn_is_stamped_with_the_lease_the_app_renews(
        self,
        start_app: Callable[..., Any],
        make_settings: Callable[..., Settings],
        state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    ) -> None:
        client = await start_app(make_settings(generation_lease_seconds=LEASE_S))
        conversation = (await client.post("/api/v1/conversations", json={})).json()
        sent = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "hi"}
        )
        assert sent.status_code == 201
        sessions = state_of(client)["sessionmaker"]
        owner = state_of(client)["turns"].generation_owner
        reply = await status_of(sessions, sent.json()["message"]["id"])
        await asyncio.sleep(LEASE_S / 2)
        async with sessions() as session:
            renewed = await session.scalar(
                select(LeaseRow.renewed_at).where(LeaseRow.owner_id == owner)
            )

        assert reply.generation_owner == owner
        assert renewed is not None
        assert utcnow() - renewed < timedelta(seconds=LEASE_S)

    async def test_a_listener_of_a_dead_owners_reply_hears_its_end_at_once(
        self,
        start_app: Callable[..., Any],
        make_settings: Callable[..., Settings],
        state_of: Callable[[httpx.AsyncClient], dict[str, Any]],
    ) -> None:
        """Not at its next keep-alive (15 s by default): the sweep ends the shared log."""
        settings = make_settings(
            generation_lease_seconds=LEASE_S, stream_heartbeat_seconds=30, **redis_log()
        )
        client = await start_app(settings)
        sessions = state_of(client)["sessionmaker"]
        dead = uuid.uuid4()
        conversation_id, reply_id = await running_reply(sessions, dead)
        events = state_of(client)["generations"].events
        # What the dead process left in the shared log: `start` and a delta, never an end.
        from app.services.streaming.event_log import InProcessEventLog, RedisEventLog

        assert isinstance(events, RedisEventLog)
        dead_log = RedisEventLog(events._redis, InProcessEventLog())
        start = {"message_id": reply_id, "conversation_id": conversation_id}
        await dead_log.append(uuid.UUID(reply_id), "start", json.dumps(start))
        await dead_log.append(uuid.UUID(reply_id), "delta", json.dumps({"content": "Half a rep"}))
        began = time.monotonic()

        stream = await read_stream(
            client, "GET", f"/api/v1/conversations/{conversation_id}/stream", within=10
        )
        took_s = time.monotonic() - began

        assert stream.names == ["start", "delta", "error"]
        assert stream.terminal.json()["code"] == "generation_abandoned"
        # The app's own sweep judged the lapsed owner within about a lease and a quarter of
        # its start (half a lease of its own health, then the next sweep).
        assert took_s < 5, took_s
        again = await client.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"content": "again"}
        )
        assert again.status_code == 201, again.text
