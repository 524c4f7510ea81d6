"""The event log on a real Redis: written through the in-process log, read on any replica.

Listeners of a reply generated on another replica read Redis through one stream reader per
process: hundreds of them share a small pool, each gets every event of its reply once and in
order, a newcomer is picked up while the reader is blocked, and every position resumes.
Listeners of a reply generated here read the in-process copy, with the same positions, so
Redis failing mid-stream takes nothing from them; another replica's listener whose Redis log
cannot be read any more ends (the stream is then ended from the stored reply). `append_end`
ends an abandoned reply's log right after its last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from app.services.streaming.event_log import EventLog, InProcessEventLog, LoggedEvent, RedisEventLog
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


async def append(events: EventLog, reply_id: UUID, position: int) -> None:
    """The event a generation would log at `position` (1: start, 22: done, else a delta)."""
    if position == 1:
        await events.append(reply_id, "start", json.dumps({"message_id": str(reply_id)}))
    elif position == EVENTS_PER_REPLY:
        await events.append(reply_id, "done", json.dumps({"id": str(reply_id)}))
    else:
        await events.append(reply_id, "delta", json.dumps({"content": f"t{position}"}))


async def read_all(
    events: EventLog, reply_id: UUID, after: str | None = None, *, idle_s: float = 0.5
) -> list[LoggedEvent]:
    """Everything `follow` yields, heartbeats left out."""
    return [item async for item in events.follow(reply_id, after, idle_s=idle_s) if item]


async def collect(following: AsyncIterator[LoggedEvent | None]) -> list[LoggedEvent]:
    return [item async for item in following if item]


def expected_ids(after: int = 0, upto: int = EVENTS_PER_REPLY) -> list[str]:
    return [str(position) for position in range(after + 1, upto + 1)]


async def in_redis(reply_id: UUID) -> list[str]:
    """The positions the reply's log in Redis holds, read straight from Redis."""
    async with Redis.from_url(REDIS_URL) as direct:
        entries: Any = await direct.xrange(f"chat:events:{reply_id}")
    return [entry_id.decode().removesuffix("-0") for entry_id, _ in entries]


