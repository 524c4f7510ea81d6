"""Plain async factories: arrange state through the public API, as a client would."""

from __future__ import annotations

from typing import Any

import httpx


async def create_conversation(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/conversations", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def send_message(
    client: httpx.AsyncClient, conversation_id: str, content: str = "Hello!", **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": content, **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def give_feedback(
    client: httpx.AsyncClient, conversation_id: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/conversations/{conversation_id}/feedback", json=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
