"""Errors in the wire format a path speaks: OpenAI's under /v1, Anthropic's under /v1/messages.

The service raises its usual domain errors everywhere and `api/problems.py` renders them as
problem+json. For a path with a foreign format, one pure-ASGI middleware holds a problem's
response (small, so buffered) and hands it to that format's `ErrorShape`, which gives the
status, body and headers its clients' SDKs expect (their exception classes and retries
depend on them). Success bodies and streams pass through untouched. One middleware for every
format: each layer of ASGI middleware costs every request a call, whatever its path.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.api.problems import PROBLEM_JSON

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Rewritten:
    """A problem in a format's terms: its status, body, and the headers to send (the content
    headers are added by the middleware)."""

    status: int
    body: dict[str, Any]
    headers: Headers


class ErrorShape(Protocol):
    """One wire format's errors."""

    def rewrite(self, status: int, problem: dict[str, Any], headers: Headers) -> Rewritten:
        """The response for a problem+json response of `status` with these headers."""
        ...

    def on_success(self, headers: Headers) -> Headers:
        """Headers a response that is not a problem goes out with (its own, or more)."""
        ...


# Which format a path speaks (None: the service's own problem+json).
ShapeOf = Callable[[str], ErrorShape | None]


class ErrorShapeMiddleware:
    """Rewrite problem+json responses into the error format of the path's wire format."""

    def __init__(self, app: ASGIApp, shape_of: ShapeOf) -> None:
        self.app = app
        self.shape_of = shape_of

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        shape = self.shape_of(scope.get("path", "")) if scope["type"] == "http" else None
        if shape is None:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if dict(headers).get(b"content-type", b"").startswith(PROBLEM_JSON.encode()):
                    start = message  # hold it until the whole problem body is here
                    return
                await send({**message, "headers": shape.on_success(headers)})
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await _send_rewritten(shape, start, b"".join(chunks), send)

        await self.app(scope, receive, rewrite)


async def _send_rewritten(shape: ErrorShape, start: Message, raw: bytes, send: Send) -> None:
    try:
        problem = json.loads(raw)
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    rewritten = shape.rewrite(int(start["status"]), problem, list(start.get("headers", [])))
    encoded = json.dumps(rewritten.body).encode()
    headers = [
        *rewritten.headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    await send({"type": "http.response.start", "status": rewritten.status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})


def under(prefix: str, path: str) -> bool:
    """Whether `path` is `prefix` or below it."""
    return path == prefix or path.startswith(prefix + "/")
