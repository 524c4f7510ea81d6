"""Two server processes behind one Postgres database and one Redis: streams resume anywhere.

RELIABILITY.md promise 5: read k events from replica A, reconnect to replica B with the
k-th event's id, and get exactly the rest of the stream, nothing lost or repeated; a finished
reply replays on the other replica; and a cancel sent to B stops a generation running on A.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.providers.base import ChatMessage, ChatRequest
from app.providers.mock import reply_words
from tests.databases import REDIS_URL, postgres_database, unavailable
from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.factories import without_siblings
from tests.sse import Frame, aiter_frames

CHUNK_DELAY_MS = 40


@dataclass
class Replicas:
    a: LiveServer
    b: LiveServer
    redis_url: str
    database_url: str


async def sse_events(response: httpx.Response) -> AsyncGenerator[Frame]:
    """The events of an SSE body (`retry:` and comments left out)."""
    async for frame in aiter_frames(response):
        if frame.event is not None:
            yield frame


def content_with_reply_of(words: int) -> str:
    """A prompt the mock provider answers with at least `words` words (one delta each)."""
    for index in range(10_000):
        content = f"two replicas, prompt {index}"
        request = ChatRequest(model="mock", messages=(ChatMessage("user", content),))
        if len(reply_words(request)) >= words:
            return content
    raise AssertionError("no prompt long enough")


def expected_event_count(content: str) -> int:
    """`start`, one `delta` per word, `done`."""
    request = ChatRequest(model="mock", messages=(ChatMessage("user", content),))
    return len(reply_words(request)) + 2


async def new_conversation(http: httpx.AsyncClient) -> str:
    created = await http.post("/api/v1/conversations", json={"title": "two replicas"})
    assert created.status_code == 201, created.text
    conversation_id: str = created.json()["id"]
    return conversation_id


async def post_and_read(
    http: httpx.AsyncClient, conversation_id: str, content: str, count: int | None
) -> list[Frame]:
    """POST a streamed message and read `count` events (all when None), then hang up."""
    events: list[Frame] = []
    async with http.stream(
        "POST",
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"content": content, "stream": True},
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(15), contextlib.aclosing(sse_events(response)) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == count:
                    break
    return events


async def attach(
    http: httpx.AsyncClient,
    conversation_id: str,
    last_event_id: str | None = None,
    *,
    within: float = 15.0,
) -> list[Frame]:
    """GET .../stream (resuming after `last_event_id`) and read until the server ends it."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with http.stream(
        "GET", f"/api/v1/conversations/{conversation_id}/stream", headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        async with asyncio.timeout(within):  # a stream that never ends fails, not hangs
            return [event async for event in sse_events(response)]


async def stored_reply(http: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    page = await http.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert page.status_code == 200, page.text
    reply: dict[str, Any] = page.json()["items"][-1]
    assert reply["role"] == "assistant"
    return reply


def assert_whole_stream(events: list[Frame], stored: dict[str, Any]) -> None:
    """One reply's stream from its beginning: `start`, deltas, exactly one terminal event,
    ids `<reply id>/1..n` in order, and the deltas add up to the stored text."""
    reply_id = stored["id"]
    assert [e.id for e in events] == [f"{reply_id}/{n}" for n in range(1, len(events) + 1)]
    assert events[0].event == "start"
    assert events[0].json()["message_id"] == reply_id
    assert [e.event for e in events[1:-1]] == ["delta"] * (len(events) - 2)
    assert events[-1].event == "done"
    assert "".join(e.json()["content"] for e in events[1:-1]) == stored["content"]
    assert events[-1].json()["message"] == without_siblings(stored)


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Replicas]:
    """Replicas A and B: one migrated Postgres database, one Redis database, 40 ms a token."""
    redis_url = REDIS_URL
    redis = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        await redis.ping()
    except (RedisError, OSError) as error:
        await redis.aclose()
        unavailable("Redis", error)
    logs = tmp_path_factory.mktemp("replicas")
    async with postgres_database() as database_url:  # migrated once, here
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DEFAULT_PROVIDER": "mock",
            "MOCK_CHUNK_DELAY_MS": str(CHUNK_DELAY_MS),
            "SHUTDOWN_GRACE_SECONDS": "1",
        }
        a, b = await asyncio.gather(
            asyncio.to_thread(_start, env, logs / "a.log"),
            asyncio.to_thread(_start, env, logs / "b.log"),
            return_exceptions=True,
        )
        started = [s for s in (a, b) if isinstance(s, LiveServer)]
        try:
            for outcome in (a, b):
                if isinstance(outcome, BaseException):
                    raise outcome
            assert isinstance(a, LiveServer)
            assert isinstance(b, LiveServer)
            yield Replicas(a, b, redis_url, database_url)
        finally:
            await asyncio.gather(*(asyncio.to_thread(stop_server, s) for s in started))
            await _forget_event_logs(redis, database_url)
            await redis.aclose()


