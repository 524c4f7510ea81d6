"""Unsaved ORM objects as plain column values, for Core statements that insert them.

A turn's rows are built as ORM objects (their defaults, types and the API's schemas read
them) but written by Core statements built once: no session, no unit-of-work flush.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy import inspect as sa_inspect

from app.db.base import Base

RowT = TypeVar("RowT", bound=Base)


@functools.cache
def columns_of(model: type[Base]) -> dict[str, str]:
    """ORM attribute name -> column name (`metadata_` is stored as `metadata`)."""
    return {prop.key: prop.columns[0].key for prop in sa_inspect(model).column_attrs}


@functools.cache
def _defaults_of(model: type[Base]) -> tuple[tuple[str, Any], ...]:
    """(ORM attribute, its column's default) for every column that has one."""
    table: Table = model.__table__  # type: ignore[assignment]
    defaults = (
        (attribute, table.c[column].default) for attribute, column in columns_of(model).items()
    )
    return tuple((attribute, default) for attribute, default in defaults if default is not None)


def with_defaults(row: RowT) -> RowT:
    """Give an unsaved object every column default the ORM would give it at flush."""
    # Twice per turn: the defaults are found once per model, not column by column each time.
    for attribute, default in _defaults_of(type(row)):
        if attribute not in row.__dict__:  # never set
            value = default.arg(None) if default.is_callable else default.arg
            setattr(row, attribute, value)
    return row


def column_values(row: Base) -> dict[str, Any]:
    """An unsaved object's column values; a column never set is None, as the ORM reads it.

    Read from the instance's own dict: an unsaved object has nothing to load, and the
    instrumented attribute costs a call per column.
    """
    values = row.__dict__
    return {column: values.get(attribute) for attribute, column in columns_of(type(row)).items()}
