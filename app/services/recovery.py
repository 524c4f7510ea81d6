"""Replies left `in_progress` by a process that died are ended, so nothing hangs forever."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.base import utcnow
from app.db.models import Message, MessageRole, MessageStatus

log = structlog.get_logger(__name__)

_ABANDONED = {"code": "generation_abandoned", "detail": "the process generating it stopped"}


async def fail_abandoned_replies(
    sessionmaker: async_sessionmaker[AsyncSession], *, stale_after_s: float
) -> int:
    """Mark replies not touched for `stale_after_s` as `failed`, keeping their partial text.

    A live generation touches its reply at least every flush interval and every provider
    silence is cut by the idle timeout, so only a dead process leaves a reply this stale.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    async with sessionmaker.begin() as session:
        stale = (
            await session.scalars(
                select(Message)
                .where(
                    Message.status == MessageStatus.IN_PROGRESS,
                    Message.role == MessageRole.ASSISTANT,
                    or_(Message.updated_at < cutoff, Message.updated_at.is_(None)),
                )
                .with_for_update(skip_locked=True)
                .limit(500)
            )
        ).all()
        for message in stale:
            message.status = MessageStatus.FAILED
            message.finish_reason = "error"
            message.cost_usd = message.cost_usd or Decimal(0)
            message.metadata_ = {**(message.metadata_ or {}), "error": _ABANDONED}
    if stale:
        log.warning("ended replies abandoned by a dead process", count=len(stale))
    return len(stale)


async def sweep_forever(
    sessionmaker: async_sessionmaker[AsyncSession], *, stale_after_s: float, every_s: float
) -> None:
    """Run the sweep now and then every `every_s` seconds, for the life of the process."""
    while True:
        try:
            await fail_abandoned_replies(sessionmaker, stale_after_s=stale_after_s)
        except Exception:
            log.exception("abandoned-reply sweep failed; retrying later")
        await asyncio.sleep(every_s)