def _start(env: dict[str, str], log_path: Path) -> LiveServer:
    """Start a replica; once more if it was too slow (start-up is seconds of imports, and two
    at once on a busy 2-core machine can pass the 30 s that `start_server` waits)."""
    try:
        return start_server(env, log_path)
    except RuntimeError as error:
        if "did not become healthy" not in str(error):
            raise
        return start_server(env, log_path.with_suffix(".retry.log"))


async def _forget_event_logs(redis: Redis, database_url: str) -> None:
    """Delete the Redis keys of every reply this module made (never the whole database)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT id FROM messages WHERE role = 'assistant'")
    finally:
        await connection.close()
    keys = [f"chat:events:{row['id']}{suffix}" for row in rows for suffix in ("", ":seq")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
async def clients(
    replicas: Replicas,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A client of each replica."""
    timeout = httpx.Timeout(30, connect=5)
    async with (
        httpx.AsyncClient(base_url=replicas.a.base_url, timeout=timeout) as a,
        httpx.AsyncClient(base_url=replicas.b.base_url, timeout=timeout) as b,
    ):
        yield a, b


async def resume_on_the_other_replica(
    a: httpx.AsyncClient, b: httpx.AsyncClient, content: str, k: int, *, live: bool = False
) -> None:
    """Read k events on A, hang up, resume on B after the k-th: exactly the remainder.

    `live`: the reply must still be generating on A when B is asked (k well before the end).
    """
    conversation_id = await new_conversation(a)
    first = await post_and_read(a, conversation_id, content, k)
    assert len(first) == k
    if live:
        assert (await stored_reply(b, conversation_id))["status"] == "in_progress"
    resumed = await attach(b, conversation_id, last_event_id=first[-1].id)

    stored = await stored_reply(b, conversation_id)
    assert stored["status"] == "completed"
    replay_b = await attach(b, conversation_id)
    replay_a = await attach(a, conversation_id)
    assert replay_a == replay_b
    assert len(replay_b) == expected_event_count(content)
    assert_whole_stream(replay_b, stored)
    assert first == replay_b[:k]
    assert resumed == replay_b[k:], f"resumed after event {k} of {len(replay_b)}"


