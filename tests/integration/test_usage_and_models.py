"""GET /api/v1/usage and GET /api/v1/models: reports from stored replies, and the catalog."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.factories import create_conversation, send_message

PROBLEM_JSON = "application/problem+json"


async def spend(client: httpx.AsyncClient, user_id: str, turns: int) -> list[dict[str, Any]]:
    conversation = await create_conversation(client, user_id=user_id)
    return [await send_message(client, conversation["id"], f"turn {i}") for i in range(turns)]


class TestUsage:
    async def test_groups_by_model_and_totals_equal_the_sum_of_replies(
        self, client: httpx.AsyncClient
    ) -> None:
        results = await spend(client, "anonymous", 3)

        response = await client.get("/api/v1/usage")

        assert response.status_code == 200, response.text
        body = response.json()
        assert [item["key"] for item in body["items"]] == ["mock"]
        item = body["items"][0]
        assert item["requests"] == 3
        assert item["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in results)
        assert item["completion_tokens"] == sum(r["usage"]["completion_tokens"] for r in results)
        expected = sum(Decimal(str(r["cost_usd"])) for r in results)
        assert Decimal(str(item["cost_usd"])) == expected
        assert body["total_cost_usd"] == item["cost_usd"]

    @pytest.mark.parametrize("group_by", ["provider", "day", "user"])
    async def test_every_grouping_is_supported(
        self, client: httpx.AsyncClient, group_by: str
    ) -> None:
        await spend(client, "anonymous", 2)

        response = await client.get("/api/v1/usage", params={"group_by": group_by})

        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert len(items) == 1
        assert items[0]["requests"] == 2
        if group_by == "day":
            assert len(items[0]["key"]) == 10  # 2026-11-25
        else:
            assert items[0]["key"] == {"provider": "mock", "user": "anonymous"}[group_by]

    async def test_a_user_sees_only_their_own_spending(self, client: httpx.AsyncClient) -> None:
        await spend(client, "alice", 2)
        await spend(client, "bob", 1)

        alice = (await client.get("/api/v1/usage", params={"user_id": "alice"})).json()
        nobody = (await client.get("/api/v1/usage")).json()

        assert alice["items"][0]["requests"] == 2
        assert nobody == {"items": [], "total_cost_usd": 0.0}

    async def test_a_time_range_excludes_replies_outside_it(
        self, client: httpx.AsyncClient
    ) -> None:
        await spend(client, "anonymous", 1)

        past = await client.get(
            "/api/v1/usage", params={"from": "2000-01-01T00:00:00Z", "to": "2000-02-01T00:00:00Z"}
        )
        now = await client.get("/api/v1/usage", params={"from": "2000-01-01T00:00:00Z"})

        assert past.json()["items"] == []
        assert now.json()["items"][0]["requests"] == 1

    @pytest.mark.parametrize(
        "params",
        [
            {"group_by": "color"},
            {"from": "yesterday"},
            {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        ],
    )
    async def test_bad_parameters_are_a_validation_error(
        self, client: httpx.AsyncClient, params: dict[str, str]
    ) -> None:
        response = await client.get("/api/v1/usage", params=params)

        assert response.status_code == 422
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert response.json()["code"] == "validation_error"


class TestModels:
    async def test_the_mock_model_is_listed_with_its_price(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/models")

        assert response.status_code == 200
        items = response.json()["items"]
        assert items == [
            {
                "provider": "mock",
                "model": "mock",
                "input_per_mtok": 1.0,
                "output_per_mtok": 2.0,
                "cached_input_per_mtok": None,
                "context_window": 128000,
                "default": True,
            }
        ]

    async def test_configured_providers_are_listed_with_library_prices(
        self, start_app: Callable[..., Any], make_settings: Callable[..., Settings]
    ) -> None:
        settings = make_settings(
            openai_api_key="sk-test", default_provider="openai", default_model="gpt-4o"
        )
        client = await start_app(settings)

        items = (await client.get("/api/v1/models")).json()["items"]

        by_key = {(i["provider"], i["model"]): i for i in items}
        assert by_key[("openai", "gpt-4o")]["default"] is True
        assert by_key[("openai", "gpt-4o")]["input_per_mtok"] == 2.5
        assert by_key[("openai", "gpt-4o")]["context_window"] == 128000
        assert ("mock", "mock") in by_key
        assert all("sk-test" not in str(item) for item in items)
