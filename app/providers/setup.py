"""Build the configured providers from settings: one SDK client each, reused by every request."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import openai
import structlog

from app.core.config import ConfigurationError, Settings
from app.errors import UnknownModel
from app.providers.base import ChatRequest, Provider
from app.providers.context import counter_for, fit_to_window
from app.providers.mock import MockProvider
from app.providers.openai_chat import OpenAIChatProvider
from app.providers.options import openai_option_support
from app.providers.registry import ProviderRegistry
from app.providers.resilience import ResilientProvider, RetryPolicy

log = structlog.get_logger(__name__)

# Chosen as the default, in this order, when DEFAULT_PROVIDER is not set.
_PREFERENCE = ("openai", "anthropic", "azure", "openai_compatible")
DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-6"}
# What a self-hosted server is assumed to hold when nothing says otherwise (Ollama's default
# is smaller still; set a PRICE_OVERRIDES context_window for the real one).
SELF_HOSTED_CONTEXT_WINDOW = 8_192
REPLY_RESERVE_TOKENS = 1_024

WindowLookup = Callable[[str, str], int | None]
# Called with each SDK client's HTTP client as it is built (tracing instruments it).
HttpClientHook = Callable[[httpx2.AsyncClient], None]


def build_registry(
    settings: Settings,
    context_window: WindowLookup,
    *,
    on_http_client: HttpClientHook | None = None,
) -> ProviderRegistry:
    """Offer every provider that has what it needs; the mock is always there, offline."""
    adapters = _adapters(settings, on_http_client or (lambda _client: None))
    policy = RetryPolicy(
        max_retries=settings.provider_max_retries,
        max_wait_s=settings.provider_retry_max_wait_seconds,
        idle_timeout_s=settings.provider_timeout_seconds,
    )
    fitter = _fitter(settings, context_window)
    providers: dict[str, Provider] = {
        name: adapter if name == "mock" else ResilientProvider(adapter, policy, fitter)
        for name, adapter in adapters.items()
    }
    default = settings.default_provider or next((p for p in _PREFERENCE if p in providers), "mock")
    fallbacks = [tuple(item.split(":", 1)) for item in settings.fallback_models]
    try:
        return ProviderRegistry(
            providers,
            default,
            settings.default_model,
            fallbacks=[(p, m) for p, m in fallbacks],
            listed_models=_listed_models(settings, providers),
        )
    except (ValueError, UnknownModel) as error:
        raise ConfigurationError(str(error)) from error


# Offered in /models besides the defaults; any model the provider knows can still be asked for.
SUGGESTED_MODELS = {
    "openai": ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"),
    "anthropic": ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1"),
}


def _listed_models(settings: Settings, providers: dict[str, Provider]) -> dict[str, list[str]]:
    listed: dict[str, list[str]] = {
        name: list(SUGGESTED_MODELS.get(name, ())) for name in providers
    }
    listed.setdefault("azure", []).extend(settings.azure_openai_deployments)
    listed.setdefault("openai_compatible", []).extend(settings.openai_compatible_models)
    for key in settings.price_overrides:
        provider, _, model = key.partition(":")
        listed.setdefault(provider, []).append(model)
    return listed


def _adapters(settings: Settings, on_http_client: HttpClientHook) -> dict[str, Provider]:
    timeout = openai.Timeout(
        settings.provider_timeout_seconds, connect=settings.provider_connect_timeout_seconds
    )

    # Idle keep-alive connections kept: the SDKs' own default.
    limits = httpx2.Limits(
        max_connections=settings.provider_max_connections, max_keepalive_connections=100
    )

    def http_client(sdk_default: type[httpx2.AsyncClient]) -> httpx2.AsyncClient:
        # The SDKs' documented aiohttp transport under their httpx2 interface: a call costs
        # about a fifth less worker CPU than on httpcore2 over anyio (bench/: 3.9 -> 3.1 ms a
        # turn), and a streamed chunk less too. Errors still arrive as httpx2's, so the SDK
        # raises its usual classes.
        client = sdk_default(timeout=timeout, limits=limits)
        on_http_client(client)
        return client

    read_s = settings.provider_timeout_seconds
    adapters: dict[str, Provider] = {
        "mock": MockProvider(chunk_delay_s=settings.mock_chunk_delay_ms / 1000),
    }
    if settings.openai_api_key is not None:
        adapters["openai"] = OpenAIChatProvider(
            name="openai",
            client=openai.AsyncOpenAI(
                api_key=settings.openai_api_key.get_secret_value(),
                base_url=settings.openai_base_url,
                max_retries=0,  # ours is the one retry owner
                timeout=timeout,
                http_client=http_client(openai.DefaultAioHttpClient),
            ),
            default_model=DEFAULT_MODELS["openai"],
            read_timeout_s=read_s,
        )
    if settings.anthropic_api_key is not None:
        # Imported only when configured: the Anthropic SDK takes ~2 s to import, a third of
        # the service's start-up.
        import anthropic

        from app.providers.anthropic_messages import AnthropicProvider

        adapters["anthropic"] = AnthropicProvider(
            client=anthropic.AsyncAnthropic(
                api_key=settings.anthropic_api_key.get_secret_value(),
                base_url=settings.anthropic_base_url,
                max_retries=0,
                timeout=timeout,
                http_client=http_client(anthropic.DefaultAioHttpClient),
            ),
            default_model=DEFAULT_MODELS["anthropic"],
            default_max_tokens=settings.anthropic_default_max_tokens,
            read_timeout_s=read_s,
        )
    if settings.azure_openai_api_key is not None:
        if not settings.azure_openai_endpoint or not settings.azure_openai_deployments:
            raise ConfigurationError(
                "AZURE_OPENAI_API_KEY is set: AZURE_OPENAI_ENDPOINT and "
                "AZURE_OPENAI_DEPLOYMENTS are required too"
            )
        adapters["azure"] = OpenAIChatProvider(
            name="azure",
            client=openai.AsyncAzureOpenAI(
                api_key=settings.azure_openai_api_key.get_secret_value(),
                azure_endpoint=settings.azure_openai_endpoint,
                api_version=settings.azure_openai_api_version,
                max_retries=0,
                timeout=timeout,
                http_client=http_client(openai.DefaultAioHttpClient),
            ),
            default_model=next(iter(settings.azure_openai_deployments)),
            read_timeout_s=read_s,
            deployments=settings.azure_openai_deployments,
        )
    if settings.openai_compatible_base_url is not None:
        key = settings.openai_compatible_api_key
        models = settings.openai_compatible_models
        adapters["openai_compatible"] = OpenAIChatProvider(
            name="openai_compatible",
            client=openai.AsyncOpenAI(
                # Local servers take no key, but the SDK insists on one.
                api_key=key.get_secret_value() if key else "not-needed",
                base_url=settings.openai_compatible_base_url,
                max_retries=0,
                timeout=timeout,
                http_client=http_client(openai.DefaultAioHttpClient),
            ),
            default_model=models[0] if models else "llama3.1",
            read_timeout_s=read_s,
            models=models or None,
            # vLLM's `top_k`, Ollama's options...: the server's own fields go as sent.
            option_support=openai_option_support(passes_unknown=True),
            # Ollama and older vLLM know only the deprecated name.
            wire_names={"max_completion_tokens": "max_tokens"},
        )
    return adapters


def _fitter(
    settings: Settings, context_window: WindowLookup
) -> Callable[[str, ChatRequest], ChatRequest]:
    def fit(provider: str, request: ChatRequest) -> ChatRequest:
        window = context_window(provider, request.model)
        if window is None and provider == "openai_compatible":
            window = SELF_HOSTED_CONTEXT_WINDOW
        if window is None:
            return request  # unknown window: the provider's own error is the honest answer
        reserve = request.max_tokens or (
            settings.anthropic_default_max_tokens
            if provider == "anthropic"
            else REPLY_RESERVE_TOKENS
        )
        return fit_to_window(
            request,
            context_window=window,
            reply_reserve=min(reserve, window // 2),
            count=counter_for(provider, request.model),
        )

    return fit
