"""Usage reports over stored replies, and the catalog of models this service offers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.errors import InvalidRange
from app.providers.registry import ProviderRegistry
from app.repositories.usage import UsageReportRepo
from app.schemas.usage import ModelInfo, UsageGroupBy, UsageItem, UsageReport
from app.services.pricing.price_book import PriceBook


async def usage_report(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: str | None,
    start: datetime | None,
    end: datetime | None,
    group_by: UsageGroupBy,
) -> UsageReport:
    """Totals per group over [start, end), for the caller (or, for admins, anyone)."""
    if start is not None and end is not None and start >= end:
        raise InvalidRange()
    rows = await UsageReportRepo(session).report(
        owner=principal.listing_owner(user_id), start=start, end=end, group_by=group_by.value
    )
    items = [
        UsageItem(
            key=key,
            requests=requests,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cost_usd=cost,
        )
        for key, requests, prompt, completion, cached, cost in rows
    ]
    return UsageReport(items=items, total_cost_usd=sum((i.cost_usd for i in items), Decimal(0)))


def model_catalog(registry: ProviderRegistry, prices: PriceBook) -> list[ModelInfo]:
    """What can be asked for here, with list prices and context windows where known."""
    items = []
    for provider, model in registry.catalog():
        price = prices.price_of(provider, model)
        items.append(
            ModelInfo(
                provider=provider,
                model=model,
                input_per_mtok=None if price is None else price.input_per_mtok,
                output_per_mtok=None if price is None else price.output_per_mtok,
                cached_input_per_mtok=None if price is None else price.cached_input_per_mtok,
                context_window=prices.context_window(provider, model),
                default=(provider, model) == (registry.default_provider, registry.default_model),
            )
        )
    return items
