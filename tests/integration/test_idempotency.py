"""Idempotency-Key: one run per key, the stored response for a retry, 422 for another body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from sqlalchemy import insert, select, update

from app.api.deps import _principal
from app.core.config import Settings
from app.core.security import ANONYMOUS_USER, Principal
from app.db.base import utcnow
from app.db.models import IdempotencyKey, IdempotencyStatus
from app.db.session import create_engine
from app.errors import UpstreamError
from app.providers.mock import MockProvider
from app.services.limits.idempotency import request_hash
from tests.factories import create_conversation
from tests.fakes.providers import (
    FAKE_MODEL,
    FAKE_PROVIDER,
    CountingProvider,
    FailingProvider,
    StallingProvider,
    registry_with,
)
from tests.sse import parse_frames

StartApp = Callable[..., Any]
AppOf = Callable[[httpx.AsyncClient], FastAPI]


def messages_url(conversation_id: str) -> str:
    return f"/api/v1/conversations/{conversation_id}/messages"


async def post_with_key(
    client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(url, json=body, headers={"Idempotency-Key": key, **headers})


async def expire_keys(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1))
            )
    finally:
        await engine.dispose()


async def insert_claim(
    settings: Settings, key: str, claimed_at: datetime, request_hash: str = "0" * 64
) -> None:
    """A claim as a request leaves it while it runs: in progress, no response yet."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(IdempotencyKey).values(
                    user_id=ANONYMOUS_USER,
                    key=key,
                    request_hash=request_hash,
                    status=IdempotencyStatus.IN_PROGRESS,
                    created_at=claimed_at,
                    expires_at=utcnow() + timedelta(hours=1),
                )
            )
    finally:
        await engine.dispose()


async def stored_claim(settings: Settings, key: str) -> IdempotencyKey:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(select(IdempotencyKey).where(IdempotencyKey.key == key))
            ).one()
            return IdempotencyKey(**row._asdict())
    finally:
        await engine.dispose()


