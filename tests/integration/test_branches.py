"""Edits and regenerations as branches, on both databases: what the provider receives (the
fake upstream records it) is exactly the branch's history, every branch is charged, and the
stored transcript of a branch is what the model saw."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from app.core.config import Settings
from tests.factories import create_conversation, send_message
from tests.fakes.upstream import FakeUpstream, Reply, Stall
from tests.sse import read_stream

StartApp = Callable[..., Any]


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    settings = make_settings(**upstream.provider_settings(), provider_max_retries=0)
    started: httpx.AsyncClient = await start_app(settings)
    return started


def sent(upstream: FakeUpstream) -> list[tuple[str, str]]:
    """The (role, content) the provider received on its latest call."""
    return [(m["role"], m["content"]) for m in upstream.requests[-1].json["messages"]]


async def branch(
    client: httpx.AsyncClient, conversation_id: str, leaf: str | None = None
) -> list[dict[str, Any]]:
    params = {"limit": 200, **({"leaf": leaf} if leaf else {})}
    response = await client.get(f"/api/v1/conversations/{conversation_id}/messages", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def regenerate(
    client: httpx.AsyncClient, conversation_id: str, message_id: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/api/v1/conversations/{conversation_id}/messages/{message_id}/regenerate", json=body
    )


async def assert_totals_are_every_branch(client: httpx.AsyncClient, conversation_id: str) -> None:
    """Count and cost of the conversation are those of all its messages, on every branch."""
    detail = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
    # Every branch, as a UI reaches them: through each sibling of each message seen.
    every: dict[str, dict[str, Any]] = {m["id"]: m for m in detail["messages"]}
    to_visit = [s for m in detail["messages"] for s in m["sibling_ids"]]
    visited: set[str] = set()
    while to_visit:
        sibling = to_visit.pop()
        if sibling in visited:
            continue
        visited.add(sibling)
        for item in await branch(client, conversation_id, leaf=sibling):
            every[item["id"]] = item
            to_visit.extend(s for s in item["sibling_ids"] if s not in visited)
    assert detail["message_count"] == len(every)
    assert Decimal(str(detail["total_cost_usd"])) == sum(
        (Decimal(str(m["cost_usd"] or 0)) for m in every.values()), Decimal(0)
    )


class TestEditsAndRegenerations:
    async def test_edit_regenerate_and_switch_send_exactly_the_branch(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, model="gpt-4o")
        cid = conversation["id"]
        upstream.script(Reply("A1"), Reply("A2"), Reply("A3"))
        first = await send_message(client, cid, "Q1")
        second = await send_message(client, cid, "Q2")
        await send_message(client, cid, "Q3")

        # Edit the middle question: a sibling of Q2, after A1.
        upstream.script(Reply("B2"))
        edited = await send_message(client, cid, "Q2 edited", parent_id=first["message"]["id"])
        assert sent(upstream) == [
            ("user", "Q1"),
            ("assistant", "A1"),
            ("user", "Q2 edited"),
        ]
        path = await branch(client, cid)
        assert [m["content"] for m in path] == ["Q1", "A1", "Q2 edited", "B2"]
        q2_siblings = path[2]["sibling_ids"]
        assert len(q2_siblings) == 2
        assert path[2]["id"] == q2_siblings[1]

        # Edit the first question: a new first message, no history at all.
        upstream.script(Reply("C1"))
        await send_message(client, cid, "Q1 edited", parent_id=None)
        assert sent(upstream) == [("user", "Q1 edited")]

        # Regenerate the B2 reply three times: each sees exactly Q1, A1, Q2 edited.
        edited_reply = edited["message"]["id"]
        for text in ("B2'", "B2''", "B2'''"):
            upstream.script(Reply(text))
            response = await regenerate(client, cid, edited_reply)
            assert response.status_code == 201, response.text
            assert sent(upstream) == [
                ("user", "Q1"),
                ("assistant", "A1"),
                ("user", "Q2 edited"),
            ]
        path = await branch(client, cid)
        assert [m["content"] for m in path] == ["Q1", "A1", "Q2 edited", "B2'''"]
        assert len(path[3]["sibling_ids"]) == 4

        # Switch to the original branch through Q2 and continue it: it sees A2, Q3, A3.
        patched = await client.patch(
            f"/api/v1/conversations/{cid}", json={"active_leaf_id": second["message"]["id"]}
        )
        assert patched.status_code == 200, patched.text
        upstream.script(Reply("A4"))
        await send_message(client, cid, "Q4")
        assert sent(upstream) == [
            ("user", "Q1"),
            ("assistant", "A1"),
            ("user", "Q2"),
            ("assistant", "A2"),
            ("user", "Q3"),
            ("assistant", "A3"),
            ("user", "Q4"),
        ]
        await assert_totals_are_every_branch(client, cid)

    async def test_a_streamed_regeneration_with_another_model_is_charged_and_resumable(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, model="gpt-4o")
        cid = conversation["id"]
        upstream.script(Reply("Paris."))
        turn = await send_message(client, cid, "Capital of France?")

        stream = await read_stream(
            client,
            "POST",
            f"/api/v1/conversations/{cid}/messages/{turn['message']['id']}/regenerate",
            json={"stream": True, "provider": "mock", "model": "mock"},
        )

        assert stream.status_code == 200, stream.body
        reply = stream.terminal.json()["message"]
        assert (reply["provider"], reply["parent_id"]) == ("mock", turn["message"]["parent_id"])
        again = await read_stream(client, "GET", f"/api/v1/conversations/{cid}/stream")
        assert again.terminal.json()["message"]["id"] == reply["id"]
        await assert_totals_are_every_branch(client, cid)

    async def test_concurrent_regenerations_run_one_at_a_time(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, model="gpt-4o")
        cid = conversation["id"]
        upstream.script(Reply("First."))
        turn = await send_message(client, cid, "Hello")
        upstream.script(Stall(seconds=0.5), Stall(seconds=0.5), Stall(seconds=0.5))

        responses = await asyncio.gather(
            *(regenerate(client, cid, turn["message"]["id"]) for _ in range(3))
        )

        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 409, 409], [r.text for r in responses]
        assert len(upstream.requests) == 2
        await assert_totals_are_every_branch(client, cid)

    async def test_what_cannot_be_regenerated_or_followed_is_refused(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, model="gpt-4o")
        cid = conversation["id"]
        turn = await send_message(client, cid, "Hello")
        other = await create_conversation(client, model="gpt-4o")
        elsewhere = await send_message(client, other["id"], "Elsewhere")

        user_message = turn["message"]["parent_id"]
        refused = await regenerate(client, cid, user_message)
        assert refused.status_code == 422, refused.text
        missing = await regenerate(client, cid, elsewhere["message"]["id"])
        assert missing.status_code == 404, missing.text
        stray = await client.post(
            f"/api/v1/conversations/{cid}/messages",
            json={"content": "x", "parent_id": elsewhere["message"]["id"]},
        )
        assert stray.status_code == 422, stray.text
        leaf = await client.patch(
            f"/api/v1/conversations/{cid}", json={"active_leaf_id": elsewhere["message"]["id"]}
        )
        assert leaf.status_code == 404, leaf.text
        assert len(await branch(client, cid)) == 2


class TestV1Divergence:
    async def test_a_client_history_that_parts_from_the_stored_one_is_stored_as_a_branch(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        sdk = openai.AsyncOpenAI(
            base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
        )
        upstream.script(Reply("A1"), Reply("A2"), Reply("A2 again"), Reply("Only this"))
        q1: Any = {"role": "user", "content": "Q1"}
        first = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=[q1])
        cid = first.headers["x-conversation-id"]
        header = {"X-Conversation-ID": cid}
        a1: Any = {"role": "assistant", "content": "A1"}
        await sdk.chat.completions.create(
            model="gpt-4o",
            messages=[q1, a1, {"role": "user", "content": "Q2"}],
            extra_headers=header,
        )
        stored = [m["content"] for m in await branch(client, cid)]
        assert stored == ["Q1", "A1", "Q2", "A2"]

        # The client edits Q2: the shared prefix Q1, A1 is kept, the rest branches.
        await sdk.chat.completions.create(
            model="gpt-4o",
            messages=[q1, a1, {"role": "user", "content": "Q2, reworded"}],
            extra_headers=header,
        )
        assert [m["content"] for m in await branch(client, cid)] == [
            "Q1",
            "A1",
            "Q2, reworded",
            "A2 again",
        ]
        assert sent(upstream) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2, reworded")]

        # A client that sends only its new message: the model saw only it, so only it is
        # stored on the branch (a new first message).
        await sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], extra_headers=header
        )
        assert sent(upstream) == [("user", "Hi")]
        assert [m["content"] for m in await branch(client, cid)] == ["Hi", "Only this"]
        await assert_totals_are_every_branch(client, cid)


class TestConversationSettings:
    async def test_every_turn_uses_the_conversations_settings_unless_it_sets_its_own(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(
            client, model="gpt-4o", temperature=0.3, top_p=0.5, max_tokens=50
        )
        cid = conversation["id"]

        await send_message(client, cid, "Hello")
        first = upstream.requests[-1].json
        await send_message(client, cid, "Again", temperature=0.9, max_tokens=20)
        second = upstream.requests[-1].json
        patched = await client.patch(f"/api/v1/conversations/{cid}", json={"temperature": None})
        assert patched.status_code == 200, patched.text
        await send_message(client, cid, "Once more")
        third = upstream.requests[-1].json

        assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.3, 0.5, 50)
        assert (second["temperature"], second["top_p"], second["max_tokens"]) == (0.9, 0.5, 20)
        assert "temperature" not in third
        assert third["max_tokens"] == 50


class TestRegenerationIsIdempotent:
    async def test_a_retried_regeneration_replays_the_first_without_a_second_call(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        conversation = await create_conversation(client, model="gpt-4o")
        cid = conversation["id"]
        turn = await send_message(client, cid, "Hello")
        calls = len(upstream.requests)
        url = f"/api/v1/conversations/{cid}/messages/{turn['message']['id']}/regenerate"
        headers = {"Idempotency-Key": "regenerate-once"}

        first = await client.post(url, json={}, headers=headers)
        again = await client.post(url, json={}, headers=headers)

        assert (first.status_code, again.status_code) == (201, 201), again.text
        assert again.json() == first.json()
        assert again.headers.get("idempotency-replayed") == "true"
        assert len(upstream.requests) == calls + 1
        await assert_totals_are_every_branch(client, cid)
