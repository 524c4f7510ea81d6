"""The Redis event log read through one stream reader per process, on a real Redis.

Listeners no longer hold a Redis connection each: hundreds of them share a small pool, each
gets every event of its reply once and in order, a newcomer is picked up while the reader is
blocked, every position resumes, and a Redis failure mid-stream keeps the documented behaviour
(end the stream, or go on from the in-process log when the reply's log moved here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import pytest
import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.services.event_log import EventLog, InProcessEventLog, LoggedEvent, RedisEventLog
from tests.databases import REDIS_URL, unavailable

EVENTS_PER_REPLY = 22  # start, 20 deltas, done


@pytest.fixture(scope="module", autouse=True)
def _redis_reachable() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except RedisError as error:
        unavailable("Redis", error)


def small_client(
    url: str = REDIS_URL,
    *,
    max_connections: int = 10,
    socket_timeout: float = 5,
    name: str | None = None,
) -> Redis:
    """A client whose pool is far smaller than the number of listeners it serves."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
    )
    return Redis.from_pool(pool)


async def until_blocked_in_a_read(name: str) -> None:
    """Until a connection named `name` waits in a blocking command (flag `b` of CLIENT LIST)."""
    async with Redis.from_url(REDIS_URL, decode_responses=True) as direct:
        while True:
            clients = await direct.client_list()
            if any(c.get("name") == name and "b" in c.get("flags", "") for c in clients):
                return
            await asyncio.sleep(0.01)  # Redis offers no notice of it: look again


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    shared = small_client()
    try:
        yield shared
    finally:
        await shared.aclose()


@pytest.fixture
async def replies() -> AsyncIterator[list[UUID]]:
    """Reply ids a test fills; their logs are deleted afterwards."""
    made: list[UUID] = []
    yield made
    async with Redis.from_url(REDIS_URL) as cleanup:
        keys = [f"chat:events:{reply_id}" for reply_id in made]
        for start in range(0, len(keys), 500):
            await cleanup.delete(*keys[start : start + 500])


async def append(events: RedisEventLog, reply_id: UUID, position: int) -> None:
    """The event a generation would log at `position` (1: start, 22: done, else a delta)."""
    if position == 1:
        await events.append(reply_id, "start", json.dumps({"message_id": str(reply_id)}))
    elif position == EVENTS_PER_REPLY:
        await events.append(reply_id, "done", json.dumps({"id": str(reply_id)}))
    else:
        await events.append(reply_id, "delta", json.dumps({"content": f"t{position}"}))


async def read_all(
    events: RedisEventLog, reply_id: UUID, after: str | None = None, *, idle_s: float = 0.5
) -> list[LoggedEvent]:
    """Everything `follow` yields, heartbeats left out."""
    return [item async for item in events.follow(reply_id, after, idle_s=idle_s) if item]


async def collect(following: AsyncIterator[LoggedEvent | None]) -> list[LoggedEvent]:
    return [item async for item in following if item]


def expected_ids(after: int = 0, upto: int = EVENTS_PER_REPLY) -> list[str]:
    return [str(position) for position in range(after + 1, upto + 1)]


