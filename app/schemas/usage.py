"""Usage reports and the model catalog."""

from __future__ import annotations

from enum import StrEnum

from app.schemas.common import Money, Schema


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
