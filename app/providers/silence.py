"""A stream's longest silence: each wait for its next event bounded, by one timer in all.

`asyncio.timeout` around every wait costs a context, a timer scheduled and a timer cancelled
per event: about 5 % of a streamed reply's CPU, spent on a limit that almost never trips. Here
a wait only records when it began; the one timer looks when it fires and, unless a wait has
really lasted the limit, sets itself again for when that wait would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class SilenceLimit:
    """`async with SilenceLimit(s) as limit:` then `await limit.next_of(events)`: TimeoutError
    when a wait lasts `s` seconds. Time spent elsewhere (retry back-off, the caller working
    between events) is not counted. Only the task that entered may wait; it trips at most once.
    """

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s
        self._waiting_since: float | None = None
        self._tripped = False

    async def __aenter__(self) -> SilenceLimit:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - only coroutines in a task enter it
        self._task = task
        self._cancelling = task.cancelling()
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(
            self._loop.time() + self._limit_s, self._look
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def next_of(self, events: AsyncIterator[T]) -> T:
        self._waiting_since = self._loop.time()
        try:
            return await anext(events)
        except asyncio.CancelledError:
            # Ours (and no one else's since): the silence lasted the limit.
            if self._tripped and self._task.uncancel() <= self._cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting_since = None

    def _look(self) -> None:
        self._timer = None
        if self._task.done():
            return
        now = self._loop.time()
        since = self._waiting_since
        if since is not None and now - since >= self._limit_s:
            # The task is suspended in `next_of` (the only place this is set): cancel it there.
            self._tripped = True
            self._task.cancel()
            return
        due = (since if since is not None else now) + self._limit_s
        self._timer = self._loop.call_at(due, self._look)
