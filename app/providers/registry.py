"""Which providers this process offers, and how a (provider, model) request resolves to one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from app.core.config import Settings
from app.errors import ProviderNotConfigured, UnknownModel
from app.providers.base import Provider
from app.providers.mock import MockProvider

# Providers the service knows how to speak to; only those with credentials are offered.
KNOWN_PROVIDERS = frozenset({"openai", "anthropic", "azure", "openai_compatible", "mock"})

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    provider: Provider
    model: str


class ProviderRegistry:
    """The configured providers, built once at start-up and shared by every request."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        default_provider: str,
        default_model: str | None = None,
    ) -> None:
        if default_provider not in providers:
            raise ValueError(f"DEFAULT_PROVIDER: provider {default_provider!r} is not configured")
        self._providers = dict(providers)
        self.default_provider = default_provider
        self.default_model = default_model or providers[default_provider].default_model
        self.resolve(None, None)  # a bad DEFAULT_MODEL stops start-up, not the first turn

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


def build_registry(settings: Settings) -> ProviderRegistry:
    """Offer every provider that has what it needs; the mock is always there, offline."""
    providers: dict[str, Provider] = {
        "mock": MockProvider(chunk_delay_s=settings.mock_chunk_delay_ms / 1000),
    }
    default = settings.default_provider or "mock"
    if default == "mock":
        log.warning("no provider key is configured; replies come from the built-in mock provider")
    return ProviderRegistry(providers, default, settings.default_model)
