"""The `Idempotency-Key` header as a dependency, and a replayed response as HTTP."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse

from app.api.deps import CurrentUser
from app.core.config import Settings
from app.services.limits.idempotency import IdempotentRequest, StoredResponse, request_hash

T = TypeVar("T")

REPLAYED_HEADER = "Idempotency-Replayed"


def _wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def _idempotent_request(
    request: Request,
    principal: CurrentUser,
    idempotency_key: Annotated[
        str | None,
        # Printable ASCII, as clients generate them (UUIDs, hashes): never a control byte.
        Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[ -~]+$"),
    ] = None,
) -> IdempotentRequest:
    # The app state straight from the request, as `_principal` does: this runs on every turn.
    settings: Settings = request.state.settings
    fingerprint = ""  # only a keyed request is ever compared with a stored one
    if idempotency_key is not None:
        # An SSE request and a JSON one with the same body get different responses.
        variant = "sse" if _wants_event_stream(request) else ""
        body = await request.body()
        fingerprint = request_hash(request.method, request.url.path, body, variant=variant)
    return IdempotentRequest(
        sessionmaker=request.state.sessionmaker,
        user_id=principal.user_id,
        key=idempotency_key,
        request_hash=fingerprint,
        ttl_s=settings.idempotency_ttl_seconds,
        # No turn outlives its generation timeout: a claim older than that was abandoned.
        abandoned_after_s=settings.generation_timeout_seconds + 60,
    )


IdempotencyDep = Annotated[IdempotentRequest, Depends(_idempotent_request)]


def replayed(outcome: T | StoredResponse) -> T | JSONResponse:
    """A stored response goes out as it was first sent, marked `Idempotency-Replayed: true`."""
    if isinstance(outcome, StoredResponse):
        return JSONResponse(
            outcome.body, status_code=outcome.status, headers={REPLAYED_HEADER: "true"}
        )
    return outcome
