"""All SQL on spending: per-user monthly totals, and usage reports over stored replies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import UserMonthlyUsage
from app.providers.base import Usage


def month_of(moment: datetime) -> str:
    """The calendar month (UTC) a charge belongs to, as stored: `2026-11`."""
    return moment.strftime("%Y-%m")


class UserUsageRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def spent(self, user_id: str, month: str) -> Decimal:
        statement = select(UserMonthlyUsage.cost_usd).where(
            UserMonthlyUsage.user_id == user_id, UserMonthlyUsage.month == month
        )
        return (await self.session.scalar(statement)) or Decimal(0)

    async def charge(self, user_id: str, month: str, usage: Usage, cost_usd: Decimal) -> None:
        """Add one reply to the user's month in one statement: insert, or `x = x + delta`."""
        values = {
            "user_id": user_id,
            "month": month,
            "requests": 1,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_usd": cost_usd,
            "updated_at": utcnow(),
        }
        dialect = self.session.get_bind().dialect.name
        insert = postgres_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(UserMonthlyUsage).values(values)
        table = UserMonthlyUsage.__table__.c
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.user_id, table.month],
                set_={
                    "requests": table.requests + 1,
                    "prompt_tokens": table.prompt_tokens + usage.prompt_tokens,
                    "completion_tokens": table.completion_tokens + usage.completion_tokens,
                    "cached_tokens": table.cached_tokens + usage.cached_tokens,
                    "cost_usd": table.cost_usd + cost_usd,
                    "updated_at": values["updated_at"],
                },
            )
        )
