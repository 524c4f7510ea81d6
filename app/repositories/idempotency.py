"""All SQL on `Idempotency-Key` claims; every statement is scoped to the key's owner."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import IdempotencyKey, IdempotencyStatus


class IdempotencyRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self,
        user_id: str,
        key: str,
        request_hash: str,
        now: datetime,
        expires_at: datetime,
        abandoned_before: datetime,
    ) -> bool:
        """Claim the key in one statement: insert it, or take over an expired or abandoned row.

        `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired OR abandoned`: a live row is left
        untouched and nothing is returned, so of any number of concurrent claims exactly one
        wins. Abandoned: still `in_progress` though claimed before `abandoned_before`.
        """
        values = {
            "user_id": user_id,
            "key": key,
            "request_hash": request_hash,
            "status": IdempotencyStatus.IN_PROGRESS,
            "response_status": None,
            "response_body": None,
            "created_at": now,
            "expires_at": expires_at,
        }
        dialect = self.session.get_bind().dialect.name
        insert = postgres_insert if dialect == "postgresql" else sqlite_insert
        table = IdempotencyKey.__table__.c
        statement = (
            insert(IdempotencyKey)
            .values(values)
            .on_conflict_do_update(
                index_elements=[table.user_id, table.key],
                set_={name: values[name] for name in values if name not in ("user_id", "key")},
                where=or_(
                    table.expires_at <= now,
                    and_(
                        table.status == IdempotencyStatus.IN_PROGRESS,
                        table.created_at < abandoned_before,
                    ),
                ),
            )
            .returning(table.key)
        )
        return (await self.session.execute(statement)).scalar_one_or_none() is not None

    async def get(self, user_id: str, key: str) -> IdempotencyKey | None:
        statement = select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def complete(
        self, user_id: str, key: str, response_status: int, response_body: dict[str, Any]
    ) -> None:
        await self.session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.user_id == user_id,
                IdempotencyKey.key == key,
                IdempotencyKey.status == IdempotencyStatus.IN_PROGRESS,
            )
            .values(
                status=IdempotencyStatus.COMPLETED,
                response_status=response_status,
                response_body=response_body,
            )
        )

    async def release(self, user_id: str, key: str) -> None:
        """Forget an unfinished claim so that a retry runs the request again."""
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.user_id == user_id,
                IdempotencyKey.key == key,
                IdempotencyKey.status == IdempotencyStatus.IN_PROGRESS,
            )
        )

    async def erase_owned_by(self, user_id: str) -> int:
        """Delete every key of the user, live, expired or in flight (their stored responses
        hold conversation data); how many. A request still running under a key then stores
        no response (`complete` finds no claim), and a retry with it runs again."""
        result = await self.session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.user_id == user_id)
        )
        return int(getattr(result, "rowcount", 0))
