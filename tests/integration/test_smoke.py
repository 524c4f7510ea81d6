"""The shortest path through the service, on both backends."""

from __future__ import annotations

import httpx


async def test_a_turn_is_stored_and_charged(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/conversations", json={"title": "hi"})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]

    sent = await client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": "Hello 👋"}
    )
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert body["message"]["status"] == "completed"
    assert body["cost_usd"] > 0

    detail = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    assert detail["messages"][0]["content"] == "Hello 👋"
    assert detail["total_cost_usd"] == body["cost_usd"]
