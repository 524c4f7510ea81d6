"""A started stream keeps none of its retry state: thousands may stay open for minutes."""

from __future__ import annotations

import gc

from tenacity import RetryCallState

from app.providers.base import ChatMessage, ChatRequest, TextDelta
from app.providers.mock import MockProvider
from app.providers.resilience import ResilientProvider, RetryPolicy


def live_retry_states() -> int:
    gc.collect()
    return sum(isinstance(thing, RetryCallState) for thing in gc.get_objects())


async def test_the_retry_state_is_freed_once_the_first_event_is_in() -> None:
    provider = ResilientProvider(MockProvider(), RetryPolicy())
    request = ChatRequest(model="mock", messages=(ChatMessage("user", "a long reply, please"),))
    before = live_retry_states()

    events = provider.stream(request)
    first = await anext(events)
    while_streaming = live_retry_states()
    await events.aclose()

    assert isinstance(first, TextDelta)
    assert while_streaming == before
