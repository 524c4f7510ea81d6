"""List prices and context windows from genai-prices, flattened to the rates one reply pays.

genai-prices matches dated snapshots (`gpt-4o-2024-08-06`) to their model and knows tiered
prices; a tier applies to every token of a request whose input crosses it, so the tier is
chosen once from the prompt's size and the reply stores the flat rates it was charged at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib.metadata import version

from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, TieredPrices

from app.services.pricing.price import Price

# Our provider names as genai-prices knows them.
_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "azure": "azure"}
SOURCE = f"genai-prices {version('genai-prices')}"


class GenAIPrices:
    """The bundled genai-prices snapshot (no network: prices change with the pinned version)."""

    def price_of(self, provider: str, model: str, prompt_tokens: int) -> Price | None:
        info = _model_info(provider, model)
        if info is None:
            return None
        prices = info.get_prices(datetime.now(UTC))
        input_rate = _rate(prices.input_mtok, prompt_tokens)
        output_rate = _rate(prices.output_mtok, prompt_tokens)
        if input_rate is None or output_rate is None:
            return None
        return Price(
            input_rate,
            output_rate,
            cached_input_per_mtok=_rate(prices.cache_read_mtok, prompt_tokens),
            cache_write_per_mtok=_rate(prices.cache_write_mtok, prompt_tokens),
            cache_write_1h_per_mtok=_rate(prices.cache_write_1h_mtok, prompt_tokens),
            source=SOURCE,
        )

    def context_window(self, provider: str, model: str) -> int | None:
        info = _model_info(provider, model)
        return None if info is None else info.context_window


@cache
def _model_info(provider: str, model: str) -> ModelInfo | None:
    provider_id = _PROVIDER_IDS.get(provider)
    if provider_id is None:
        return None
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None
    return info


def _rate(price: object, prompt_tokens: int) -> Decimal | None:
    if isinstance(price, Decimal):
        return price
    if isinstance(price, TieredPrices):
        rate = price.base
        for tier in price.tiers:
            if prompt_tokens > tier.start:
                rate = tier.price
        return rate
    return None
