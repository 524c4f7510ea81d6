"""Spending: the monthly budget stops new turns before the provider is called, and each
user's monthly total is exactly the sum of their replies' costs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select

from app.core.config import ModelPriceOverride, Settings
from app.db.models import Conversation, Message, UserMonthlyUsage
from app.db.session import create_engine
from tests.factories import create_conversation
from tests.fakes.upstream import Fail, FakeUpstream, Reply

StartApp = Callable[..., Any]
TINY_BUDGET = Decimal("0.000001")


def new_user() -> str:
    # The usage table outlives each test's clean-up: every test spends as a user of its own.
    return f"user-{uuid.uuid4().hex[:12]}"


def openai_settings(
    make_settings: Callable[..., Settings], fake: FakeUpstream, **overrides: Any
) -> Settings:
    return make_settings(openai_api_key=fake.api_key, openai_base_url=f"{fake.url}/v1", **overrides)


async def post_turn(
    client: httpx.AsyncClient, conversation_id: str, content: str = "Hello"
) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": content}
    )


async def monthly_usage(settings: Settings, user_id: str) -> list[tuple[Any, ...]]:
    """The user's `user_monthly_usage` rows: (requests, prompt, completion, cost)."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(
                    UserMonthlyUsage.requests,
                    UserMonthlyUsage.prompt_tokens,
                    UserMonthlyUsage.completion_tokens,
                    UserMonthlyUsage.cost_usd,
                ).where(UserMonthlyUsage.user_id == user_id)
            )
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


async def reply_sums(settings: Settings, user_id: str) -> tuple[Any, ...]:
    """The same four figures summed over the user's completed replies."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        func.count(Message.id),
                        func.sum(Message.prompt_tokens),
                        func.sum(Message.completion_tokens),
                        func.sum(Message.cost_usd),
                    )
                    .join(Conversation, Message.conversation_id == Conversation.id)
                    .where(Conversation.user_id == user_id, Message.role == "assistant")
                )
            ).one()
            return tuple(row)
    finally:
        await engine.dispose()


class TestBudget:
    async def test_a_spent_budget_refuses_the_next_turn_without_calling_the_provider(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client: httpx.AsyncClient = await start_app(
            openai_settings(make_settings, upstream, user_budget_usd=TINY_BUDGET)
        )
        conversation = await create_conversation(client, user_id=new_user(), model="gpt-4o")

        first = await post_turn(client, conversation["id"])
        second = await post_turn(client, conversation["id"], "One more?")

        assert first.status_code == 201, first.text
        assert Decimal(str(first.json()["cost_usd"])) > TINY_BUDGET
        assert second.status_code == 402
        assert second.json()["code"] == "budget_exceeded"
        assert second.headers["content-type"] == "application/problem+json"
        assert len(upstream.requests) == 1
        read = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert read["message_count"] == 2
        assert [m["content"] for m in read["messages"]][0] == "Hello"
        assert len(read["messages"]) == 2

    async def test_one_user_s_spent_budget_does_not_stop_another_user(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client: httpx.AsyncClient = await start_app(make_settings(user_budget_usd=TINY_BUDGET))
        spender = await create_conversation(client, user_id=new_user())
        other = await create_conversation(client, user_id=new_user())

        assert (await post_turn(client, spender["id"])).status_code == 201
        assert (await post_turn(client, spender["id"])).status_code == 402
        other_turn = await post_turn(client, other["id"])

        assert other_turn.status_code == 201, other_turn.text
        assert other_turn.json()["message"]["provider"] == "mock"

    async def test_without_a_budget_spending_is_not_limited(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client: httpx.AsyncClient = await start_app(make_settings())
        conversation = await create_conversation(client, user_id=new_user())

        statuses = [
            (await post_turn(client, conversation["id"], f"Q{i}")).status_code for i in range(3)
        ]

        assert statuses == [201, 201, 201]


class TestMonthlyUsage:
    async def test_the_monthly_total_equals_the_sum_of_replies_after_concurrent_turns(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        settings = make_settings()
        client: httpx.AsyncClient = await start_app(settings)
        user = new_user()
        # One generation runs per conversation at a time: ten conversations, one turn each.
        conversations = [await create_conversation(client, user_id=user) for _ in range(10)]

        responses = await asyncio.gather(
            *(
                post_turn(client, conversation["id"], f"Concurrent question {i}")
                for i, conversation in enumerate(conversations)
            )
        )

        assert [r.status_code for r in responses] == [201] * 10
        [row] = await monthly_usage(settings, user)
        assert row == await reply_sums(settings, user)
        requests, _, _, cost = row
        assert requests == 10
        assert isinstance(cost, Decimal)
        assert cost == sum(Decimal(str(r.json()["cost_usd"])) for r in responses)
        assert cost > 0

    async def test_a_failed_turn_is_not_charged_to_the_month(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        settings = openai_settings(make_settings, upstream)
        client: httpx.AsyncClient = await start_app(settings)
        user = new_user()
        conversation = await create_conversation(client, user_id=user, model="gpt-4o")
        upstream.script(Fail(400), Reply("Fine.", prompt_tokens=1000, completion_tokens=200))

        failed = await post_turn(client, conversation["id"])
        # A provider's refusal reaches the client with its status.
        assert failed.status_code == 400, failed.text
        assert await monthly_usage(settings, user) == []
        succeeded = await post_turn(client, conversation["id"])

        assert succeeded.status_code == 201
        # 1,000 in at $2.50 and 200 out at $10.00 per million tokens.
        assert await monthly_usage(settings, user) == [(1, 1000, 200, Decimal("0.0045"))]


class TestFallbackPricing:
    async def test_a_fallback_to_another_model_is_priced_as_the_model_that_answered(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        # The primary's configured price must not be charged for the fallback's reply.
        expensive = ModelPriceOverride(input_per_mtok=Decimal(100), output_per_mtok=Decimal(100))
        settings = openai_settings(
            make_settings,
            upstream,
            fallback_models="openai:gpt-4o-mini",
            price_overrides={"openai:gpt-4o": expensive},
            provider_retry_max_wait_seconds=0.05,
        )
        client: httpx.AsyncClient = await start_app(settings)
        conversation = await create_conversation(client, user_id=new_user(), model="gpt-4o")
        upstream.script(
            *[Fail(500, retry_after="0")] * 3,
            Reply("Mini.", prompt_tokens=1000, completion_tokens=100),
        )

        response = await post_turn(client, conversation["id"])

        assert response.status_code == 201, response.text
        assert [r.json["model"] for r in upstream.requests] == ["gpt-4o"] * 3 + ["gpt-4o-mini"]
        message = response.json()["message"]
        assert (message["provider"], message["model"]) == ("openai", "gpt-4o-mini")
        # gpt-4o-mini's list price: $0.15 in and $0.60 out per million tokens.
        assert Decimal(str(message["cost_usd"])) == Decimal("0.00021")
        assert message["pricing"]["source"] == "genai-prices 0.2.3"
