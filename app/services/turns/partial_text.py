"""Running replies' text so far, saved for all of them together every flush interval.

A streamed reply's text is saved while it runs, so a crash loses at most the last
`STREAM_FLUSH_SECONDS` of it, and the save shows the abandoned-reply sweep the reply is alive.
One statement per interval saves every reply running in this process that grew since its last
save: with thousands of open streams that is one write per interval rather than thousands,
none of them waiting in the connection pool's queue ahead of new turns.

A reply that has not grown for two intervals is saved anyway, as a sign of life: one waiting
on its provider (a slow first token, a retry's backoff, a full upstream connection pool) or a
non-streaming turn (whose text comes all at once) is alive as long as this process is, and
the sweep must not take it for abandoned. The sweep's default wait (`abandoned_after_seconds`)
is longer than the three intervals that can pass between two saves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.driver import statements
from app.repositories.turns import TurnRepo
from app.services.turns.generated_text import Generation

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Running:
    generation: Generation
    saved_parts: int = 0  # how many of its parts the last save held
    # When it was last saved (or began: its claim wrote the row then), time.monotonic().
    saved_at: float = field(default_factory=time.monotonic)


class PartialTextSaver:
    """Saves the text of the generations it tracks, all in one statement, when asked."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], interval_s: float) -> None:
        self._sessionmaker = sessionmaker
        self.interval_s = interval_s
        self.alive_every_s = 2 * interval_s
        self._running: dict[UUID, _Running] = {}

    def track(self, reply_id: UUID, generation: Generation) -> None:
        self._running[reply_id] = _Running(generation)

    def forget(self, reply_id: UUID) -> None:
        """The reply is ending: its outcome, not a save, writes its text from now on."""
        self._running.pop(reply_id, None)

    async def save_now(self) -> int:
        """Save every tracked reply that grew since its last save, or has not been saved for
        `alive_every_s`; how many were saved.

        A reply that ends meanwhile is safe: the statement only writes replies still running.
        """
        now = time.monotonic()
        quiet_since = now - self.alive_every_s
        due = {
            reply_id: (running, len(running.generation.parts))
            for reply_id, running in self._running.items()
            if len(running.generation.parts) > running.saved_parts
            or running.saved_at <= quiet_since
        }
        if not due:
            return 0
        texts = {reply_id: "".join(r.generation.parts[:n]) for reply_id, (r, n) in due.items()}
        async with statements(self._sessionmaker, single_statements=True) as run:
            await TurnRepo(run).save_partials(texts)
        for running, parts in due.values():
            running.saved_parts = parts
            running.saved_at = now
        return len(due)

    async def save_forever(self) -> None:
        """`save_now` every interval, for the life of the process. A failed save is logged,
        not raised: the replies themselves are healthy, and the next save carries their text."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.save_now()
            except Exception as error:
                log.warning("could not save partial text", error=type(error).__name__)
