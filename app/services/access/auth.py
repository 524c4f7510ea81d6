"""Who is calling: a bearer API key or JWT, or on stream routes a single-use ticket."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.security import Principal
from app.db.driver import statements
from app.errors import Unauthenticated
from app.services.access import api_keys
from app.services.access.jwt_tokens import principal_from_jwt
from app.services.access.known_keys import KnownKeys
from app.services.streaming.stream_tickets import StreamTickets


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else `None`."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    authorization: str | None,
    *,
    ticket: str | None = None,
    tickets: StreamTickets | None = None,
    known_keys: KnownKeys,
) -> Principal:
    """The caller named by the header (or, where allowed, a stream ticket); else a 401.

    An API key is looked up in `known_keys` first, and remembered there.
    """
    token = bearer_token(authorization)
    if token is None and ticket and tickets is not None:
        principal = await tickets.consume(ticket)
        if principal is None:
            raise Unauthenticated("stream ticket is invalid, expired or already used")
        return principal
    if token is None:
        raise Unauthenticated()
    if api_keys.looks_like_api_key(token):
        key_hash = api_keys.hash_key(token)
        if (known := known_keys.get(key_hash)) is not None:
            return known
        generation = known_keys.generation
        # One read and, once a minute, one write: each is atomic alone, so the lookup is a
        # single round trip instead of BEGIN/SELECT/COMMIT.
        async with statements(sessionmaker, single_statements=True) as run:
            principal = await api_keys.principal_for(run, key_hash)
        if principal is None:
            raise Unauthenticated()
        known_keys.remember(key_hash, principal, generation)
        return principal
    return principal_from_jwt(token, settings)
