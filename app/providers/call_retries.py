"""The retries of the provider call running in this task: noted by the retry owner, read by the
instrumentation.

Both wrappers depend on this small module rather than on each other, so the retry owner
(`resilience`) never imports the instrumentation that wraps it.
"""

from contextvars import ContextVar
from dataclasses import dataclass

from app.core import metrics


@dataclass(slots=True)
class CallRetries:
    """How many times the current provider call has been retried so far."""

    count: int = 0


# The retries of the provider call running in this task. Each call sets a fresh counter before
# it starts, so one left behind after a call is never counted again.
_current_retries: ContextVar[CallRetries | None] = ContextVar("provider_retries", default=None)


def count_retries() -> CallRetries:
    """Start counting the retries of a new call in this task; the counter is returned."""
    retries = CallRetries()
    _current_retries.set(retries)
    return retries


def note_retry(provider: str, model: str) -> None:
    """Called by the retry owner before each new attempt: counted in metrics and in the call."""
    metrics.record_provider_retry(provider, model)
    retries = _current_retries.get()
    if retries is not None:
        retries.count += 1
