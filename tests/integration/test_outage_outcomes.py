"""A reply's outcome survives a database that restarts or goes away (issue 18).

Postgres only: the database is reached through a TCP proxy the test cuts (every connection
reset, new ones refused) and restores, or its backends are terminated as a restart does.
The replies' outcomes are written once: conditional on the reply still running, retried on a
fresh connection, and kept in memory while the database is away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.models import Conversation, Message, MessageRole, MessageStatus
from app.db.session import create_engine, make_sessionmaker
from app.main import create_app
from tests.databases import admin_connection, postgres_database
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, StallingProvider, registry_with
from tests.faults import CuttableProxy
from tests.integration.test_failures import served
from tests.sse import stream_message

Served = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def proxy() -> AsyncIterator[CuttableProxy]:
    cuttable = CuttableProxy(target_port=5432)
    await cuttable.start()
    try:
        yield cuttable
    finally:
        await cuttable.aclose()


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "app_env": "test",
        "log_format": "json",
        "auth_enabled": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def through(proxy: CuttableProxy, url: str) -> str:
    proxied = url.replace(":5432/", f":{proxy.port}/", 1)
    assert proxied != url
    return proxied


async def terminate_backends(url: str) -> int:
    """What a Postgres restart does to a pool: every connection to the database is ended by
    the server (FATAL 57P01, admin shutdown)."""
    name = url.rsplit("/", 1)[1]
    async with admin_connection() as admin:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    await asyncio.sleep(0.1)  # the closes reach the app's connections
    return int(ended)


async def totals_agree(url: str) -> None:
    """Every conversation's totals equal the sum of its messages (promise 3)."""
    engine = create_engine(settings_for(url))
    try:
        async with make_sessionmaker(engine)() as session:
            rows = (
                await session.execute(
                    select(
                        Conversation.id,
                        Conversation.total_cost_usd,
                        Conversation.total_tokens,
                        func.coalesce(func.sum(Message.cost_usd), 0),
                        func.coalesce(func.sum(Message.total_tokens), 0),
                    )
                    .join(Message, Message.conversation_id == Conversation.id)
                    .group_by(Conversation.id)
                )
            ).all()
    finally:
        await engine.dispose()
    for _, cost, tokens, summed_cost, summed_tokens in rows:
        assert (Decimal(cost), tokens) == (Decimal(summed_cost), summed_tokens)


