"""Single-use stream tickets: how a browser's `EventSource` (no headers) authenticates.

A ticket stands for one principal for `TICKET_TTL_SECONDS` and is consumed by its first use.
Redis holds them so any replica accepts them (SET NX PX, then GETDEL); without Redis, or while
it is down, they live in this process. Only a hash of the ticket is ever used as a key.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.security import Principal

TICKET_TTL_SECONDS: float = 60
TICKET_PREFIX = "st_"
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class IssuedTicket:
    ticket: str
    expires_in: int


def _key(ticket: str) -> str:
    return "chat:ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


def _encode(principal: Principal) -> str:
    return json.dumps({"user_id": principal.user_id, "is_admin": principal.is_admin})


def _decode(value: str | bytes) -> Principal | None:
    try:
        data = json.loads(value)
        return Principal(user_id=str(data["user_id"]), is_admin=data["is_admin"] is True)
    except (ValueError, KeyError, TypeError):
        return None


class StreamTickets:
    """Issues and consumes tickets, in Redis when it answers, else in this process."""

    def __init__(self, redis: Redis | None, *, ttl_s: float | None = None) -> None:
        self.redis = redis
        self.ttl_s = TICKET_TTL_SECONDS if ttl_s is None else ttl_s
        self._local: dict[str, tuple[str, float]] = {}

    async def issue(self, principal: Principal) -> IssuedTicket:
        """A new ticket for `principal`, valid once within the TTL."""
        ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
        issued = IssuedTicket(ticket=ticket, expires_in=math.ceil(self.ttl_s))
        value = _encode(principal)
        if self.redis is not None:
            try:
                ttl_ms = max(1, round(self.ttl_s * 1000))
                await self.redis.set(_key(ticket), value, nx=True, px=ttl_ms)
                return issued
            except (RedisError, OSError):
                log.warning("redis unavailable; stream ticket kept in process")
        self._prune()
        self._local[_key(ticket)] = (value, time.monotonic() + self.ttl_s)
        return issued

    async def consume(self, ticket: str) -> Principal | None:
        """The ticket's principal, once; `None` when unknown, used or expired."""
        key = _key(ticket)
        local = self._local.pop(key, None)
        if local is not None:
            value, expires_at = local
            return _decode(value) if time.monotonic() < expires_at else None
        if self.redis is None:
            return None
        try:
            stored = await self.redis.getdel(key)
        except (RedisError, OSError):
            log.warning("redis unavailable; stream ticket not checked")
            return None
        return None if stored is None else _decode(stored)

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [key for key, (_, expires_at) in self._local.items() if expires_at <= now]:
            del self._local[key]
