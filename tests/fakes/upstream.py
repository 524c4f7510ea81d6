"""A scriptable fake of the LLM providers' HTTP APIs: a real server on a loopback port.

It speaks OpenAI Chat Completions (`POST /v1/chat/completions`), Azure OpenAI
(`POST /openai/deployments/{deployment}/chat/completions?api-version=...`) and Anthropic
Messages (`POST /v1/messages`) as the services do (auth headers, bodies, SSE streams, error
bodies, request-id headers), so the official SDKs, and adapters built on them, run unchanged
against it. The wire formats live in `upstream_openai` and `upstream_anthropic`.

Script what the next requests get, one behaviour per request (whatever the route), in order;
with the script used up, every request gets `fake.default`:

    async with running_upstream() as fake:
        fake.script(Fail(429, retry_after="2"), Reply("Hi."))
        client = openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key=fake.api_key)
        ...
        assert fake.requests[0].headers["authorization"] == f"Bearer {fake.api_key}"

Requests the service would refuse before reaching a model (wrong key, missing `api-version`,
unknown deployment, malformed or invalid body, unknown route) get the service's error and do
not use up a behaviour; every request is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

import uvicorn

from tests.fakes.upstream_anthropic import AnthropicDialect
from tests.fakes.upstream_openai import AzureDialect, OpenAIDialect, openai_error

DEFAULT_API_KEY = "sk-test-fake"
DEFAULT_TEXT = "Hello from the fake upstream."
LONG_TEXT = "This reply is cut short by the fake upstream before it can say everything."
AZURE_PATH = re.compile(r"/openai/deployments/([^/]+)/chat/completions")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A successful answer. `None` fields are filled in as the service would.

    `model=None` echoes the requested model (Azure: the deployment's model, `azure_model`).
    `prompt_tokens` counts every input token, cached ones included (OpenAI's meaning; for
    Anthropic, `input_tokens` is what is left after `cached_tokens` and `cache_write_tokens`);
    `None` estimates it as the characters of all the prompt's text // 4 + 1, and likewise
    `completion_tokens` from `text`. `finish_reason` "length" is Anthropic's "max_tokens".
    """

    text: str = DEFAULT_TEXT
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    # Of `cache_write_tokens`, those written to a one-hour cache (Anthropic's
    # `usage.cache_creation.ephemeral_1h_input_tokens`; OpenAI reports no writes).
    cache_write_1h_tokens: int = 0
    finish_reason: str = "stop"
    # Function calls the model makes (after `text`, which may be empty); `finish_reason`
    # then is usually "tool_calls" (Anthropic's "tool_use").
    tool_calls: tuple[FakeToolCall, ...] = ()
    # Visible reasoning sent before the text (Anthropic thinking blocks; `reasoning_content`
    # on OpenAI-compatible servers), and reasoning tokens reported in usage (OpenAI's
    # `completion_tokens_details.reasoning_tokens`, part of `completion_tokens`).
    reasoning: str = ""
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class FakeToolCall:
    """One function call of a `Reply`: `arguments` is the JSON text the model wrote."""

    name: str
    arguments: str
    id: str | None = None  # None: the dialect makes one up as its service does


@dataclass(frozen=True)
class Fail:
    """The provider's own error body for `status` (type and message defaulted per status);
    `code` and `param` are set in it when given (OpenAI's `context_length_exceeded`)."""

    status: int = 429
    retry_after: str | None = None
    message: str | None = None
    error_type: str | None = None
    code: str | None = None
    param: str | None = None


