"""The provider interface: a request in, a typed stream of events out.

Every adapter (mock, OpenAI wire, Anthropic wire, fallback chains) satisfies `Provider`.
The rest of the service never imports an SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from app.errors import UpstreamError
from app.providers.options import OptionSupport, option_support_of

ChatRole = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "cancelled", "error"]

# One part of a message's content in OpenAI's shape, the service's lingua franca (stored so,
# translated by each adapter): `{"type": "text", "text": ...}`, `{"type": "image_url",
# "image_url": {"url": "https://..." | "data:<media type>;base64,...", "detail": ...}}`,
# `{"type": "file", "file": {"file_data": "data:...;base64,...", "filename": ...}}`.
ContentPart = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for: `arguments` is JSON text, as the model wrote it."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        """OpenAI's `tool_calls[]` item, also how a call is stored and sent to clients."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def of_openai(cls, item: Mapping[str, Any]) -> ToolCall:
        function = item.get("function") or {}
        return cls(
            id=str(item.get("id") or ""),
            name=str(function.get("name") or ""),
            arguments=str(function.get("arguments") or ""),
        )


# What joins a prompt's system texts (system messages, Anthropic's system blocks) into one
# `ChatRequest.system_prompt`: a blank line.
SYSTEM_JOINER = "\n\n"

CacheTTL = Literal["5m", "1h"]
_TTL_RANK: Mapping[CacheTTL | None, int] = {None: 0, "5m": 1, "1h": 2}


@dataclass(frozen=True, slots=True)
class CacheBreak:
    """A prompt-caching breakpoint the client set (Anthropic's `cache_control`): the provider
    may cache the prompt up to and including the block it marks, and later requests that
    repeat that prefix read it for a tenth of the price.

    Only the Claude adapter sends breakpoints: OpenAI caches prefixes by itself and has no
    breakpoint to send, so no other adapter reads them. They are hints for one request: never
    stored (a history replayed later would carry stale ones, and Anthropic takes at most 4 a
    request) and never part of a message's equality (a message repeated with its breakpoint
    moved is the same message).

    `at` is where the marked block ends in what carries the breakpoint: the character offset
    in a text (`ChatMessage.content`, `ChatRequest.system_prompt`), so a text the client sent
    as several blocks is cut there again; or the index of the part (a message with `parts`),
    of the tool call (`tool_call`, on an assistant message) or of the tool
    (`ChatRequest.tool_cache_breaks`) it marks. A tool message has one block: any breakpoint
    on it marks its result.
    """

    at: int
    ttl: CacheTTL | None = None
    tool_call: bool = False


def by_place(breaks: Iterable[CacheBreak]) -> dict[int, CacheBreak]:
    """One breakpoint per place (`at`): of two at one place, the one with the longer TTL
    (a block has one `cache_control`)."""
    places: dict[int, CacheBreak] = {}
    for mark in breaks:
        kept = places.get(mark.at)
        if kept is None or _TTL_RANK[mark.ttl] > _TTL_RANK[kept.ttl]:
            places[mark.at] = mark
    return places


def text_pieces(text: str, breaks: Iterable[CacheBreak]) -> list[tuple[str, CacheBreak | None]]:
    """`text` cut at its breakpoints' offsets, each piece with the breakpoint that ends it
    (of two ending at one place, the one with the longer TTL), then what follows the last,
    unmarked (left out when empty)."""
    ends = by_place(CacheBreak(min(max(mark.at, 0), len(text)), mark.ttl) for mark in breaks)
    pieces: list[tuple[str, CacheBreak | None]] = []
    start = 0
    for at in sorted(ends):
        pieces.append((text[start:at], ends[at]))
        start = at
    if start < len(text):
        pieces.append((text[start:], None))
    return pieces


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a prompt. `content` is its text (the text parts joined); `parts` is its
    whole content when it is more than text (images, files), else empty. An assistant
    message may carry `tool_calls` (and the `reasoning` it returned, with the provider's
    `reasoning_signature` where it has one); a tool message answers `tool_call_id`."""

    role: ChatRole
    content: str
    parts: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning: str | None = None
    reasoning_signature: str | None = None
    # Where the client asked the provider to cache the prompt (see `CacheBreak`): per
    # request, so left out of equality (and never stored, `stored_message`).
    cache_breaks: tuple[CacheBreak, ...] = field(default=(), compare=False)


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
    # Further options under OpenAI's names and shapes (`tools`, `tool_choice`,
    # `parallel_tool_calls`, `response_format`, `reasoning_effort`, `seed`,
    # `max_completion_tokens`, an OpenAI-compatible server's own fields): only those the
    # provider honours (`providers.options`); its adapter sends, maps or acts on each.
    options: Mapping[str, Any] = field(default_factory=dict)
    # Prompt-caching breakpoints outside the messages (`CacheBreak`): offsets in
    # `system_prompt` where a system block the client marked ends, and indices of marked
    # tools in `options["tools"]`.
    system_cache_breaks: tuple[CacheBreak, ...] = ()
    tool_cache_breaks: tuple[CacheBreak, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider bills them; `prompt_tokens` includes cached ones."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    # Of `cache_write_tokens`, those written to a one-hour cache (Anthropic's `ttl: "1h"`):
    # billed at their own, higher rate (twice the input price on Claude, against 1.25 times).
    cache_write_1h_tokens: int = 0
    # Tokens the model spent thinking: part of `completion_tokens` (billed at the output rate).
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the `index`th tool call: its first piece carries `id` and `name`, every
    piece a slice of the JSON `arguments` (OpenAI's streaming shape)."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's visible reasoning (Anthropic's thinking, a reasoning server's
    `reasoning_content`); `signature` is the provider's seal on it, sent back with it."""

    text: str
    signature: str | None = None


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


StreamEvent = TextDelta | ToolCallDelta | ReasoningDelta | Finished


@dataclass(frozen=True, slots=True)
class WholeReply:
    """A reply asked for in one piece (`OneShotProvider.complete`): all its text and its end,
    with the tool calls and reasoning it carried."""

    text: str
    finished: Finished
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""
    reasoning_signature: str | None = None


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
    reply = ReplyBuilder()
    async for event in provider.stream(request):
        if isinstance(event, Finished):
            return reply.whole(event)
        reply.add(event)
    raise UpstreamError(f"provider {provider.name!r} ended its reply without finishing")


class ReplyBuilder:
    """A streamed reply put back together: its text, tool calls (from their deltas, by
    index) and reasoning."""

    __slots__ = ("_calls", "_reasoning", "signature", "text_parts")

    def __init__(self) -> None:
        self.text_parts: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        self._reasoning: list[str] = []
        self.signature: str | None = None

    def add(self, event: TextDelta | ToolCallDelta | ReasoningDelta) -> None:
        if isinstance(event, TextDelta):
            self.text_parts.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.setdefault(event.index, ["", ""])
            if event.id:
                call[0] = event.id
            if event.name:
                call[1] = event.name
            call.append(event.arguments)
        else:
            self._reasoning.append(event.text)
            self.signature = event.signature or self.signature

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(call[0], call[1], "".join(call[2:])) for _, call in sorted(self._calls.items())
        )

    def whole(self, finished: Finished) -> WholeReply:
        return WholeReply(self.text, finished, self.tool_calls, self.reasoning, self.signature)


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
