"""Which providers this process offers, and how a (provider, model) request resolves to one."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import structlog

from app.errors import ProviderNotConfigured, UnknownModel
from app.providers.base import Provider
from app.providers.caching import ResponseCache
from app.providers.options import option_support_of
from app.providers.resilience import FallbackProvider

# Providers the service knows how to speak to; only those with credentials are offered.
KNOWN_PROVIDERS = frozenset({"openai", "anthropic", "azure", "openai_compatible", "mock"})

# Model-name families and the providers that serve them, most specific first (`route`).
_FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("claude-",), ("anthropic",)),
    (("gpt-", "o1", "o3", "o4", "chatgpt-"), ("openai", "azure")),
)

# Their models are all named by the catalog, the price book or `_FAMILIES`: another name
# sent there would only come back as the provider's own 404, so `route` refuses it itself.
_NAMED_MODEL_PROVIDERS = frozenset({"openai", "anthropic"})

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
        self._response_cache: ResponseCache | None = None
        # Said once at start-up (`startup_warnings`), not by every worker that builds this.
        self.skipped_fallbacks = sorted(set(fallbacks) - set(self.fallbacks))

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    def startup_warnings(self) -> list[tuple[str, dict[str, str]]]:
        """What an operator should hear once when the service starts: (message, fields)."""
        warnings: list[tuple[str, dict[str, str]]] = []
        if set(self._providers) == {"mock"}:
            warnings.append(
                ("no provider key is configured; replies come from the built-in mock provider", {})
            )
        for provider, model in self.skipped_fallbacks:
            warnings.append(
                ("fallback model is not available; skipped", {"provider": provider, "model": model})
            )
        return warnings

    def wrap_providers(self, wrap: Callable[[Provider], Provider]) -> None:
        """Replace every provider by `wrap(provider)` (instrumentation); names stay the same."""
        self._providers = {name: wrap(provider) for name, provider in self._providers.items()}

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

    def route(self, model: str, *, known: Callable[[str, str], bool] | None = None) -> ModelChoice:
        """The provider for a bare model name, as OpenAI-compatible clients send it.

        In order: an explicit `provider/model` (a configured provider's name before the first
        slash); `mock`; a model a provider lists (defaults, suggestions, deployments, price
        overrides); the family of the name (`claude-*` to Anthropic; `gpt-*`, `o1*`, `o3*`,
        `o4*`, `chatgpt-*` to OpenAI, else Azure); a model `known(provider, model)` says a
        provider has (the price book); the default provider if it offers the model (a
        self-hosted server or Azure deployment; OpenAI and Anthropic accept any name, so not
        them). Anything else is `UnknownModel`.
        """
        provider, slash, rest = model.partition("/")
        if slash and rest and provider in KNOWN_PROVIDERS:
            return self.resolve(provider, rest)
        if model == "mock" and "mock" in self._providers:
            return self.resolve("mock", model)
        for name, listed in self._listed.items():
            if model in listed and self._offers(name, model):
                return ModelChoice(self._providers[name], model)
        for prefixes, candidates in _FAMILIES:
            if model.startswith(prefixes):
                for name in candidates:
                    if self._offers(name, model):
                        return ModelChoice(self._providers[name], model)
        if known is not None:
            for name in self._providers:
                if name != "mock" and known(name, model) and self._offers(name, model):
                    return ModelChoice(self._providers[name], model)
        default = self.default_provider
        if default not in _NAMED_MODEL_PROVIDERS and self._offers(default, model):
            return ModelChoice(self._providers[default], model)
        raise UnknownModel(f"the model {model!r} does not exist")

    def use_response_cache(self, cache: ResponseCache | None) -> None:
        """Answer `cache: true` requests from `cache` (set by the app's lifespan; None is off)."""
        self._response_cache = cache

    def with_fallbacks(
        self,
        choice: ModelChoice,
        *,
        options: Mapping[str, object] | None = None,
        unknown: Collection[str] = (),
    ) -> Provider:
        """The chosen provider, or a chain that moves on to the fallback models after it.

        A fallback that cannot honour one of the request's `options` (`unknown`: fields
        OpenAI lacks) is left out: it would answer another request than the one asked.
        With a response cache, the whole chain sits behind it: a hit calls none of them.
        """
        chain = [(choice.provider, choice.model)] + [
            (self._providers[p], m)
            for p, m in self.fallbacks
            if (p, m) != (choice.provider.name, choice.model)
            and (
                not options
                or option_support_of(self._providers[p]).first_refused(options, unknown) is None
            )
        ]
        provider = choice.provider if len(chain) == 1 else FallbackProvider(chain)
        cache = self._response_cache
        return provider if cache is None else cache.around(provider)

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
            # A wrapper closes what it wraps, down to the adapter that holds the SDK client.
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _offers(self, provider: str, model: str) -> bool:
        chosen = self._providers.get(provider)
        return chosen is not None and chosen.supports(model)
