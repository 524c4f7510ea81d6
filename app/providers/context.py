"""Fit a conversation into a model's context window by leaving out its oldest turns.

Counted with tiktoken for OpenAI-format models (its BPE files ship with the service, so this
works offline); elsewhere with a deliberately generous estimate of one token per three
characters, since Anthropic and most open models spend more tokens per character than GPT-4o.
The stored history is never changed: only the request sent to the provider is shortened.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import tiktoken

from app.providers.base import ChatMessage, ChatRequest

TokenCounter = Callable[[str], int]

_BUNDLED_ENCODINGS = Path(__file__).parent / "tiktoken_cache"
# Role markers and separators each message costs in OpenAI's chat format.
_TOKENS_PER_MESSAGE = 4
_REPLY_PRIMING_TOKENS = 3
OPENAI_FORMAT_PROVIDERS = frozenset({"openai", "azure"})


def estimate_tokens(text: str) -> int:
    """One token per three characters, rounded up: errs towards sending less, never more."""
    return math.ceil(len(text) / 3)


@dataclasses.dataclass(frozen=True, slots=True)
class BpeCounter:
    """Counts with a tiktoken encoding; every BPE token stands for at least one UTF-8 byte."""

    encoding: tiktoken.Encoding

    def __call__(self, text: str) -> int:
        return len(self.encoding.encode(text, disallowed_special=()))


@cache
def openai_counter(model: str) -> TokenCounter:
    """tiktoken's encoder for `model`; o200k_base (GPT-4o's) for names it does not know."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_BUNDLED_ENCODINGS))
    try:
        encoding = tiktoken.encoding_for_model(model)
    except KeyError:
        encoding = tiktoken.get_encoding("o200k_base")
    return BpeCounter(encoding)


def warm_up(models: Iterable[tuple[str, str]]) -> None:
    """Load the encodings of the configured (provider, model) pairs now, at start-up: the
    first count of an encoding reads its BPE file (a quarter of a second), which would
    otherwise land on the first request."""
    for provider, model in models:
        if provider in OPENAI_FORMAT_PROVIDERS:
            openai_counter(model)


def counter_for(provider: str, model: str) -> TokenCounter:
    return openai_counter(model) if provider in OPENAI_FORMAT_PROVIDERS else estimate_tokens


def utf8_bytes(text: str) -> int:
    """A ceiling on a `BpeCounter`'s count, at the cost of one encode in C."""
    return len(text.encode("utf-8", "surrogatepass"))


def prompt_tokens(request: ChatRequest, count: TokenCounter) -> int:
    """Tokens the request's prompt takes, with the chat format's per-message overhead."""
    texts = [message.content for message in request.messages]
    if request.system_prompt:
        texts.append(request.system_prompt)
    return sum(count(text) + _TOKENS_PER_MESSAGE for text in texts) + _REPLY_PRIMING_TOKENS


def fit_to_window(
    request: ChatRequest, *, context_window: int, reply_reserve: int, count: TokenCounter
) -> ChatRequest:
    """The request with its oldest turns left out until prompt and reply fit the window.

    The system prompt and the newest message always stay; if they alone do not fit, they are
    sent anyway and the provider's own error says so.
    """
    budget = context_window - reply_reserve
    # Most prompts are far below the window: a ceiling that costs no tokenizing proves it.
    if isinstance(count, BpeCounter) and prompt_tokens(request, utf8_bytes) <= budget:
        return request
    if prompt_tokens(request, count) <= budget:
        return request
    fixed = _TOKENS_PER_MESSAGE + _REPLY_PRIMING_TOKENS
    if request.system_prompt:
        fixed += count(request.system_prompt) + _TOKENS_PER_MESSAGE
    newest, older = request.messages[-1], request.messages[:-1]
    used = fixed + count(newest.content)
    kept: list[ChatMessage] = []
    for message in reversed(older):
        cost = count(message.content) + _TOKENS_PER_MESSAGE
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    # Never open with an orphaned assistant reply whose question was left out.
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return dataclasses.replace(request, messages=(*kept, newest))