class CuttableRedis:
    """A loopback TCP proxy to Redis that can refuse new connections, cut open ones, and hold
    what clients send (a command then waits, in flight, until released or cut)."""

    def __init__(self) -> None:
        self.refusing = False
        self.sending = asyncio.Event()  # cleared: client bytes wait in the proxy
        self.sending.set()
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
        self.sending.set()
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
        for source, sink, gate in (
            (reader, upstream_writer, self.sending),
            (upstream_reader, writer, None),
        ):
            pipe = asyncio.create_task(_pipe(source, sink, gate))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event | None
) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while chunk := await source.read(65_536):
            if gate is not None:
                await gate.wait()
            if sink.is_closing():
                break  # cut while held: what was sent never reaches Redis
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
        # The replies are generated on another replica: here they are read from Redis.
        writing = RedisEventLog(client, InProcessEventLog())
        events = RedisEventLog(client, InProcessEventLog())
        replies.extend(uuid.uuid4() for _ in range(60))
        for reply_id in replies:
            await append(writing, reply_id, 1)
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
                await asyncio.gather(*(append(writing, r, position) for r in replies))
                await asyncio.sleep(0.01)
            heard = await asyncio.wait_for(asyncio.gather(*listening), 60)
        finally:
            await events.aclose()
            await writing.aclose()

        assert len(heard) == 300
        for logged in heard:
            assert [event.id for event in logged] == expected_ids()
            assert [event.event for event in logged] == ["start"] + ["delta"] * 20 + ["done"]
            deltas = [json.loads(event.data)["content"] for event in logged[1:-1]]
            assert deltas == [f"t{position}" for position in range(2, EVENTS_PER_REPLY)]

    async def test_a_listener_joining_while_the_reader_is_blocked_gets_its_events(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        # The reader blocks longer than this test waits: only its wake-up ends the read.
        reading = small_client(socket_timeout=120)
        events = RedisEventLog(reading, InProcessEventLog(), reader_block_ms=100_000)
        writing = RedisEventLog(client, InProcessEventLog())
        first, second = uuid.uuid4(), uuid.uuid4()
        replies.extend((first, second))
        try:
            await append(writing, first, 1)
            following = aiter(events.follow(first, None, idle_s=600))
            assert (await anext(following)) is not None  # `start`, caught up
            await append(writing, first, 2)
            # Handed over by the reader, which now blocks again on `first` alone.
            second_event = await asyncio.wait_for(anext(following), 30)
            assert second_event is not None
            assert second_event.id == "2"

            await append(writing, second, 1)
            joining = aiter(events.follow(second, None, idle_s=600))
            caught_up = await anext(joining)  # from its own catch-up read, not the reader
            # From here on only the reader serves it, and that is blocked on `first`.
            rest = asyncio.create_task(collect(joining))
            for position in range(2, EVENTS_PER_REPLY + 1):
                await append(writing, second, position)
            heard = await asyncio.wait_for(rest, 30)
            await following.aclose()
        finally:
            await events.aclose()
            await writing.aclose()
            await reading.aclose()

        assert caught_up is not None
        assert [caught_up.id] + [event.id for event in heard] == expected_ids()


class TestResume:
    async def test_resuming_after_every_position_yields_the_same_events_on_either_replica(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        here = RedisEventLog(client, InProcessEventLog())
        elsewhere = RedisEventLog(client, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        afters = [None, "garbage", *(f"{reply_id}/{n}" for n in range(23))]
        try:
            for position in range(1, EVENTS_PER_REPLY + 1):
                await append(here, reply_id, position)
            # From memory where it was generated, from Redis on the other replica.
            resumed = {
                (log_name, after): await asyncio.wait_for(read_all(log, reply_id, after), 10)
                for log_name, log in (("here", here), ("elsewhere", elsewhere))
                for after in afters
            }
        finally:
            await here.aclose()
            await elsewhere.aclose()

        for where in ("here", "elsewhere"):
            assert [e.id for e in resumed[where, None]] == expected_ids()
            assert [e.id for e in resumed[where, "garbage"]] == expected_ids()
            for seen in range(EVENTS_PER_REPLY + 1):
                ids = [event.id for event in resumed[where, f"{reply_id}/{seen}"]]
                assert ids == expected_ids(after=seen), (where, seen)
        # The same id names the same event in both logs.
        assert resumed["here", None] == resumed["elsewhere", None]

    async def test_a_log_longer_than_one_catch_up_read_is_followed_whole_while_it_grows(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        writing = RedisEventLog(client, InProcessEventLog())
        events = RedisEventLog(client, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            await writing.append(reply_id, "start", "{}")
            for n in range(1_200):
                await writing.append(reply_id, "delta", json.dumps({"content": str(n)}))
            from_start = asyncio.create_task(read_all(events, reply_id))
            from_middle = asyncio.create_task(read_all(events, reply_id, "700"))
            for n in range(1_200, 1_300):
                await writing.append(reply_id, "delta", json.dumps({"content": str(n)}))
            await writing.append(reply_id, "done", "{}")
            heard = await asyncio.wait_for(asyncio.gather(from_start, from_middle), 30)
        finally:
            await events.aclose()
            await writing.aclose()

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

    async def test_a_reply_generated_here_is_held_here_too_until_its_retention_ends(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        local = InProcessEventLog(retention_s=0.2)
        events = RedisEventLog(client, local)
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in range(1, EVENTS_PER_REPLY + 1):
                await append(events, reply_id, position)
            await events.finish(reply_id)
            held = [event.id for event in await read_all(local, reply_id)]
            await asyncio.sleep(0.3)
            await events.finish(uuid.uuid4())  # any end looks for what expired
            held_later = await local.exists(reply_id)
            from_redis = [event.id for event in await read_all(events, reply_id)]
        finally:
            await events.aclose()

        assert held == expected_ids()
        assert held_later is False
        assert from_redis == expected_ids()  # the longer-kept copy serves late resumes

    @pytest.mark.parametrize("held_command", ["never sent", "sent"])
    async def test_an_event_whose_write_was_interrupted_is_written_before_the_next(
        self, proxy: CuttableRedis, replies: list[UUID], held_command: str
    ) -> None:
        shared = small_client(proxy.url)
        events = RedisEventLog(shared, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in range(1, 6):
                await append(events, reply_id, position)
            proxy.sending.clear()
            interrupted = asyncio.create_task(append(events, reply_id, 6))
            await asyncio.sleep(0.2)  # its XADD waits in the proxy
            interrupted.cancel()  # as a cancel or a shutdown does to a generation
            with pytest.raises(asyncio.CancelledError):
                await interrupted
            if held_command == "never sent":
                proxy.cut()
            proxy.sending.set()
            await asyncio.sleep(0.1)
            for position in range(7, EVENTS_PER_REPLY + 1):
                await append(events, reply_id, position)
        finally:
            await events.aclose()
            await shared.aclose()

        assert await in_redis(reply_id) == expected_ids()


class TestRedisFailureMidStream:
    async def test_a_listener_of_another_replica_whose_log_cannot_be_read_ends(
        self, client: Redis, proxy: CuttableRedis, replies: list[UUID]
    ) -> None:
        writing = RedisEventLog(client, InProcessEventLog())
        shared = small_client(proxy.url)
        events = RedisEventLog(shared, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in (1, 2):
                await append(writing, reply_id, position)
            following = aiter(events.follow(reply_id, None, idle_s=600))
            caught_up = [await anext(following), await anext(following)]
            rest = asyncio.create_task(collect(following))  # now only the reader serves it
            proxy.refusing = True
            proxy.cut()
            heard = await asyncio.wait_for(rest, 30)
        finally:
            await events.aclose()
            await writing.aclose()
            await shared.aclose()

        # No terminal event: the stream is ended from the stored reply (`streams.read_reply`).
        assert [event.id for event in caught_up if event] == ["1", "2"]
        assert heard == []

    async def test_a_listener_behind_when_redis_goes_gets_every_event_once_in_order(
        self, proxy: CuttableRedis, replies: list[UUID]
    ) -> None:
        shared = small_client(proxy.url)
        events = RedisEventLog(shared, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            await append(events, reply_id, 1)
            following = aiter(events.follow(reply_id, None, idle_s=600))
            start = await anext(following)
            # Nine more reach Redis while the listener reads nothing.
            for position in range(2, 11):
                await append(events, reply_id, position)
            reached_redis = await in_redis(reply_id)
            proxy.refusing = True
            proxy.cut()
            for position in range(11, EVENTS_PER_REPLY + 1):
                await append(events, reply_id, position)
            rest = await asyncio.wait_for(collect(following), 10)
            # A client reconnecting to this replica resumes anywhere, Redis still down.
            resumed = await asyncio.wait_for(read_all(events, reply_id, f"{reply_id}/5"), 10)
        finally:
            await events.aclose()
            await shared.aclose()

        assert reached_redis == expected_ids(upto=10)
        heard = [start, *rest]
        assert [event.id for event in heard if event] == expected_ids()
        deltas = [json.loads(event.data)["content"] for event in heard[1:-1] if event]
        assert deltas == [f"t{position}" for position in range(2, EVENTS_PER_REPLY)]
        assert [event.id for event in resumed] == expected_ids(after=5)
        # Redis kept what it got, without a gap: other replicas end the stream from the row.
        assert await in_redis(reply_id) == expected_ids(upto=10)

    async def test_the_reader_recovers_once_redis_is_back(
        self, client: Redis, proxy: CuttableRedis, replies: list[UUID]
    ) -> None:
        writing = RedisEventLog(client, InProcessEventLog())
        shared = small_client(proxy.url)
        events = RedisEventLog(shared, InProcessEventLog())
        before, after = uuid.uuid4(), uuid.uuid4()
        replies.extend((before, after))
        try:
            await append(writing, before, 1)
            cut_off = aiter(events.follow(before, None, idle_s=600))
            assert await anext(cut_off) is not None
            rest = asyncio.create_task(collect(cut_off))
            proxy.refusing = True
            proxy.cut()
            assert await asyncio.wait_for(rest, 30) == []
            proxy.refusing = False

            await append(writing, after, 1)
            following = asyncio.create_task(read_all(events, after, idle_s=600))
            for position in range(2, EVENTS_PER_REPLY + 1):
                await append(writing, after, position)
            heard = await asyncio.wait_for(following, 30)
        finally:
            await events.aclose()
            await writing.aclose()
            await shared.aclose()

        assert [event.id for event in heard] == expected_ids()


class SneakingWriter(Redis):
    """A client through which the reply's own writer appends right after the end's read of
    the last entry: the race `append_end` has with a generation that is still alive."""

    async def xrevrange(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        newest: Any = await super().xrevrange(name, *args, **kwargs)
        if newest:
            position = int(newest[0][0].decode().split("-", 1)[0]) + 1
            fields: dict[FieldT, EncodableT] = {"id": str(position), "event": "delta"}
            fields["data"] = json.dumps({"content": "still here"})
            await self.xadd(name, fields, id=f"{position}-0")
        return newest


class TestAppendEnd:
    async def test_an_abandoned_log_in_redis_ends_after_its_last_event_and_wakes_listeners(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        dead = RedisEventLog(client, InProcessEventLog())  # the process that died
        sweeping = RedisEventLog(client, InProcessEventLog(), retention_s=60)
        listening = RedisEventLog(client, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in range(1, 5):
                await append(dead, reply_id, position)
            following = asyncio.create_task(read_all(listening, reply_id, idle_s=600))
            await asyncio.sleep(0.2)  # the listener waits on the reader now
            ended = await sweeping.append_end(reply_id, "error", '{"code": "abandoned"}')
            heard = await asyncio.wait_for(following, 5)
            again = await sweeping.append_end(reply_id, "error", '{"code": "abandoned"}')
        finally:
            await listening.aclose()
            await sweeping.aclose()
            await dead.aclose()

        assert ended is True
        assert [(event.id, event.event) for event in heard[-2:]] == [("4", "delta"), ("5", "error")]
        assert again is False  # it ends once
        assert await in_redis(reply_id) == expected_ids(upto=5)
        assert 0 < await client.ttl(f"chat:events:{reply_id}") <= 60

    async def test_nothing_is_appended_to_a_log_that_ended_or_does_not_exist(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        writing = RedisEventLog(client, InProcessEventLog())
        sweeping = RedisEventLog(client, InProcessEventLog())
        finished = uuid.uuid4()
        replies.append(finished)
        try:
            for position in range(1, EVENTS_PER_REPLY + 1):
                await append(writing, finished, position)
            after_done = await sweeping.append_end(finished, "error", "{}")
            missing = await sweeping.append_end(uuid.uuid4(), "error", "{}")
        finally:
            await sweeping.aclose()
            await writing.aclose()

        assert (after_done, missing) == (False, False)
        assert await in_redis(finished) == expected_ids()

    async def test_a_writer_still_alive_keeps_its_position_and_its_log(
        self, replies: list[UUID]
    ) -> None:
        sneaking = SneakingWriter.from_pool(BlockingConnectionPool.from_url(REDIS_URL))
        sweeping = RedisEventLog(sneaking, InProcessEventLog())
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            writing = RedisEventLog(sneaking, InProcessEventLog())
            for position in range(1, 4):
                await append(writing, reply_id, position)
            ended = await sweeping.append_end(reply_id, "error", "{}")
        finally:
            await sweeping.aclose()
            await writing.aclose()
            await sneaking.aclose()

        assert ended is False
        async with Redis.from_url(REDIS_URL) as direct:
            entries: Any = await direct.xrange(f"chat:events:{reply_id}")
        assert [fields[b"event"] for _, fields in entries] == [
            b"start",
            b"delta",
            b"delta",
            b"delta",
        ]

    async def test_a_reply_generated_here_ends_in_both_logs_at_the_same_position(
        self, client: Redis, replies: list[UUID]
    ) -> None:
        local = InProcessEventLog()
        events = RedisEventLog(client, local)
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        try:
            for position in range(1, 4):
                await append(events, reply_id, position)
            ended = await events.append_end(reply_id, "error", "{}")
            again = await events.append_end(reply_id, "error", "{}")
            from_memory = await read_all(local, reply_id)
        finally:
            await events.aclose()

        assert (ended, again) == (True, False)
        assert [(e.id, e.event) for e in from_memory][-1] == ("4", "error")
        assert await in_redis(reply_id) == expected_ids(upto=4)

    async def test_in_process_an_unended_log_ends_once_and_is_then_kept_for_the_retention(
        self,
    ) -> None:
        events = InProcessEventLog(retention_s=0.2)
        running, done = uuid.uuid4(), uuid.uuid4()
        for reply_id in (running, done):
            await events.append(reply_id, "start", "{}")
        await events.append(done, "done", "{}")
        following = asyncio.create_task(read_all(events, running, idle_s=600))
        await asyncio.sleep(0.05)

        ended = await events.append_end(running, "error", '{"code": "abandoned"}')
        heard = await asyncio.wait_for(following, 5)
        outcomes = [
            await events.append_end(running, "error", "{}"),
            await events.append_end(done, "error", "{}"),
            await events.append_end(uuid.uuid4(), "error", "{}"),
        ]
        await asyncio.sleep(0.3)
        await events.finish(uuid.uuid4())  # any end looks for what expired

        assert ended is True
        assert [(e.id, e.event) for e in heard] == [("1", "start"), ("2", "error")]
        assert outcomes == [False, False, False]
        assert await events.exists(running) is False

    async def test_only_a_terminal_event_ends_a_log(self) -> None:
        events = InProcessEventLog()
        reply_id = uuid.uuid4()
        await events.append(reply_id, "start", "{}")

        with pytest.raises(ValueError, match="does not end"):
            await events.append_end(reply_id, "delta", "{}")


@dataclass
class Logs:
    """Where a reply is written and where it is read (the same log, or another replica's)."""

    writing: EventLog
    reading: EventLog


@pytest.fixture(params=["memory", "redis, read here", "redis, read on another replica"])
async def logs(request: pytest.FixtureRequest, client: Redis) -> AsyncIterator[Logs]:
    if request.param == "memory":
        memory = InProcessEventLog()
        yield Logs(memory, memory)
        return
    writing = RedisEventLog(client, InProcessEventLog())
    reading = (
        writing if request.param.endswith("here") else RedisEventLog(client, InProcessEventLog())
    )
    try:
        yield Logs(writing, reading)
    finally:
        await writing.aclose()
        await reading.aclose()


class TestEventsAtHand:
    """`more` marks an event whose successor was read with it: the SSE response writes such
    events together, so it must never be set on an event that has to wait for the next."""

    async def test_a_log_read_whole_marks_every_event_but_the_last(
        self, logs: Logs, replies: list[UUID]
    ) -> None:
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        await logs.writing.append(reply_id, "start", "{}")
        for n in range(20):
            await logs.writing.append(reply_id, "delta", json.dumps({"content": str(n)}))
        await logs.writing.append(reply_id, "done", "{}")

        following = logs.reading.follow(reply_id, None, idle_s=1)
        heard = await asyncio.wait_for(collect(following), 10)

        assert [e.more for e in heard] == [True] * (EVENTS_PER_REPLY - 1) + [False]

    async def test_an_event_logged_while_the_listener_waits_is_not_marked(
        self, logs: Logs, replies: list[UUID]
    ) -> None:
        reply_id = uuid.uuid4()
        replies.append(reply_id)
        await logs.writing.append(reply_id, "start", "{}")
        following = logs.reading.follow(reply_id, None, idle_s=5)
        start = await asyncio.wait_for(anext(following), 10)
        upcoming = asyncio.ensure_future(anext(following))
        await asyncio.sleep(0.2)  # the listener is waiting for the next event now
        await logs.writing.append(reply_id, "delta", json.dumps({"content": "late"}))
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
