"""Every provider call measured in one place: metrics, one log line and (when tracing) a span.

`InstrumentedProvider` wraps each configured provider (its retries included), so a fallback
chain shows one call per model it tried. Only names, counts and timings are recorded: never
message text.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, TypeVar

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from app.core import metrics
from app.errors import ChatAPIError, UpstreamError
from app.providers.base import (
    ChatRequest,
    Finished,
    Provider,
    StreamEvent,
    Usage,
    WholeReply,
    WrappingProvider,
    whole_reply,
)
from app.providers.call_retries import count_retries
from app.providers.registry import ProviderRegistry

log = structlog.get_logger("app.providers.calls")

T = TypeVar("T")


class CostOf(Protocol):
    """What a reply costs (`PriceBook.cost_of`); None when the model has no known price."""

    def __call__(
        self, provider: str, model: str, usage: Usage, *, requested_model: str | None = None
    ) -> Decimal | None: ...


@dataclass
class InstrumentedProvider(WrappingProvider):
    """`inner`, with each call counted, timed, logged and (with a `tracer`) traced."""

    inner: Provider
    cost_of: CostOf | None = None
    tracer: trace.Tracer | None = None
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)

    def __post_init__(self) -> None:
        # The gauge's child for this provider, looked up once rather than on every call.
        self.in_flight = metrics.PROVIDER_CALLS_IN_FLIGHT.labels(self.name)

    async def complete(self, request: ChatRequest) -> WholeReply:
        """One call, measured as a stream is. The first token arrives with the whole reply,
        so the time to first token is the call's latency (none for an empty reply)."""
        call = _Call(self, request)
        try:
            reply = await call.run(whole_reply(self.inner, request))
        except BaseException as error:
            call.fail(error)
            raise
        if reply.text or reply.tool_calls:
            call.first_token()
        call.finish(reply.finished)
        return reply

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        call = _Call(self, request)
        events = self.inner.stream(request)
        try:
            while True:
                # Once per chunk: no coroutine of our own around `anext` unless traced (then
                # the call's span is current while the chunk is awaited, and only then).
                step = anext(events)
                event = await (step if call.span is None else call.run(step))
                if isinstance(event, Finished):
                    # Recorded before it is yielded: a caller that stops reading at `Finished`
                    # leaves this generator to be closed later, out of the request's context.
                    call.finish(event)
                else:
                    call.first_token()
                yield event
                if isinstance(event, Finished):
                    return
        except StopAsyncIteration:
            # The caller sees the same early end and decides; the call itself did not finish.
            call.fail(UpstreamError(f"provider {self.name!r} ended its reply without finishing"))
            return
        except BaseException as error:
            call.fail(error)
            raise
        finally:
            call.fail(None)  # no-op once finished or failed: the caller left mid-reply
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


class _Call:
    """One provider call's measurements; recorded exactly once, however it ends."""

    def __init__(self, owner: InstrumentedProvider, request: ChatRequest) -> None:
        self.owner = owner
        self.model = request.model
        self.clock = owner.clock
        self.started = owner.clock()
        self.first_token_at: float | None = None
        self.recorded = False
        owner.in_flight.inc()  # given back when the call is recorded, however it ends
        self.retries = count_retries()
        self.span = (
            None
            if owner.tracer is None
            else owner.tracer.start_span(
                f"chat {request.model}",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": owner.name,
                    "gen_ai.request.model": request.model,
                },
            )
        )

    async def run(self, step: Awaitable[T]) -> T:
        """`step` awaited with this call's span current (and only then: a span left current
        across a `yield` would leak into the caller's work)."""
        if self.span is None:
            return await step
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            return await step
        finally:
            otel_context.detach(token)

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = self.clock()

    def finish(self, finished: Finished) -> None:
        usage = finished.usage
        cost = (
            None
            if self.owner.cost_of is None
            else self.owner.cost_of(
                self.owner.name, finished.model, usage, requested_model=self.model
            )
        )
        if self.span is not None:
            self.span.set_attributes(
                {
                    "gen_ai.response.model": finished.model,
                    "gen_ai.response.finish_reasons": [finished.reason],
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "chat_api.retries": self.retries.count,
                }
            )
            if cost is not None:
                self.span.set_attribute("chat_api.cost_usd", float(cost))
        self._record("ok", usage=usage, cost=cost, finish_reason=finished.reason)

    def fail(self, error: BaseException | None) -> None:
        if self.recorded:
            return
        if error is None or not isinstance(error, Exception):
            status = "cancelled"  # the caller stopped reading, or the task was cancelled
        elif isinstance(error, ChatAPIError):
            status = error.code
        else:
            status = "internal_error"
        if self.span is not None and status != "cancelled":
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, status))
            self.span.set_attribute("error.type", status)
        self._record(status)

    def _record(
        self,
        status: str,
        *,
        usage: Usage | None = None,
        cost: Decimal | None = None,
        finish_reason: str | None = None,
    ) -> None:
        self.recorded = True
        self.owner.in_flight.dec()
        ended = self.clock()
        duration_s = ended - self.started
        ttft_s = None if self.first_token_at is None else self.first_token_at - self.started
        metrics.record_provider_call(
            self.owner.name,
            self.model,
            status,
            duration_s=duration_s,
            time_to_first_token_s=ttft_s,
        )
        if self.span is not None:
            self.span.set_attribute("chat_api.retries", self.retries.count)
            self.span.end()
        log.info(
            "provider call",
            provider=self.owner.name,
            model=self.model,
            status=status,
            finish_reason=finish_reason,
            prompt_tokens=None if usage is None else usage.prompt_tokens,
            completion_tokens=None if usage is None else usage.completion_tokens,
            cost_usd=None if cost is None else str(cost),
            latency_ms=round(duration_s * 1000, 1),
            time_to_first_token_ms=None if ttft_s is None else round(ttft_s * 1000, 1),
            retries=self.retries.count,
        )


def instrument_providers(
    registry: ProviderRegistry,
    *,
    cost_of: CostOf | None = None,
    tracer: trace.Tracer | None = None,
) -> None:
    """Wrap every provider of `registry` (once: an already instrumented one is kept)."""
    registry.wrap_providers(
        lambda provider: (
            provider
            if isinstance(provider, InstrumentedProvider)
            else InstrumentedProvider(provider, cost_of=cost_of, tracer=tracer)
        )
    )
