"""The built-in offline provider: deterministic replies with realistic token counts.

It calls the tools a request offers, reports their results, answers in the JSON a
`response_format` asks for and reasons a line when asked (`mock_tools`), so every feature of
the service works without a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from app.providers.base import (
    ChatRequest,
    Finished,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
    WholeReply,
)
from app.providers.context import prompt_tokens
from app.providers.mock_tools import (
    argument_pieces,
    call_deltas,
    json_reply_text,
    tool_calls,
    tool_results_text,
)
from app.providers.options import OptionSupport

MOCK_MODELS = ("mock",)
CONTEXT_WINDOW = 128_000
SYSTEM_FINGERPRINT = "fp_mock"


def _function_tools(tools: object) -> bool:
    return isinstance(tools, list) and all(
        isinstance(tool, Mapping) and tool.get("type", "function") == "function" for tool in tools
    )


def _json_reply(response_format: object) -> bool:
    return isinstance(response_format, Mapping) and response_format.get("type") in (
        "text",
        "json_object",
        "json_schema",
    )


# The reply is a fixed function of the prompt, so what steers a real model's sampling,
# caching, routing or abuse checks is accepted and leaves it as it is (a `seed` is always
# honoured); function tools are called, JSON replies written, and logprobs refused.
MOCK_OPTIONS = OptionSupport(
    {
        **dict.fromkeys(
            (
                "temperature",
                "top_p",
                "max_tokens",  # the reply stops at the limit, `finish_reason: "length"`
                "max_completion_tokens",
                "stop",
                "seed",
                "frequency_penalty",
                "presence_penalty",
                "logit_bias",
                "reasoning_effort",  # a line of reasoning first, unless "none"
                "verbosity",
                "service_tier",
                "prediction",
                "prompt_cache_key",
                "prompt_cache_options",
                "prompt_cache_retention",
                "user",
                "safety_identifier",
                "metadata",  # stored with the reply
                "tool_choice",
                "parallel_tool_calls",
            )
        ),
        "tools": _function_tools,
        "response_format": _json_reply,
    }
)

_VOCABULARY = (
    "the service stores every conversation and message so that nothing a user sends is lost "
    "each reply is charged exactly once and streamed to the browser token by token while "
    "operators watch latency cost and errors in real time across replicas with care"
).split()


def estimate_tokens(text: str) -> int:
    """About four characters per token, the rule of thumb for English with BPE tokenizers."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def prompt_tokens_of(request: ChatRequest) -> int:
    """The prompt counted as `context` counts it (tools, images, tool calls included), with
    the mock's own estimate for text."""
    return prompt_tokens(request, estimate_tokens)


