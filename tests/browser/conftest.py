"""The browser tests drive the page, not the storage: they run on Postgres only (every
storage path is tested on both databases by the integration tests), which halves their
share of CI's time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.databases import postgres_database


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url
