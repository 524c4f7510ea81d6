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
    client: httpx.AsyncClient,
    conversation_id: str,
    content: str | list[dict[str, Any]] | None = "Hello!",
    **fields: Any,
) -> dict[str, Any]:
    """A turn; `content=None` sends none (a turn of tool results only)."""
    body = fields if content is None else {"content": content, **fields}
    response = await client.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
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


def without_siblings(message: dict[str, Any]) -> dict[str, Any]:
    """A message as every body but a listing shows it: `sibling_ids` is a listing's."""
    return {name: value for name, value in message.items() if name != "sibling_ids"}