def reply_words(request: ChatRequest) -> list[str]:
    """The same history always gets the same reply, so tests and benchmarks can predict it."""
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    text = last_user.content if last_user is not None else ""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    length = 12 + digest[0] % 28
    words = [_VOCABULARY[(digest[i % len(digest)] + i) % len(_VOCABULARY)] for i in range(length)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    if last_user is not None and last_user.parts:
        images = sum(1 for part in last_user.parts if part.get("type") == "image_url")
        if images:
            words = ["I", "see", str(images), "image." if images == 1 else "images.", *words]
    return words


@dataclass(frozen=True, slots=True)
class MockReply:
    """What the mock answers: reasoning, text (in the pieces it streams) or tool calls."""

    pieces: list[str]
    finished: Finished
    reasoning: list[str] = field(default_factory=list)
    calls: tuple[ToolCall, ...] = ()

    @property
    def steps(self) -> int:
        """How many deltas stream it (each one `chunk_delay_s` apart)."""
        calls = sum(1 + len(argument_pieces(call.arguments)) for call in self.calls)
        return len(self.reasoning) + len(self.pieces) + calls


@dataclass
class MockProvider:
    """Offline and free of network; `chunk_delay_s` imitates a model's pace between tokens."""

    chunk_delay_s: float = 0.0
    name: str = "mock"
    default_model: str = MOCK_MODELS[0]
    one_shot: ClassVar[bool] = True
    option_support: ClassVar[OptionSupport] = MOCK_OPTIONS

    def supports(self, model: str) -> bool:
        return model in MOCK_MODELS

    async def complete(self, request: ChatRequest) -> WholeReply:
        """The same reply as `stream`, after the same total pause."""
        reply = mock_reply(request)
        if self.chunk_delay_s and reply.steps:
            await asyncio.sleep(self.chunk_delay_s * reply.steps)
        text, reasoning = "".join(reply.pieces), "".join(reply.reasoning)
        return WholeReply(text, reply.finished, reply.calls, reasoning)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        reply = mock_reply(request)
        for thought in reply.reasoning:
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield ReasoningDelta(thought)
        for piece in reply.pieces:
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield TextDelta(piece)
        for index, call in enumerate(reply.calls):
            for delta in call_deltas(index, call):
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield delta
        yield reply.finished


def mock_reply(request: ChatRequest) -> MockReply:
    """The reply to `request`: tool calls when it offers tools and the user names one (or
    must call one), a report of the results after tool messages, else text; JSON when a
    `response_format` asks for it; a line of reasoning first when `reasoning_effort` does."""
    options = request.options
    last = request.messages[-1] if request.messages else None
    plan = "answering"
    if last is not None and last.role == "tool":
        words = tool_results_text(request.messages).split(" ")
        plan = "reporting the tool results"
    elif not options:
        return _text_reply(request, reply_words(request))  # the common case, kept lean
    elif last is not None and last.role == "user" and (calls := tool_calls(request, last)):
        plan = "calling " + ", ".join(call.name for call in calls)
        reasoning = _reasoning(request, last.content, plan)
        tokens = sum(estimate_tokens(call.name) + estimate_tokens(call.arguments) for call in calls)
        # Calls are never cut at `max_tokens`: half a call is of no use to anyone.
        return MockReply([], _finished(request, "tool_calls", tokens, reasoning), reasoning, calls)
    else:
        words = reply_words(request)
    said = " ".join(words)
    shaped = json_reply_text(options.get("response_format"), said)
    if shaped is not None:
        words = shaped.split(" ")
        plan += " in JSON"
    question = last.content if last is not None else ""
    return _text_reply(request, words, _reasoning(request, question, plan))


def _text_reply(
    request: ChatRequest, words: list[str], reasoning: list[str] | None = None
) -> MockReply:
    """The words as pieces (a word each) within `max_tokens` (reasoning spends from it too),
    cut at a stop sequence, and how the reply finishes."""
    reasoning = reasoning or []
    thought = sum(estimate_tokens(piece) for piece in reasoning) if reasoning else 0
    budget = None if request.max_tokens is None else request.max_tokens - thought
    completion_tokens = 0
    reason: FinishReason = "stop"
    pieces: list[str] = []
    for index, word in enumerate(words):
        piece = word if index == 0 else f" {word}"
        tokens = estimate_tokens(piece)
        if budget is not None and completion_tokens + tokens > budget:
            reason = "length"
            break
        completion_tokens += tokens
        pieces.append(piece)
    if request.stop:
        pieces, cut = _cut_at_stop(pieces, request.stop)
        if cut:
            reason = "stop"
            completion_tokens = sum(estimate_tokens(piece) for piece in pieces)
    return MockReply(pieces, _finished(request, reason, completion_tokens, reasoning), reasoning)


def _finished(
    request: ChatRequest, reason: FinishReason, tokens: int, reasoning: list[str]
) -> Finished:
    """The end of a reply of `tokens` (besides its reasoning's, which count as completion)."""
    thought = sum(estimate_tokens(piece) for piece in reasoning) if reasoning else 0
    usage = Usage(
        prompt_tokens=prompt_tokens_of(request),
        completion_tokens=tokens + thought,
        reasoning_tokens=thought,
    )
    return Finished(
        reason=reason, usage=usage, model=request.model, system_fingerprint=SYSTEM_FINGERPRINT
    )


def _reasoning(request: ChatRequest, question: str, plan: str) -> list[str]:
    """A line of reasoning, as pieces within `max_tokens`, when `reasoning_effort` asks."""
    effort = request.options.get("reasoning_effort")
    if effort is None or effort == "none":
        return []
    count = len(question.split())
    line = f"The user wrote {count} word{'' if count == 1 else 's'}; I am {plan}."
    pieces = [word if index == 0 else f" {word}" for index, word in enumerate(line.split(" "))]
    if request.max_tokens is None:
        return pieces
    # Reasoning spends from `max_tokens` first, as OpenAI's models' does.
    kept, budget = [], request.max_tokens
    for piece in pieces:
        budget -= estimate_tokens(piece)
        if budget < 0:
            break
        kept.append(piece)
    return kept


def _cut_at_stop(pieces: list[str], stop: tuple[str, ...]) -> tuple[list[str], bool]:
    """The pieces up to the first stop sequence (left out, as OpenAI does); whether one came."""
    text = "".join(pieces)
    found = [at for at in (text.find(sequence) for sequence in stop) if at >= 0]
    if not found:
        return pieces, False
    end, kept = min(found), []
    for piece in pieces:
        if end <= 0:
            break
        kept.append(piece[:end])
        end -= len(piece)
    return [piece for piece in kept if piece], True
