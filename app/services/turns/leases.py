"""This process's lease on the replies it generates: who owns a running reply, and for how long.

Every serving process has an owner id, stamped on each reply it starts (`generation_owner`),
and renews one row of `generation_leases` every quarter of `GENERATION_LEASE_SECONDS`. A
reply whose owner's lease is older than that has no live process behind it (killed, or cut off
from the database) and the sweep (app/services/turns/recovery.py) fails it within seconds. One
statement per process per interval, whatever the number of replies it runs.

A lease that lapsed because the database itself was away says nothing about its owner: every
lease lapses then. So a process judges others' leases only once its own renewals have
succeeded for half a lease in a row: by then a live owner that can reach the database has
renewed too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.base import utcnow
from app.db.models import GenerationLease as LeaseRow

log = structlog.get_logger(__name__)


class GenerationLease:
    """The lease of this process: renewed in the background, released at shutdown."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        lease_s: float,
        owner_id: uuid.UUID | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.owner_id = owner_id or uuid.uuid4()
        self.lease_s = lease_s
        self.renew_every_s = lease_s / 4
        # time.monotonic() of the first renewal of the current unbroken run; None after a
        # failed one (or before the first).
        self._healthy_since: float | None = None

    def lapsed_before(self) -> datetime:
        """Leases renewed before this moment have lapsed."""
        return utcnow() - timedelta(seconds=self.lease_s)

    def may_judge_others(self) -> bool:
        """Whether this process has reached the database long enough, without a break, that
        another's lapsed lease means its owner is gone (not that the database was)."""
        healthy_since = self._healthy_since
        return healthy_since is not None and (time.monotonic() - healthy_since >= self.lease_s / 2)

    async def renew(self) -> None:
        """Renew (or take) this process's lease: one upsert."""
        try:
            async with self._sessionmaker.begin() as session:
                dialect = session.get_bind().dialect.name
                insert = postgres_insert if dialect == "postgresql" else sqlite_insert
                now = utcnow()
                statement = insert(LeaseRow).values(owner_id=self.owner_id, renewed_at=now)
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[LeaseRow.owner_id], set_={"renewed_at": now}
                    )
                )
        except BaseException:
            self._healthy_since = None
            raise
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()

    async def renew_forever(self) -> None:
        """`renew` every quarter lease for the life of the process; failures are logged."""
        while True:
            try:
                await self.renew()
            except Exception as error:
                log.warning("could not renew the generation lease", error=type(error).__name__)
            await asyncio.sleep(self.renew_every_s)

    async def release(self) -> None:
        """At shutdown, after the generations have ended: whatever is still running under this
        owner is someone else's to end, at once."""
        try:
            async with self._sessionmaker.begin() as session:
                await session.execute(delete(LeaseRow).where(LeaseRow.owner_id == self.owner_id))
        except Exception as error:
            log.warning("could not release the generation lease", error=type(error).__name__)
