"""Server-sent events as a client sees them: frames parsed from the lines of a response.

A frame is what a blank line ends: an event (`event`, `data`, `id`), a `retry:` or a comment
(`: ping`). Parsing follows the WHATWG rules a browser's `EventSource` uses: one space after
the colon is dropped, several `data:` lines are joined with newlines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

TERMINAL_EVENTS = ("done", "error")


@dataclass(frozen=True, slots=True)
class Frame:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: tuple[str, ...] = ()

    @property
    def is_terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS

    def json(self) -> Any:
        assert self.data is not None, f"frame {self} has no data"
        return json.loads(self.data)


@dataclass
class FrameParser:
    """Feeds on lines (terminators removed) and hands back each frame a blank line ends."""

    _id: str | None = None
    _event: str | None = None
    _data: list[str] = field(default_factory=list)
    _retry: int | None = None
    _comments: list[str] = field(default_factory=list)
    _seen: bool = False

    def feed(self, line: str) -> Frame | None:
        if line == "":
            return self._dispatch()
        self._seen = True
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "":
            self._comments.append(value)
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Frame | None:
        if not self._seen:
            return None
        frame = Frame(
            id=self._id,
            event=self._event,
            data="\n".join(self._data) if self._data else None,
            retry=self._retry,
            comments=tuple(self._comments),
        )
        self._id = self._event = self._retry = None
        self._data, self._comments, self._seen = [], [], False
        return frame


def parse_frames(text: str) -> list[Frame]:
    """Every complete frame in a whole SSE body."""
    return list(_frames_of(text.splitlines()))


def _frames_of(lines: Iterable[str]) -> Iterable[Frame]:
    parser = FrameParser()
    for line in lines:
        if (frame := parser.feed(line)) is not None:
            yield frame


async def aiter_frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The frames of a streamed response, each as soon as its blank line arrives."""
    parser = FrameParser()
    async for line in response.aiter_lines():
        if (frame := parser.feed(line)) is not None:
            yield frame


@dataclass(frozen=True)
class EventStream:
    """A whole response read as SSE: its status, headers and frames (or its problem body)."""

    status_code: int
    headers: httpx.Headers
    frames: list[Frame]
    body: bytes

    @property
    def events(self) -> list[Frame]:
        """The frames that are events: `retry:` and comments left out."""
        return [frame for frame in self.frames if frame.event is not None]

    @property
    def names(self) -> list[str]:
        return [frame.event or "" for frame in self.events]

    @property
    def pings(self) -> list[Frame]:
        return [frame for frame in self.frames if "ping" in frame.comments]

    @property
    def text(self) -> str:
        """The reply as the client assembles it: every `delta`'s content, in order."""
        return "".join(frame.json()["content"] for frame in self.events if frame.event == "delta")

    @property
    def terminal(self) -> Frame:
        """The one `done` or `error`; fails the test unless there is exactly one, last."""
        terminals = [frame for frame in self.events if frame.is_terminal]
        assert len(terminals) == 1, f"expected one terminal event, got {self.names}"
        assert self.events[-1] is terminals[0], f"events after the terminal one: {self.names}"
        return terminals[0]

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.body)
        return body


async def stream_message(
    client: httpx.AsyncClient, conversation_id: str, content: str, **options: Any
) -> EventStream:
    """Send `content` as a turn with `"stream": true` and read the reply's SSE to its end
    (`options`: `headers`, `within`, as `read_stream` takes them)."""
    return await read_stream(
        client,
        "POST",
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"content": content, "stream": True},
        **options,
    )


async def read_stream(
    client: httpx.AsyncClient, method: str, url: str, *, within: float = 10.0, **options: Any
) -> EventStream:
    """Send a request and read its response to the end as SSE (an error body stays raw).

    A stream that has not ended `within` seconds fails the test instead of hanging it.
    """
    async with asyncio.timeout(within), client.stream(method, url, **options) as response:
        if response.status_code != 200:
            body = await response.aread()
            return EventStream(response.status_code, response.headers, [], body)
        frames = [frame async for frame in aiter_frames(response)]
    return EventStream(response.status_code, response.headers, frames, b"")
