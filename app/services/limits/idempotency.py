"""`Idempotency-Key`: a retried POST gets the first response, without running it twice.

A key belongs to one user and is claimed by one `INSERT ... ON CONFLICT` (never check, then
insert). Of the requests that carry it:

- the first runs; a 2xx response is stored (status and JSON body) and kept for the TTL;
- the same request again (same SHA-256 of method, path and canonical JSON body) gets the
  stored response, or 409 `idempotency_in_progress` while the first is still running;
- a different request gets 422 `idempotency_key_reused`;
- once the row has expired, the key is claimed afresh.

A request that fails (any error: 4xx, 5xx, a provider failure, a cancelled request) stores
nothing: its claim is released, so a retry with the same key runs again.

Two ways to claim:

- `session=` the request's own session (short, database-only requests: conversations,
  feedback): the claim, the work and the stored response commit together or not at all, and a
  concurrent duplicate waits on the claimed row's lock, then replays.
- `run_durably` (turns, which wait on a provider): the claim commits on its own first, so a
  concurrent duplicate sees it at once (409); the response is stored by the turn itself, in
  the transaction that makes its outcome durable (the reply's charge, or a stream's start).
  So a key still `in_progress` always means "nothing was charged": a claim whose process died
  is taken over once it is older than `abandoned_after_s`, instead of blocking for the TTL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.base import utcnow
from app.db.models import IdempotencyStatus
from app.errors import IdempotencyInProgress, IdempotencyKeyReused
from app.repositories.idempotency import IdempotencyRepo

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Stores the key's response inside the caller's transaction, with the outcome it describes.
ResponseRecorder = Callable[[AsyncSession, Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The first response to a key, to be sent again as it was."""

    status: int
    body: dict[str, Any]


def request_hash(method: str, path: str, body: bytes, *, variant: str = "") -> str:
    """SHA-256 of the request: key order and whitespace in a JSON body do not matter."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except ValueError:  # empty or not JSON: the bytes as sent
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), variant.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _model_body(result: Any) -> dict[str, Any]:
    assert isinstance(result, BaseModel)
    body: dict[str, Any] = result.model_dump(mode="json", by_alias=True)
    return body


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """One request and the key it carries (`key=None`: no key, the request simply runs)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    user_id: str
    key: str | None
    request_hash: str
    ttl_s: int
    # A claim still in progress after this long belongs to a process that died (a turn is
    # bounded by GENERATION_TIMEOUT_SECONDS) and, recorded with its outcome, charged nothing.
    abandoned_after_s: float

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        status: int,
        session: AsyncSession | None,
        encode: Callable[[T], dict[str, Any]] = _model_body,
    ) -> T | StoredResponse:
        """Run `call` once per key in the request's `session`: its result, or the stored one.

        Without a key no session is needed (`None`: the work may run on the driver)."""
        if self.key is None:
            return await call()
        if session is None:
            raise ValueError("a request with an Idempotency-Key runs in a session's transaction")
        return await self._run_in(session, call, status, encode)

    async def run_durably(
        self,
        call: Callable[[ResponseRecorder | None], Awaitable[T]],
        *,
        status: int,
        encode: Callable[[Any], dict[str, Any]] = _model_body,
    ) -> T | StoredResponse:
        """Run `call` once per key; `call` awaits the recorder it gets (None without a key)
        inside the transaction that stores its outcome, so the response commits with it.

        `encode` makes the stored body of what is recorded. The key is claimed before `call`
        runs: what a request must only take when it really runs (a concurrency slot) is taken
        inside `call`, so that a duplicate never takes it and a refusal releases the claim."""
        if self.key is None:
            return await call(None)
        async with self.sessionmaker.begin() as claim_session:
            stored = await self._claim(claim_session)
        if stored is not None:
            return stored
        key = self.key

        async def record(session: AsyncSession, result: Any) -> None:
            await IdempotencyRepo(session).complete(self.user_id, key, status, encode(result))

        try:
            return await call(record)
        except BaseException:
            # Releases only an unrecorded claim: a response already stored stays replayable.
            try:
                await asyncio.shield(self._release())
            except Exception as error:
                # The database is the likely reason the call failed: its error stays the one
                # raised, and the claim is taken over once `abandoned_after_s` has passed.
                log.warning("could not release an idempotency claim", error=type(error).__name__)
            raise

    async def _run_in(
        self,
        session: AsyncSession,
        call: Callable[[], Awaitable[T]],
        status: int,
        encode: Callable[[T], dict[str, Any]],
    ) -> T | StoredResponse:
        assert self.key is not None
        stored = await self._claim(session)
        if stored is not None:
            return stored
        result = await call()  # on error the request's transaction, claim included, rolls back
        await IdempotencyRepo(session).complete(self.user_id, self.key, status, encode(result))
        return result

    async def _claim(self, session: AsyncSession) -> StoredResponse | None:
        """`None`: the key is ours, run the request. Else the stored response, or an error."""
        assert self.key is not None
        repo = IdempotencyRepo(session)
        for _ in range(2):  # the other claim may be released between our two statements
            now = utcnow()
            expires_at = now + timedelta(seconds=self.ttl_s)
            abandoned_before = now - timedelta(seconds=self.abandoned_after_s)
            claimed = await repo.claim(
                self.user_id, self.key, self.request_hash, now, expires_at, abandoned_before
            )
            if claimed:
                return None
            row = await repo.get(self.user_id, self.key)
            if row is None:
                continue
            if row.request_hash != self.request_hash:
                raise IdempotencyKeyReused()
            if (
                row.status is IdempotencyStatus.COMPLETED
                and row.response_status is not None
                and row.response_body is not None
            ):
                return StoredResponse(row.response_status, row.response_body)
            raise IdempotencyInProgress()
        raise IdempotencyInProgress()

    async def _release(self) -> None:
        assert self.key is not None
        async with self.sessionmaker.begin() as session:
            await IdempotencyRepo(session).release(self.user_id, self.key)
