"""Conversations over HTTP: create, list and search, read, change and delete, on both backends."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.models import Feedback, Message
from app.db.session import create_engine
from tests.factories import create_conversation, give_feedback, send_message

CONVERSATIONS = "/api/v1/conversations"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
JSON = {"content-type": "application/json"}
ANY_ID = "0192f5b0-0000-7000-8000-000000000000"
NULLABLE = ("title", "provider", "model", "system_prompt")
# What a new conversation holds besides what it was created with.
NEW_CONVERSATION: dict[str, Any] = {
    "message_count": 0,
    "total_tokens": 0,
    "total_cost_usd": 0.0,
    "tools": None,
    "temperature": None,
    "top_p": None,
    "max_tokens": None,
    "title_source": "user",
    "archived": False,
    "pinned": False,
    "active_leaf_id": None,
}
DEFAULTS: dict[str, Any] = {"user_id": "anonymous", "metadata": {}, **dict.fromkeys(NULLABLE)}


def moment(text: str) -> datetime:
    """An RFC 3339 time as an aware datetime: strings with fractions do not sort as times."""
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0), text
    return parsed


def forge_cursor(created_at: str, row_id: str) -> str:
    """A cursor in the service's own encoding, for positions no listing handed out."""
    raw = json.dumps([created_at, row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def expect_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


async def pages_of(client: httpx.AsyncClient, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following `next_cursor` until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while cursor is not None or not pages:
        response = await client.get(CONVERSATIONS, params={**params, "cursor": cursor or ()})
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        cursor = response.json()["next_cursor"]
    return pages


async def list_all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    return [item for page in await pages_of(client, **params) for item in page]


async def count_rows(settings: Settings, model: Any, conversation_id: str) -> int:
    """Rows stored for a conversation, read straight from the database, not through the API."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            statement = select(func.count()).select_from(model)
            statement = statement.where(model.conversation_id == uuid.UUID(conversation_id))
            return int((await connection.execute(statement)).scalar_one())
    finally:
        await engine.dispose()


class TestCreateConversation:
    async def test_all_fields_are_stored_and_returned_in_the_contract_shape(
        self, client: httpx.AsyncClient
    ) -> None:
        fields = {
            "title": "Customer Support Chat",
            "metadata": {"source": "web", "tags": ["a", 1, None, True]},
            "provider": "mock",
            "model": "mock",
            "system_prompt": "Be brief.",
            "user_id": "user_123",
        }
        response = await client.post(CONVERSATIONS, json=fields)

        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        uuid.UUID(body.pop("id"))
        for moment in (body.pop("created_at"), body.pop("updated_at")):
            assert RFC3339_UTC.match(moment), moment
        assert body == {**NEW_CONVERSATION, **fields}
        assert isinstance(body["total_cost_usd"], float)
        stored = (await client.get(f"{CONVERSATIONS}/{response.json()['id']}")).json()
        assert stored == {**response.json(), "messages": []}

    @pytest.mark.parametrize("content", [b"{}", b"null", b""])
    async def test_an_empty_body_gives_the_defaults(
        self, client: httpx.AsyncClient, content: bytes
    ) -> None:
        response = await client.post(CONVERSATIONS, content=content, headers=JSON)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["created_at"] == body["updated_at"]
        assert {k: body[k] for k in DEFAULTS} == DEFAULTS

    async def test_an_unknown_provider_or_model_is_refused(self, client: httpx.AsyncClient) -> None:
        for fields in ({"provider": "nope"}, {"model": "gpt-9000"}):
            response = await client.post(CONVERSATIONS, json=fields)
            expect_problem(response, 422, "unknown_model")
        assert (await client.get(CONVERSATIONS)).json()["items"] == []


class TestListConversations:
    async def test_listing_is_newest_first_and_pages_without_gaps(
        self, client: httpx.AsyncClient
    ) -> None:
        created = [(await create_conversation(client, title=f"c{i}"))["id"] for i in range(25)]

        pages = await pages_of(client, limit=10)

        assert [len(page) for page in pages] == [10, 10, 5]
        assert [item["id"] for page in pages for item in page] == created[::-1]

    async def test_a_page_that_ends_the_list_has_a_null_cursor(
        self, client: httpx.AsyncClient
    ) -> None:
        for i in range(4):
            await create_conversation(client, title=f"c{i}")
        assert [len(page) for page in await pages_of(client, limit=2)] == [2, 2]
        assert [len(page) for page in await pages_of(client, limit=4)] == [4]
        assert [len(page) for page in await pages_of(client, limit=100)] == [4]

    @pytest.mark.parametrize(
        "params",
        [
            {"limit": "0"},
            {"limit": "101"},
            {"limit": "ten"},
            {"q": ""},
            {"q": "q" * 201},
            {"user_id": ""},
        ],
    )
    async def test_out_of_range_query_parameters_are_validation_errors(
        self, client: httpx.AsyncClient, params: dict[str, str]
    ) -> None:
        response = await client.get(CONVERSATIONS, params=params)
        body = expect_problem(response, 422, "validation_error")
        assert body["errors"][0]["loc"] == ["query", next(iter(params))]

    @pytest.mark.parametrize(
        "cursor",
        [
            pytest.param("not-a-cursor!!", id="not-base64"),
            pytest.param("é", id="not-ascii"),
            pytest.param(forge_cursor("x", "y")[:-3], id="truncated"),
            pytest.param("WyJ4Il0", id="one-element"),
            pytest.param("eyJhIjoxfQ", id="an-object"),
            pytest.param(forge_cursor("2024-01-15T10:30:00", ANY_ID), id="naive-time"),
            pytest.param(forge_cursor("2024-01-15T10:30:00Z", "nope"), id="bad-id"),
            pytest.param(forge_cursor("0001-01-01T00:00:00+14:00", ANY_ID), id="before-year-1"),
            pytest.param(forge_cursor("9999-12-31T23:59:59-14:00", ANY_ID), id="after-9999"),
        ],
    )
    async def test_an_invalid_cursor_is_a_validation_error(
        self, client: httpx.AsyncClient, cursor: str
    ) -> None:
        response = await client.get(CONVERSATIONS, params={"cursor": cursor})
        body = expect_problem(response, 422, "validation_error")
        assert body["errors"] == [{"loc": ["query", "cursor"], "msg": "invalid cursor"}]

    async def test_a_cursor_written_in_another_offset_names_the_same_position(
        self, client: httpx.AsyncClient
    ) -> None:
        for i in range(3):
            await create_conversation(client, title=f"c{i}")
        first = (await client.get(CONVERSATIONS, params={"limit": 1})).json()
        created_at, row_id = json.loads(base64.urlsafe_b64decode(first["next_cursor"] + "=="))
        shifted = datetime.fromisoformat(created_at).astimezone(timezone(timedelta(hours=5)))
        cursors = (first["next_cursor"], forge_cursor(shifted.isoformat(), row_id))

        pages = [(await client.get(CONVERSATIONS, params={"cursor": c})).json() for c in cursors]

        assert pages[0] == pages[1]
        assert len(pages[0]["items"]) == 2

    async def test_user_id_narrows_the_listing_to_that_owner(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await create_conversation(client, user_id="alice")
        await create_conversation(client, user_id="bob")
        items = await list_all(client, user_id="alice")
        assert [item["id"] for item in items] == [alice["id"]]

    async def test_without_user_id_auth_off_lists_the_anonymous_users_conversations(
        self, client: httpx.AsyncClient
    ) -> None:
        mine = await create_conversation(client)
        await create_conversation(client, user_id="bob")
        items = await list_all(client)
        assert [(item["id"], item["user_id"]) for item in items] == [(mine["id"], "anonymous")]


class TestSearchConversations:
    async def test_q_matches_titles_and_message_text_ignoring_ascii_case(
        self, client: httpx.AsyncClient
    ) -> None:
        by_title = await create_conversation(client, title="Billing Question")
        by_message = await create_conversation(client, title="untitled")
        await send_message(client, by_message["id"], "My INVOICE is wrong")
        await send_message(client, by_message["id"], "the invoice again")
        await create_conversation(client, title="something else")

        assert [c["id"] for c in await list_all(client, q="billing")] == [by_title["id"]]
        assert [c["id"] for c in await list_all(client, q="invoice")] == [by_message["id"]]
        assert await list_all(client, q="nowhere") == []

    async def test_percent_underscore_and_backslash_in_q_are_literal(
        self, client: httpx.AsyncClient
    ) -> None:
        for title in ["100% sure", "100 percent sure", "snake_case", "snakeXcase", "a\\b", "ab"]:
            await create_conversation(client, title=title)

        def found(items: list[dict[str, Any]]) -> list[str]:
            return [item["title"] for item in items]

        assert found(await list_all(client, q="%")) == ["100% sure"]
        assert found(await list_all(client, q="0% s")) == ["100% sure"]
        assert found(await list_all(client, q="_")) == ["snake_case"]
        assert found(await list_all(client, q="e_c")) == ["snake_case"]
        assert found(await list_all(client, q="\\")) == ["a\\b"]


class TestGetConversation:
    async def test_it_returns_its_messages_oldest_first(self, client: httpx.AsyncClient) -> None:
        conversation = await create_conversation(client, title="t")
        for text in ("first", "second", "third"):
            await send_message(client, conversation["id"], text)

        detail = (await client.get(f"{CONVERSATIONS}/{conversation['id']}")).json()

        assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 3
        assert [m["content"] for m in detail["messages"][::2]] == ["first", "second", "third"]
        times = [moment(m["created_at"]) for m in detail["messages"]]
        assert times == sorted(times)
        assert detail["message_count"] == 6


class TestUpdateConversation:
    @pytest.mark.parametrize(
        "change",
        [
            {"title": "new"},
            {"metadata": {"b": [2]}},
            {"provider": "mock"},
            {"model": "mock"},
            {"system_prompt": "Answer in French."},
        ],
    )
    async def test_each_field_changes_alone(
        self, client: httpx.AsyncClient, change: dict[str, Any]
    ) -> None:
        before = await create_conversation(client, title="old", metadata={"a": 1})
        url = f"{CONVERSATIONS}/{before['id']}"

        response = await client.patch(url, json=change)

        assert response.status_code == 200, response.text
        after = response.json()
        assert moment(after["updated_at"]) > moment(before["updated_at"])
        assert {**after, "updated_at": None} == {**before, **change, "updated_at": None}
        assert (await client.get(url)).json() == {**after, "messages": []}

    async def test_null_clears_a_field_and_null_metadata_becomes_empty(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(
            client, title="t", metadata={"a": 1}, system_prompt="s", provider="mock", model="mock"
        )
        url = f"{CONVERSATIONS}/{conversation['id']}"
        response = await client.patch(url, json=dict.fromkeys((*NULLABLE, "metadata")))
        assert response.status_code == 200, response.text
        assert {k: (await client.get(url)).json()[k] for k in DEFAULTS} == DEFAULTS

    async def test_unknown_fields_are_refused_by_name_and_change_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, title="keep", user_id="alice")
        url = f"{CONVERSATIONS}/{conversation['id']}"
        response = await client.patch(
            url, json={"title": "changed", "user_id": "mallory", "message_count": 99}
        )
        expect_problem(response, 422, "validation_error")
        refused = {tuple(error["loc"]) for error in response.json()["errors"]}
        assert refused == {("body", "user_id"), ("body", "message_count")}
        body = (await client.get(url)).json()
        assert (body["id"], body["user_id"], body["title"]) == (conversation["id"], "alice", "keep")
        assert body["message_count"] == 0

    async def test_a_setting_the_api_does_not_take_is_refused_not_dropped(
        self, client: httpx.AsyncClient
    ) -> None:
        """`temperature` on a conversation was a 201 that changed nothing (it is a setting
        now); a field the API does not have is refused."""
        response = await client.post(CONVERSATIONS, json={"title": "t", "presence_penalty": 1})
        expect_problem(response, 422, "validation_error")
        assert response.json()["errors"][0]["loc"] == ["body", "presence_penalty"]
        listed = (await client.get(CONVERSATIONS)).json()
        assert listed["items"] == []

    async def test_a_turn_with_an_unknown_field_is_refused_and_stores_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, title="t")
        url = f"{CONVERSATIONS}/{conversation['id']}/messages"
        response = await client.post(url, json={"content": "hi", "tool_set": []})
        expect_problem(response, 422, "validation_error")
        assert response.json()["errors"][0]["loc"] == ["body", "tool_set"]
        assert (await client.get(f"{CONVERSATIONS}/{conversation['id']}")).json()["messages"] == []

    async def test_an_unknown_model_is_refused_and_nothing_changes(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client, title="t")
        url = f"{CONVERSATIONS}/{conversation['id']}"
        response = await client.patch(url, json={"title": "x", "model": "gpt-9000"})
        expect_problem(response, 422, "unknown_model")
        assert (await client.get(url)).json()["title"] == "t"

    async def test_patching_an_unknown_conversation_is_not_found(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.patch(f"{CONVERSATIONS}/{uuid.uuid4()}", json={"title": "x"})
        expect_problem(response, 404, "conversation_not_found")


class TestDeleteConversation:
    async def test_delete_removes_it_with_its_messages_and_feedback(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        doomed = await create_conversation(client, title="doomed")
        kept = await create_conversation(client, title="kept")
        for conversation in (doomed, kept):
            turn = await send_message(client, conversation["id"], "hi")
            await give_feedback(
                client, conversation["id"], type="thumbs_up", message_id=turn["message"]["id"]
            )
        url = f"{CONVERSATIONS}/{doomed['id']}"
        assert await count_rows(settings, Message, doomed["id"]) == 2

        response = await client.delete(url)

        assert response.status_code == 204
        assert response.content == b""
        expect_problem(await client.get(url), 404, "conversation_not_found")
        expect_problem(await client.get(f"{url}/messages"), 404, "conversation_not_found")
        expect_problem(await client.get(f"{url}/feedback"), 404, "conversation_not_found")
        expect_problem(await client.delete(url), 404, "conversation_not_found")
        assert await count_rows(settings, Message, doomed["id"]) == 0
        assert await count_rows(settings, Feedback, doomed["id"]) == 0
        assert await count_rows(settings, Message, kept["id"]) == 2
        assert await count_rows(settings, Feedback, kept["id"]) == 1
        assert [c["id"] for c in await list_all(client)] == [kept["id"]]