@dataclass(frozen=True)
class Stall:
    """Accept the request and send nothing, not even headers, for `seconds`; then answer
    with the default reply (unless the client has gone)."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Malformed:
    """200, `content-type: application/json`, and a body that is not JSON."""


@dataclass(frozen=True)
class HangUp:
    """Read the request, then close the connection without answering: no status, no headers
    (a crashed or restarting server behind a load balancer)."""


@dataclass(frozen=True)
class CutStream:
    """Stream `after_chunks` pieces of `text`, then close the connection mid-body: no finish
    reason, no `[DONE]` / `message_stop`. Asked not to stream: a 200 of truncated JSON."""

    after_chunks: int = 2
    text: str = LONG_TEXT


@dataclass(frozen=True)
class StallMidStream:
    """Stream `after_chunks` pieces of `text`, go silent for `seconds`, then finish.
    Asked not to stream: headers and half the body, silence, then the rest."""

    after_chunks: int = 1
    seconds: float = 30.0
    text: str = LONG_TEXT


@dataclass(frozen=True)
class RawBody:
    """200 with exactly this body: what a loosely compatible server might send."""

    body: bytes
    content_type: str = "application/json"


Behaviour = Reply | Fail | Stall | Malformed | CutStream | StallMidStream | RawBody | HangUp


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any  # None when the body is empty or not JSON


class Dialect(Protocol):
    """One provider's wire format (see `upstream_openai`, `upstream_anthropic`)."""

    malformed_body: bytes

    def headers(self) -> list[tuple[str, str]]: ...
    def reject(
        self, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[int, JsonObject] | None: ...
    def wants_stream(self, body: Any) -> bool: ...
    def reported_model(self, body: Any) -> str: ...
    def prompt_text(self, body: Any) -> str: ...
    def error(self, status: int, message: str | None, error_type: str | None) -> JsonObject: ...
    def usage(
        self,
        prompt: int,
        completion: int,
        cached: int,
        cache_write: int,
        reasoning: int = 0,
        cache_write_1h: int = 0,
    ) -> JsonObject: ...
    def message(
        self, text: str, model: str, finish_reason: str, usage: JsonObject, reply: Reply
    ) -> JsonObject: ...
    def stream(
        self,
        pieces: list[str],
        model: str,
        finish_reason: str,
        usage: JsonObject,
        body: Any,
        reply: Reply,
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """(before the text, one per piece of text, after it: tool calls, end, usage)."""
        ...


def split_text(text: str) -> list[str]:
    """Word-sized pieces (leading whitespace kept) that concatenate back to `text`."""
    return re.findall(r"\s*\S+|\s+$", text)


def _estimate(text: str) -> int:
    return len(text) // 4 + 1


@dataclass
class FakeUpstream:
    """The scriptable ASGI app; `running_upstream()` serves it and sets `url`."""

    api_key: str = DEFAULT_API_KEY
    azure_deployments: set[str] = field(default_factory=lambda: {"gpt-4o", "gpt-4o-mini"})
    azure_model: str = "gpt-4o-2024-11-20"
    default: Reply = field(default_factory=Reply)
    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    _queue: deque[Behaviour] = field(default_factory=deque, repr=False)
    _arrival: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)
    _server: uvicorn.Server | None = field(default=None, repr=False)

    def provider_settings(self, *, all_providers: bool = False) -> dict[str, Any]:
        """Settings pointing OpenAI and Anthropic (with `all_providers`, Azure and an
        OpenAI-compatible server too) at this fake."""
        settings: dict[str, Any] = {
            "openai_api_key": self.api_key,
            "openai_base_url": f"{self.url}/v1",
            "anthropic_api_key": self.api_key,
            "anthropic_base_url": self.url,
        }
        if all_providers:
            settings.update(
                azure_openai_api_key=self.api_key,
                azure_openai_endpoint=self.url,
                azure_openai_deployments={"gpt-4o": "gpt-4o"},
                openai_compatible_base_url=f"{self.url}/v1",
                openai_compatible_api_key=self.api_key,
                openai_compatible_models=["llama3.1"],
            )
        return settings

    def script(self, *behaviours: Behaviour) -> None:
        """Append behaviours for the next requests, one each, in order."""
        self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Scripted behaviours not yet used."""
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self.requests.clear()

    async def wait_for_requests(self, count: int = 1) -> None:
        """Return once `count` requests have arrived (e.g. one now stalled); TimeoutError
        after 5 s, so that a test waiting for a request that never comes fails."""
        async with asyncio.timeout(5), self._arrival:
            await self._arrival.wait_for(lambda: len(self.requests) >= count)

    def _dialect_for(self, method: str, path: str) -> Dialect | None:
        if method != "POST":
            return None
        if path == "/v1/chat/completions":
            return OpenAIDialect(self.api_key)
        if path == "/v1/messages":
            return AnthropicDialect(self.api_key)
        if match := AZURE_PATH.fullmatch(path):
            return AzureDialect(
                self.api_key,
                deployment=match[1],
                deployments=frozenset(self.azure_deployments),
                underlying_model=self.azure_model,
            )
        return None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            raw += event.get("body", b"")
            if not event.get("more_body"):
                break
        request = _record(scope, raw)
        async with self._arrival:
            self.requests.append(request)
            self._arrival.notify_all()
        exchange = _Exchange(scope, receive, send, self)
        dialect = self._dialect_for(request.method, request.path)
        if dialect is None:
            message = f"Invalid URL ({request.method} {request.path})"
            await exchange.json(404, openai_error(message, "invalid_request_error"), [])
            return
        rejection = dialect.reject(request.query, request.headers, request.json)
        if rejection is not None:
            await exchange.json(*rejection, dialect.headers())
            return
        behaviour = self._queue.popleft() if self._queue else self.default
        await self._perform(behaviour, dialect, request.json, exchange)

    async def _perform(
        self, behaviour: Behaviour, dialect: Dialect, body: Any, exchange: _Exchange
    ) -> None:
        headers = dialect.headers()
        match behaviour:
            case Fail(status, retry_after, message, error_type, code, param):
                if retry_after is not None:
                    headers.append(("retry-after", retry_after))
                error = dialect.error(status, message, error_type)
                if code is not None or param is not None:
                    error["error"] = {**error["error"], "code": code, "param": param}
                await exchange.json(status, error, headers)
            case Malformed():
                await exchange.raw(200, "application/json", dialect.malformed_body, headers)
            case RawBody(raw, content_type):
                await exchange.raw(200, content_type, raw, headers)
            case HangUp():
                await exchange.hang_up()
            case Stall(seconds):
                if not await exchange.client_left(seconds):
                    await self._perform(self.default, dialect, body, exchange)
            case Reply() | CutStream() | StallMidStream():
                await self._answer(behaviour, dialect, body, exchange)

    async def _answer(
        self,
        behaviour: Reply | CutStream | StallMidStream,
        dialect: Dialect,
        body: Any,
        exchange: _Exchange,
    ) -> None:
        reply = behaviour if isinstance(behaviour, Reply) else Reply(text=behaviour.text)
        cached, written = reply.cached_tokens, reply.cache_write_tokens
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = max(_estimate(dialect.prompt_text(body)), cached + written)
        completion = reply.completion_tokens
        if completion is None:
            # Everything the model wrote: text, calls' arguments and reasoning.
            written_text = reply.text + reply.reasoning
            completion = _estimate(written_text + "".join(c.arguments for c in reply.tool_calls))
            completion += reply.reasoning_tokens
        usage = dialect.usage(
            prompt, completion, cached, written, reply.reasoning_tokens, reply.cache_write_1h_tokens
        )
        model = reply.model or dialect.reported_model(body)
        headers = dialect.headers()
        if not dialect.wants_stream(body):
            data = json.dumps(dialect.message(reply.text, model, reply.finish_reason, usage, reply))
            encoded = data.encode()
            if isinstance(behaviour, CutStream):
                encoded = encoded[: len(encoded) // 2]
            if not isinstance(behaviour, StallMidStream):
                await exchange.raw(200, "application/json", encoded, headers)
                return
            await exchange.start(200, "application/json", headers, len(encoded))
            await exchange.write(encoded[: len(encoded) // 2])
            if not await exchange.client_left(behaviour.seconds):
                await exchange.write(encoded[len(encoded) // 2 :], more=False)
            return

        pieces = split_text(reply.text)
        head, content, tail = dialect.stream(pieces, model, reply.finish_reason, usage, body, reply)
        headers.append(("cache-control", "no-cache"))
        await exchange.start(200, "text/event-stream; charset=utf-8", headers)
        cut = len(content) if isinstance(behaviour, Reply) else behaviour.after_chunks
        for event in [*head, *content[:cut]]:
            await exchange.write(event)
        if isinstance(behaviour, CutStream):
            await exchange.hang_up()
            return
        if isinstance(behaviour, StallMidStream) and await exchange.client_left(behaviour.seconds):
            return
        for event in [*content[cut:], *tail]:
            await exchange.write(event)
        await exchange.write(b"", more=False)

    def _transports(self, client: Iterable[Any] | None = None) -> list[asyncio.BaseTransport]:
        """The server's open connections (only the one from `client`, if given)."""
        if self._server is None:
            return []
        wanted = None if client is None else tuple(client)
        transports = []
        for connection in list(self._server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and wanted in (None, getattr(connection, "client", None)):
                transports.append(transport)
        return transports


def _record(scope: Message, raw: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    return RecordedRequest(scope["method"], scope["path"], query, headers, body)


@dataclass
class _Exchange:
    """One request's response, sent through ASGI, plus the two things ASGI cannot say:
    waiting for the client to leave, and hanging up mid-body."""

    scope: Message
    receive: Receive
    send: Send
    fake: FakeUpstream

    async def start(
        self,
        status: int,
        content_type: str,
        headers: list[tuple[str, str]],
        content_length: int | None = None,
    ) -> None:
        all_headers = [("content-type", content_type), *headers]
        if content_length is not None:
            all_headers.append(("content-length", str(content_length)))
        encoded = [(name.encode(), value.encode()) for name, value in all_headers]
        await self.send({"type": "http.response.start", "status": status, "headers": encoded})

    async def write(self, data: bytes, *, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def raw(
        self, status: int, content_type: str, data: bytes, headers: list[tuple[str, str]]
    ) -> None:
        await self.start(status, content_type, headers, len(data))
        await self.write(data, more=False)

    async def json(self, status: int, body: JsonObject, headers: list[tuple[str, str]]) -> None:
        await self.raw(status, "application/json", json.dumps(body).encode(), headers)

    async def client_left(self, seconds: float) -> bool:
        """Wait `seconds` unless the client disconnects first (then True)."""
        try:
            async with asyncio.timeout(seconds):
                while (await self.receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            return False
        return True

    async def hang_up(self) -> None:
        """Close the connection with the response unfinished (what has been written is
        flushed first), then wait until the server has seen it closed."""
        for transport in self.fake._transports(self.scope.get("client")):
            transport.close()
        await self.client_left(5.0)


class _Server(uvicorn.Server):
    """uvicorn's server, made to start and stop in milliseconds inside a test's loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # Signals belong to the test runner, not to a server inside it.

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the `date` and `server` headers
        await self._exit.wait()  # rather than uvicorn's check of `should_exit` every 0.1 s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Drop every connection rather than wait for it: a handler stalled on a client that
        # is still there then sees it leave and returns at once.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        if self.server_state.tasks:
            await asyncio.wait(set(self.server_state.tasks), timeout=5)
        for task in self.server_state.tasks:
            task.cancel()
        for server in self.servers:
            await server.wait_closed()
        for sock in sockets or []:
            sock.close()


@contextlib.asynccontextmanager
async def running_upstream(fake: FakeUpstream | None = None) -> AsyncIterator[FakeUpstream]:
    """Serve `fake` (a new `FakeUpstream` by default) on a free loopback port, in this loop."""
    fake = fake if fake is not None else FakeUpstream()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        fake,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        http="h11",
        ws="none",
        proxy_headers=False,
        server_header=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("the fake upstream did not start")
            await asyncio.sleep(0.001)
        fake._server = server
        fake.url = f"http://127.0.0.1:{port}"
        yield fake
    finally:
        server.exit()
        try:
            await asyncio.wait_for(task, timeout=10)
        finally:
            fake._server = None
            listener.close()
