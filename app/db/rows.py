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


def with_defaults(row: RowT) -> RowT:
    """Give an unsaved object every column default the ORM would give it at flush."""
    table: Table = type(row).__table__  # type: ignore[assignment]
    for attribute, column in columns_of(type(row)).items():
        default = table.c[column].default
        if attribute not in row.__dict__ and default is not None:  # never set
            value = default.arg(None) if default.is_callable else default.arg  # type: ignore[attr-defined]
            setattr(row, attribute, value)
    return row


def column_values(row: Base) -> dict[str, Any]:
    return {column: getattr(row, attribute) for attribute, column in columns_of(type(row)).items()}
