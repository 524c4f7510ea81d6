"""Conversation titles: generated in the background after the first turn with TITLE_MODEL,
charged like a reply, never over a title the user set, and never a reason for a turn to fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.db.models import UserMonthlyUsage
from app.db.session import create_engine
from app.errors import UpstreamError
from app.providers.base import Usage
from app.providers.mock import MockProvider
from app.providers.registry import ProviderRegistry
from app.services.pricing.price import Price
from tests.factories import create_conversation, send_message
from tests.fakes.providers import (
    FAKE_MODEL,
    FAKE_PROVIDER,
    ClosableProvider,
    FailingProvider,
    StallingProvider,
)
from tests.sse import read_stream

StartApp = Callable[..., Any]
FIRST_MESSAGE = "Plan a three day hiking trip in the Alps for beginners please"


async def conversation(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def titled(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    """The conversation once its title generation has been charged (up to ~2 s)."""
    for _ in range(40):
        body = await conversation(client, conversation_id)
        if "title_generation" in body["metadata"]:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"no title was generated: {body}")


async def month_usage(
    settings: Settings, user_id: str = "anonymous"
) -> tuple[int, Decimal, int, Decimal]:
    """All of the user's (requests, cost, title requests, title cost) in
    `user_monthly_usage`."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        UserMonthlyUsage.requests,
                        UserMonthlyUsage.cost_usd,
                        UserMonthlyUsage.title_requests,
                        UserMonthlyUsage.title_cost_usd,
                    ).where(UserMonthlyUsage.user_id == user_id)
                )
            ).all()
    finally:
        await engine.dispose()
    return (
        sum(row[0] for row in rows),
        sum((Decimal(row[1]) for row in rows), Decimal(0)),
        sum(row[2] for row in rows),
        sum((Decimal(row[3]) for row in rows), Decimal(0)),
    )


def money(value: Any) -> Decimal:
    return Decimal(str(value))


@pytest.fixture
def mock_titles(make_settings: Callable[..., Settings]) -> Settings:
    """Titles by the mock, named explicitly: test settings may turn titles off by default."""
    return make_settings(title_model="mock")


@pytest.fixture
async def client(start_app: StartApp, mock_titles: Settings) -> httpx.AsyncClient:
    started: httpx.AsyncClient = await start_app(mock_titles)
    return started


