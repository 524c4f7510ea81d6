"""Retries, stall detection, context fitting and fallback chains: providers wrapping providers.

This is the one retry owner for every upstream call (the SDK clients are built with
`max_retries=0`). An attempt is retried only before any text has been produced: once a token
has reached the caller, a retry would repeat it, so the error goes to the caller instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from app.providers.base import (
    ChatRequest,
    Finished,
    Provider,
    StreamEvent,
    WholeReply,
    WrappingProvider,
    one_shot_of,
    whole_reply,
)
from app.providers.call_retries import note_retry
from app.providers.silence import SilenceLimit

log = structlog.get_logger(__name__)

RequestFitter = Callable[[str, ChatRequest], ChatRequest]
# Below this many characters a prompt is fitted on the event loop: at worst ~1 ms of
# tokenizing, less than a hop to a worker thread and back costs under load.
_INLINE_FIT_CHARS = 32_000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one provider: `max_retries` after the first attempt, never longer than
    `max_wait_s` between two, and `idle_timeout_s` as the longest silence within an attempt."""

    max_retries: int = 2
    max_wait_s: float = 20.0
    idle_timeout_s: float = 60.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0


@dataclass
class ResilientProvider(WrappingProvider):
    """`inner` with the request fitted to its context window, stalls cut, and retries."""

    inner: Provider
    policy: RetryPolicy
    fit: RequestFitter | None = None

    async def complete(self, request: ChatRequest) -> WholeReply:
        """The whole reply, retried as a stream is; the idle limit bounds the whole call.

        The upstream is silent until a one-shot reply is whole, so the longest silence is the
        call itself (the SDK clients' read timeout is the same `PROVIDER_TIMEOUT_SECONDS`).
        """
        request = await self._fitted(request)
        async for attempt in self._retrying(request):
            with attempt:
                try:
                    async with asyncio.timeout(self.policy.idle_timeout_s):
                        return await whole_reply(self.inner, request)
                except TimeoutError:
                    raise UpstreamTimeout(self.inner.name, self.policy.idle_timeout_s) from None
        raise AssertionError("unreachable: the last failed attempt re-raises its error")

    async def _fitted(self, request: ChatRequest) -> ChatRequest:
        if self.fit is None:
            return request
        length = len(request.system_prompt or "")
        length += sum(len(message.content) for message in request.messages)
        if length < _INLINE_FIT_CHARS:
            return self.fit(self.inner.name, request)
        # Off the loop: tokenizing a long prompt takes milliseconds (~30 MB/s with tiktoken).
        return await asyncio.to_thread(self.fit, self.inner.name, request)

    def _retrying(self, request: ChatRequest) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(self._worth_retrying),
            before_sleep=functools.partial(self._log_retry, request.model),
            reraise=True,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        request = await self._fitted(request)
        async with SilenceLimit(self.policy.idle_timeout_s) as silence:
            events, event = await self._started(request, silence)
            try:
                yield event
                while not isinstance(event, Finished):
                    event = await self._next(silence, events)
                    yield event
            finally:
                await _close(events)

    async def _started(
        self, request: ChatRequest, silence: SilenceLimit
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        """An attempt that got as far as its first event, and that event, after retries.

        Its own frame, so the retry state (~4 KB: tenacity's futures hold a lock each) is
        freed when the stream starts rather than kept for as long as it runs.
        """
        async for attempt in self._retrying(request):
            with attempt:
                events = self.inner.stream(request)
                try:
                    return events, await self._next(silence, events)
                except BaseException:
                    await _close(events)
                    raise
        raise AssertionError("unreachable: the last failed attempt re-raises its error")

    async def _next(self, silence: SilenceLimit, events: AsyncIterator[StreamEvent]) -> StreamEvent:
        try:
            return await silence.next_of(events)
        except TimeoutError:
            raise UpstreamTimeout(self.inner.name, self.policy.idle_timeout_s) from None
        except StopAsyncIteration:
            raise UpstreamError(
                f"provider {self.inner.name!r} ended its reply without finishing", retryable=True
            ) from None

    def _worth_retrying(self, error: BaseException) -> bool:
        if not isinstance(error, UpstreamError) or not error.retryable:
            return False
        # A provider asking for a longer pause than we may wait: tell the caller instead.
        return error.retry_after is None or error.retry_after <= self.policy.max_wait_s

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, UpstreamError) and error.retry_after is not None:
            return min(error.retry_after, self.policy.max_wait_s)
        backoff = wait_exponential_jitter(
            multiplier=self.policy.initial_backoff_s,
            jitter=self.policy.initial_backoff_s,
            max=self.policy.max_backoff_s,
        )
        return min(backoff(state), self.policy.max_wait_s)

    def _log_retry(self, model: str, state: RetryCallState) -> None:
        note_retry(self.inner.name, model)
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "retrying provider call",
            provider=self.inner.name,
            attempt=state.attempt_number,
            code=getattr(error, "code", type(error).__name__),
            wait_s=round(state.upcoming_sleep, 3),
        )


@dataclass
class FallbackProvider:
    """Tries each (provider, model) in turn until one starts answering.

    Moves on after upstream errors, timeouts and rate limits that happen before any text was
    produced; after the first token the reply belongs to whoever produced it. A refusal of the
    request itself (`UpstreamRejected`: too long, invalid) goes to the caller at once: the next
    model would most likely refuse it too, and the caller is the one who can fix it.
    """

    candidates: Sequence[tuple[Provider, str]]

    @property
    def name(self) -> str:
        return self.candidates[0][0].name

    @property
    def default_model(self) -> str:
        return self.candidates[0][1]

    def supports(self, model: str) -> bool:
        return any(provider.supports(model) for provider, _ in self.candidates)

    @property
    def one_shot(self) -> bool:
        return all(one_shot_of(provider) is not None for provider, _ in self.candidates)

    async def complete(self, request: ChatRequest) -> WholeReply:
        """The whole reply from the first candidate that gives one, in the order of `stream`.

        No text reaches the caller before a one-shot reply is whole, so any upstream error
        moves on to the next candidate.
        """
        last_error: UpstreamError | None = None
        for index, (provider, model) in enumerate(self.candidates):
            if index == 0:
                model = request.model
            try:
                reply = await whole_reply(provider, dataclasses.replace(request, model=model))
            except UpstreamRejected:
                raise
            except UpstreamError as error:
                last_error = error
                self._log_fallback(provider, model, error)
                continue
            finished = dataclasses.replace(
                reply.finished,
                provider=reply.finished.provider or provider.name,
                requested_model=model,
            )
            return dataclasses.replace(reply, finished=finished)
        assert last_error is not None
        raise last_error

    @staticmethod
    def _log_fallback(provider: Provider, model: str, error: UpstreamError) -> None:
        log.warning(
            "falling back to the next model", provider=provider.name, model=model, code=error.code
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        last_error: UpstreamError | None = None
        for index, (provider, model) in enumerate(self.candidates):
            if index == 0:
                model = request.model
            produced = False
            try:
                async for event in provider.stream(dataclasses.replace(request, model=model)):
                    if not isinstance(event, Finished):
                        produced = True  # text, a tool call or reasoning: the reply's now
                    else:
                        event = dataclasses.replace(
                            event, provider=event.provider or provider.name, requested_model=model
                        )
                    yield event
                return
            except UpstreamError as error:
                if produced or isinstance(error, UpstreamRejected):
                    raise
                last_error = error
                self._log_fallback(provider, model, error)
        assert last_error is not None
        raise last_error


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
