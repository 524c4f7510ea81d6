"""Replies no live process owns are ended, so no conversation stays blocked by a dead one.

A running reply names its owner (`generation_owner`, the lease of the process generating it,
app/services/turns/leases.py). Once that owner's lease has lapsed (killed, restarted, cut off from
the database) the reply is failed with `generation_abandoned`, its partial text kept, and its
event log is ended so resuming listeners hear it at once. Rows written before leases existed
(no owner) are judged as before: untouched for `stale_after_s`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import structlog
from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.base import utcnow
from app.db.models import GenerationLease as LeaseRow
from app.db.models import Message, MessageRole, MessageStatus
from app.services.streaming.event_log import EventLog
from app.services.turns.leases import GenerationLease

log = structlog.get_logger(__name__)

ABANDONED = {"code": "generation_abandoned", "detail": "the process generating it stopped"}
# Lapsed leases are forgotten this many lease lengths after their last renewal, once the
# replies they owned have been ended.
_FORGET_LEASES_AFTER = 20


async def fail_abandoned_replies(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    stale_after_s: float,
    lease: GenerationLease | None = None,
    events: EventLog | None = None,
) -> int:
    """Fail running replies no live process owns, keeping their partial text; how many.

    With `lease` (this process's), replies whose owner's lease lapsed are ended, if this
    process may judge leases now; without, only ownerless replies untouched for
    `stale_after_s`. `events` gets each ended reply's `error`, for listeners still waiting.
    """
    now = utcnow()
    ownerless_stale = and_(
        Message.generation_owner.is_(None),
        or_(
            Message.updated_at < now - timedelta(seconds=stale_after_s),
            Message.updated_at.is_(None),
        ),
    )
    abandoned = ownerless_stale
    if lease is not None and lease.may_judge_others():
        owner_alive = exists().where(
            LeaseRow.owner_id == Message.generation_owner,
            LeaseRow.renewed_at >= lease.lapsed_before(),
        )
        # Never its own: a stalled event loop may have delayed its own renewal, not ended it.
        foreign = and_(
            Message.generation_owner.is_not(None), Message.generation_owner != lease.owner_id
        )
        abandoned = or_(ownerless_stale, and_(foreign, ~owner_alive))
    async with sessionmaker.begin() as session:
        stale = (
            await session.scalars(
                select(Message)
                .where(
                    Message.status == MessageStatus.IN_PROGRESS,
                    Message.role == MessageRole.ASSISTANT,
                    abandoned,
                )
                .with_for_update(skip_locked=True)
                .limit(500)
            )
        ).all()
        for message in stale:
            message.status = MessageStatus.FAILED
            message.finish_reason = "error"
            message.cost_usd = message.cost_usd or Decimal(0)
            message.metadata_ = {**(message.metadata_ or {}), "error": ABANDONED}
            message.updated_at = now
        ended = [message.id for message in stale]
        if lease is not None and lease.may_judge_others():
            forget_before = now - timedelta(seconds=_FORGET_LEASES_AFTER * lease.lease_s)
            await session.execute(delete(LeaseRow).where(LeaseRow.renewed_at < forget_before))
    if ended:
        log.warning("ended replies no live process owns", count=len(ended))
        if events is not None:
            await _end_logs(events, ended)
    return len(ended)


async def _end_logs(events: EventLog, reply_ids: list[UUID]) -> None:
    """Tell listeners still following these replies' logs that they ended (best effort: a
    listener also finds the stored end by itself at its next keep-alive)."""
    data = json.dumps({"code": ABANDONED["code"], "message": ABANDONED["detail"]})
    for reply_id in reply_ids:
        try:
            await events.append_end(reply_id, "error", data)
        except Exception as error:
            log.warning("could not end an abandoned reply's log", error=type(error).__name__)


async def sweep_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    stale_after_s: float,
    every_s: float,
    lease: GenerationLease | None = None,
    events: EventLog | None = None,
) -> None:
    """Run the sweep now and then every `every_s` seconds, for the life of the process."""
    while True:
        try:
            await fail_abandoned_replies(
                sessionmaker, stale_after_s=stale_after_s, lease=lease, events=events
            )
        except Exception as error:
            log.warning("abandoned-reply sweep failed; retrying later", error=type(error).__name__)
        await asyncio.sleep(every_s)
