"""A stream's silence limit: each wait for the next event is bounded, and nothing else is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app.providers.silence import SilenceLimit

LIMIT_S = 0.1


async def events(*pauses: float) -> AsyncIterator[int]:
    """One event after each pause."""
    for number, pause in enumerate(pauses):
        await asyncio.sleep(pause)
        yield number


async def test_a_wait_that_lasts_the_limit_is_a_timeout() -> None:
    source = events(0, 10)
    started = time.monotonic()
    async with SilenceLimit(LIMIT_S) as silence:
        assert await silence.next_of(source) == 0
        with pytest.raises(TimeoutError):
            await silence.next_of(source)
    assert LIMIT_S <= time.monotonic() - started < 1


async def test_events_that_keep_coming_never_time_out_however_long_the_whole() -> None:
    source = events(*[LIMIT_S / 4] * 12)  # 3 limits in all, never a quarter of one silent
    async with SilenceLimit(LIMIT_S) as silence:
        heard = [await silence.next_of(source) for _ in range(12)]
    assert heard == list(range(12))


async def test_time_spent_between_waits_is_not_silence() -> None:
    source = events(0, 0, 0)
    async with SilenceLimit(LIMIT_S) as silence:
        await silence.next_of(source)
        await asyncio.sleep(3 * LIMIT_S)  # the caller busy (or a retry backing off)
        assert await silence.next_of(source) == 1
        await asyncio.sleep(3 * LIMIT_S)
        assert await silence.next_of(source) == 2


async def test_a_wait_after_a_long_pause_still_gets_the_whole_limit() -> None:
    source = events(0, LIMIT_S * 0.8)
    async with SilenceLimit(LIMIT_S) as silence:
        await silence.next_of(source)
        await asyncio.sleep(LIMIT_S * 0.9)  # the timer fires meanwhile and sets itself again
        assert await silence.next_of(source) == 1


async def test_someone_elses_cancel_stays_a_cancel() -> None:
    async def wait_forever() -> None:
        async with SilenceLimit(10) as silence:
            await silence.next_of(events(10))

    waiting = asyncio.create_task(wait_forever())
    await asyncio.sleep(0.02)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def wait_within(outer_s: float, limit_s: float) -> None:
    async with asyncio.timeout(outer_s), SilenceLimit(limit_s) as silence:
        await silence.next_of(events(10))


async def test_an_outer_timeout_tripping_first_stays_its_own() -> None:
    with pytest.raises(TimeoutError):
        await wait_within(LIMIT_S / 2, LIMIT_S)
    # The outer timeout's, raised once: nothing was left cancelling this task.
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
