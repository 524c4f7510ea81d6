"""Fixtures shared by every level: real databases (Postgres and SQLite) and an app client."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text

from app.core.config import Settings
from app.db.session import create_engine
from app.main import create_app
from tests.databases import postgres_database, sqlite_database
from tests.fakes.upstream import FakeUpstream, running_upstream

BACKENDS = ["postgres", "sqlite"]
# The FastAPI app behind each client that `start_app` made (asgi-lifespan wraps the app).
_APPS: weakref.WeakKeyDictionary[httpx.AsyncClient, FastAPI] = weakref.WeakKeyDictionary()
_STATES: weakref.WeakKeyDictionary[httpx.AsyncClient, dict[str, Any]] = weakref.WeakKeyDictionary()
TABLES = ("feedback", "messages", "conversations", "user_monthly_usage", "idempotency_keys")


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """One migrated database per backend for the whole run; every test runs on both."""
    if request.param == "postgres":
        async with postgres_database() as url:
            yield url
    else:
        async with sqlite_database(tmp_path_factory.mktemp("sqlite")) as url:
            yield url


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    """Build settings for a test; never reads the developer's `.env`."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "app_env": "test",
            "log_format": "json",
            "auth_enabled": False,  # tests of authentication turn it on
            # Off unless a test names a title model (test_titles.py): a `title` event and a
            # title's spend would blur tests of everything else.
            "title_model": "",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def clean_database(database_url: str) -> AsyncIterator[None]:
    """Tests share one database per backend; each leaves it empty for the next."""
    yield
    engine = create_engine(Settings(_env_file=None, database_url=database_url))
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
        else:
            for table in TABLES:
                await connection.execute(text(f"DELETE FROM {table}"))
    await engine.dispose()


@pytest.fixture
async def start_app(clean_database: None) -> AsyncIterator[Callable[..., Any]]:
    """Start apps (lifespan included) for a test: `async with start_app(settings) as client`."""
    stack = AsyncExitStack()

    async def start(settings: Settings, **app_options: Any) -> httpx.AsyncClient:
        app = create_app(settings, **app_options)
        manager = await stack.enter_async_context(LifespanManager(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app),
                base_url="http://testserver",
            )
        )
        _APPS[client] = app
        # The lifespan state (app.api.deps.AppState), for tests that must reach its pools.
        _STATES[client] = manager._state
        return client

    async with stack:
        yield start


@pytest.fixture
async def client(start_app: Callable[..., Any], settings: Settings) -> httpx.AsyncClient:
    """A client of the app on the default settings (mock provider), on each backend."""
    started: httpx.AsyncClient = await start_app(settings)
    return started


@pytest.fixture
def state_of() -> Callable[[httpx.AsyncClient], dict[str, Any]]:
    """The lifespan state behind a client (`AppState`), for tests that need its pools."""

    def find(client: httpx.AsyncClient) -> dict[str, Any]:
        return _STATES[client]

    return find


@pytest.fixture
def app_of() -> Callable[[httpx.AsyncClient], FastAPI]:
    """The ASGI app behind a client, for tests that need its state."""

    def find(client: httpx.AsyncClient) -> FastAPI:
        return _APPS[client]

    return find


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    """A fake provider API (OpenAI, Azure, Anthropic wire formats) on a loopback port."""
    async with running_upstream() as fake:
        yield fake
