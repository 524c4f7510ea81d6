"""The prices this service charges by (provider, model): configured ones, then genai-prices."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from app.core.config import Settings
from app.providers.base import Usage
from app.providers.mock import CONTEXT_WINDOW as MOCK_CONTEXT_WINDOW
from app.services.pricing.price import Price
from app.services.pricing.price_library import GenAIPrices


class PriceLibrary(Protocol):
    """A maintained source of list prices and context windows."""

    def price_of(self, provider: str, model: str, prompt_tokens: int) -> Price | None: ...

    def context_window(self, provider: str, model: str) -> int | None: ...


class PriceBook:
    """Prices by (provider, model): configured ones first, then the library's.

    A model without a price costs `None`, never a guess. `context_windows` holds configured
    windows; the library knows the rest.
    """

    def __init__(
        self,
        prices: Mapping[tuple[str, str], Price],
        *,
        library: PriceLibrary | None = None,
        free_providers: frozenset[str] = frozenset(),
        context_windows: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self._prices = dict(prices)
        self._library = library
        self._free_providers = free_providers
        self._windows = dict(context_windows or {})

    def price_of(
        self,
        provider: str,
        model: str,
        *,
        requested_model: str | None = None,
        prompt_tokens: int = 0,
    ) -> Price | None:
        """The price for the model a provider reported (a dated snapshot, say), falling back
        to the model that was asked for (an Azure deployment's model name)."""
        names = [model] if requested_model in (None, model) else [model, requested_model]
        for name in names:
            if (provider, name) in self._prices:
                return self._prices[(provider, name)]
        if provider in self._free_providers:
            return Price(Decimal(0), Decimal(0), source="self-hosted")
        if self._library is not None:
            for name in names:
                price = self._library.price_of(provider, name, prompt_tokens)
                if price is not None:
                    return price
        return None

    def cost_of(
        self, provider: str, model: str, usage: Usage, *, requested_model: str | None = None
    ) -> Decimal | None:
        price = self.price_of(
            provider, model, requested_model=requested_model, prompt_tokens=usage.prompt_tokens
        )
        return None if price is None else price.cost_of(usage)

    def context_window(self, provider: str, model: str) -> int | None:
        if (provider, model) in self._windows:
            return self._windows[(provider, model)]
        return None if self._library is None else self._library.context_window(provider, model)


def build_price_book(settings: Settings) -> PriceBook:
    """Mock prices and `PRICE_OVERRIDES` from settings, everything else from genai-prices."""
    prices = {
        ("mock", "mock"): Price(
            settings.mock_input_price_per_mtok, settings.mock_output_price_per_mtok, source="mock"
        )
    }
    windows = {("mock", "mock"): MOCK_CONTEXT_WINDOW}
    for key, override in settings.price_overrides.items():
        provider, _, model = key.partition(":")
        prices[(provider, model)] = Price(
            override.input_per_mtok,
            override.output_per_mtok,
            cached_input_per_mtok=override.cached_input_per_mtok,
            cache_write_per_mtok=override.cache_write_per_mtok,
            cache_write_1h_per_mtok=override.cache_write_1h_per_mtok,
            source="PRICE_OVERRIDES",
        )
        if override.context_window is not None:
            windows[(provider, model)] = override.context_window
    return PriceBook(
        prices,
        library=GenAIPrices(),
        free_providers=frozenset({"openai_compatible"}),
        context_windows=windows,
    )
