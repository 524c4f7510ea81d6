"""All SQL on API keys: issue, find by hash, list, revoke, and touch `last_used_at`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import Statements
from app.db.models import ApiKey


class ApiKeyRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        await self.session.flush()
        return key

    async def list(self, user_id: str | None = None) -> Sequence[ApiKey]:
        statement = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if user_id is not None:
            statement = statement.where(ApiKey.user_id == user_id)
        return (await self.session.scalars(statement)).all()

    async def matching(self, id_or_prefix: str) -> Sequence[ApiKey]:
        """Keys whose id is `id_or_prefix`, or whose shown prefix is it."""
        condition = ApiKey.prefix == id_or_prefix
        try:
            condition = or_(condition, ApiKey.id == UUID(id_or_prefix))
        except ValueError:
            pass
        return (await self.session.scalars(select(ApiKey).where(condition))).all()

    async def revoke(self, key_id: UUID, now: datetime) -> bool:
        """Revoke the key; `False` when it was already revoked (or does not exist)."""
        result = await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True, slots=True)
class ActiveKey:
    id: UUID
    user_id: str
    is_admin: bool
    last_used_at: datetime | None


_KEYS: Table = ApiKey.__table__  # type: ignore[assignment]
_ACTIVE_BY_HASH = select(_KEYS.c.id, _KEYS.c.user_id, _KEYS.c.is_admin, _KEYS.c.last_used_at).where(
    _KEYS.c.key_hash == bindparam("key_hash"), _KEYS.c.revoked_at.is_(None)
)
_TOUCH = (
    update(_KEYS)
    .where(
        _KEYS.c.id == bindparam("key_id"),
        or_(_KEYS.c.last_used_at.is_(None), _KEYS.c.last_used_at < bindparam("stale_before")),
    )
    .values(last_used_at=bindparam("now"))
)


async def active_key(run: Statements, key_hash: str) -> ActiveKey | None:
    """The unrevoked key with this hash, if any: what authenticating a request needs.

    Asked on every request: a Core statement built once, not an ORM row.
    """
    found = await run.rows(_ACTIVE_BY_HASH, {"key_hash": key_hash})
    return ActiveKey(*found[0]) if found else None


async def touch_key(run: Statements, key_id: UUID, now: datetime, *, every: timedelta) -> None:
    """Record a use, at most once per `every`: a hot key does not write on every request."""
    await run.rows(_TOUCH, {"key_id": key_id, "now": now, "stale_before": now - every})
