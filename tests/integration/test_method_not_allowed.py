"""A 405 says what the resource does allow: `Allow` names every method served at the path.

Several routes often share a path (GET, PATCH and DELETE of one conversation); `Allow` names
all of theirs, not only the first route's, under /api/v1, /v1 and the service routes alike.
"""

from __future__ import annotations

import httpx
import pytest

SOME_ID = "5b1e8c6e-8f5c-4d3a-9a57-1f6f1c2b7e90"  # no such conversation: routing comes first


def allowed(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


class TestAllowHeader:
    @pytest.mark.parametrize(
        ("method", "path", "methods"),
        [
            ("DELETE", "/api/v1/usage", {"GET"}),
            ("PUT", "/api/v1/conversations", {"GET", "POST"}),
            ("PUT", f"/api/v1/conversations/{SOME_ID}", {"GET", "PATCH", "DELETE"}),
            ("POST", f"/api/v1/conversations/{SOME_ID}", {"GET", "PATCH", "DELETE"}),
            ("DELETE", f"/api/v1/conversations/{SOME_ID}/messages", {"GET", "POST"}),
            ("PATCH", f"/api/v1/conversations/{SOME_ID}/feedback", {"GET", "POST"}),
            ("POST", f"/api/v1/conversations/{SOME_ID}/stream", {"GET"}),
            ("DELETE", "/api/v1/models", {"GET"}),
            ("POST", "/health", {"GET"}),
            ("PUT", "/", {"GET"}),
            ("POST", "/openapi.json", {"GET", "HEAD"}),
        ],
    )
    async def test_a_problem_405_names_every_allowed_method(
        self, client: httpx.AsyncClient, method: str, path: str, methods: set[str]
    ) -> None:
        response = await client.request(method, path)

        assert response.status_code == 405, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "method_not_allowed"
        assert allowed(response) == methods

    @pytest.mark.parametrize(
        ("method", "path", "methods"),
        [
            ("GET", "/v1/chat/completions", {"POST"}),
            ("DELETE", "/v1/models", {"GET"}),
        ],
    )
    async def test_an_openai_405_keeps_its_allow_header(
        self, client: httpx.AsyncClient, method: str, path: str, methods: set[str]
    ) -> None:
        response = await client.request(method, path)

        assert response.status_code == 405, response.text
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert allowed(response) == methods

    async def test_an_allowed_method_is_served_after_all(self, client: httpx.AsyncClient) -> None:
        refused = await client.put("/api/v1/conversations", json={})

        for method in allowed(refused):
            response = await client.request(method, "/api/v1/conversations", json={})
            assert response.status_code != 405, method
