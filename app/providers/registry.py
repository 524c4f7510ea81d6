"""Which providers this process offers, and how a (provider, model) request resolves to one."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from app.errors import ProviderNotConfigured, UnknownModel
from app.providers.base import Provider
from app.providers.resilience import FallbackProvider

# Providers the service knows how to speak to; only those with credentials are offered.
KNOWN_PROVIDERS = frozenset({"openai", "anthropic", "azure", "openai_compatible", "mock"})

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    provider: Provider
    model: str


class ProviderRegistry:
    """The configured providers, built once at start-up and shared by every request.

    `fallbacks` are (provider, model) pairs tried in order when the chosen model fails before
    answering (`FALLBACK_MODELS`); pairs naming a provider that is not configured are dropped.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        default_provider: str,
        default_model: str | None = None,
        fallbacks: Sequence[tuple[str, str]] = (),
        listed_models: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if default_provider not in providers:
            raise ValueError(f"DEFAULT_PROVIDER: provider {default_provider!r} is not configured")
        self._providers = dict(providers)
        self.default_provider = default_provider
        self.default_model = default_model or providers[default_provider].default_model
        self.resolve(None, None)  # a bad DEFAULT_MODEL stops start-up, not the first turn
        self.fallbacks = tuple((p, m) for p, m in fallbacks if self._offers(p, m))
        self._listed = dict(listed_models or {})
        for provider, model in set(fallbacks) - set(self.fallbacks):
            log.warning("fallback model is not available; skipped", provider=provider, model=model)

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    def resolve(self, provider: str | None, model: str | None) -> ModelChoice:
        """Pick the provider and model for a turn; raise the contract's 422s when impossible."""
        name = provider or self.default_provider
        chosen = self._providers.get(name)
        if chosen is None:
            if name in KNOWN_PROVIDERS:
                raise ProviderNotConfigured(name)
            raise UnknownModel(f"unknown provider {name!r}")
        if model is not None:
            model_name = model
        elif name == self.default_provider:
            model_name = self.default_model
        else:
            model_name = chosen.default_model
        if not chosen.supports(model_name):
            raise UnknownModel(f"provider {name!r} does not offer model {model_name!r}")
        return ModelChoice(chosen, model_name)

    def with_fallbacks(self, choice: ModelChoice) -> Provider:
        """The chosen provider, or a chain that moves on to the fallback models after it."""
        chain = [(choice.provider, choice.model)] + [
            (self._providers[p], m)
            for p, m in self.fallbacks
            if (p, m) != (choice.provider.name, choice.model)
        ]
        return choice.provider if len(chain) == 1 else FallbackProvider(chain)

    def catalog(self) -> list[tuple[str, str]]:
        """Every (provider, model) worth listing: defaults, fallbacks and configured models."""
        pairs: dict[tuple[str, str], None] = {(self.default_provider, self.default_model): None}
        for name, provider in self._providers.items():
            pairs[(name, provider.default_model)] = None
            pairs.update(dict.fromkeys((name, m) for m in self._listed.get(name, ())))
        pairs.update(dict.fromkeys(self.fallbacks))
        return [pair for pair in pairs if self._offers(*pair)]

    async def aclose(self) -> None:
        """Release every provider's connection pool."""
        for provider in self._providers.values():
            inner = getattr(provider, "inner", provider)
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _offers(self, provider: str, model: str) -> bool:
        chosen = self._providers.get(provider)
        return chosen is not None and chosen.supports(model)
