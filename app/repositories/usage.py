"""All SQL on spending: per-user monthly totals, and usage reports over stored replies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.models import Conversation, Message, MessageRole, MessageStatus, UserMonthlyUsage
from app.providers.base import Usage

# The owner of spending whose users had their data erased: billing still sums it, and it
# names no one. Reserved like "anonymous": no real user should be called this.
ERASED_USER = "erased"


def month_of(moment: datetime) -> str:
    """The calendar month (UTC) a charge belongs to, as stored: `2026-11`."""
    # Not strftime: it goes through a time tuple and the C library (~2 us a call, twice a
    # turn, 1 % of a turn's CPU in the profile); this is a quarter of that.
    return f"{moment.year:04d}-{moment.month:02d}"


class UserUsageRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

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
        await self.session.execute(_CHARGE[dialect == "postgresql"], values)

    async def charge_title(self, user_id: str, month: str, cost_usd: Decimal) -> None:
        """Add one generated title to the user's month (its own kind: the replies' totals
        are left as they are), in one statement."""
        values = {
            "user_id": user_id,
            "month": month,
            "title_requests": 1,
            "title_cost_usd": cost_usd,
            "updated_at": utcnow(),
        }
        dialect = self.session.get_bind().dialect.name
        await self.session.execute(_CHARGE_TITLE[dialect == "postgresql"], values)

    async def move_to_erased(self, user_id: str) -> int:
        """Add each of the user's months before the current one into `ERASED_USER`'s row of
        that month, and delete the user's: every month's totals stay the same sum, exact
        (Decimal on Postgres), and no longer name the user. The current month stays: the
        budget counts it (see `_OF_USER`). How many months were moved.

        Postgres: one statement (`WITH moved AS (DELETE ... RETURNING) INSERT ... ON CONFLICT
        DO UPDATE SET x = x + excluded.x`), so a charge landing meanwhile is moved or kept
        whole, never lost. SQLite: copy, then delete, under the transaction's write lock.
        """
        if user_id == ERASED_USER:
            return 0  # already anonymous; moving it into itself would double it
        now = utcnow()
        params = {
            "from_user": user_id,
            "erased_user": ERASED_USER,
            "now": now,
            "month": month_of(now),
        }
        if self.session.get_bind().dialect.name == "postgresql":
            return len((await self.session.execute(_MOVE_MONTHS, params)).all())
        await self.session.execute(_COPY_MONTHS, params)
        moved = await self.session.execute(_DELETE_MONTHS, params)
        return int(getattr(moved, "rowcount", 0))


_USAGE: Table = UserMonthlyUsage.__table__  # type: ignore[assignment]
# What counts against a budget: replies and generated titles.
SPENT_COLUMN = (_USAGE.c.cost_usd + _USAGE.c.title_cost_usd).label("spent")
SPENT = select(SPENT_COLUMN).where(
    _USAGE.c.user_id == bindparam("user_id"), _USAGE.c.month == bindparam("month")
)


def charge_month_statement(
    insert: Callable[[Table], Any],
    values: dict[str, Any] | None = None,
    *,
    only_if: Any = None,
) -> Any:
    """`INSERT ... ON CONFLICT DO UPDATE` adding the new values (`excluded`) to the row's.

    Built once per dialect: a Core statement on the table caches its compiled form and key.
    `values` (explicit binds) lets it serve inside a larger statement; without them it takes
    the execution's parameters, named like the columns. `only_if` (with `values`): inserts
    `SELECT <values> WHERE <only_if>`, so nothing is charged when the condition is false.
    """
    statement = insert(_USAGE)
    if values is not None and only_if is not None:
        statement = statement.from_select(list(values), select(*values.values()).where(only_if))
    elif values is not None:
        statement = statement.values(values)
    added = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_USAGE.c.user_id, _USAGE.c.month],
        set_={
            # A literal column, not a bound 1: a bound literal loses its value inside a CTE.
            "requests": _USAGE.c.requests + literal_column("1"),
            "prompt_tokens": _USAGE.c.prompt_tokens + added.prompt_tokens,
            "completion_tokens": _USAGE.c.completion_tokens + added.completion_tokens,
            "cached_tokens": _USAGE.c.cached_tokens + added.cached_tokens,
            "cost_usd": _USAGE.c.cost_usd + added.cost_usd,
            "updated_at": added.updated_at,
        },
    )


# Indexed by "is Postgres".
_CHARGE = (charge_month_statement(sqlite_insert), charge_month_statement(postgres_insert))


def _charge_title_statement(insert: Callable[[Table], Any]) -> Any:
    statement = insert(_USAGE)
    added = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_USAGE.c.user_id, _USAGE.c.month],
        set_={
            "title_requests": _USAGE.c.title_requests + added.title_requests,
            "title_cost_usd": _USAGE.c.title_cost_usd + added.title_cost_usd,
            "updated_at": added.updated_at,
        },
    )


_CHARGE_TITLE = (_charge_title_statement(sqlite_insert), _charge_title_statement(postgres_insert))

_TOTALS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "title_requests",
    "title_cost_usd",
)


def _add_to_erased(
    insert: Callable[[Table], Any], months: FromClause, *, where: ColumnElement[bool] | None = None
) -> Any:
    """`INSERT INTO user_monthly_usage SELECT <erased user>, <months' totals> ... ON CONFLICT
    (user_id, month) DO UPDATE SET x = x + excluded.x`: `months` added into the bucket."""
    rows = select(
        bindparam("erased_user", type_=_USAGE.c.user_id.type),
        months.c.month,
        *(months.c[name] for name in _TOTALS),
        bindparam("now", type_=_USAGE.c.updated_at.type),
    )
    if where is not None:
        rows = rows.where(where)  # SQLite: a WHERE also keeps `ON CONFLICT` from parsing as a join
    statement = insert(_USAGE).from_select(["user_id", "month", *_TOTALS, "updated_at"], rows)
    added = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_USAGE.c.user_id, _USAGE.c.month],
        set_={
            **{name: _USAGE.c[name] + added[name] for name in _TOTALS},
            "updated_at": added.updated_at,
        },
    )


# Months before the current one: the current month's totals are what the monthly budget
# counts, so they stay under the user (totals only, no content) until an erasure in a later
# month moves them; moving them at once let a user reset their budget by erasing.
_OF_USER = and_(_USAGE.c.user_id == bindparam("from_user"), _USAGE.c.month < bindparam("month"))
_DELETE_MONTHS = delete(_USAGE).where(_OF_USER)
_MOVE_MONTHS = _add_to_erased(
    postgres_insert,
    _DELETE_MONTHS.returning(_USAGE.c.month, *(_USAGE.c[name] for name in _TOTALS)).cte("moved"),
).returning(_USAGE.c.month)
_COPY_MONTHS = _add_to_erased(sqlite_insert, _USAGE, where=_OF_USER)


# Every provider call that ended counts as a request, failed ones included (they cost 0).
_ENDED = (MessageStatus.COMPLETED, MessageStatus.CANCELLED, MessageStatus.FAILED)


class UsageReportRepo:
    """Aggregates over stored replies, in SQL, scoped to an owner (or everyone, for admins)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def report(
        self,
        *,
        owner: str | None,
        start: datetime | None,
        end: datetime | None,
        group_by: str,
    ) -> list[tuple[str, int, int, int, int, Decimal]]:
        """Rows of (key, requests, prompt, completion, cached tokens, cost), costliest first."""
        key = self._key(group_by).label("key")
        cost = func.coalesce(func.sum(Message.cost_usd), 0).label("cost_usd")
        statement = (
            select(
                key,
                func.count(Message.id),
                func.coalesce(func.sum(Message.prompt_tokens), 0),
                func.coalesce(func.sum(Message.completion_tokens), 0),
                func.coalesce(func.sum(Message.cached_tokens), 0),
                cost,
            )
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.role == MessageRole.ASSISTANT,
                Message.status.in_(_ENDED),
                Message.imported_from.is_(None),  # charged elsewhere, not here
            )
            .group_by(key)
            .order_by(cost.desc(), key)
        )
        if owner is not None:
            statement = statement.where(Conversation.user_id == owner)
        if start is not None:
            statement = statement.where(Message.created_at >= start)
        if end is not None:
            statement = statement.where(Message.created_at < end)
        rows = (await self.session.execute(statement)).all()
        return [
            (str(k), int(n), int(p), int(c), int(cached), Decimal(str(total)))
            for k, n, p, c, cached, total in rows
        ]

    def _key(self, group_by: str) -> ColumnElement[str]:
        if group_by == "provider":
            return func.coalesce(Message.provider, "unknown")
        if group_by == "user":
            return func.coalesce(Conversation.user_id, "")
        if group_by == "day":
            if self.session.get_bind().dialect.name == "postgresql":
                return func.to_char(func.timezone("UTC", Message.created_at), "YYYY-MM-DD")
            # SQLite stores UTC text, "2026-11-25 14:17:10.123456".
            return func.substr(Message.created_at, 1, 10)
        return func.coalesce(Message.model, "unknown")