async def new_conversation(client: httpx.AsyncClient, **body: Any) -> str:
    created = await client.post("/api/v1/conversations", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


class TestARestartedDatabase:
    async def test_the_first_requests_after_a_restart_with_an_idle_pool_succeed(
        self, database: str
    ) -> None:
        app = create_app(settings_for(database, db_pool_size=3, db_max_overflow=0))
        async with served(app) as client:
            conversation_id = await new_conversation(client)
            # Fill the pool with idle connections.
            await asyncio.gather(*(client.get("/api/v1/conversations") for _ in range(6)))
            assert await terminate_backends(database) >= 1

            statuses = [
                (await client.get("/api/v1/conversations")).status_code,
                (
                    await client.post(
                        f"/api/v1/conversations/{conversation_id}/messages",
                        json={"content": "still there?"},
                    )
                ).status_code,
                (await client.post("/api/v1/conversations", json={})).status_code,
                (await client.get(f"/api/v1/conversations/{conversation_id}")).status_code,
            ]

        assert statuses == [200, 201, 201, 200]

    async def test_a_reply_whose_pooled_connection_died_meanwhile_is_stored_and_charged_once(
        self, database: str
    ) -> None:
        provider = StallingProvider()
        app = create_app(settings_for(database), providers=registry_with(provider))
        async with served(app) as client:
            conversation_id = await new_conversation(
                client, provider=FAKE_PROVIDER, model=FAKE_MODEL
            )
            url = f"/api/v1/conversations/{conversation_id}/messages"
            turn = asyncio.create_task(client.post(url, json={"content": "take your time"}))
            await provider.wait_until_entered(1)
            await terminate_backends(database)
            provider.release()
            response = await asyncio.wait_for(turn, 30)
            stored = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()

        assert response.status_code == 201, response.text
        reply = stored["messages"][-1]
        assert (reply["status"], reply["content"]) == ("completed", provider.reply)
        assert stored["total_tokens"] == reply["total_tokens"] == 14
        await totals_agree(database)


class TestADatabaseThatGoesAway:
    async def test_a_reply_finished_during_an_outage_is_stored_when_it_returns_and_streams_done(
        self, database: str, proxy: CuttableProxy
    ) -> None:
        provider = StallingProvider()
        app = create_app(settings_for(through(proxy, database)), providers=registry_with(provider))
        async with served(app) as client:
            conversation_id = await new_conversation(
                client, provider=FAKE_PROVIDER, model=FAKE_MODEL
            )
            streaming = asyncio.create_task(
                stream_message(client, conversation_id, "wait for me", within=30)
            )
            await provider.wait_until_entered(1)
            proxy.cut()
            provider.release()
            await asyncio.sleep(2)  # the reply is finished, its outcome waits in memory
            assert not streaming.done()
            proxy.restore()
            stream = await asyncio.wait_for(streaming, 30)
            stored = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()

        assert stream.terminal.event == "done", stream.body
        assert "".join(e.json()["content"] for e in stream.events if e.event == "delta") == (
            provider.reply
        )
        reply = stored["messages"][-1]
        assert (reply["status"], reply["content"]) == ("completed", provider.reply)
        assert stored["total_tokens"] == reply["total_tokens"] == 14
        await totals_agree(database)

    async def test_a_turn_that_stops_waiting_is_a_503_naming_its_stored_reply(
        self, database: str, proxy: CuttableProxy
    ) -> None:
        provider = StallingProvider()
        settings = settings_for(through(proxy, database), generation_timeout_seconds=1.5)
        app = create_app(settings, providers=registry_with(provider))
        async with served(app) as client:
            conversation_id = await new_conversation(
                client, provider=FAKE_PROVIDER, model=FAKE_MODEL
            )
            url = f"/api/v1/conversations/{conversation_id}/messages"
            turn = asyncio.create_task(client.post(url, json={"content": "are you there?"}))
            await provider.wait_until_entered(1)
            proxy.cut()
            provider.release()
            response = await asyncio.wait_for(turn, 30)
            proxy.restore()
            # The outcome kept waiting after the 503, and is written now.
            for _ in range(100):
                stored = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
                if stored["messages"][-1]["status"] != "in_progress":
                    break
                await asyncio.sleep(0.1)
            again = await client.post(url, json={"content": "and now?"})

        assert response.status_code == 503, response.text
        problem = response.json()
        assert problem["code"] == "not_ready"
        assert response.headers["retry-after"]
        question, reply = stored["messages"][:2]
        assert problem["conversation_id"] == conversation_id
        assert problem["reply_id"] == reply["id"]
        assert question["content"] == "are you there?"
        assert (reply["status"], reply["content"]) == ("completed", provider.reply)
        assert again.status_code == 201, again.text
        await totals_agree(database)


class TestAnOutcomeIsWrittenOnce:
    async def test_completing_a_reply_again_changes_and_charges_nothing(
        self, database: str
    ) -> None:
        """The retry after a dropped connection that had applied the write: a no-op."""
        from app.db.driver import statements
        from app.providers.base import Usage
        from app.repositories.turns import TurnRepo
        from app.repositories.usage import month_of

        app = create_app(settings_for(database))
        async with served(app) as client:
            conversation_id = await new_conversation(client)
            sent = await client.post(
                f"/api/v1/conversations/{conversation_id}/messages", json={"content": "hi"}
            )
            assert sent.status_code == 201
            engine = create_engine(settings_for(database))
            sessions = make_sessionmaker(engine)
            try:
                async with sessions() as session:
                    reply = await session.scalar(
                        select(Message).where(
                            Message.conversation_id == sent.json()["conversation_id"],
                            Message.role == MessageRole.ASSISTANT,
                        )
                    )
                assert reply is not None
                assert reply.status == MessageStatus.COMPLETED
                usage = Usage(prompt_tokens=100, completion_tokens=100)
                results = []
                for single in (True, False):  # the driver's statement, then a session's
                    async with statements(sessions, single_statements=single) as run:
                        results.append(
                            await TurnRepo(run).complete(
                                reply,
                                "anonymous",
                                month_of(reply.created_at),
                                usage,
                                Decimal("5"),
                            )
                        )
            finally:
                await engine.dispose()
            stored = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
            usage_report = (await client.get("/api/v1/usage")).json()

        assert results == [False, False]
        assert Decimal(str(stored["total_cost_usd"])) < 1
        assert [item["requests"] for item in usage_report["items"]] == [1]
        await totals_agree(database)
