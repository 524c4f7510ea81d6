"""Pure ASGI middleware: request id, access log, JSON content type, and the last-resort 500."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response, request_id_of
from app.core import metrics

log = structlog.get_logger("app.access")

# A caller's id is echoed back and logged, so only a safe, bounded shape is accepted.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# On a 408: uvicorn closes the connection after the response, the rest of the body unread.
_CLOSE = {"Connection": "close"}


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


class RequestContextMiddleware:
    """Gives every request an id, logs one access line, and turns crashes into a clean 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            if (
                scope["method"] in _METHODS_WITH_BODY
                and _has_body(headers)
                and not _is_json(headers.get("content-type", ""))
            ):
                response = problem_response(
                    415,
                    "unsupported_media_type",
                    "request bodies must be application/json",
                    request_id,
                )
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if not response_started:
                response = problem_response(
                    500, "internal_error", "an unexpected error occurred", request_id
                )
                await response(scope, receive, send_with_id)
        finally:
            duration_s = time.perf_counter() - started
            route = _route_template(scope, status)
            metrics.observe_request(scope["method"], route, status, duration_s)
            log.info(
                "request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(duration_s * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


class BodySizeLimitMiddleware:
    """Bounds a request body in size and in time, before the app spends anything on it.

    Over `max_body_bytes` is a 413 problem: a declared Content-Length before the app runs, a
    chunked body counted as it arrives and cut off at the limit, so memory stays bounded.
    A body not all received `read_timeout_s` after the request began is a 408 problem with
    `Connection: close`, so a client that never finishes its body cannot hold a connection
    (uvicorn has no such timeout). A response already started is never touched.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, read_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            response = problem_response(
                413, "payload_too_large", self._detail(), request_id_of(scope)
            )
            await response(scope, receive, send)
            return

        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        received = 0
        body_complete = False
        response_started = False
        timed_out = False

        async def send_unless_timed_out(message: Message) -> None:
            nonlocal response_started
            if timed_out:
                return  # the app's own answer to a request already answered with the 408
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        async def receive_within_limits() -> Message:
            nonlocal received, body_complete, timed_out
            if body_complete or response_started:
                return await receive()  # waiting for a disconnect is not reading a body
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                if response_started:
                    return await receive()
                # Answered here, whatever the app makes of the exception: FastAPI turns most
                # errors in reading a body into a 400.
                timed_out = True
                await self._timeout_response(scope)(scope, receive, send)
                raise HTTPException(408, self._timeout_detail(), headers=_CLOSE) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, receive_within_limits, send_unless_timed_out)

    def _detail(self) -> str:
        return f"request body is larger than {self.max_body_bytes} bytes"

    def _timeout_detail(self) -> str:
        return f"request body was not received within {self.read_timeout_s:g} seconds"

    def _timeout_response(self, scope: Scope) -> Response:
        return problem_response(
            408, "request_timeout", self._timeout_detail(), request_id_of(scope), headers=_CLOSE
        )


def _route_template(scope: MutableMapping[str, Any], status: int) -> str:
    """The matched route's template (`/api/v1/conversations/{conversation_id}`), never raw ids.

    Rebuilt from the path and its parameters: with nested routers, the matched route object
    only knows its path relative to its own router.
    """
    if scope.get("route") is None:
        # Starlette's own routes (/openapi.json, /docs) set no route but have fixed paths; any
        # other unrouted request is labelled once, so unknown URLs cannot flood the metrics.
        return scope["path"] if status < 400 and not scope.get("path_params") else "unmatched"
    names_by_value = {
        value: name
        for name, value in (scope.get("path_params") or {}).items()
        if isinstance(value, str)
    }
    segments = scope["path"].split("/")
    return "/".join(f"{{{names_by_value[s]}}}" if s in names_by_value else s for s in segments)
