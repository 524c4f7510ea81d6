"""No cross-tenant access (RELIABILITY 8): user B, with valid credentials, walks every route
that takes a conversation or message id using user A's ids, and always gets the 404 of a
missing id; listings, search and usage for B never show A's data. Admins may read anyone's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.auth import bearer

CONVERSATIONS = "/api/v1/conversations"
SECRET_WORD = "zanzibar"
# A valid body for every route that takes one, keyed by (method, path template). A new route
# with an id in its path fails `test_every_id_route_is_walked` until it is added here.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/api/v1/conversations/{conversation_id}"): {"title": "taken over"},
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): {"content": "hijack"},
    ("POST", "/api/v1/conversations/{conversation_id}/feedback"): {"type": "thumbs_down"},
    ("POST", "/api/v1/conversations/{conversation_id}/messages/{message_id}/regenerate"): {},
}
# Query strings that reach deeper code paths of some routes, walked in addition to the bare one.
EXTRA_QUERIES: dict[tuple[str, str], list[dict[str, str]]] = {
    ("GET", "/api/v1/conversations/{conversation_id}/stream"): [{"content": "hijack"}],
}


def id_routes(app_openapi: dict[str, Any]) -> list[tuple[str, str]]:
    routes = []
    for path, operations in app_openapi["paths"].items():
        if "{conversation_id}" not in path and "{message_id}" not in path:
            continue
        routes.extend((method.upper(), path) for method in operations)
    return sorted(routes)


@pytest.fixture
async def tenants(
    start_app: Callable[..., Any],
    auth_settings: Callable[..., Settings],
    issue_key: Callable[..., Any],
) -> dict[str, Any]:
    """An app with auth on; alice owns a conversation with a reply and feedback; bob a key."""
    client: httpx.AsyncClient = await start_app(auth_settings())
    alice, bob, admin = (
        await issue_key("alice"),
        await issue_key("bob"),
        await issue_key("root", is_admin=True),
    )
    created = await client.post(
        CONVERSATIONS, json={"title": f"alice {SECRET_WORD}"}, headers=bearer(alice)
    )
    conversation_id = created.json()["id"]
    turn = await client.post(
        f"{CONVERSATIONS}/{conversation_id}/messages",
        json={"content": f"about {SECRET_WORD}"},
        headers=bearer(alice),
    )
    assert turn.status_code == 201, turn.text
    message_id = turn.json()["message"]["id"]
    feedback = await client.post(
        f"{CONVERSATIONS}/{conversation_id}/feedback",
        json={"type": "thumbs_up", "message_id": message_id},
        headers=bearer(alice),
    )
    assert feedback.status_code == 201, feedback.text
    return {
        "client": client,
        "alice": alice,
        "bob": bob,
        "admin": admin,
        "conversation_id": conversation_id,
        "message_id": message_id,
    }


async def snapshot(client: httpx.AsyncClient, key: str, conversation_id: str) -> Any:
    conversation = await client.get(f"{CONVERSATIONS}/{conversation_id}", headers=bearer(key))
    messages = await client.get(f"{CONVERSATIONS}/{conversation_id}/messages", headers=bearer(key))
    feedback = await client.get(f"{CONVERSATIONS}/{conversation_id}/feedback", headers=bearer(key))
    assert conversation.status_code == 200
    return conversation.json(), messages.json(), feedback.json()


class TestForeignIds:
    async def test_every_id_route_is_walked(self, tenants: dict[str, Any]) -> None:
        app_openapi = (await tenants["client"].get("/openapi.json")).json()
        routes = id_routes(app_openapi)

        assert len(routes) >= 9
        for method, path in routes:
            takes_body = "requestBody" in app_openapi["paths"][path][method.lower()]
            assert not takes_body or (method, path) in BODIES, f"add a body for {method} {path}"

    async def test_every_route_answers_404_to_another_users_ids(
        self, tenants: dict[str, Any]
    ) -> None:
        client: httpx.AsyncClient = tenants["client"]
        before = await snapshot(client, tenants["alice"], tenants["conversation_id"])
        app_openapi = (await client.get("/openapi.json")).json()
        walked = []
        for method, path in id_routes(app_openapi):
            url = path.format(
                conversation_id=tenants["conversation_id"], message_id=tenants["message_id"]
            )
            for params in [{}, *EXTRA_QUERIES.get((method, path), [])]:
                response = await client.request(
                    method,
                    url,
                    params=params,
                    json=BODIES.get((method, path)),
                    headers=bearer(tenants["bob"]),
                )
                walked.append((method, path, params))
                assert response.status_code == 404, (method, path, params, response.text)
                assert SECRET_WORD not in response.text

        assert len(walked) >= 10
        assert await snapshot(client, tenants["alice"], tenants["conversation_id"]) == before

    async def test_a_foreign_id_is_the_same_404_as_a_missing_one(
        self, tenants: dict[str, Any]
    ) -> None:
        client: httpx.AsyncClient = tenants["client"]
        missing = "00000000-0000-7000-8000-000000000000"

        foreign = await client.get(
            f"{CONVERSATIONS}/{tenants['conversation_id']}", headers=bearer(tenants["bob"])
        )
        absent = await client.get(f"{CONVERSATIONS}/{missing}", headers=bearer(tenants["bob"]))

        assert foreign.status_code == absent.status_code == 404
        assert foreign.json()["code"] == absent.json()["code"]


class TestListings:
    async def test_bobs_listing_never_shows_alices_conversations(
        self, tenants: dict[str, Any]
    ) -> None:
        client: httpx.AsyncClient = tenants["client"]
        bob = bearer(tenants["bob"])

        for params in [
            {},
            {"user_id": "alice"},
            {"q": SECRET_WORD},
            {"q": SECRET_WORD, "user_id": "alice"},
        ]:
            response = await client.get(CONVERSATIONS, params=params, headers=bob)
            assert response.status_code == 200, params
            assert response.json()["items"] == [], params

    async def test_bobs_usage_never_includes_alices_spend(self, tenants: dict[str, Any]) -> None:
        client: httpx.AsyncClient = tenants["client"]
        bob = bearer(tenants["bob"])

        for params in [{}, {"user_id": "alice"}, {"group_by": "user"}]:
            response = await client.get("/api/v1/usage", params=params, headers=bob)
            assert response.status_code == 200, params
            body = response.json()
            assert body["items"] == [], (params, body)
            assert "alice" not in response.text

    async def test_alice_sees_her_own(self, tenants: dict[str, Any]) -> None:
        client: httpx.AsyncClient = tenants["client"]

        listing = await client.get(CONVERSATIONS, headers=bearer(tenants["alice"]))
        usage = await client.get(
            "/api/v1/usage", params={"group_by": "user"}, headers=bearer(tenants["alice"])
        )

        assert [item["id"] for item in listing.json()["items"]] == [tenants["conversation_id"]]
        assert [item["key"] for item in usage.json()["items"]] == ["alice"]


class TestAdmin:
    async def test_an_admin_reads_alices_conversation(self, tenants: dict[str, Any]) -> None:
        response = await tenants["client"].get(
            f"{CONVERSATIONS}/{tenants['conversation_id']}", headers=bearer(tenants["admin"])
        )

        assert response.status_code == 200
        assert response.json()["user_id"] == "alice"

    async def test_an_admin_lists_a_named_users_conversations(
        self, tenants: dict[str, Any]
    ) -> None:
        client: httpx.AsyncClient = tenants["client"]
        admin = bearer(tenants["admin"])

        alices = await client.get(CONVERSATIONS, params={"user_id": "alice"}, headers=admin)
        bobs = await client.get(CONVERSATIONS, params={"user_id": "bob"}, headers=admin)

        assert [item["id"] for item in alices.json()["items"]] == [tenants["conversation_id"]]
        assert bobs.json()["items"] == []

    async def test_an_admin_creates_for_a_named_user(self, tenants: dict[str, Any]) -> None:
        response = await tenants["client"].post(
            CONVERSATIONS, json={"user_id": "dave"}, headers=bearer(tenants["admin"])
        )

        assert response.json()["user_id"] == "dave"
