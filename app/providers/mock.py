"""The built-in offline provider: deterministic replies with realistic token counts."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

from app.providers.base import (
    ChatRequest,
    Finished,
    FinishReason,
    StreamEvent,
    TextDelta,
    Usage,
    WholeReply,
)
from app.providers.options import OptionSupport

MOCK_MODELS = ("mock",)
CONTEXT_WINDOW = 128_000
SYSTEM_FINGERPRINT = "fp_mock"

# The reply is a fixed function of the prompt, so what steers a real model's sampling,
# caching, routing or abuse checks is accepted and leaves it as it is (a `seed` is always
# honoured); options that ask for another kind of output (JSON, logprobs) are refused.
MOCK_OPTIONS = OptionSupport(
    dict.fromkeys(
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
            "reasoning_effort",
            "verbosity",
            "service_tier",
            "prediction",
            "prompt_cache_key",
            "prompt_cache_options",
            "prompt_cache_retention",
            "user",
            "safety_identifier",
            "metadata",  # stored with the reply
        )
    )
)

_VOCABULARY = (
    "the service stores every conversation and message so that nothing a user sends is lost "
    "each reply is charged exactly once and streamed to the browser token by token while "
    "operators watch latency cost and errors in real time across replicas with care"
).split()

# OpenAI's chat format spends about this many tokens per message on role and separators.
_TOKENS_PER_MESSAGE = 4
_REPLY_PRIMING_TOKENS = 3


def estimate_tokens(text: str) -> int:
    """About four characters per token, the rule of thumb for English with BPE tokenizers."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def prompt_tokens_of(request: ChatRequest) -> int:
    texts = [m.content for m in request.messages]
    if request.system_prompt:
        texts.append(request.system_prompt)
    return sum(estimate_tokens(t) + _TOKENS_PER_MESSAGE for t in texts) + _REPLY_PRIMING_TOKENS


def reply_words(request: ChatRequest) -> list[str]:
    """The same history always gets the same reply, so tests and benchmarks can predict it."""
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    digest = hashlib.sha256(last_user.encode("utf-8", "surrogatepass")).digest()
    length = 12 + digest[0] % 28
    words = [_VOCABULARY[(digest[i % len(digest)] + i) % len(_VOCABULARY)] for i in range(length)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return words


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
        pieces, finished = _reply(request)
        if self.chunk_delay_s and pieces:
            await asyncio.sleep(self.chunk_delay_s * len(pieces))
        return WholeReply("".join(pieces), finished)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        pieces, finished = _reply(request)
        for piece in pieces:
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield TextDelta(piece)
        yield finished


def _reply(request: ChatRequest) -> tuple[list[str], Finished]:
    """The reply's pieces (a word each) within `max_tokens`, and how it finishes."""
    budget = request.max_tokens
    completion_tokens = 0
    reason: FinishReason = "stop"
    pieces: list[str] = []
    for index, word in enumerate(reply_words(request)):
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
    usage = Usage(prompt_tokens=prompt_tokens_of(request), completion_tokens=completion_tokens)
    finished = Finished(
        reason=reason, usage=usage, model=request.model, system_fingerprint=SYSTEM_FINGERPRINT
    )
    return pieces, finished


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