class TestResumeAcrossReplicas:
    async def test_a_stream_cut_on_a_resumes_on_b_with_exactly_the_rest(
        self,
        replicas: Replicas,
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    ) -> None:
        a, b = clients
        # About 20 tokens (0.8 s) are still to come when B is asked: B follows it live.
        await resume_on_the_other_replica(a, b, content_with_reply_of(25), k=5, live=True)

    @pytest.mark.slow
    @pytest.mark.parametrize("where", ["first", "middle", "before done"])
    async def test_resume_after_any_event_on_the_other_replica(
        self,
        replicas: Replicas,
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
        where: str,
    ) -> None:
        a, b = clients
        contents = [content_with_reply_of(words) for words in (12, 25, 35)]
        runs = []
        for content in contents:
            total = expected_event_count(content)
            k = {"first": 1, "middle": total // 2, "before done": total - 1}[where]
            live = k <= total - 5  # B attaches while A still generates
            runs.append(resume_on_the_other_replica(a, b, content, k, live=live))
        await asyncio.gather(*runs)

    async def test_a_live_listener_on_b_sees_what_the_client_on_a_saw(
        self,
        replicas: Replicas,
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    ) -> None:
        """An uninterrupted live read on each replica, and the replay, are the same events."""
        a, b = clients
        conversation_id = await new_conversation(a)
        content = content_with_reply_of(30)
        post = asyncio.create_task(post_and_read(a, conversation_id, content, None))
        await asyncio.sleep(0.3)  # the generation is running on A
        live_b = await attach(b, conversation_id)
        live_a = await post
        stored = await stored_reply(a, conversation_id)
        assert_whole_stream(live_a, stored)
        assert live_b == live_a
        assert await attach(b, conversation_id) == live_a


class TestCancelAcrossReplicas:
    async def test_cancel_sent_to_b_stops_the_generation_running_on_a(
        self,
        replicas: Replicas,
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    ) -> None:
        a, b = clients
        conversation_id = await new_conversation(a)
        content = content_with_reply_of(35)
        full = expected_event_count(content)
        events: list[Frame] = []
        async with a.stream(
            "POST",
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"content": content, "stream": True},
        ) as response:
            assert response.status_code == 200
            async with contextlib.aclosing(sse_events(response)) as stream:
                async for event in stream:
                    events.append(event)
                    if len(events) == 4:
                        break
                reply_id = events[0].json()["message_id"]
                began = time.monotonic()
                cancelled = await b.post(
                    f"/api/v1/conversations/{conversation_id}/messages/{reply_id}/cancel"
                )
                took = time.monotonic() - began
                events.extend([event async for event in stream])

        assert cancelled.status_code == 200, cancelled.text
        # Through pub/sub, not the 10 s fallback that only marks the row.
        assert took < 3, f"cancel took {took:.1f} s"
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["finish_reason"] == "cancelled"
        # A's stream ended with one `done` carrying the cancelled reply, before the end.
        assert [e.event for e in events].count("done") == 1
        assert events[-1].event == "done"
        assert len(events) < full
        done = events[-1].json()["message"]
        assert done["status"] == "cancelled"
        stored = await stored_reply(b, conversation_id)
        assert stored["status"] == "cancelled"
        assert without_siblings(stored) == done
        assert cancelled.json() == without_siblings(stored)
        assert_whole_stream(await attach(b, conversation_id), stored)
        # Its text is kept and charged.
        assert stored["content"]
        assert stored["completion_tokens"] > 0


class TestReplayAcrossReplicas:
    async def test_a_reply_finished_on_a_replays_on_b(
        self,
        replicas: Replicas,
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    ) -> None:
        a, b = clients
        conversation_id = await new_conversation(a)
        content = content_with_reply_of(12)
        live = await post_and_read(a, conversation_id, content, None)
        stored = await stored_reply(b, conversation_id)
        assert_whole_stream(live, stored)

        assert await attach(b, conversation_id) == live
        # Resuming after the terminal event gives nothing more.
        assert await attach(b, conversation_id, last_event_id=live[-1].id) == []
        assert await attach(b, conversation_id, last_event_id=live[3].id) == live[4:]

    async def test_once_the_event_log_is_gone_b_replays_the_stored_reply(
        self,
        replicas: Replicas,
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    ) -> None:
        a, b = clients
        conversation_id = await new_conversation(a)
        live = await post_and_read(a, conversation_id, content_with_reply_of(12), None)
        reply_id = live[0].json()["message_id"]
        redis = Redis.from_url(replicas.redis_url)
        try:
            await redis.delete(f"chat:events:{reply_id}", f"chat:events:{reply_id}:seq")
        finally:
            await redis.aclose()

        replay = await attach(b, conversation_id)
        stored = await stored_reply(b, conversation_id)
        assert [e.event for e in replay] == ["start", "delta", "done"]
        assert [e.id for e in replay[:2]] == [f"{reply_id}/1", f"{reply_id}/2"]
        assert replay[0] == live[0]
        assert replay[1].json()["content"] == stored["content"]
        assert replay[2].json() == live[-1].json()
        # A client cut mid-reply still gets the end, which holds the whole text.
        resumed = await attach(b, conversation_id, last_event_id=live[5].id)
        assert [e.event for e in resumed] == ["done"]
        assert resumed[0].json() == live[-1].json()
        # One that saw the replay's end gets nothing more.
        assert await attach(b, conversation_id, last_event_id=replay[-1].id) == []
