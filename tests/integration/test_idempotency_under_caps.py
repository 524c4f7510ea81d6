"""Idempotency-Key before the per-user caps: a duplicate is answered by its key, never by a slot.

A key is claimed before any concurrency slot is taken, so a duplicate of a request in flight
gets 409 `idempotency_in_progress` (or the stored response once there is one) however many
slots are in use, and takes none; a request refused a slot releases its claim, as any failed
request does. One provider call and one charge, as RELIABILITY.md promise 2 says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from app.core.config import Settings
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, StallingProvider, registry_with
from tests.sse import parse_frames

StartApp = Callable[..., Any]
DUPLICATES = 20
QUICK_SHUTDOWN = {"shutdown_grace_seconds": 0.5}


def capped(make_settings: Callable[..., Settings]) -> Settings:
    """One stream and one running reply per user: any duplicate taking a slot would be 429."""
    return make_settings(
        max_concurrent_streams_per_user=1,
        max_concurrent_generations_per_user=1,
        **QUICK_SHUTDOWN,
    )


async def send_duplicates(
    client: httpx.AsyncClient,
    provider: StallingProvider,
    url: str,
    body: dict[str, Any],
    key: str,
) -> list[httpx.Response]:
    """`DUPLICATES` identical keyed requests at once, held upstream until all have arrived."""
    headers = {"Idempotency-Key": key}
    tasks = [
        asyncio.create_task(client.post(url, json=body, headers=headers)) for _ in range(DUPLICATES)
    ]
    await asyncio.wait_for(provider.wait_until_entered(1), timeout=10)
    await asyncio.sleep(0.2)  # the duplicates arrive while the first is stalled upstream
    provider.release()
    return list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=30))


def code_of(response: httpx.Response) -> str:
    body = response.json()
    return str(body["error"]["code"] if "error" in body else body["code"])


def the_one_run(responses: list[httpx.Response], status: int) -> httpx.Response:
    """The response that ran; every other success is its replay, with the same body."""
    served = [r for r in responses if r.status_code == status]
    ran = [r for r in served if "Idempotency-Replayed" not in r.headers]
    assert len(ran) == 1, [r.text for r in responses]
    assert all(r.json() == ran[0].json() for r in served)
    return ran[0]


def assert_in_progress_refusals(responses: list[httpx.Response], served: int) -> None:
    refused = [r for r in responses if r.status_code != served]
    assert {r.status_code for r in refused} <= {409}, [r.text for r in refused]
    assert {code_of(r) for r in refused} <= {"idempotency_in_progress"}


async def stored_once(client: httpx.AsyncClient, conversation_id: str) -> None:
    """One user message, one reply, one charge (10 + 4 tokens from StallingProvider)."""
    conversation = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
    assert conversation["message_count"] == 2
    assert conversation["total_tokens"] == 14
    usage = (await client.get("/api/v1/usage")).json()
    assert [item["requests"] for item in usage["items"]] == [1]


class TestMessagesUnderCaps:
    async def test_concurrent_duplicates_are_409_not_429_and_make_one_charged_reply(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()
        client = await start_app(capped(make_settings), providers=registry_with(provider))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        url = f"/api/v1/conversations/{conversation['id']}/messages"

        responses = await send_duplicates(client, provider, url, {"content": "Once."}, "plain")
        retry = await client.post(
            url, json={"content": "Once."}, headers={"Idempotency-Key": "plain"}
        )

        ran = the_one_run(responses, 201)
        assert_in_progress_refusals(responses, 201)
        assert provider.entered == 1
        assert retry.status_code == 201
        assert retry.headers["Idempotency-Replayed"] == "true"
        assert retry.json() == ran.json()
        await stored_once(client, conversation["id"])

    async def test_concurrent_streamed_duplicates_are_409_or_the_same_stream_never_429(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()
        client = await start_app(capped(make_settings), providers=registry_with(provider))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        url = f"/api/v1/conversations/{conversation['id']}/messages"
        body = {"content": "Stream once.", "stream": True}

        responses = await send_duplicates(client, provider, url, body, "streamed")

        streams = [r for r in responses if r.status_code == 200]
        assert streams, [r.text for r in responses]
        assert_in_progress_refusals(responses, 200)
        replies = set()
        for stream in streams:
            events = [frame for frame in parse_frames(stream.text) if frame.event]
            assert events[0].event == "start"
            assert events[-1].event == "done"
            replies.add(events[0].json()["message_id"])
        assert len(replies) == 1  # every 200 is the one reply's stream
        assert provider.entered == 1
        await stored_once(client, conversation["id"])

    async def test_a_key_refused_a_slot_is_released_so_its_retry_runs(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider()
        client = await start_app(capped(make_settings), providers=registry_with(provider))
        busy = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        other = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        url = f"/api/v1/conversations/{other['id']}/messages"
        keyed = {"Idempotency-Key": "refused-then-retried"}
        holding = asyncio.create_task(
            client.post(f"/api/v1/conversations/{busy['id']}/messages", json={"content": "Hold"})
        )
        await asyncio.wait_for(provider.wait_until_entered(1), timeout=10)

        refused = await client.post(url, json={"content": "Me?"}, headers=keyed)
        provider.release()
        assert (await holding).status_code == 201
        retried = await client.post(url, json={"content": "Me?"}, headers=keyed)

        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_concurrent"
        assert retried.status_code == 201, retried.text
        assert "Idempotency-Replayed" not in retried.headers
        assert provider.entered == 2


class TestChatCompletionsUnderCaps:
    async def test_concurrent_duplicates_are_409_not_429_and_make_one_charged_reply(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider(name="mock", default_model="mock")  # what /v1 routes "mock" to
        client = await start_app(capped(make_settings), providers=registry_with(provider))
        body = {"model": "mock", "messages": [{"role": "user", "content": "Once."}]}

        responses = await send_duplicates(client, provider, "/v1/chat/completions", body, "v1")

        ran = the_one_run(responses, 200)
        assert_in_progress_refusals(responses, 200)
        assert provider.entered == 1
        await stored_once(client, ran.headers["X-Conversation-ID"])

    async def test_concurrent_streamed_duplicates_are_409_or_the_same_stream_never_429(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        provider = StallingProvider(name="mock", default_model="mock")  # what /v1 routes "mock" to
        client = await start_app(capped(make_settings), providers=registry_with(provider))
        body = {
            "model": "mock",
            "messages": [{"role": "user", "content": "Stream once."}],
            "stream": True,
        }

        responses = await send_duplicates(client, provider, "/v1/chat/completions", body, "v1-s")

        streams = [r for r in responses if r.status_code == 200]
        assert streams, [r.text for r in responses]
        assert_in_progress_refusals(responses, 200)
        assert {r.headers["X-Conversation-ID"] for r in streams} == {
            streams[0].headers["X-Conversation-ID"]
        }
        assert all(r.text.rstrip().endswith("data: [DONE]") for r in streams)
        assert provider.entered == 1
        await stored_once(client, streams[0].headers["X-Conversation-ID"])
