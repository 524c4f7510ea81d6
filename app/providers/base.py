"""The provider interface: a request in, a typed stream of events out.

Every adapter (mock, OpenAI wire, Anthropic wire, fallback chains) satisfies `Provider`.
The rest of the service never imports an SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from app.errors import UpstreamError
from app.providers.options import OptionSupport, option_support_of

ChatRole = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: ChatRole
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What one turn asks of a model; `messages` is the history in order, newest last."""

    model: str
    messages: tuple[ChatMessage, ...]
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    # Sequences that end the reply when the model produces them (not included in the text).
    stop: tuple[str, ...] = ()
    # Set (to the asking user's id) when the turn asked for `cache: true`: the response cache
    # only ever serves a reply to the user it was stored for.
    cache_scope: str | None = None
    # Further options under OpenAI's names, as a /v1 client sent them (`seed`,
    # `response_format`, `max_completion_tokens`, an OpenAI-compatible server's own fields):
    # only those the provider honours (`providers.options`); its adapter sends or maps each.
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider bills them; `prompt_tokens` includes cached ones."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    reason: FinishReason
    usage: Usage
    model: str  # the id the provider reports, e.g. a dated snapshot
    provider: str | None = None  # who answered, when a fallback chain chose for the caller
    # The model name that provider was asked for (a fallback's, not the caller's): its price
    # is the fallback when the reported model has none.
    requested_model: str | None = None
    # "hit" when the response cache answered (no provider call), "miss" when it was asked to.
    cache: Literal["hit", "miss"] | None = None
    # The backend configuration the provider reports (OpenAI's `system_fingerprint`).
    system_fingerprint: str | None = None


StreamEvent = TextDelta | Finished


@dataclass(frozen=True, slots=True)
class WholeReply:
    """A reply asked for in one piece (`OneShotProvider.complete`): all its text and its end."""

    text: str
    finished: Finished


class Provider(Protocol):
    """A model backend. `stream` yields text deltas and ends with exactly one `Finished`.

    A provider may also be a `OneShotProvider`: non-streaming turns then ask it for the whole
    reply in one upstream call instead of streaming it (a stream costs a parsed chunk per
    token and a pass through every wrapper, for a text the caller only wants at the end).
    """

    @property
    def name(self) -> str: ...

    @property
    def default_model(self) -> str: ...

    def supports(self, model: str) -> bool:
        """Whether this provider can serve `model` (real APIs accept any name they know)."""
        ...

    # Plain `def` on purpose: an `async def ... yield` method satisfies it; `async def` would not.
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]: ...


class OneShotProvider(Provider, Protocol):
    """A provider that can answer in one piece; `one_shot` says whether it really does.

    Wrappers are one-shot only when what they wrap is: a provider that can only stream (a test
    fake, say) keeps being streamed, so a failure still keeps the text that had arrived.
    """

    @property
    def one_shot(self) -> bool: ...

    async def complete(self, request: ChatRequest) -> WholeReply:
        """The whole reply from one upstream call; raises as `stream` would, with no text."""
        ...


def one_shot_of(provider: Provider) -> OneShotProvider | None:
    """`provider` when it asks its upstream for a whole reply in one call, else None."""
    if getattr(provider, "one_shot", False) is True:
        return cast(OneShotProvider, provider)
    return None


async def whole_reply(provider: Provider, request: ChatRequest) -> WholeReply:
    """The whole reply: one call when `provider` is one-shot, else its stream, drained."""
    one_shot = one_shot_of(provider)
    if one_shot is not None:
        return await one_shot.complete(request)
    parts: list[str] = []
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            return WholeReply("".join(parts), event)
    raise UpstreamError(f"provider {provider.name!r} ended its reply without finishing")


class WrappingProvider:
    """What every provider wrapper (retries, fallbacks' members, metrics, the reply cache)
    shares: it answers to the name, models and one-shot ability of `inner`, and closes it."""

    inner: Provider

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def default_model(self) -> str:
        return self.inner.default_model

    def supports(self, model: str) -> bool:
        return self.inner.supports(model)

    @property
    def one_shot(self) -> bool:
        return one_shot_of(self.inner) is not None

    @property
    def option_support(self) -> OptionSupport:
        return option_support_of(self.inner)

    async def aclose(self) -> None:
        """Release the connection pool of the provider at the bottom of the wrapping."""
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()
