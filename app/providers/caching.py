"""The opt-in exact-match reply cache: a provider that answers repeated requests itself.

A turn asks for it with `cache: true` and `temperature: 0`; anything else (another temperature,
or none, which means the provider's default and is not deterministic) goes to the model as
usual. The key covers the asking user, the provider and every field of the request, so one
user's reply is never served to another and a change of any parameter is a miss. A hit makes
no provider call, so it is charged nothing: its `Finished` carries zero usage.

Replies live in Redis when it is configured, else in a bounded in-process LRU. The cache is an
optimisation only: any Redis error is logged (never with text) and treated as a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol, get_args

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.providers.base import (
    ChatRequest,
    Finished,
    FinishReason,
    Provider,
    ReplyBuilder,
    StreamEvent,
    TextDelta,
    Usage,
    WholeReply,
    WrappingProvider,
    whole_reply,
)

log = structlog.get_logger(__name__)

KEY_PREFIX = "chat:reply-cache:"
# Replies that ended on their own; a failed, cancelled or filtered one is never served again.
_STORABLE: frozenset[FinishReason] = frozenset({"stop", "length"})
# Longer replies are not kept: one of them would crowd out thousands of ordinary ones.
MAX_CACHED_CHARS = 1_000_000
_FINISH_REASONS = frozenset(get_args(FinishReason))


@dataclass(frozen=True, slots=True)
class CachedReply:
    """What a finished reply left behind: enough to replay it and to store it like the first."""

    text: str
    reason: FinishReason
    model: str
    provider: str
    requested_model: str | None
    usage: Usage  # what the first call was billed, for the record; a hit is charged nothing

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedReply | None:
        """The stored reply, or None when the value is not one (then it is just a miss)."""
        try:
            data = json.loads(raw)
            reason = data["reason"]
            if reason not in _FINISH_REASONS:
                return None
            return cls(
                text=str(data["text"]),
                reason=reason,
                model=str(data["model"]),
                provider=str(data["provider"]),
                requested_model=data.get("requested_model"),
                usage=Usage(**data["usage"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def cacheable(request: ChatRequest) -> bool:
    """Whether a request asked for the cache and may use it: only deterministic sampling."""
    return request.cache_scope is not None and request.temperature == 0


def cache_key(provider: str, request: ChatRequest) -> str:
    """SHA-256 over a canonical JSON of the user, the provider and every request field.

    Every field of `ChatRequest` is included by construction (`asdict`), so a parameter added
    later changes the key without anyone remembering to add it here.
    """
    fields = dataclasses.asdict(request)
    fields["temperature"] = float(fields["temperature"])  # 0 and 0.0 are the same request
    canonical = json.dumps(
        {"provider": provider, "request": fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ReplyStore(Protocol):
    """Where cached replies live; `get` never raises for a missing or unreadable entry."""

    async def get(self, key: str) -> CachedReply | None: ...

    async def put(self, key: str, reply: CachedReply, ttl_s: int) -> None: ...


@dataclass
class InProcessReplyStore:
    """A least-recently-used map with expiry, bounded in entries and in characters held."""

    max_entries: int = 1_024
    max_chars: int = 32_000_000
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[str, tuple[float, CachedReply]] = field(
        default_factory=OrderedDict, repr=False
    )
    _chars: int = 0

    async def get(self, key: str) -> CachedReply | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, reply = entry
        if self.clock() >= expires_at:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return reply

    async def put(self, key: str, reply: CachedReply, ttl_s: int) -> None:
        self._drop(key)
        self._entries[key] = (self.clock() + ttl_s, reply)
        self._chars += len(reply.text)
        while len(self._entries) > self.max_entries or self._chars > self.max_chars:
            self._drop(next(iter(self._entries)))

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._chars -= len(entry[1].text)


@dataclass
class RedisReplyStore:
    """Replies shared by every replica, expired by Redis itself (`SET ... EX`)."""

    redis: Redis

    async def get(self, key: str) -> CachedReply | None:
        try:
            raw = await self.redis.get(KEY_PREFIX + key)
        except RedisError as error:
            log.warning("reply cache unavailable; treated as a miss", error=type(error).__name__)
            return None
        return None if raw is None else CachedReply.from_json(raw)

    async def put(self, key: str, reply: CachedReply, ttl_s: int) -> None:
        try:
            await self.redis.set(KEY_PREFIX + key, reply.to_json(), ex=ttl_s)
        except RedisError as error:
            log.warning("reply cache unavailable; reply not kept", error=type(error).__name__)


@dataclass(frozen=True, slots=True)
class ResponseCache:
    """A store and how long its replies are served (`RESPONSE_CACHE_TTL_SECONDS`)."""

    store: ReplyStore
    ttl_s: int

    def around(self, provider: Provider) -> Provider:
        """`provider`, answering cacheable requests from this cache first."""
        return CachingProvider(provider, self)


def build_response_cache(ttl_s: int, redis: Redis | None) -> ResponseCache | None:
    """The configured cache: Redis when there is one, in-process otherwise; None when off."""
    if ttl_s <= 0:
        return None
    store: ReplyStore = RedisReplyStore(redis) if redis is not None else InProcessReplyStore()
    return ResponseCache(store, ttl_s)


@dataclass
class CachingProvider(WrappingProvider):
    """`inner` behind the reply cache: a hit replays the stored reply and calls nobody."""

    inner: Provider
    cache: ResponseCache

    async def complete(self, request: ChatRequest) -> WholeReply:
        """As `stream`, in one piece: a hit calls nobody, a miss is kept before it returns."""
        if not cacheable(request):
            return await whole_reply(self.inner, request)
        key = cache_key(self.inner.name, request)
        stored = await self.cache.store.get(key)
        if stored is not None:
            return WholeReply(stored.text, _hit(stored))
        reply = await whole_reply(self.inner, request)
        if not reply.tool_calls and not reply.reasoning:
            await self._keep(key, request, reply.finished, reply.text)
        return dataclasses.replace(
            reply, finished=dataclasses.replace(reply.finished, cache="miss")
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        # Most requests are not cacheable: theirs is `inner`'s own stream, not one more
        # generator that every chunk passes through.
        if not cacheable(request):
            return self.inner.stream(request)
        return self._cached_stream(request)

    async def _cached_stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        key = cache_key(self.inner.name, request)
        stored = await self.cache.store.get(key)
        if stored is not None:
            if stored.text:
                yield TextDelta(stored.text)
            yield _hit(stored)
            return
        reply = ReplyBuilder()
        async for event in self.inner.stream(request):
            if not isinstance(event, Finished):
                reply.add(event)
                yield event
                continue
            # Kept before the finish is passed on: a caller may stop reading right after it.
            # Only text is kept: a reply that called tools or reasoned is never replayed.
            if not reply.tool_calls and not reply.reasoning:
                await self._keep(key, request, event, reply.text)
            yield dataclasses.replace(event, cache="miss")
            return

    async def _keep(self, key: str, request: ChatRequest, finished: Finished, text: str) -> None:
        if finished.reason not in _STORABLE or len(text) > MAX_CACHED_CHARS:
            return
        reply = CachedReply(
            text=text,
            reason=finished.reason,
            model=finished.model,
            provider=finished.provider or self.inner.name,
            requested_model=finished.requested_model or request.model,
            usage=finished.usage,
        )
        await self.cache.store.put(key, reply, self.cache.ttl_s)


def _hit(stored: CachedReply) -> Finished:
    """How a reply served from the cache finishes (logged: only names, never text)."""
    log.info("reply served from cache", provider=stored.provider, model=stored.model)
    return Finished(
        reason=stored.reason,
        usage=Usage(),  # no provider call happened: nothing to charge
        model=stored.model,
        provider=stored.provider,
        requested_model=stored.requested_model,
        cache="hit",
    )