class TestMessages:
    async def test_a_retry_replays_the_first_reply_without_a_second_call_or_charge(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        counting = CountingProvider(MockProvider())
        client = await start_app(settings, providers=registry_with(counting))
        conversation_id = (await create_conversation(client))["id"]
        body = {"content": "Charge me once, please."}

        first = await post_with_key(client, messages_url(conversation_id), "turn-1", body)
        again = await post_with_key(client, messages_url(conversation_id), "turn-1", body)

        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["Idempotency-Replayed"] == "true"
        assert "Idempotency-Replayed" not in first.headers
        assert counting.calls == 1
        conversation = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
        assert conversation["message_count"] == 2
        assert conversation["total_tokens"] == first.json()["usage"]["total_tokens"]

    async def test_the_same_key_with_a_different_body_is_422(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation_id = (await create_conversation(client))["id"]
        url = messages_url(conversation_id)
        assert (await post_with_key(client, url, "k", {"content": "one"})).status_code == 201

        reused = await post_with_key(client, url, "k", {"content": "two"})

        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"

    async def test_key_order_and_spacing_of_the_body_do_not_matter(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation_id = (await create_conversation(client))["id"]
        url = messages_url(conversation_id)
        headers = {"Idempotency-Key": "canon", "Content-Type": "application/json"}
        first = await client.post(
            url, content=b'{"content": "hi", "metadata": {}}', headers=headers
        )
        again = await client.post(url, content=b'{"metadata":{},"content":"hi"}', headers=headers)
        assert again.status_code == 201
        assert again.json() == first.json()

    async def test_twenty_concurrent_duplicates_make_one_call_and_one_charge(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        stalling = StallingProvider()
        client = await start_app(settings, providers=registry_with(stalling))
        conversation_id = (
            await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        )["id"]
        body = {"content": "Only once."}
        url = messages_url(conversation_id)

        tasks = [asyncio.create_task(post_with_key(client, url, "dup", body)) for _ in range(20)]
        await asyncio.wait_for(stalling.wait_until_entered(1), timeout=10)
        await asyncio.sleep(0.2)  # let the duplicates arrive while the first is stalled
        stalling.release()
        responses = await asyncio.gather(*tasks)
        retry = await post_with_key(client, url, "dup", body)

        assert stalling.entered == 1
        served = [r for r in responses if r.status_code == 201]
        assert len(served) >= 1
        first = served[0].json()
        assert all(r.json() == first for r in served)
        refused = [r for r in responses if r.status_code != 201]
        assert {r.status_code for r in refused} <= {409}
        assert {r.json()["code"] for r in refused} <= {"idempotency_in_progress"}
        assert retry.status_code == 201
        assert retry.json() == first
        conversation = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
        assert conversation["message_count"] == 2
        assert conversation["total_tokens"] == 14  # one reply of 10 + 4 tokens

    async def test_a_failed_turn_releases_its_key_so_a_retry_runs_again(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        failing = FailingProvider(UpstreamError("provider 'fake' failed"))
        client = await start_app(settings, providers=registry_with(failing))
        conversation_id = (
            await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        )["id"]
        url = messages_url(conversation_id)

        first = await post_with_key(client, url, "flaky", {"content": "try"})
        second = await post_with_key(client, url, "flaky", {"content": "try"})

        assert first.status_code == second.status_code == 502
        assert failing.calls == 2

    async def test_an_expired_key_runs_the_request_again(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        counting = CountingProvider(MockProvider())
        client = await start_app(settings, providers=registry_with(counting))
        conversation_id = (await create_conversation(client))["id"]
        url = messages_url(conversation_id)
        first = await post_with_key(client, url, "old", {"content": "again"})

        await expire_keys(settings)
        again = await post_with_key(client, url, "old", {"content": "again"})

        assert again.status_code == 201
        assert "Idempotency-Replayed" not in again.headers
        assert again.json()["message"]["id"] != first.json()["message"]["id"]
        assert counting.calls == 2

    async def test_a_claim_abandoned_by_a_dead_process_is_taken_over(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        # A process that claimed the key and died before its reply was charged: the response
        # is recorded with the charge, so an unanswered claim means nothing was charged.
        counting = CountingProvider(MockProvider())
        client = await start_app(settings, providers=registry_with(counting))
        conversation_id = (await create_conversation(client))["id"]
        url = messages_url(conversation_id)
        claimed_at = utcnow() - timedelta(seconds=settings.generation_timeout_seconds + 61)
        await insert_claim(settings, "orphan", claimed_at)

        retried = await post_with_key(client, url, "orphan", {"content": "still there?"})

        assert retried.status_code == 201
        assert counting.calls == 1

    async def test_a_recent_claim_still_in_progress_is_409(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        counting = CountingProvider(MockProvider())
        client = await start_app(settings, providers=registry_with(counting))
        conversation_id = (await create_conversation(client))["id"]
        url, body = messages_url(conversation_id), {"content": "are you done?"}
        same_request = request_hash("POST", url, json.dumps(body).encode())
        await insert_claim(settings, "running", utcnow() - timedelta(seconds=5), same_request)

        retried = await post_with_key(client, url, "running", body)

        assert retried.status_code == 409
        assert retried.json()["code"] == "idempotency_in_progress"
        assert counting.calls == 0

    async def test_a_streamed_turn_records_its_reply_with_the_users_message(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        stalling = StallingProvider()
        client = await start_app(settings, providers=registry_with(stalling))
        conversation_id = (
            await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        )["id"]
        body = {"content": "Keep going.", "stream": True}
        url = messages_url(conversation_id)

        first = asyncio.create_task(post_with_key(client, url, "early", body))
        await stalling.wait_until_entered(1)
        # The provider has not answered a word, yet the key already names the running reply.
        row = await stored_claim(settings, "early")
        stalling.release()
        await first

        assert row.status is IdempotencyStatus.COMPLETED
        assert row.response_status == 200
        assert row.response_body["conversation_id"] == conversation_id

    async def test_a_streamed_turn_replays_the_same_reply(
        self, start_app: StartApp, settings: Settings
    ) -> None:
        counting = CountingProvider(MockProvider())
        client = await start_app(settings, providers=registry_with(counting))
        conversation_id = (await create_conversation(client))["id"]
        body = {"content": "Stream it once.", "stream": True}
        url = messages_url(conversation_id)

        first = await post_with_key(client, url, "sse", body)
        again = await post_with_key(client, url, "sse", body)

        first_events = [f for f in parse_frames(first.text) if f.event]
        again_events = [f for f in parse_frames(again.text) if f.event]
        assert [f.event for f in again_events] == [f.event for f in first_events]
        assert first_events[0].event == "start"
        assert again_events[0].json() == first_events[0].json()  # the same reply
        assert again_events[-1].event == "done"
        assert counting.calls == 1


class TestConversationsAndFeedback:
    async def test_a_retried_create_returns_the_same_conversation(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"title": "once"}
        first = await post_with_key(client, "/api/v1/conversations", "c-1", body)
        again = await post_with_key(client, "/api/v1/conversations", "c-1", body)

        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        listed = (await client.get("/api/v1/conversations")).json()["items"]
        assert [item["id"] for item in listed] == [first.json()["id"]]

    async def test_concurrent_creates_with_one_key_store_one_row(
        self, client: httpx.AsyncClient
    ) -> None:
        responses = await asyncio.gather(
            *(
                post_with_key(client, "/api/v1/conversations", "c-race", {"title": "race"})
                for _ in range(10)
            )
        )
        served = [r for r in responses if r.status_code == 201]
        assert served
        assert {r.json()["id"] for r in served} == {served[0].json()["id"]}
        assert {r.status_code for r in responses} <= {201, 409}
        listed = (await client.get("/api/v1/conversations")).json()["items"]
        assert len(listed) == 1

    async def test_a_retried_feedback_is_stored_once(self, client: httpx.AsyncClient) -> None:
        conversation_id = (await create_conversation(client))["id"]
        url = f"/api/v1/conversations/{conversation_id}/feedback"
        body = {"type": "thumbs_up"}

        first = await post_with_key(client, url, "f-1", body)
        again = await post_with_key(client, url, "f-1", body)
        other = await post_with_key(client, url, "f-1", {"type": "thumbs_down"})

        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
        assert len((await client.get(url)).json()["items"]) == 1

    async def test_a_key_that_is_too_long_is_422(self, client: httpx.AsyncClient) -> None:
        response = await post_with_key(client, "/api/v1/conversations", "k" * 256, {})
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"


class TestOwnership:
    async def test_the_same_key_from_two_users_is_two_requests(
        self, client: httpx.AsyncClient, app_of: AppOf
    ) -> None:
        def caller(request: Request) -> Principal:
            return Principal(user_id=request.headers["X-Test-User"])

        app_of(client).dependency_overrides[_principal] = caller
        body = {"title": "mine"}

        alice = await post_with_key(
            client, "/api/v1/conversations", "shared", body, **{"X-Test-User": "alice"}
        )
        bob = await post_with_key(
            client, "/api/v1/conversations", "shared", body, **{"X-Test-User": "bob"}
        )
        alice_again = await post_with_key(
            client, "/api/v1/conversations", "shared", body, **{"X-Test-User": "alice"}
        )

        assert alice.status_code == bob.status_code == 201
        assert "Idempotency-Replayed" not in bob.headers
        assert bob.json()["id"] != alice.json()["id"]
        assert bob.json()["user_id"] == "bob"
        assert alice_again.json() == alice.json()
