"""Resuming with `?last_event_id=`: what an `EventSource` reopened with a fresh ticket sends.

A browser's `EventSource` cannot set headers, and its own reconnect reuses the URL (so a spent
single-use ticket): the playground reopens it with a new ticket and the last event id in the
query. That resumes exactly as the `Last-Event-ID` header does; the header wins when both come.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from redis.exceptions import RedisError

from app.core.config import Settings
from tests.auth import bearer
from tests.databases import REDIS_URL, unavailable
from tests.sse import EventStream, Frame, read_stream, stream_message

StartApp = Callable[..., Any]


@pytest.fixture(params=["in_process", "redis"])
def event_log(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the event log: in-process, or a Redis Stream per reply."""
    if request.param == "in_process":
        return {}
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except RedisError as error:
        unavailable("Redis", error)
    return {"redis_url": REDIS_URL}


def seen(events: list[Frame]) -> list[tuple[str | None, str | None, str | None]]:
    return [(frame.id, frame.event, frame.data) for frame in events]


async def streamed_reply(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> tuple[str, list[Frame]]:
    """A conversation and the events of its one streamed reply, read to the end."""
    created = await client.post(
        "/api/v1/conversations", json={"title": "resume"}, headers=headers or {}
    )
    assert created.status_code == 201, created.text
    conversation_id: str = created.json()["id"]
    stream = await stream_message(
        client, conversation_id, "Tell me a long story about streams.", headers=headers or {}
    )
    assert stream.status_code == 200, stream.body
    assert len(stream.events) >= 5
    return conversation_id, stream.events


async def attach(
    client: httpx.AsyncClient,
    conversation_id: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> EventStream:
    stream = await read_stream(
        client,
        "GET",
        f"/api/v1/conversations/{conversation_id}/stream",
        params=params or {},
        headers=headers or {},
    )
    assert stream.status_code == 200, stream.body
    return stream


class TestLastEventIdQuery:
    async def test_the_query_parameter_resumes_exactly_like_the_header(
        self, start_app: StartApp, make_settings: Callable[..., Settings], event_log: dict[str, Any]
    ) -> None:
        client = await start_app(make_settings(**event_log))
        conversation_id, live = await streamed_reply(client)

        for k in (1, len(live) // 2, len(live) - 1, len(live)):
            last = live[k - 1].id
            assert last is not None
            by_query = await attach(client, conversation_id, params={"last_event_id": last})
            by_header = await attach(client, conversation_id, headers={"Last-Event-ID": last})

            assert seen(by_query.events) == seen(live[k:]), f"after event {k}"
            assert seen(by_query.events) == seen(by_header.events)

    async def test_the_header_wins_when_both_are_sent(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings())
        conversation_id, live = await streamed_reply(client)
        header_id, query_id = live[1].id, live[3].id
        assert header_id is not None
        assert query_id is not None

        both = await attach(
            client,
            conversation_id,
            params={"last_event_id": query_id},
            headers={"Last-Event-ID": header_id},
        )

        assert seen(both.events) == seen(live[2:])

    async def test_an_unreadable_value_replays_from_the_start(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings())
        conversation_id, live = await streamed_reply(client)

        replay = await attach(client, conversation_id, params={"last_event_id": "not-an-id"})

        assert seen(replay.events) == seen(live)

    async def test_a_fresh_ticket_with_the_last_id_resumes_with_auth_on(
        self,
        start_app: StartApp,
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
        event_log: dict[str, Any],
    ) -> None:
        """The playground's reconnect: the first ticket is spent, a new one resumes."""
        client = await start_app(auth_settings(**event_log))
        key = await issue_key("alice")
        conversation_id, live = await streamed_reply(client, bearer(key))
        tickets = []
        for _ in range(2):
            issued = await client.post("/api/v1/auth/stream-ticket", headers=bearer(key))
            assert issued.status_code == 200, issued.text
            tickets.append(issued.json()["ticket"])
        url = f"/api/v1/conversations/{conversation_id}/stream"
        first = await attach(client, conversation_id, params={"ticket": tickets[0]})
        k = 3
        last = first.events[k - 1].id
        assert last is not None

        reused = await client.get(url, params={"ticket": tickets[0], "last_event_id": last})
        resumed = await attach(
            client, conversation_id, params={"ticket": tickets[1], "last_event_id": last}
        )

        assert seen(first.events) == seen(live)
        assert reused.status_code == 401  # what the browser's own reconnect would get
        assert seen(resumed.events) == seen(live[k:])
