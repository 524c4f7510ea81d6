"""Every error as RFC 9457 problem details (`application/problem+json`), rendered in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.core import metrics
from app.db.unavailable import is_unavailable
from app.errors import ChatAPIError

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

# Framework-raised HTTP errors get the contract's codes.
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "not_ready",
}

# What `Allow` may name on a 405.
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def request_id_of(request_scope: MutableMapping[str, Any]) -> str | None:
    state = request_scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


def problem_body(
    status: int, code: str, detail: str, request_id: str | None, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
        **extra,
    }


def problem_response(
    status: int,
    code: str,
    detail: str,
    request_id: str | None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, detail, request_id, **extra),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChatAPIError)
    metrics.record_rejection(exc.code)
    return problem_response(
        exc.status.value,
        exc.code,
        exc.detail,
        request_id_of(request.scope),
        headers=exc.headers,
        **exc.extra,
    )


def _undecodable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not decode a JSON body, if that is what this 400 is.

    FastAPI turns a `json.JSONDecodeError` into a 422 but any other decoding failure (bytes
    that are not UTF-8, nesting past the recursion limit, an integer too long to convert)
    into a bare 400; the contract calls all of them malformed JSON.
    """
    if exc.status_code != 400:
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not valid UTF-8"
    if isinstance(cause, RecursionError):
        return "the body is nested too deeply"
    if isinstance(cause, ValueError):
        return "the body is not valid JSON"
    return None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if (reason := _undecodable_body(exc)) is not None:
        return problem_response(
            422,
            "validation_error",
            "the request is not valid",
            request_id_of(request.scope),
            errors=[{"loc": ["body"], "msg": reason}],
        )
    status = exc.status_code
    code = _CODES_BY_STATUS.get(status, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    headers = exc.headers
    if status == 404:
        detail = f"no route matches {request.url.path}"
    elif status == 405 and (allowed := _allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allowed}
    return problem_response(status, code, detail, request_id_of(request.scope), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path, for `Allow`.

    The router names only the methods of the first route whose path matched, and a path here
    is often several routes (GET, PATCH and DELETE of one conversation): so each method is
    put to the router's routes as a request with it would be.
    """
    routes = request.app.router.routes
    allowed = []
    for method in _HTTP_METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


def field_path(loc: Iterable[object]) -> list[str]:
    """Pydantic's `loc` as the body's own path: the steps it adds for a union's members
    (`function-after[...]`, `[parts]`) are no field of the body."""
    return [str(part) for part in loc if not any(mark in str(part) for mark in "[]()")]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what: the offending input is never echoed (it may hold message text).
    errors = [
        {"loc": field_path(error.get("loc", ())), "msg": str(error.get("msg", ""))}
        for error in exc.errors()
    ]
    return problem_response(
        422,
        "validation_error",
        "the request is not valid",
        request_id_of(request.scope),
        errors=errors,
    )


# What a lost or overloaded database looks like from inside a request. Each is a quick 503
# the client may retry, not a 500: the service recovers by itself when the database returns.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection became free in time
    ConnectionError,
    TimeoutError,
)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", error=type(exc).__name__)
    return problem_response(
        503,
        "not_ready",
        "the database is unavailable; retry shortly",
        request_id_of(request.scope),
        headers={"Retry-After": "5"},
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """Any other driver error: a lost connection or a database that turns work away is a
    503 like the rest, anything else a 500.

    asyncpg reports some connection failures as plain server errors (class 08, an admin
    shutdown), which SQLAlchemy wraps as a bare `DBAPIError` marked `connection_invalidated`;
    a refused new connection (too many clients, starting up) as one with that SQLSTATE.
    """
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and (
        exc.connection_invalidated or is_unavailable(exc)
    ):
        return await _database_unavailable(request, exc)
    raise exc


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ChatAPIError, _domain_error)
    # The more specific classes below win for their own errors (handlers are found by MRO).
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, _database_error)
    for exception_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exception_type, _database_unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
