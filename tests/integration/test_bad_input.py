"""Hostile and broken input: each refusal is problem+json with the contract's code, never a 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect

from app.core.config import Settings
from app.db.session import create_engine
from tests.factories import create_conversation, send_message

CONVERSATIONS = "/api/v1/conversations"
JSON = {"content-type": "application/json"}
LIMIT = 2048


def expect_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's error shape: problem+json with a code and the request's id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "code", "request_id"}
    assert body["code"] == code
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.fixture
async def small_client(
    start_app: Callable[..., Any], make_settings: Callable[..., Settings]
) -> httpx.AsyncClient:
    """An app whose body limit is small enough to cross cheaply."""
    client: httpx.AsyncClient = await start_app(make_settings(max_body_bytes=LIMIT))
    return client


@pytest.fixture
async def conversation_id(client: httpx.AsyncClient) -> str:
    return str((await create_conversation(client))["id"])


class TestBodySize:
    async def test_a_declared_body_over_the_limit_is_payload_too_large(
        self, small_client: httpx.AsyncClient
    ) -> None:
        body = json.dumps({"title": "x" * LIMIT}).encode()
        response = await small_client.post(CONVERSATIONS, content=body, headers=JSON)
        detail = expect_problem(response, 413, "payload_too_large")["detail"]
        assert str(LIMIT) in detail
        assert (await small_client.get(CONVERSATIONS)).json()["items"] == []

    async def test_a_streamed_body_over_the_limit_is_payload_too_large(
        self, small_client: httpx.AsyncClient
    ) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"title": "'
            for _ in range(8):
                yield b"x" * 512
            yield b'"}'

        response = await small_client.post(CONVERSATIONS, content=chunks(), headers=JSON)
        assert "content-length" not in response.request.headers
        expect_problem(response, 413, "payload_too_large")
        assert (await small_client.get(CONVERSATIONS)).json()["items"] == []

    async def test_a_body_just_under_the_limit_is_accepted(
        self, small_client: httpx.AsyncClient
    ) -> None:
        body = json.dumps({"title": "x" * 400}).encode()
        response = await small_client.post(CONVERSATIONS, content=body, headers=JSON)
        assert response.status_code == 201, response.text


class TestMalformedBodies:
    @pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
    async def test_a_body_that_is_not_json_is_unsupported_media_type(
        self, client: httpx.AsyncClient, content_type: str | None
    ) -> None:
        headers = {"content-type": content_type} if content_type else {}
        response = await client.post(CONVERSATIONS, content=b'{"title": "x"}', headers=headers)
        expect_problem(response, 415, "unsupported_media_type")

    async def test_malformed_json_lists_errors_without_echoing_the_input(
        self, client: httpx.AsyncClient
    ) -> None:
        secret = "sk-very-secret-text"
        response = await client.post(
            CONVERSATIONS, content=f'{{"title": "{secret}",'.encode(), headers=JSON
        )
        body = expect_problem(response, 422, "validation_error")
        assert body["errors"]
        assert all(set(error) == {"loc", "msg"} for error in body["errors"])
        assert body["errors"][0]["loc"][0] == "body"
        assert secret not in response.text

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"title": "\xff\xfe"}',
            b'{"title": "caf\xc3"}',
            b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b'{"metadata": {"n": ' + b"9" * 5_000 + b"}}",
        ],
    )
    async def test_undecodable_bodies_are_validation_errors_not_crashes(
        self, client: httpx.AsyncClient, raw: bytes
    ) -> None:
        response = await client.post(CONVERSATIONS, content=raw, headers=JSON)
        body = expect_problem(response, 422, "validation_error")
        assert all(set(error) == {"loc", "msg"} for error in body["errors"])

    @pytest.mark.parametrize("text", ["nul\u0000byte", "lone \ud800 surrogate"])
    async def test_unstorable_text_is_refused_everywhere(
        self, client: httpx.AsyncClient, conversation_id: str, text: str
    ) -> None:
        # json.dumps escapes both as \u0000 and \ud800, which is valid JSON text.
        attempts = [
            (CONVERSATIONS, {"title": text}),
            (CONVERSATIONS, {"metadata": {"k": text}}),
            (CONVERSATIONS, {"metadata": {text: 1}}),
            (CONVERSATIONS, {"system_prompt": text}),
            (f"{CONVERSATIONS}/{conversation_id}/messages", {"content": text}),
            (f"{CONVERSATIONS}/{conversation_id}/messages", {"content": "x", "model": text}),
        ]
        for url, fields in attempts:
            response = await client.post(url, content=json.dumps(fields).encode(), headers=JSON)
            expect_problem(response, 422, "validation_error")
        if "\x00" in text:  # a query string cannot carry a lone surrogate, only NUL
            for param in ("q", "user_id"):
                response = await client.get(CONVERSATIONS, params={param: text})
                expect_problem(response, 422, "validation_error")
        patch = await client.patch(
            f"{CONVERSATIONS}/{conversation_id}", content=json.dumps({"title": text}), headers=JSON
        )
        expect_problem(patch, 422, "validation_error")
        assert (await client.get(f"{CONVERSATIONS}/{conversation_id}/messages")).json()[
            "items"
        ] == []

    @pytest.mark.parametrize(
        "fields",
        [
            {"title": "t" * 501},
            {"user_id": "u" * 256},
            {"user_id": ""},
            {"provider": "Mock"},
            {"provider": "p" * 65},
            {"model": "m" * 256},
            {"system_prompt": "s" * 100_001},
            {"metadata": "not an object"},
            {"metadata": [1, 2]},
            {"title": 5},
        ],
    )
    async def test_oversized_or_mistyped_conversation_fields_are_refused(
        self, client: httpx.AsyncClient, fields: dict[str, Any]
    ) -> None:
        response = await client.post(CONVERSATIONS, json=fields)
        body = expect_problem(response, 422, "validation_error")
        assert body["errors"][0]["loc"][:2] == ["body", next(iter(fields))]
        assert (await client.get(CONVERSATIONS)).json()["items"] == []

    async def test_message_content_over_100k_characters_is_refused(
        self, client: httpx.AsyncClient, conversation_id: str
    ) -> None:
        url = f"{CONVERSATIONS}/{conversation_id}/messages"
        response = await client.post(url, json={"content": "é" * 100_001})
        expect_problem(response, 422, "validation_error")
        assert (await client.get(url)).json()["items"] == []

    @pytest.mark.parametrize(
        "metadata",
        [
            {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
            {"deep": [[[[[[[[[["x"]]]]]]]]]]},
            {f"k{i}": i for i in range(300)},
            {"long": "x" * 8_193},
        ],
    )
    async def test_oversized_metadata_is_refused(
        self, client: httpx.AsyncClient, metadata: dict[str, Any]
    ) -> None:
        response = await client.post(CONVERSATIONS, json={"metadata": metadata})
        expect_problem(response, 422, "validation_error")


class TestTurnParameters:
    @pytest.mark.parametrize(
        "raw",
        [
            b'{"content": "x", "temperature": NaN}',
            b'{"content": "x", "temperature": Infinity}',
            b'{"content": "x", "temperature": -Infinity}',
            b'{"content": "x", "temperature": 1e999}',
            b'{"content": "x", "temperature": 2.5}',
            b'{"content": "x", "temperature": -1}',
            b'{"content": "x", "max_tokens": 0}',
            b'{"content": "x", "max_tokens": 1.5}',
            b'{"content": "x", "max_tokens": true}',
            b'{"content": "x", "max_tokens": "10"}',
            b'{"content": "x", "temperature": true}',
            b'{"content": "x", "temperature": "0.5"}',
            b'{"content": "x", "stream": "yes"}',
            b'{"content": "x", "metadata": {"n": NaN}}',
            b'{"content": ""}',
            b'{"content": 42}',
            b'{"content": "x", "stream": "maybe"}',
            b"[]",
            b"null",
        ],
    )
    async def test_out_of_range_turn_parameters_are_validation_errors(
        self, client: httpx.AsyncClient, conversation_id: str, raw: bytes
    ) -> None:
        url = f"{CONVERSATIONS}/{conversation_id}/messages"
        response = await client.post(url, content=raw, headers=JSON)
        expect_problem(response, 422, "validation_error")
        assert (await client.get(url)).json()["items"] == []

    @pytest.mark.parametrize(
        "fields", [{"provider": "nope"}, {"model": "gpt-9000"}, {"provider": "mock", "model": "x"}]
    )
    async def test_an_unknown_provider_or_model_is_unknown_model(
        self, client: httpx.AsyncClient, conversation_id: str, fields: dict[str, str]
    ) -> None:
        url = f"{CONVERSATIONS}/{conversation_id}/messages"
        response = await client.post(url, json={"content": "x", **fields})
        expect_problem(response, 422, "unknown_model")
        assert (await client.get(url)).json()["items"] == []

    async def test_a_known_provider_without_credentials_is_provider_not_configured(
        self, client: httpx.AsyncClient, conversation_id: str
    ) -> None:
        url = f"{CONVERSATIONS}/{conversation_id}/messages"
        response = await client.post(url, json={"content": "x", "provider": "openai"})
        expect_problem(response, 422, "provider_not_configured")

    async def test_in_range_parameters_take_a_turn(
        self, client: httpx.AsyncClient, conversation_id: str
    ) -> None:
        url = f"{CONVERSATIONS}/{conversation_id}/messages"
        raw = b'{"content": "x", "temperature": 2, "max_tokens": 5, "stream": false}'
        response = await client.post(url, content=raw, headers=JSON)
        assert response.status_code == 201, response.text


class TestRoutingErrors:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", f"{CONVERSATIONS}/not-a-uuid"),
            ("PATCH", f"{CONVERSATIONS}/not-a-uuid"),
            ("DELETE", f"{CONVERSATIONS}/123"),
            ("GET", f"{CONVERSATIONS}/not-a-uuid/messages"),
            ("POST", f"{CONVERSATIONS}/not-a-uuid/messages"),
            ("GET", f"{CONVERSATIONS}/not-a-uuid/feedback"),
        ],
    )
    async def test_a_malformed_id_in_the_path_is_a_validation_error(
        self, client: httpx.AsyncClient, method: str, path: str
    ) -> None:
        response = await client.request(method, path, json={"content": "x", "type": "thumbs_up"})
        body = expect_problem(response, 422, "validation_error")
        assert ["path", "conversation_id"] in [error["loc"] for error in body["errors"]]

    async def test_an_unknown_conversation_is_a_full_problem_with_the_request_id(
        self, client: httpx.AsyncClient
    ) -> None:
        missing = uuid.uuid4()
        response = await client.get(
            f"{CONVERSATIONS}/{missing}", headers={"X-Request-ID": "req-42"}
        )
        assert response.headers["x-request-id"] == "req-42"
        assert expect_problem(response, 404, "conversation_not_found") == {
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": f"conversation {missing} does not exist",
            "code": "conversation_not_found",
            "request_id": "req-42",
        }

    async def test_an_unsafe_request_id_is_replaced_not_echoed(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get(
            f"{CONVERSATIONS}/{uuid.uuid4()}", headers={"X-Request-ID": "a b<c>"}
        )
        body = expect_problem(response, 404, "conversation_not_found")
        assert body["request_id"] != "a b<c>"
        assert len(body["request_id"]) == 32

    async def test_an_unknown_route_is_a_not_found_problem(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/nowhere")
        expect_problem(response, 404, "not_found")

    async def test_a_wrong_method_is_a_method_not_allowed_problem(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.put(CONVERSATIONS, json={})
        expect_problem(response, 405, "method_not_allowed")
        assert "allow" in response.headers


ODD_TEXT = [
    "emoji 👋🏽 👨‍👩‍👧‍👦 🇫🇷",
    "RTL: مرحبا بالعالم \u200f שלום",
    "combining: e\u0301 n\u0303 a\u030a\u0332",
    "'); DROP TABLE conversations; --",
    "%_\\ '\" ` \\x00 \\u0000 $1 ?",
    "\u2028line\u2029separators\t\r\n",
]


class TestTextRoundTrip:
    @pytest.mark.parametrize("text", ODD_TEXT)
    async def test_odd_text_is_stored_and_returned_byte_for_byte(
        self, client: httpx.AsyncClient, settings: Settings, text: str
    ) -> None:
        conversation = await create_conversation(
            client, title=text, system_prompt=text, metadata={text: text, "list": [text]}
        )
        await send_message(client, conversation["id"], text, metadata={"note": text})

        detail = (await client.get(f"{CONVERSATIONS}/{conversation['id']}")).json()

        assert detail["title"].encode() == text.encode()
        assert detail["system_prompt"] == text
        assert detail["metadata"] == {text: text, "list": [text]}
        user = detail["messages"][0]
        assert user["content"].encode() == text.encode()
        assert user["metadata"] == {"note": text}
        found = (await client.get(CONVERSATIONS, params={"q": text})).json()["items"]
        assert [c["id"] for c in found] == [conversation["id"]]
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        finally:
            await engine.dispose()
        assert {"conversations", "messages", "feedback"} <= set(tables)