def fake_titles(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    return make_settings(title_provider=FAKE_PROVIDER, title_model=FAKE_MODEL, **overrides)


class TestGeneratedTitle:
    async def test_first_turn_names_the_conversation_and_charges_it_exactly(
        self, client: httpx.AsyncClient, mock_titles: Settings
    ) -> None:
        created = await create_conversation(client)
        before = await month_usage(mock_titles)

        turn = await send_message(client, created["id"], FIRST_MESSAGE)
        body = await titled(client, created["id"])

        assert body["title"] == "Plan a three day hiking trip"
        assert body["title_source"] == "generated"
        spent = body["metadata"]["title_generation"]
        assert (spent["provider"], spent["model"]) == ("mock", "mock")
        usage = Usage(spent["prompt_tokens"], spent["completion_tokens"])
        title_cost = Price(Decimal("1.00"), Decimal("2.00")).cost_of(usage)
        assert title_cost > 0
        assert Decimal(spent["cost_usd"]) == title_cost
        # Its own kind of spend: the conversation's total stays the sum of its messages.
        assert money(body["total_cost_usd"]) == money(turn["cost_usd"])
        after = await month_usage(mock_titles)
        deltas = [now - then for now, then in zip(after, before, strict=True)]
        assert deltas == [1, money(turn["cost_usd"]), 1, title_cost]

    async def test_second_turn_does_not_name_it_again(self, client: httpx.AsyncClient) -> None:
        created = await create_conversation(client)
        first = await send_message(client, created["id"], FIRST_MESSAGE)
        named = await titled(client, created["id"])

        second = await send_message(client, created["id"], "And what should I pack?")
        await asyncio.sleep(0.3)

        body = await conversation(client, created["id"])
        assert body["title"] == named["title"]
        assert body["metadata"] == named["metadata"]
        replies = money(first["cost_usd"]) + money(second["cost_usd"])
        assert money(body["total_cost_usd"]) == replies

    async def test_disabled_title_model_names_nothing(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(title_model=""))
        created = await create_conversation(client)

        turn = await send_message(client, created["id"], FIRST_MESSAGE)
        await asyncio.sleep(0.3)

        body = await conversation(client, created["id"])
        assert body["title"] is None
        assert "title_generation" not in body["metadata"]
        assert money(body["total_cost_usd"]) == money(turn["cost_usd"])


class TestUserTitleWins:
    async def test_conversation_created_with_a_title_keeps_it(
        self, client: httpx.AsyncClient
    ) -> None:
        created = await create_conversation(client, title="My trip")

        turn = await send_message(client, created["id"], FIRST_MESSAGE)
        await asyncio.sleep(0.3)

        body = await conversation(client, created["id"])
        assert (body["title"], body["title_source"]) == ("My trip", "user")
        assert "title_generation" not in body["metadata"]
        assert money(body["total_cost_usd"]) == money(turn["cost_usd"])

    async def test_title_set_while_one_is_generated_is_not_replaced(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        stalling = StallingProvider(reply="Alpine Hiking Plan")
        registry = ProviderRegistry({"mock": MockProvider(), FAKE_PROVIDER: stalling}, "mock")
        client = await start_app(fake_titles(make_settings), providers=registry)
        created = await create_conversation(client)

        await send_message(client, created["id"], FIRST_MESSAGE)
        await asyncio.wait_for(stalling.wait_until_entered(1), timeout=2)
        renamed = await client.patch(
            f"/api/v1/conversations/{created['id']}", json={"title": "Mine"}
        )
        assert renamed.status_code == 200, renamed.text
        stalling.release()

        body = await titled(client, created["id"])
        assert (body["title"], body["title_source"]) == ("Mine", "user")
        # Asked for and paid: charged even though it was not used.
        assert body["metadata"]["title_generation"]["completion_tokens"] == 4


class TestFailingTitleModel:
    async def test_turn_succeeds_and_conversation_stays_untitled(
        self,
        capsys: pytest.CaptureFixture[str],  # first: logging is configured to its stdout
        start_app: StartApp,
        make_settings: Callable[..., Settings],
    ) -> None:
        failing = FailingProvider(UpstreamError("the title model is down"))
        registry = ProviderRegistry({"mock": MockProvider(), FAKE_PROVIDER: failing}, "mock")
        client = await start_app(fake_titles(make_settings), providers=registry)
        created = await create_conversation(client)
        secret = "my locker code is 8461-zebra"

        response = await client.post(
            f"/api/v1/conversations/{created['id']}/messages", json={"content": secret}
        )
        for _ in range(40):
            if failing.calls:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)

        assert response.status_code == 201, response.text
        body = await conversation(client, created["id"])
        assert (body["title"], body["title_source"]) == (None, None)
        assert "title_generation" not in body["metadata"]
        logged = capsys.readouterr().out
        assert "could not generate a conversation title" in logged
        assert secret not in logged


class TestTitleEvent:
    async def test_quick_title_reaches_the_stream_before_done(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        registry = ProviderRegistry(
            {"mock": MockProvider(chunk_delay_s=0.05), FAKE_PROVIDER: ClosableProvider()}, "mock"
        )
        client = await start_app(fake_titles(make_settings), providers=registry)
        created = await create_conversation(client)

        stream = await read_stream(
            client,
            "POST",
            f"/api/v1/conversations/{created['id']}/messages",
            json={"content": FIRST_MESSAGE, "stream": True},
        )

        names = stream.names
        assert "title" in names, names
        assert names.index("title") < names.index("done")
        assert stream.terminal.event == "done"  # exactly one end, and nothing after it
        (title,) = [frame.json() for frame in stream.events if frame.event == "title"]
        assert title == {"conversation_id": created["id"], "title": "Hello"}
        body = await conversation(client, created["id"])
        assert (body["title"], body["title_source"]) == ("Hello", "generated")

    async def test_title_after_the_reply_ended_is_not_streamed(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        stalling = StallingProvider(reply="Late title")
        registry = ProviderRegistry({"mock": MockProvider(), FAKE_PROVIDER: stalling}, "mock")
        client = await start_app(fake_titles(make_settings), providers=registry)
        created = await create_conversation(client)
        url = f"/api/v1/conversations/{created['id']}/messages"

        stream = await read_stream(
            client, "POST", url, json={"content": FIRST_MESSAGE, "stream": True}
        )
        stalling.release()
        body = await titled(client, created["id"])

        assert "title" not in stream.names
        assert body["title"] == "Late title"
        reply_id = stream.events[0].json()["message_id"]
        replay = await read_stream(client, "GET", f"/api/v1/conversations/{created['id']}/stream")
        assert replay.names[-1] == "done"
        assert "title" not in replay.names
        assert replay.events[0].json()["message_id"] == reply_id
