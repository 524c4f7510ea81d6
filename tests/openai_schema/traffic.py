"""What a client exchanged with `/v1/chat/completions`, copied off the wire as the client
read it, and every way a body or stream chunk of it breaks OpenAI's pinned schema.

An SDK (openai-python, LangChain, pydantic-ai) is handed `Recorder().client()` as its HTTP
client: requests pass through unchanged and each response is teed as the SDK consumes it, so
a stream still arrives piece by piece.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2

from tests.openai_schema import chunk_errors, completion_errors
from tests.openai_schema.responses import response_body_errors, stream_event_errors
from tests.sse import parse_frames

CONVERSATION_HEADER = "x-conversation-id"
COMPLETIONS_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
DONE = "[DONE]"


@dataclass
class Exchange:
    """One request and the response to it, as far as the client has read it."""

    method: str
    path: str
    request_body: bytes
    status_code: int
    headers: httpx2.Headers
    body: bytearray = field(default_factory=bytearray)

    @property
    def streamed(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    @property
    def conversation_id(self) -> str | None:
        return self.headers.get(CONVERSATION_HEADER)

    def request_json(self) -> Any:
        return json.loads(self.request_body)

    def json(self) -> Any:
        return json.loads(self.body)

    def chunks(self) -> list[Any]:
        """A stream's `data:` payloads, `[DONE]` left out."""
        frames = parse_frames(self.body.decode())
        return [json.loads(f.data) for f in frames if f.data is not None and f.data != DONE]

    def describe(self, *, body: bool = True) -> str:
        """The request (and the response's body), for a failure message."""
        sent = f"{self.method} {self.path} {self.request_body.decode(errors='replace')}"
        if not body:
            return f"{sent}\n  -> {self.status_code} {self.headers.get('content-type')}"
        return f"{sent}\n  -> {self.status_code} {self.body.decode(errors='replace')}"


class _Tee(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, into: bytearray) -> None:
        self._stream, self._into = stream, into

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._stream:
            self._into.extend(piece)
            yield piece

    async def aclose(self) -> None:
        await self._stream.aclose()


class Recorder(httpx2.AsyncBaseTransport):
    """A transport that sends every request on and keeps a copy of each exchange."""

    def __init__(self) -> None:
        self._transport = httpx2.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    def client(self, *, timeout: float = 30.0) -> httpx2.AsyncClient:
        """An HTTP client for an SDK whose traffic this records."""
        return httpx2.AsyncClient(transport=self, timeout=timeout)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        sent = await request.aread()
        response = await self._transport.handle_async_request(request)
        exchange = Exchange(
            request.method, request.url.path, sent, response.status_code, response.headers
        )
        self.exchanges.append(exchange)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, exchange.body),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._transport.aclose()

    @property
    def completions(self) -> list[Exchange]:
        """The calls to `/v1/chat/completions`, in the order they were sent."""
        return [e for e in self.exchanges if e.path.endswith(COMPLETIONS_PATH)]

    def conversation_ids(self) -> list[str]:
        """The conversation each completion went to (`X-Conversation-ID`), in order."""
        return [e.conversation_id for e in self.completions if e.conversation_id is not None]

    def schema_violations(self) -> list[str]:
        """Every way a completion body or stream chunk seen breaks OpenAI's schema, with the
        exchange it came from; none when all conform (a non-200 answer is itself one)."""
        found: list[str] = []
        for exchange in self.completions:
            if exchange.status_code != 200:
                found.append(f"status {exchange.status_code}\n{exchange.describe()}")
                continue
            if not exchange.streamed:
                found.extend(
                    f"{error}\n  in {exchange.describe()}"
                    for error in completion_errors(exchange.json())
                )
                continue
            chunks = exchange.chunks()
            # One line per kind of error, not one per chunk: a stream repeats its mistakes.
            first_in: dict[str, Any] = {}
            counts: Counter[str] = Counter()
            for chunk in chunks:
                for error in chunk_errors(chunk):
                    first_in.setdefault(error, chunk)
                    counts[error] += 1
            found.extend(
                f"{error} (in {counts[error]} of {len(chunks)} chunks)\n"
                f"  first in {json.dumps(first_in[error])}\n"
                f"  of {exchange.describe(body=False)}"
                for error in first_in
            )
        return found

    @property
    def responses(self) -> list[Exchange]:
        """The calls to `/v1/responses` and below it, in the order they were sent."""
        return [e for e in self.exchanges if RESPONSES_PATH in e.path]

    def response_violations(self) -> list[str]:
        """Every way a Responses API body or stream event seen breaks OpenAI's schema (the
        create, retrieve, delete and input-items shapes), with the exchange it came from."""
        found: list[str] = []
        for exchange in self.responses:
            if exchange.status_code == 404 and exchange.method == "GET":
                continue  # a deleted response, read back on purpose
            if exchange.status_code != 200:
                found.append(f"status {exchange.status_code}\n{exchange.describe()}")
                continue
            if exchange.streamed:
                events = exchange.chunks()
                errors = [error for event in events for error in stream_event_errors(event)]
            else:
                errors = response_body_errors(exchange.method, exchange.path, exchange.json())
            found.extend(f"{error}\n  in {exchange.describe(body=False)}" for error in errors)
        return found
