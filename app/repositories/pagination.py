"""Keyset pagination on (created_at, id): stable under inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import InvalidCursor


class Keyed(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> UUID: ...


RowT = TypeVar("RowT", bound=Keyed)


def encode_cursor(row: Keyed) -> str:
    raw = json.dumps([row.created_at.isoformat(), str(row.id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The position a cursor names; anything malformed is a 422, never a 500."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise InvalidCursor()
        # In UTC, as stored: SQLite compares the time's text and ignores its offset, and a
        # forged offset at the calendar's edge overflows here (422), not in the driver (500).
        return moment.astimezone(UTC), UUID(row_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError):
        raise InvalidCursor() from None


async def fetch_page(
    session: AsyncSession,
    statement: Select[RowT],
    *,
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[UUID],
    limit: int,
    cursor: str | None,
    newest_first: bool,
) -> tuple[Sequence[RowT], str | None]:
    """One page after `cursor` in (created_at, id) order, and the cursor of the next page."""
    key = tuple_(created_at, row_id)
    if cursor is not None:
        position: Any = tuple_(*decode_cursor(cursor))
        condition: ColumnElement[bool] = key < position if newest_first else key > position
        statement = statement.where(condition)
    order = (created_at.desc(), row_id.desc()) if newest_first else (created_at, row_id)
    rows = (await session.scalars(statement.order_by(*order).limit(limit + 1))).all()
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1])
    return rows, None
