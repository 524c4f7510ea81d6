"""Archived and pinned conversations in listings, and `DELETE /users/me/data`: a user's data
erased, their spending kept for billing under the anonymous `erased` user, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from app.core.config import Settings
from app.db.base import utcnow
from app.db.models import (
    ApiKey,
    Conversation,
    Feedback,
    IdempotencyKey,
    Message,
    UserMonthlyUsage,
)
from app.db.session import create_engine
from app.repositories.usage import ERASED_USER, month_of
from tests.auth import bearer
from tests.factories import create_conversation, give_feedback, send_message
from tests.fakes.providers import registry_with
from tests.integration.test_cancel_and_recovery import QUICK_SHUTDOWN, TricklingProvider
from tests.integration.test_costs_and_budget import TINY_BUDGET
from tests.sse import stream_message

CONVERSATIONS = "/api/v1/conversations"
ERASE = "/api/v1/users/me/data"
NOTHING = {"conversations": 0, "messages": 0, "feedback": 0, "idempotency_keys": 0}
StartApp = Callable[..., Any]
MakeSettings = Callable[..., Settings]
Totals = tuple[int, int, int, int, Decimal]


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    """The titles of every page of a listing, following `next_cursor` with the same filters."""
    titles: list[str] = []
    cursor = None
    while True:
        response = await client.get(CONVERSATIONS, params={**params, "cursor": cursor or ()})
        assert response.status_code == 200, response.text
        titles += [item["title"] for item in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return titles


async def pages(client: httpx.AsyncClient, **params: Any) -> list[list[str]]:
    """Each page's titles, page by page."""
    result: list[list[str]] = []
    cursor = None
    while cursor is not None or not result:
        response = await client.get(CONVERSATIONS, params={**params, "cursor": cursor or ()})
        assert response.status_code == 200, response.text
        result.append([item["title"] for item in response.json()["items"]])
        cursor = response.json()["next_cursor"]
    return result


async def patch(client: httpx.AsyncClient, conversation: dict[str, Any], **fields: Any) -> None:
    response = await client.patch(f"{CONVERSATIONS}/{conversation['id']}", json=fields)
    assert response.status_code == 200, response.text


async def stored_rows(settings: Settings, user_id: str) -> dict[str, int]:
    """What the database holds of a user, read straight from it, not through the API."""
    engine = create_engine(settings)
    owned = select(Conversation.id).where(Conversation.user_id == user_id)
    counts = {
        "conversations": select(func.count()).where(Conversation.user_id == user_id),
        "messages": select(func.count()).where(Message.conversation_id.in_(owned)),
        "feedback": select(func.count()).where(Feedback.conversation_id.in_(owned)),
        "idempotency_keys": select(func.count()).where(IdempotencyKey.user_id == user_id),
        "usage_months": select(func.count()).where(UserMonthlyUsage.user_id == user_id),
        "api_keys": select(func.count()).where(ApiKey.user_id == user_id),
    }
    try:
        async with engine.connect() as connection:
            return {
                name: int((await connection.execute(count)).scalar_one())
                for name, count in counts.items()
            }
    finally:
        await engine.dispose()