class CuttableRedis:
    """A loopback TCP proxy to Redis that can refuse new connections and cut open ones."""

    def __init__(self) -> None:
        self.refusing = False
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/{REDIS_URL.rsplit('/', 1)[-1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def cut(self) -> None:
        """Close every open connection: commands in flight fail as if Redis went away."""
        for writer in list(self._open):
            writer.close()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].split(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self._open.update((writer, upstream_writer))
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while chunk := await source.read(65_536):
            sink.write(chunk)
            await sink.drain()
    sink.close()


@pytest.fixture
async def proxy() -> AsyncIterator[CuttableRedis]:
    cuttable = CuttableRedis()
    await cuttable.start()
    try:
        yield cuttable
    finally:
        await cuttable.stop()


class TestManyListeners:
    async def test_300_listeners_on_a_pool_of_10_each_get_every_event_once_in_order(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        events = RedisEventLog(client, InProcessEventLog())
        replies.extend(uuid.uuid4() for _ in range(60))
        for reply_id in replies:
            await append(events, reply_id, 1)
        # Five listeners per reply, joining at different points: from the start, mid-reply
        # (catching up, then handed over to the reader) and near the end.
        groups = [asyncio.Event() for _ in range(5)]

        async def listener(reply_id: UUID, joins: asyncio.Event) -> list[LoggedEvent]:
            await joins.wait()
            return await read_all(events, reply_id)

        listening = [
            asyncio.create_task(listener(reply_id, group))
            for reply_id in replies
            for group in groups
        ]
        try:
            for position in range(2, EVENTS_PER_REPLY + 1):
                if position % 5 == 2:
                    groups[position // 5].set()
                await asyncio.gather(*(append(events, r, position) for r in replies))
                await asyncio.sleep(0.01)
            heard = await asyncio.wait_for(asyncio.gather(*listening), 60)
        finally:
            await events.aclose()

        assert len(heard) == 300
        for logged in heard:
            assert [event.id for event in logged] == expected_ids()
            assert [event.event for event in logged] == ["start"] + ["delta"] * 20 + ["done"]
            deltas = [json.loads(event.data)["content"] for event in logged[1:-1]]
            assert deltas == [f"t{position}" for position in range(2, EVENTS_PER_REPLY)]

    async def test_a_listener_joining_while_the_reader_is_blocked_gets_its_events(
        self, replies: list[UUID]
    ) -> None:
        # The reader blocks longer than this test waits: only its wake-up ends the read.
        client = small_client(socket_timeout=120)
        events = RedisEventLog(client, InProcessEventLog(), reader_block_ms=100_000)
        first, second = uuid.uuid4(), uuid.uuid4()
        replies.extend((first, second))
        try:
            await append(events, first, 1)
            following = aiter(events.follow(first, None, idle_s=600))
            assert (await anext(following)) is not None  # `start`, caught up
            await append(events, first, 2)
            # Handed over by the reader, which now blocks again on `first` alone.
            second_event = await asyncio.wait_for(anext(following), 30)
            assert second_event is not None
            assert second_event.id == "2"

            await append(events, second, 1)
            joining = aiter(events.follow(second, None, idle_s=600))
            caught_up = await anext(joining)  # from its own catch-up read, not the reader
            # From here on only the reader serves it, and that is blocked on `first`.
            rest = asyncio.create_task(collect(joining))
            for position in range(2, EVENTS_PER_REPLY + 1):
                await append(events, second, position)
            heard = await asyncio.wait_for(rest, 30)
            await following.aclose()
        finally:
            await events.aclose()
            await client.aclose()

        assert caught_up is not None
        assert [caught_up.id] + [event.id for event in heard] == expected_ids()


class TestResume:
    async def test_resuming_after_every_position_yields_exactly_the_events_after_it(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        events = RedisEventLog(client, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in range(1, EVENTS_PER_REPLY + 1):
                await append(events, reply_id, position)
            resumed = {
                after: await asyncio.wait_for(read_all(events, reply_id, after), 10)
                for after in [None, "garbage", *(f"{reply_id}/{n}" for n in range(23))]
            }
        finally:
            await events.aclose()

        assert [e.id for e in resumed[None]] == expected_ids()
        assert [e.id for e in resumed["garbage"]] == expected_ids()
        for seen in range(EVENTS_PER_REPLY + 1):
            ids = [event.id for event in resumed[f"{reply_id}/{seen}"]]
            assert ids == expected_ids(after=seen), seen

    async def test_a_log_longer_than_one_catch_up_read_is_followed_whole_while_it_grows(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        events = RedisEventLog(client, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            await events.append(reply_id, "start", "{}")
            for n in range(1_200):
                await events.append(reply_id, "delta", json.dumps({"content": str(n)}))
            from_start = asyncio.create_task(read_all(events, reply_id))
            from_middle = asyncio.create_task(read_all(events, reply_id, "700"))
            for n in range(1_200, 1_300):
                await events.append(reply_id, "delta", json.dumps({"content": str(n)}))
            await events.append(reply_id, "done", "{}")
            heard = await asyncio.wait_for(asyncio.gather(from_start, from_middle), 30)
        finally:
            await events.aclose()

        assert [e.id for e in heard[0]] == [str(n) for n in range(1, 1_303)]
        assert [e.id for e in heard[1]] == [str(n) for n in range(701, 1_303)]

    async def test_following_a_reply_without_a_log_ends_at_once(self, client: Redis) -> None:
        events = RedisEventLog(client, InProcessEventLog())
        try:
            heard = await asyncio.wait_for(read_all(events, uuid.uuid4()), 10)
        finally:
            await events.aclose()

        assert heard == []


class TestAppend:
    async def test_positions_count_from_one_and_the_log_expires_without_a_counter_key(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        events = RedisEventLog(client, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            ids = [await events.append(reply_id, "delta", "{}") for _ in range(3)]
        finally:
            await events.aclose()

        entries = await client.xrange(f"chat:events:{reply_id}")
        assert ids == ["1", "2", "3"]
        assert [entry_id for entry_id, _ in entries] == [b"1-0", b"2-0", b"3-0"]
        assert await client.ttl(f"chat:events:{reply_id}") > 0
        assert await client.exists(f"chat:events:{reply_id}:seq") == 0


class TestRedisFailureMidStream:
    async def test_a_listener_whose_log_cannot_be_read_any_more_ends_without_a_terminal(
        self, proxy: CuttableRedis, replies: list[UUID]
    ) -> None:
        shared = small_client(proxy.url)
        events = RedisEventLog(shared, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in (1, 2):
                await append(events, reply_id, position)
            following = aiter(events.follow(reply_id, None, idle_s=600))
            caught_up = [await anext(following), await anext(following)]
            rest = asyncio.create_task(collect(following))  # now only the reader serves it
            proxy.refusing = True
            proxy.cut()
            heard = await asyncio.wait_for(rest, 30)
        finally:
            await events.aclose()
            await shared.aclose()

        assert [event.id for event in caught_up if event] == ["1", "2"]
        assert heard == []

    async def test_a_listener_goes_on_from_memory_when_its_reply_degraded_here(
        self, proxy: CuttableRedis, replies: list[UUID]
    ) -> None:
        name = f"event-log-test-{uuid.uuid4().hex[:8]}"
        shared = small_client(proxy.url, name=name)
        events = RedisEventLog(shared, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in (1, 2, 3):
                await append(events, reply_id, position)
            following = aiter(events.follow(reply_id, None, idle_s=600))
            caught_up = [await anext(following) for _ in range(3)]
            rest = asyncio.create_task(collect(following))  # now only the reader serves it
            await asyncio.wait_for(until_blocked_in_a_read(name), 10)
            # Redis goes away mid-reply: the generation's next append (on a new connection)
            # degrades to memory first, then the reader's own read fails.
            proxy.refusing = True
            await shared.connection_pool.disconnect(inuse_connections=False)
            await append(events, reply_id, 4)
            proxy.cut()
            for position in range(5, EVENTS_PER_REPLY + 1):
                await append(events, reply_id, position)
            heard = [event for event in caught_up if event] + await asyncio.wait_for(rest, 30)
            # Reconnecting clients resume from memory, the head before it still from Redis.
            proxy.refusing = False
            from_memory = await asyncio.wait_for(read_all(events, reply_id, "10"), 10)
            from_both = await asyncio.wait_for(read_all(events, reply_id, "1"), 10)
        finally:
            await events.aclose()
            await shared.aclose()

        assert [event.id for event in heard] == expected_ids()
        assert [event.id for event in from_memory] == expected_ids(after=10)
        assert [event.id for event in from_both] == expected_ids(after=1)

    async def test_the_reader_recovers_once_redis_is_back(
        self, proxy: CuttableRedis, replies: list[UUID]
    ) -> None:
        shared = small_client(proxy.url)
        events = RedisEventLog(shared, InProcessEventLog())
        before, after = uuid.uuid4(), uuid.uuid4()
        replies.extend((before, after))
        try:
            await append(events, before, 1)
            cut_off = aiter(events.follow(before, None, idle_s=600))
            assert await anext(cut_off) is not None
            rest = asyncio.create_task(collect(cut_off))
            proxy.refusing = True
            proxy.cut()
            assert await asyncio.wait_for(rest, 30) == []
            proxy.refusing = False

            await append(events, after, 1)
            following = asyncio.create_task(read_all(events, after, idle_s=600))
            for position in range(2, EVENTS_PER_REPLY + 1):
                await append(events, after, position)
            heard = await asyncio.wait_for(following, 30)
        finally:
            await events.aclose()
            await shared.aclose()

        assert [event.id for event in heard] == expected_ids()


@pytest.fixture(params=["redis", "memory"])
async def either_log(request: pytest.FixtureRequest, client: Redis) -> AsyncIterator[EventLog]:
    """The Redis log (with its in-process fallback), then the in-process log alone."""
    memory = InProcessEventLog()
    if request.param == "memory":
        yield memory
        return
    events = RedisEventLog(client, memory)
    try:
        yield events
    finally:
        await events.aclose()


class TestEventsAtHand:
    """`more` marks an event whose successor was read with it: the SSE response writes such
    events together, so it must never be set on an event that has to wait for the next."""

    async def test_a_log_read_whole_marks_every_event_but_the_last(
        self, either_log: EventLog, replies: list[UUID]
    ) -> None:
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        await either_log.append(reply_id, "start", "{}")
        for n in range(20):
            await either_log.append(reply_id, "delta", json.dumps({"content": str(n)}))
        await either_log.append(reply_id, "done", "{}")

        following = either_log.follow(reply_id, None, idle_s=1)
        heard = await asyncio.wait_for(collect(following), 10)

        assert [e.more for e in heard] == [True] * (EVENTS_PER_REPLY - 1) + [False]

    async def test_an_event_logged_while_the_listener_waits_is_not_marked(
        self, either_log: EventLog, replies: list[UUID]
    ) -> None:
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        await either_log.append(reply_id, "start", "{}")
        following = either_log.follow(reply_id, None, idle_s=5)
        start = await asyncio.wait_for(anext(following), 10)
        upcoming = asyncio.ensure_future(anext(following))
        await asyncio.sleep(0.2)  # the listener is waiting for the next event now
        await either_log.append(reply_id, "delta", json.dumps({"content": "late"}))
        delta = await asyncio.wait_for(upcoming, 10)
        await following.aclose()

        assert start is not None
        assert delta is not None
        assert [(e.event, e.more) for e in (start, delta)] == [("start", False), ("delta", False)]


class TestRetention:
    async def test_an_ended_reply_is_kept_for_the_retention_then_forgotten_in_order(self) -> None:
        events = InProcessEventLog(retention_s=0.2)
        early, late, running = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        for reply_id in (early, late, running):
            await events.append(reply_id, "start", "{}")
        await events.finish(early)
        await asyncio.sleep(0.15)
        await events.finish(late)
        await events.finish(late)  # ending twice does not restart its retention

        await asyncio.sleep(0.1)  # `early` is past the retention, `late` is not
        await events.finish(uuid.uuid4())  # any end looks for what expired
        kept = [await events.exists(r) for r in (early, late, running)]
        await asyncio.sleep(0.15)
        await events.finish(uuid.uuid4())
        kept_later = [await events.exists(r) for r in (early, late, running)]

        assert kept == [False, True, True]
        assert kept_later == [False, False, True]  # a running reply is never forgotten
