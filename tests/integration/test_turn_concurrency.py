"""Many turns at once: totals stay exact, and waiting on a provider holds no database connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.models import Conversation, Message
from app.db.session import create_engine
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, StallingProvider, registry_with

StartApp = Callable[..., Any]


async def send(client: httpx.AsyncClient, conversation_id: str, content: str) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": content}
    )


async def totals_and_sums(settings: Settings, conversation_id: str) -> tuple[Any, Any]:
    """The conversation's stored totals, and the same three figures summed over its messages."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            key = UUID(conversation_id)
            totals = (
                await connection.execute(
                    select(
                        Conversation.message_count,
                        Conversation.total_tokens,
                        Conversation.total_cost_usd,
                    ).where(Conversation.id == key)
                )
            ).one()
            sums = (
                await connection.execute(
                    select(
                        func.count(Message.id),
                        func.coalesce(func.sum(Message.total_tokens), 0),
                        func.coalesce(func.sum(Message.cost_usd), 0),
                    ).where(Message.conversation_id == key)
                )
            ).one()
    finally:
        await engine.dispose()
    return tuple(totals), tuple(sums)


class TestConcurrentTurns:
    async def test_totals_equal_the_sum_of_their_messages_after_ten_concurrent_turns(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        conversation_id = (await create_conversation(client, title="busy"))["id"]

        responses = await asyncio.gather(
            *(send(client, conversation_id, f"Concurrent question {i}") for i in range(10))
        )

        # One generation per conversation: the rest are refused before anything is stored.
        served = [r for r in responses if r.status_code == 201]
        refused = [r for r in responses if r.status_code != 201]
        assert served
        assert {r.json()["code"] for r in refused} <= {"generation_in_progress"}
        assert {r.status_code for r in refused} <= {409}
        totals, sums = await totals_and_sums(settings, conversation_id)
        assert totals == sums
        message_count, total_tokens, total_cost = totals
        assert isinstance(total_cost, Decimal)
        assert isinstance(sums[2], Decimal)
        assert message_count == 2 * len(served)
        assert total_tokens == sum(r.json()["usage"]["total_tokens"] for r in served)
        assert total_cost > 0

    async def test_turns_waiting_on_the_provider_hold_no_connection_from_a_pool_of_one(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()
        settings = make_settings(db_pool_size=1, db_max_overflow=0)
        client = await start_app(settings, providers=registry_with(provider))
        conversation_ids = [
            (await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL))["id"]
            for _ in range(20)
        ]

        turns = [
            asyncio.create_task(send(client, conversation_id, f"Waiting turn {i}"))
            for i, conversation_id in enumerate(conversation_ids)
        ]
        try:
            async with asyncio.timeout(10):
                await provider.wait_until_entered(20)
            started = time.perf_counter()
            ready = await client.get("/ready")
            ready_seconds = time.perf_counter() - started
        finally:
            provider.release()
            responses = await asyncio.gather(*turns)

        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        assert ready_seconds < 1.0
        assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
        for i, conversation_id in enumerate(conversation_ids):
            stored = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
            assert stored["message_count"] == 2
            assert {m["status"] for m in stored["messages"]} == {"completed"}
            assert stored["messages"][0]["content"] == f"Waiting turn {i}"
            assert stored["total_tokens"] == 14


class TestOneGenerationPerConversation:
    async def test_a_second_turn_while_one_runs_is_a_409_and_stores_nothing(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        provider = StallingProvider()
        client = await start_app(settings, providers=registry_with(provider))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        first = asyncio.create_task(send(client, conversation["id"], "first"))
        try:
            async with asyncio.timeout(10):
                await provider.wait_until_entered(1)
            second = await send(client, conversation["id"], "second")
        finally:
            provider.release()
        assert (await first).status_code == 201

        assert second.status_code == 409
        assert second.headers["content-type"].startswith("application/problem+json")
        assert second.json()["code"] == "generation_in_progress"
        stored = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == ["first"]
        assert stored["message_count"] == 2
