"""Failures the client did not cause: a crash inside a route, and a database that is gone."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import sqlalchemy.exc
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import literal, select

from app.core.config import Settings
from app.db.durable import durably
from app.db.session import create_engine, make_sessionmaker
from app.main import create_app
from tests.databases import POSTGRES_ADMIN_DSN, admin_connection


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` run through its lifespan; an unhandled error is answered, as a
    server answers it (500), rather than raised into the test."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
            base_url="http://testserver",
        ) as client,
    ):
        yield client


class CapturedLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class TestUnexpectedError:
    async def test_a_crash_is_a_bare_500_with_the_request_id_and_a_logged_traceback(
        self, settings: Settings
    ) -> None:
        app = create_app(settings)

        async def explode() -> None:
            raise RuntimeError("secret internals: sk-live-should-not-leak")

        app.add_api_route("/explode", explode)
        root = logging.getLogger()
        capture = CapturedLines()
        capture.setFormatter(root.handlers[0].formatter)
        root.addHandler(capture)
        try:
            async with served(app) as client:
                response = await client.get("/explode", headers={"X-Request-ID": "crash-1"})
        finally:
            root.removeHandler(capture)

        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-request-id"] == "crash-1"
        assert response.json() == {
            "type": "about:blank",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "an unexpected error occurred",
            "code": "internal_error",
            "request_id": "crash-1",
        }
        records = [json.loads(line) for line in capture.lines]
        crash = next(r for r in records if r["event"] == "unhandled error")
        assert crash["request_id"] == "crash-1"
        assert "RuntimeError" in crash["exception"]
        assert "Traceback" in crash["exception"]


class TestDriverErrors:
    @pytest.mark.parametrize(("lost_connection", "status"), [(True, 503), (False, 500)])
    async def test_a_bare_driver_error_is_503_when_it_lost_the_connection_else_500(
        self, settings: Settings, lost_connection: bool, status: int
    ) -> None:
        # asyncpg reports some lost connections (class 08, an admin shutdown) as plain server
        # errors: SQLAlchemy wraps them as a bare DBAPIError marked `connection_invalidated`.
        app = create_app(settings)

        async def fail() -> None:
            raise sqlalchemy.exc.DBAPIError(
                "SELECT 1", None, OSError("gone"), connection_invalidated=lost_connection
            )

        app.add_api_route("/driver-error", fail)
        async with served(app) as client:
            response = await client.get("/driver-error", headers={"X-Request-ID": "db-1"})

        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["request_id"] == "db-1"
        assert response.json()["code"] == ("not_ready" if lost_connection else "internal_error")


class TestDatabaseOutage:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/api/v1/conversations"),
            ("POST", "/api/v1/conversations"),
            ("GET", "/api/v1/conversations/0192f5b0-0000-7000-8000-000000000000"),
            ("POST", "/api/v1/conversations/0192f5b0-0000-7000-8000-000000000000/messages"),
        ],
    )
    async def test_requests_get_a_quick_503_when_the_database_is_unreachable(
        self, make_settings: Callable[..., Settings], method: str, path: str
    ) -> None:
        settings = make_settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/gone")
        app = create_app(settings)
        body = {"content": "hello"} if path.endswith("messages") else {}
        async with served(app) as client:
            response = await client.request(method, path, json=body)

        assert response.status_code == 503
        assert response.json()["code"] == "not_ready"
        assert response.headers["retry-after"] == "5"


@pytest.fixture
async def refused_url() -> AsyncIterator[tuple[str, str]]:
    """A Postgres URL whose every new connection is turned away by the server itself
    (SQLSTATE 53300, as `too many clients`): a role allowed no connections at all.
    Yields the URL and the role, so a test may let it in again."""
    role = f"chat_api_refused_{uuid.uuid4().hex[:8]}"
    async with admin_connection() as admin:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        try:
            base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].split("@", 1)[1]
            yield f"postgresql+asyncpg://{role}@{base}/postgres", role
        finally:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _settings_for(url: str) -> Settings:
    return Settings(
        _env_file=None, database_url=url, app_env="test", log_format="json", auth_enabled=False
    )


class TestDatabaseRefusingConnections:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/api/v1/conversations"),  # a session
            ("POST", "/api/v1/conversations"),  # the driver: one statement
            ("POST", "/api/v1/conversations/0192f5b0-0000-7000-8000-000000000000/messages"),
        ],
    )
    async def test_a_database_turning_connections_away_is_a_quick_503_not_a_500(
        self, refused_url: tuple[str, str], method: str, path: str
    ) -> None:
        url, _ = refused_url
        app = create_app(_settings_for(url))
        body = {"content": "hello"} if path.endswith("messages") else {}
        async with served(app) as client:
            response = await client.request(method, path, json=body)

        assert response.status_code == 503, response.text
        assert response.json()["code"] == "not_ready"
        assert response.headers["retry-after"] == "5"

    @pytest.mark.parametrize("single_statements", [True, False], ids=["driver", "session"])
    async def test_storing_an_outcome_waits_until_the_database_lets_it_in(
        self, refused_url: tuple[str, str], single_statements: bool
    ) -> None:
        url, role = refused_url
        engine = create_engine(_settings_for(url))
        refused_for_s = 1.0

        async def let_in_later() -> None:
            await asyncio.sleep(refused_for_s)
            async with admin_connection() as admin:
                await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')

        letting_in = asyncio.create_task(let_in_later())
        started = time.monotonic()
        try:
            rows = await durably(
                make_sessionmaker(engine),
                lambda run: run.rows(select(literal(42)), {}),
                deadline_s=30,
                single_statements=single_statements,
            )
        finally:
            await letting_in
            await engine.dispose()

        assert [tuple(row) for row in rows] == [(42,)]
        # It waited for the role to be let in, rather than failing at the first refusal.
        assert time.monotonic() - started >= refused_for_s
