"""Test providers that satisfy `app.providers.base.Provider`, injected through `create_app`.

Each is a model backend in its own right (as pydantic-ai's test models are), so the service
under test runs unchanged: no patching, only a different registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from app.providers.base import (
    ChatRequest,
    Finished,
    Provider,
    StreamEvent,
    TextDelta,
    Usage,
    WholeReply,
)
from app.providers.mock import MockProvider
from app.providers.registry import ProviderRegistry

FAKE_PROVIDER = "fake"
FAKE_MODEL = "fake-model"


def registry_with(*fakes: Provider) -> ProviderRegistry:
    """The mock provider as the default, plus the given fakes under their own names."""
    providers: dict[str, Provider] = {"mock": MockProvider()}
    providers.update({fake.name: fake for fake in fakes})
    return ProviderRegistry(providers, "mock")


@dataclass
class FailingProvider:
    """Streams `deltas_before` pieces of text, then raises `error`."""

    error: Exception
    deltas_before: int = 0
    name: str = FAKE_PROVIDER
    default_model: str = FAKE_MODEL
    calls: int = 0

    def supports(self, model: str) -> bool:
        return model == self.default_model

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        for index in range(self.deltas_before):
            yield TextDelta(f"partial {index} ")
        raise self.error


@dataclass
class StallingProvider:
    """Holds every call until `release()`, counting the calls that are waiting inside it.

    Never released, it is an upstream that does not answer (for timeouts).
    """

    reply: str = "Released at last."
    name: str = FAKE_PROVIDER
    default_model: str = FAKE_MODEL
    entered: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _entries: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)

    def supports(self, model: str) -> bool:
        return model == self.default_model

    def release(self) -> None:
        """Let every waiting call, and every later one, finish its reply."""
        self._released.set()

    async def wait_until_entered(self, count: int) -> None:
        """Return once `count` calls are (or have been) inside the provider."""
        async with self._entries:
            await self._entries.wait_for(lambda: self.entered >= count)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        async with self._entries:
            self.entered += 1
            self._entries.notify_all()
        await self._released.wait()
        yield TextDelta(self.reply)
        usage = Usage(prompt_tokens=10, completion_tokens=4)
        yield Finished(reason="stop", usage=usage, model=request.model)


@dataclass
class CountingProvider:
    """Wraps another provider under the same name and counts the calls that reach it."""

    inner: Provider
    name: str = ""
    default_model: str = ""
    calls: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or self.inner.name
        self.default_model = self.default_model or self.inner.default_model

    def supports(self, model: str) -> bool:
        return self.inner.supports(model)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        async for event in self.inner.stream(request):
            yield event


@dataclass
class ClosableProvider:
    """Yields a fixed reply and records whether its stream was closed (its upstream released)."""

    name: str = FAKE_PROVIDER
    default_model: str = FAKE_MODEL
    closed: bool = False

    def supports(self, model: str) -> bool:
        return model == self.default_model

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        try:
            yield TextDelta("Hello.")
            yield Finished(reason="stop", usage=Usage(1, 1), model=request.model)
        finally:
            self.closed = True


@dataclass
class RecordingMock(MockProvider):
    """The mock provider, keeping each request it answers: what reached the model."""

    requests: list[ChatRequest] = field(default_factory=list)

    async def complete(self, request: ChatRequest) -> WholeReply:
        self.requests.append(request)
        return await super().complete(request)

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        return super().stream(request)
