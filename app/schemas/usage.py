"""Usage reports and the model catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

from app.schemas.common import Money, Schema


def _in_utc(moment: datetime) -> datetime:
    # A time without an offset is UTC. One at the calendar's edge whose UTC falls outside it
    # (0001-01-01T00:00+14:00) is refused here as a 422, not overflowed later as a 500.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside the range of dates in UTC") from None


# A bound of a report: RFC 3339, compared in UTC.
ReportBound = Annotated[datetime, AfterValidator(_in_utc)]


class UsageGroupBy(StrEnum):
    MODEL = "model"
    PROVIDER = "provider"
    DAY = "day"
    USER = "user"


class UsageItem(Schema):
    """One group's totals: `key` is the model, provider, UTC day (`2026-11-25`) or user."""

    key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: Money


class UsageReport(Schema):
    items: list[UsageItem]
    total_cost_usd: Money


class ModelInfo(Schema):
    """A model this service offers; prices are null when no price is known."""

    provider: str
    model: str
    input_per_mtok: Money | None
    output_per_mtok: Money | None
    cached_input_per_mtok: Money | None = None
    context_window: int | None
    default: bool = False


class ModelList(Schema):
    items: list[ModelInfo]
