"""The in-process cache of API keys' callers: used only while trusted, forgetting on notice;
its listener says once, not at every attempt, that it cannot reach the database."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.config import Settings
from app.core.logging import configure_logging
from app.core.security import Principal
from app.services.access.known_keys import EVERY_KEY, KnownKeys, listen_for_key_changes

ALICE = Principal(user_id="alice", is_admin=False)
BOB = Principal(user_id="bob", is_admin=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trusted(**options: object) -> KnownKeys:
    keys = KnownKeys(**options)  # type: ignore[arg-type]
    keys.trust(True)
    return keys


def test_nothing_is_cached_or_served_until_trusted() -> None:
    keys = KnownKeys()
    keys.remember("a", ALICE, keys.generation)
    assert keys.get("a") is None
    keys.trust(True)
    assert keys.get("a") is None  # what it was told while untrusted was not kept


def test_a_remembered_key_is_served() -> None:
    keys = trusted()
    keys.remember("a", ALICE, keys.generation)
    keys.remember("b", BOB, keys.generation)
    assert keys.get("a") == ALICE
    assert keys.get("b") == BOB
    assert keys.get("c") is None


def test_a_lookup_that_started_before_a_notice_is_not_cached() -> None:
    keys = trusted()
    before = keys.generation
    keys.forget("a")  # revoked while the lookup was reading the old row
    keys.remember("a", ALICE, before)
    assert keys.get("a") is None


def test_a_notice_forgets_only_its_key_and_star_forgets_all() -> None:
    keys = trusted()
    for name in "abc":
        keys.remember(name, ALICE, keys.generation)
    keys.forget("b")
    assert [keys.get(name) for name in "abc"] == [ALICE, None, ALICE]
    keys.forget(EVERY_KEY)
    assert [keys.get(name) for name in "abc"] == [None, None, None]


def test_losing_trust_forgets_everything_and_serves_nothing() -> None:
    keys = trusted()
    keys.remember("a", ALICE, keys.generation)
    keys.trust(False)
    assert keys.get("a") is None
    keys.trust(True)
    assert keys.get("a") is None


def test_an_entry_expires_after_its_ttl() -> None:
    clock = Clock()
    keys = trusted(ttl_s=60.0, clock=clock)
    keys.remember("a", ALICE, keys.generation)
    clock.now += 59.9
    assert keys.get("a") == ALICE
    clock.now += 0.1
    assert keys.get("a") is None


def test_a_full_cache_drops_its_oldest_entry_and_a_refresh_counts_as_new() -> None:
    keys = trusted(max_entries=3)
    for name in "abc":
        keys.remember(name, ALICE, keys.generation)
    keys.remember("a", ALICE, keys.generation)  # refreshed: now the newest
    keys.remember("d", BOB, keys.generation)
    assert [keys.get(name) for name in "abcd"] == [ALICE, None, ALICE, BOB]


@pytest.fixture
def json_logs() -> None:
    # Before the test's call phase: pytest attaches its capturing handler to the root logger
    # then, and configuring logging replaces the root's handlers.
    configure_logging(Settings(_env_file=None, log_format="json", app_env="test"))


async def listener_losses(
    caplog: pytest.LogCaptureFixture, url: str, seconds: float, keys: KnownKeys
) -> list[str]:
    """Run the listener against `url` for `seconds`; the errors its "lost" lines name."""
    engine = create_async_engine(url)
    listening = asyncio.create_task(listen_for_key_changes(engine, keys))
    try:
        await asyncio.sleep(seconds)
        assert not listening.done()  # still trying, not dead with an unread exception
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await engine.dispose()
    lines = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    lost = "api key change listener lost"
    return [line["error"] for line in lines if line["event"].startswith(lost)]


@pytest.mark.usefixtures("json_logs")
async def test_an_unreachable_database_is_one_warning_and_never_trusted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = KnownKeys()
    # Nothing listens on port 1: every attempt is refused at once. Back-off 0.1 s, then
    # 0.5 s: three attempts or so in a second, one warning.
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    assert await listener_losses(caplog, url, 1.0, keys) == ["ConnectionRefusedError"]
    assert not keys.trusted


@pytest.mark.usefixtures("json_logs")
async def test_a_listener_failing_in_any_other_way_says_so_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = KnownKeys()
    # An option asyncpg does not know: connecting raises TypeError, not a connection error.
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere?bogus=1"
    assert await listener_losses(caplog, url, 0.3, keys) == ["TypeError"]
    assert not keys.trusted