async def usage_rows(settings: Settings) -> dict[tuple[str, str], Totals]:
    """Every `user_monthly_usage` row: (user, month) -> (requests, tokens..., cost)."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(UserMonthlyUsage))
            return {
                (row.user_id, row.month): (
                    row.requests,
                    row.prompt_tokens,
                    row.completion_tokens,
                    row.cached_tokens,
                    row.cost_usd,
                )
                for row in rows
            }
    finally:
        await engine.dispose()


async def add_usage(settings: Settings, user_id: str, month: str, cost: str) -> None:
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(UserMonthlyUsage).values(
                    user_id=user_id,
                    month=month,
                    requests=3,
                    prompt_tokens=100,
                    completion_tokens=50,
                    cached_tokens=7,
                    cost_usd=Decimal(cost),
                    updated_at=utcnow(),
                )
            )
    finally:
        await engine.dispose()


def per_month(rows: dict[tuple[str, str], Totals]) -> dict[str, Totals]:
    """Billing's view: every user's totals of a month added up."""
    sums: dict[str, Totals] = {}
    for (_, month), totals in rows.items():
        before = sums.get(month, (0, 0, 0, 0, Decimal(0)))
        sums[month] = (
            before[0] + totals[0],
            before[1] + totals[1],
            before[2] + totals[2],
            before[3] + totals[3],
            before[4] + totals[4],
        )
    return sums


async def furnish(client: httpx.AsyncClient, key: str, word: str) -> dict[str, Any]:
    """A user's data through the API: two conversations (one archived) with turns and
    feedback, one created and one turn sent with an `Idempotency-Key`."""
    auth = bearer(key)
    first = await client.post(
        CONVERSATIONS, json={"title": f"{word} one"}, headers={**auth, "Idempotency-Key": "c1"}
    )
    second = await client.post(CONVERSATIONS, json={"title": f"{word} two"}, headers=auth)
    assert first.status_code == second.status_code == 201
    first_id, second_id = first.json()["id"], second.json()["id"]
    turn = await client.post(
        f"{CONVERSATIONS}/{first_id}/messages",
        json={"content": f"about {word}"},
        headers={**auth, "Idempotency-Key": "t1"},
    )
    assert turn.status_code == 201, turn.text
    again = await client.post(
        f"{CONVERSATIONS}/{second_id}/messages", json={"content": "more"}, headers=auth
    )
    assert again.status_code == 201, again.text
    for body in (
        {"type": "thumbs_up", "message_id": turn.json()["message"]["id"]},
        {"type": "comment", "comment": "fine"},
    ):
        given = await client.post(f"{CONVERSATIONS}/{first_id}/feedback", json=body, headers=auth)
        assert given.status_code == 201, given.text
    archived = await client.patch(
        f"{CONVERSATIONS}/{second_id}", json={"archived": True}, headers=auth
    )
    assert archived.status_code == 200, archived.text
    return {"ids": [first_id, second_id], "message_id": turn.json()["message"]["id"]}


@pytest.fixture
async def tenants(
    start_app: StartApp, auth_settings: Callable[..., Settings], issue_key: Callable[..., Any]
) -> dict[str, Any]:
    """An app with auth on; alice and bob each hold conversations, turns, feedback and keys."""
    settings = auth_settings()
    client: httpx.AsyncClient = await start_app(settings)
    alice, bob = await issue_key("alice"), await issue_key("bob")
    return {
        "client": client,
        "settings": settings,
        "alice": alice,
        "bob": bob,
        "alices": await furnish(client, alice, "alice"),
        "bobs": await furnish(client, bob, "bob"),
    }


class TestListArchivedAndPinned:
    async def test_an_archived_conversation_is_left_out_of_the_list_and_of_search(
        self, client: httpx.AsyncClient
    ) -> None:
        kept = await create_conversation(client, title="zebra kept")
        hidden = await create_conversation(client, title="zebra hidden")
        by_text = await create_conversation(client, title="plain")
        await send_message(client, by_text["id"], "tell me about zebras")
        await patch(client, hidden, archived=True)
        await patch(client, by_text, archived=True)

        assert await listed(client) == [kept["title"]]
        assert await listed(client, q="zebra") == [kept["title"]]
        assert await listed(client, q="zebra", archived="false") == [kept["title"]]

    async def test_archived_true_lists_only_archived_ones_and_searches_among_them(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_conversation(client, title="zebra kept")
        hidden = await create_conversation(client, title="zebra hidden")
        other = await create_conversation(client, title="other hidden")
        await patch(client, hidden, archived=True)
        await patch(client, other, archived=True)

        assert await listed(client, archived="true") == ["other hidden", "zebra hidden"]
        assert await listed(client, archived="true", q="zebra") == ["zebra hidden"]

    async def test_unarchiving_brings_it_back_in_its_place(self, client: httpx.AsyncClient) -> None:
        older = await create_conversation(client, title="older")
        await create_conversation(client, title="newer")
        await patch(client, older, archived=True)
        assert await listed(client) == ["newer"]

        await patch(client, older, archived=False)

        assert await listed(client) == ["newer", "older"]
        assert await listed(client, archived="true") == []

    async def test_pinned_narrows_to_pinned_or_unpinned_ones(
        self, client: httpx.AsyncClient
    ) -> None:
        await create_conversation(client, title="pinned at birth", pinned=True)
        later = await create_conversation(client, title="pinned later")
        await create_conversation(client, title="loose")
        archived = await create_conversation(client, title="pinned archived", pinned=True)
        await patch(client, later, pinned=True)
        await patch(client, archived, archived=True)

        assert await listed(client, pinned="true") == ["pinned later", "pinned at birth"]
        assert await listed(client, pinned="false") == ["loose"]
        assert await listed(client) == ["loose", "pinned later", "pinned at birth"]
        assert await listed(client, pinned="true", archived="true") == ["pinned archived"]
        assert await listed(client, pinned="false", archived="true") == []

    async def test_a_filtered_listing_pages_by_cursor_without_gaps_or_repeats(
        self, client: httpx.AsyncClient
    ) -> None:
        created = [await create_conversation(client, title=f"c{n}") for n in range(7)]
        for conversation in created[::2]:  # c0, c2, c4, c6
            await patch(client, conversation, archived=True)
        await patch(client, created[1], pinned=True)
        await patch(client, created[5], pinned=True)

        assert await pages(client, archived="true", limit=3) == [["c6", "c4", "c2"], ["c0"]]
        assert await pages(client, limit=2) == [["c5", "c3"], ["c1"]]
        assert await pages(client, pinned="true", limit=1) == [["c5"], ["c1"]]

    async def test_a_filter_that_is_not_a_boolean_is_a_422(self, client: httpx.AsyncClient) -> None:
        for params in ({"archived": "maybe"}, {"pinned": "2"}):
            response = await client.get(CONVERSATIONS, params=params)

            assert response.status_code == 422, response.text
            assert response.json()["code"] == "validation_error"

    async def test_the_filters_are_described_in_openapi(self, client: httpx.AsyncClient) -> None:
        spec = (await client.get("/openapi.json")).json()
        parameters = {
            parameter["name"]: parameter
            for parameter in spec["paths"][CONVERSATIONS]["get"]["parameters"]
        }

        assert "archived" in parameters["archived"]["description"]
        assert "pinned" in parameters["pinned"]["description"]
        assert parameters["archived"]["schema"]["default"] is False


class TestEraseMyData:
    async def test_erases_exactly_the_callers_data_and_nothing_of_another_user(
        self, tenants: dict[str, Any]
    ) -> None:
        client, settings = tenants["client"], tenants["settings"]
        bobs_before = await stored_rows(settings, "bob")
        bobs_listing = (await client.get(CONVERSATIONS, headers=bearer(tenants["bob"]))).json()

        response = await client.delete(ERASE, headers=bearer(tenants["alice"]))

        assert response.status_code == 200, response.text
        # 2 conversations; 2 turns of 2 messages; 2 feedback; keys "c1" and "t1".
        expected = {"conversations": 2, "messages": 4, "feedback": 2, "idempotency_keys": 2}
        assert response.json() == expected
        assert await stored_rows(settings, "alice") == {
            **NOTHING,
            "usage_months": 1,  # this month's totals: the budget counts them
            "api_keys": 1,  # the account stays: only its data is erased
        }
        assert await stored_rows(settings, "bob") == bobs_before
        assert bobs_before["messages"] == 4
        again = await client.get(CONVERSATIONS, headers=bearer(tenants["bob"]))
        assert again.json() == bobs_listing
        # Alice's key still works, on an empty account.
        for archived in ("false", "true"):
            mine = await client.get(
                CONVERSATIONS, params={"archived": archived}, headers=bearer(tenants["alice"])
            )
            assert mine.status_code == 200
            assert mine.json()["items"] == []

    async def test_an_erased_conversation_is_a_404(self, tenants: dict[str, Any]) -> None:
        client, alice = tenants["client"], bearer(tenants["alice"])
        first_id, archived_id = tenants["alices"]["ids"]

        await client.delete(ERASE, headers=alice)

        for path in (first_id, archived_id, f"{first_id}/messages", f"{first_id}/feedback"):
            response = await client.get(f"{CONVERSATIONS}/{path}", headers=alice)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["code"] == "conversation_not_found"

    async def test_a_second_erase_erases_nothing(self, tenants: dict[str, Any]) -> None:
        client, alice = tenants["client"], bearer(tenants["alice"])
        await client.delete(ERASE, headers=alice)
        usage_after_first = await usage_rows(tenants["settings"])

        response = await client.delete(ERASE, headers=alice)

        assert response.status_code == 200, response.text
        assert response.json() == NOTHING
        assert await usage_rows(tenants["settings"]) == usage_after_first

    async def test_an_idempotency_key_of_an_erased_user_runs_afresh(
        self, tenants: dict[str, Any]
    ) -> None:
        client, alice = tenants["client"], bearer(tenants["alice"])
        await client.delete(ERASE, headers=alice)

        retried = await client.post(
            CONVERSATIONS, json={"title": "alice one"}, headers={**alice, "Idempotency-Key": "c1"}
        )

        assert retried.status_code == 201
        assert "Idempotency-Replayed" not in retried.headers
        assert retried.json()["id"] not in tenants["alices"]["ids"]

    async def test_past_months_move_into_the_erased_bucket_with_their_exact_cost(
        self, tenants: dict[str, Any]
    ) -> None:
        client, settings = tenants["client"], tenants["settings"]
        # Past months beside this one's (charged by the turns): one the bucket already holds
        # from an earlier erasure, one it does not.
        await add_usage(settings, "alice", "2020-01", "0.1234567891")
        await add_usage(settings, ERASED_USER, "2020-01", "2.5000000009")
        await add_usage(settings, "alice", "2020-02", "1.0000000001")
        await add_usage(settings, "bob", "2020-01", "0.3")
        before = await usage_rows(settings)
        this_month = month_of(utcnow())
        alices = before[("alice", this_month)]
        assert alices[0] == 2  # the two turns, charged
        assert alices[4] > 0

        response = await client.delete(ERASE, headers=bearer(tenants["alice"]))

        assert response.status_code == 200, response.text
        after = await usage_rows(settings)
        assert per_month(after) == per_month(before)
        assert [key for key in after if key[0] == "alice"] == [("alice", this_month)]
        assert after[(ERASED_USER, "2020-01")] == (6, 200, 100, 14, Decimal("2.6234567900"))
        assert after[(ERASED_USER, "2020-02")] == before[("alice", "2020-02")]
        # This month's totals stay the caller's: the monthly budget counts them.
        assert after[("alice", this_month)] == alices
        assert (ERASED_USER, this_month) not in after
        assert {key: totals for key, totals in after.items() if key[0] == "bob"} == {
            key: totals for key, totals in before.items() if key[0] == "bob"
        }

    async def test_erasing_does_not_reset_the_months_budget(
        self, start_app: StartApp, auth_settings: Callable[..., Settings], issue_key: Any
    ) -> None:
        client: httpx.AsyncClient = await start_app(auth_settings(user_budget_usd=TINY_BUDGET))
        carol = bearer(await issue_key("carol"))
        conversation = (await client.post(CONVERSATIONS, json={}, headers=carol)).json()
        spent = await client.post(
            f"{CONVERSATIONS}/{conversation['id']}/messages", json={"content": "Hi"}, headers=carol
        )
        assert spent.status_code == 201, spent.text

        erased = await client.delete(ERASE, headers=carol)
        fresh = (await client.post(CONVERSATIONS, json={}, headers=carol)).json()
        refused = await client.post(
            f"{CONVERSATIONS}/{fresh['id']}/messages", json={"content": "Again"}, headers=carol
        )

        assert erased.json()["conversations"] == 1
        assert refused.status_code == 402, refused.text
        assert refused.json()["code"] == "budget_exceeded"

    async def test_with_auth_off_the_caller_is_anonymous(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        mine = await create_conversation(client, title="anonymous's")
        await send_message(client, mine["id"])
        await give_feedback(client, mine["id"], type="thumbs_down")
        carols = await create_conversation(client, title="carol's", user_id="carol")
        await send_message(client, carols["id"])

        # With auth off a `user_id` names whose rows a request touches, but not here: /me.
        response = await client.delete(ERASE, params={"user_id": "carol"})

        assert response.status_code == 200, response.text
        assert response.json() == {
            "conversations": 1,
            "messages": 2,
            "feedback": 1,
            "idempotency_keys": 0,
        }
        assert await listed(client) == []
        assert await listed(client, user_id="carol") == ["carol's"]
        assert (await stored_rows(settings, "carol"))["messages"] == 2

    async def test_a_running_reply_is_erased_and_its_end_charges_nothing(
        self, start_app: StartApp, make_settings: MakeSettings
    ) -> None:
        settings = make_settings(**QUICK_SHUTDOWN)
        provider = TricklingProvider()
        client = await start_app(settings, providers=registry_with(provider))
        conversation = await create_conversation(client)
        reading = asyncio.create_task(stream_message(client, conversation["id"], "Go on"))
        await provider.wait_until_holding()

        response = await client.delete(ERASE)

        assert response.status_code == 200, response.text
        assert response.json()["messages"] == 2  # the question and the reply still running
        provider.release()
        stream = await reading
        assert stream.terminal.event in ("done", "error")
        assert await stored_rows(settings, "anonymous") == {
            **NOTHING,
            "usage_months": 0,
            "api_keys": 0,
        }
        assert await usage_rows(settings) == {}
        gone = await client.get(f"{CONVERSATIONS}/{conversation['id']}")
        assert gone.status_code == 404
