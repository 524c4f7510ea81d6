"""Feedback on a conversation or one of its messages, over HTTP, on both backends."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.factories import create_conversation, give_feedback, send_message

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def feedback_url(conversation_id: str) -> str:
    return f"/api/v1/conversations/{conversation_id}/feedback"


def expect_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


async def list_feedback(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    response = await client.get(feedback_url(conversation_id), params={"limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


class TestGiveFeedback:
    @pytest.mark.parametrize(
        "fields",
        [
            {"type": "thumbs_up"},
            {"type": "thumbs_down", "comment": "too long"},
            {"type": "rating", "rating": 1},
            {"type": "rating", "rating": 5, "comment": "great"},
            {"type": "comment", "comment": "Could cite sources 📚"},
        ],
    )
    async def test_every_type_is_stored_and_returned_in_the_contract_shape(
        self, client: httpx.AsyncClient, fields: dict[str, Any]
    ) -> None:
        conversation = await create_conversation(client)

        response = await client.post(feedback_url(conversation["id"]), json=fields)

        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {
            "id",
            "conversation_id",
            "message_id",
            "type",
            "rating",
            "comment",
            "created_at",
        }
        uuid.UUID(body["id"])
        assert body["conversation_id"] == conversation["id"]
        assert body["message_id"] is None
        assert body["type"] == fields["type"]
        assert body["rating"] == fields.get("rating")
        assert body["comment"] == fields.get("comment")
        assert RFC3339_UTC.match(body["created_at"]), body["created_at"]
        assert await list_feedback(client, conversation["id"]) == [body]

    async def test_feedback_on_a_message_of_the_conversation_names_it(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        reply = (await send_message(client, conversation["id"], "hi"))["message"]

        body = await give_feedback(
            client, conversation["id"], type="thumbs_down", message_id=reply["id"]
        )

        assert body["message_id"] == reply["id"]

    @pytest.mark.parametrize("rating", [0, 6, -1, 2.5, "five", "5", True, [5]])
    async def test_a_rating_outside_1_to_5_is_refused(
        self, client: httpx.AsyncClient, rating: Any
    ) -> None:
        conversation = await create_conversation(client)
        response = await client.post(
            feedback_url(conversation["id"]), json={"type": "rating", "rating": rating}
        )
        body = expect_problem(response, 422, "validation_error")
        assert body["errors"][0]["loc"][:2] == ["body", "rating"]
        assert await list_feedback(client, conversation["id"]) == []

    async def test_a_rating_is_required_for_type_rating(self, client: httpx.AsyncClient) -> None:
        conversation = await create_conversation(client)
        for fields in ({"type": "rating"}, {"type": "rating", "rating": None}):
            response = await client.post(feedback_url(conversation["id"]), json=fields)
            body = expect_problem(response, 422, "validation_error")
            assert "rating" in body["errors"][0]["msg"]

    @pytest.mark.parametrize("comment", [None, "", "   "])
    async def test_a_comment_is_required_for_type_comment(
        self, client: httpx.AsyncClient, comment: str | None
    ) -> None:
        conversation = await create_conversation(client)
        response = await client.post(
            feedback_url(conversation["id"]), json={"type": "comment", "comment": comment}
        )
        expect_problem(response, 422, "validation_error")

    @pytest.mark.parametrize(
        "fields",
        [
            {},
            {"type": "love"},
            {"type": "THUMBS_UP"},
            {"type": "thumbs_up", "message_id": "not-a-uuid"},
            {"type": "comment", "comment": "x" * 10_001},
            {"type": "comment", "comment": "nul\u0000byte"},
        ],
    )
    async def test_a_malformed_body_is_a_validation_error(
        self, client: httpx.AsyncClient, fields: dict[str, Any]
    ) -> None:
        conversation = await create_conversation(client)
        response = await client.post(feedback_url(conversation["id"]), json=fields)
        body = expect_problem(response, 422, "validation_error")
        assert all(set(error) == {"loc", "msg"} for error in body["errors"])

    async def test_a_message_of_another_conversation_is_not_found_and_not_stored(
        self, client: httpx.AsyncClient
    ) -> None:
        mine = await create_conversation(client)
        other = await create_conversation(client)
        foreign = (await send_message(client, other["id"], "hi"))["message"]

        response = await client.post(
            feedback_url(mine["id"]), json={"type": "thumbs_up", "message_id": foreign["id"]}
        )

        body = expect_problem(response, 404, "message_not_found")
        assert foreign["id"] in body["detail"]
        assert await list_feedback(client, mine["id"]) == []
        assert await list_feedback(client, other["id"]) == []

    async def test_an_unknown_message_is_not_found(self, client: httpx.AsyncClient) -> None:
        conversation = await create_conversation(client)
        response = await client.post(
            feedback_url(conversation["id"]),
            json={"type": "thumbs_up", "message_id": str(uuid.uuid4())},
        )
        expect_problem(response, 404, "message_not_found")

    async def test_feedback_on_an_unknown_conversation_is_not_found(
        self, client: httpx.AsyncClient
    ) -> None:
        url = feedback_url(str(uuid.uuid4()))
        expect_problem(
            await client.post(url, json={"type": "thumbs_up"}), 404, "conversation_not_found"
        )
        expect_problem(await client.get(url), 404, "conversation_not_found")


class TestListFeedback:
    async def test_feedback_pages_newest_first_without_gaps(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        given = [
            (await give_feedback(client, conversation["id"], type="rating", rating=1 + i % 5))["id"]
            for i in range(7)
        ]
        url = feedback_url(conversation["id"])

        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            response = await client.get(url, params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            seen.extend(item["id"] for item in page["items"])
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break

        assert pages == 3
        assert seen == given[::-1]

    async def test_listing_shows_only_this_conversations_feedback(
        self, client: httpx.AsyncClient
    ) -> None:
        mine = await create_conversation(client)
        other = await create_conversation(client)
        kept = await give_feedback(client, mine["id"], type="thumbs_up")
        await give_feedback(client, other["id"], type="thumbs_down")
        assert [item["id"] for item in await list_feedback(client, mine["id"])] == [kept["id"]]

    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "garbage"}])
    async def test_bad_paging_parameters_are_validation_errors(
        self, client: httpx.AsyncClient, params: dict[str, Any]
    ) -> None:
        conversation = await create_conversation(client)
        response = await client.get(feedback_url(conversation["id"]), params=params)
        expect_problem(response, 422, "validation_error")

    async def test_a_cursor_from_another_list_does_not_leak_or_crash(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await create_conversation(client)
        second = await create_conversation(client)
        for _ in range(3):
            await give_feedback(client, first["id"], type="thumbs_up")
        cursor = (await client.get(feedback_url(first["id"]), params={"limit": 1})).json()[
            "next_cursor"
        ]
        response = await client.get(feedback_url(second["id"]), params={"cursor": cursor})
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "next_cursor": None}
