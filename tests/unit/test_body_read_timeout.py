"""BodySizeLimitMiddleware's read deadline, around small ASGI apps that read bodies their way.

Whatever an app makes of the error it gets from a stalled `receive` (FastAPI turns most of
them into a 400), the client gets the 408; a response the app already started is left alone.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.responses import PlainTextResponse

from app.api.middleware import BodySizeLimitMiddleware

Message = dict[str, Any]
READ_TIMEOUT_S = 0.1
SCOPE: Message = {
    "type": "http",
    "method": "POST",
    "path": "/anything",
    "headers": [(b"content-length", b"100")],
    "state": {"request_id": "req-1"},
}


def stalling_receive() -> Any:
    """Ten bytes of a hundred, then nothing: the client neither sends more nor leaves."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"0123456789", "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def run(app: Any) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = BodySizeLimitMiddleware(app, max_body_bytes=1_024, read_timeout_s=READ_TIMEOUT_S)
    await asyncio.wait_for(middleware(dict(SCOPE), stalling_receive(), send), timeout=5)
    return sent


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


class TestReadDeadline:
    async def test_an_app_that_turns_the_error_into_a_400_still_sends_only_the_408(
        self,
    ) -> None:
        async def swallowing_app(scope: Message, receive: Any, send: Any) -> None:
            try:
                await read_body(receive)
            except Exception:  # what FastAPI does with most errors while reading a body
                await PlainTextResponse("bad request", status_code=400)(scope, receive, send)

        sent = await run(swallowing_app)

        starts = [m for m in sent if m["type"] == "http.response.start"]
        assert [m["status"] for m in starts] == [408]
        assert (b"connection", b"close") in starts[0]["headers"]
        body = json.loads(b"".join(m.get("body", b"") for m in sent if "body" in m))
        assert body["code"] == "request_timeout"
        assert body["request_id"] == "req-1"

    async def test_a_response_already_started_is_never_touched(self) -> None:
        async def answers_first_then_reads(scope: Message, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"early ", "more_body": True})
            # Waits past the deadline for the rest of the body (or a disconnect), then ends.
            try:
                await asyncio.wait_for(read_body(receive), timeout=READ_TIMEOUT_S * 3)
            except TimeoutError:
                pass
            await send({"type": "http.response.body", "body": b"answer"})

        sent = await run(answers_first_then_reads)

        assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]
        assert b"".join(m.get("body", b"") for m in sent if "body" in m) == b"early answer"
