"""API keys: issued once in clear, stored as a SHA-256 hash, looked up by that hash."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.db.base import utcnow
from app.db.driver import Statements
from app.db.models import ApiKey
from app.repositories.api_keys import ApiKeyRepo, active_key, touch_key

KEY_PREFIX = "ca_"
SHOWN_PREFIX_LENGTH = 8
# A hot key writes `last_used_at` at most this often.
TOUCH_EVERY = timedelta(minutes=1)


def hash_key(secret: str) -> str:
    """The stored form of a key: a lookup by hash needs no constant-time comparison."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


async def issue(
    session: AsyncSession, *, user_id: str, is_admin: bool = False, name: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for `user_id`; the clear key is returned here and never again."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        user_id=user_id,
        is_admin=is_admin,
        name=name,
        prefix=secret[:SHOWN_PREFIX_LENGTH],
        key_hash=hash_key(secret),
        created_at=utcnow(),
    )
    return await ApiKeyRepo(session).add(key), secret


async def list_keys(session: AsyncSession, user_id: str | None = None) -> Sequence[ApiKey]:
    return await ApiKeyRepo(session).list(user_id)


async def revoke(session: AsyncSession, id_or_prefix: str) -> Sequence[ApiKey]:
    """Revoke the key named by id or shown prefix; refuses (returns them) when several match."""
    repo = ApiKeyRepo(session)
    matches = await repo.matching(id_or_prefix)
    if len(matches) == 1:
        await repo.revoke(matches[0].id, utcnow())
        await session.refresh(matches[0])
    return matches


async def principal_for(run: Statements, key_hash: str) -> Principal | None:
    """The caller the key with this hash stands for, or `None` when unknown or revoked."""
    key = await active_key(run, key_hash)
    if key is None:
        return None
    now = utcnow()
    if key.last_used_at is None or key.last_used_at < now - TOUCH_EVERY:
        await touch_key(run, key.id, now, every=TOUCH_EVERY)
    return Principal(user_id=key.user_id, is_admin=key.is_admin)
