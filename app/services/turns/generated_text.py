"""A reply as the provider produces it, shared by the turn that runs the provider and the
saver that stores the text of every running reply while it grows."""

from __future__ import annotations

import time

from app.providers.base import (
    ReasoningDelta,
    ReplyBuilder,
    TextDelta,
    ToolCallDelta,
    WholeReply,
)


class Generation(ReplyBuilder):
    """What the provider produced so far (text, tool calls, reasoning): kept on the reply
    whether it finishes or fails. `first_token_at` is when the first of it arrived."""

    __slots__ = ("first_token_at",)

    def __init__(self) -> None:
        super().__init__()
        self.first_token_at: int | None = None

    @property
    def parts(self) -> list[str]:
        """The text's pieces in order (the partial-text saver stores their prefix)."""
        return self.text_parts

    def add(self, event: TextDelta | ToolCallDelta | ReasoningDelta) -> None:
        if self.first_token_at is None:
            self.first_token_at = monotonic_ms()
        super().add(event)

    def take(self, reply: WholeReply) -> None:
        """A reply that arrived whole (one upstream call): all of it at once."""
        if reply.text:
            self.add(TextDelta(reply.text))
        for index, call in enumerate(reply.tool_calls):
            self.add(ToolCallDelta(index, call.arguments, call.id, call.name))
        if reply.reasoning or reply.reasoning_signature:
            self.add(ReasoningDelta(reply.reasoning, reply.reasoning_signature))


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)
