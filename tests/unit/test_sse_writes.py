"""How an SSE response puts events on the wire: events at hand together, the rest at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from app.api.sse import event_stream
from app.services.streaming.streams import StreamItem


async def body_writes(items: list[StreamItem], gate: asyncio.Event | None = None) -> list[bytes]:
    """Each `http.response.body` the response sends, in order (`gate`: held before the last
    item, as a listener waits for an event not yet logged)."""

    async def produce() -> AsyncIterator[StreamItem]:
        for index, item in enumerate(items):
            if gate is not None and index == len(items) - 1:
                await gate.wait()
            yield item

    writes: list[bytes] = []
    disconnected = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            writes.append(message["body"])

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET", "headers": []}
    response = event_stream(produce())
    if gate is None:
        await response(scope, receive, send)
    else:
        running = asyncio.ensure_future(response(scope, receive, send))
        await asyncio.sleep(0.05)
        held = list(writes)
        gate.set()
        await running
        writes.insert(0, b"HELD:" + b"|".join(held))
    disconnected.set()
    return writes


async def test_events_at_hand_go_out_in_one_write() -> None:
    items = [
        StreamItem("start", "{}", "r/1", more=True),
        StreamItem("delta", '{"content":"a"}', "r/2", more=True),
        StreamItem("delta", '{"content":"b"}', "r/3"),
        StreamItem(comment="ping"),
        StreamItem("done", "{}", "r/4"),
    ]

    writes = await body_writes(items)

    assert writes[0].startswith(b"retry:")
    assert writes[1] == (
        b"event: start\ndata: {}\nid: r/1\n\n"
        b'event: delta\ndata: {"content":"a"}\nid: r/2\n\n'
        b'event: delta\ndata: {"content":"b"}\nid: r/3\n\n'
    )
    assert writes[2] == b": ping\n\n"
    assert writes[3] == b"event: done\ndata: {}\nid: r/4\n\n"
    assert len(writes) == 4


async def test_an_event_not_marked_is_written_before_the_next_is_waited_for() -> None:
    items = [StreamItem("start", "{}", "r/1"), StreamItem("done", "{}", "r/2")]

    writes = await body_writes(items, gate=asyncio.Event())

    # While the listener waited for `done`, `start` was already on the wire.
    assert writes[0].startswith(b"HELD:retry:")
    assert writes[0].endswith(b"|event: start\ndata: {}\nid: r/1\n\n")
