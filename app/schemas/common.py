"""Shared pydantic pieces: the base model, storable text, bounded metadata, money, pages."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

T = TypeVar("T")

METADATA_MAX_DEPTH = 8
METADATA_MAX_KEYS = 256
METADATA_MAX_STRING = 8_192


class Schema(BaseModel):
    """Base of every request and response body; reads ORM rows by attribute."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class RequestBody(Schema):
    """Base of every /api/v1 request body: a field it does not know is a 422 naming it, never
    accepted and dropped (a client that sends `temperature` to a route without one must hear
    that it had no effect)."""

    model_config = ConfigDict(from_attributes=True, populate_by_name=True, extra="forbid")


def _storable(text: str) -> str:
    # Postgres rejects NUL in text and lone surrogates cannot be encoded as UTF-8:
    # refuse them here as a 422 instead of failing at the database as a 500.
    if "\x00" in text:
        raise ValueError("text must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid UTF-8 (no lone surrogates)") from None
    return text


StorableText = Annotated[str, AfterValidator(_storable)]


def storable_json(value: Any, *, what: str, max_depth: int, max_items: int, max_string: int) -> Any:
    """`value` if the database can store it as JSON (no NUL or lone surrogate in any key or
    string, finite numbers) within the limits given; a ValueError naming `what` else."""
    items = 0

    def walk(node: Any, depth: int) -> None:
        nonlocal items
        if depth > max_depth:
            raise ValueError(f"{what} is nested deeper than {max_depth} levels")
        if isinstance(node, dict | list):
            items += len(node)
            if items > max_items:
                raise ValueError(f"{what} has more than {max_items} keys and values")
            for key in node if isinstance(node, dict) else ():
                _storable(key)
            for item in node.values() if isinstance(node, dict) else node:
                walk(item, depth + 1)
        elif isinstance(node, str):
            if len(node) > max_string:
                raise ValueError(f"{what} strings are limited to {max_string} characters")
            _storable(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{what} numbers must be finite")

    walk(value, 1)
    return value


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    storable_json(
        value,
        what="metadata",
        max_depth=METADATA_MAX_DEPTH,
        max_items=METADATA_MAX_KEYS,
        max_string=METADATA_MAX_STRING,
    )
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_check_metadata)]

# Exact in storage and arithmetic; a JSON number on the wire, as the contract says.
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]

ProviderName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_\-]+$")]
ModelName = Annotated[StorableText, Field(min_length=1, max_length=255)]
UserId = Annotated[StorableText, Field(min_length=1, max_length=255)]


class Page(Schema, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
