"""Fit a conversation into a model's context window by leaving out its oldest turns.

Counted with tiktoken for OpenAI-format models (its BPE files ship with the service, so this
works offline); elsewhere with a deliberately generous estimate of one token per three
characters, since Anthropic and most open models spend more tokens per character than GPT-4o.
Tool definitions, tool calls and results, images and files are counted too. The stored
history is never changed: only the request sent to the provider is shortened.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import tiktoken

from app.providers.base import ChatMessage, ChatRequest, ContentPart
from app.providers.image_size import image_size

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
    """Tokens the request's prompt takes: its messages with the chat format's per-message
    overhead, their images, files and tool calls, and the tools it offers."""
    total = _REPLY_PRIMING_TOKENS + tools_tokens(request, count)
    if request.system_prompt:
        total += count(request.system_prompt) + _TOKENS_PER_MESSAGE
    for message in request.messages:
        total += count(message.content) + _TOKENS_PER_MESSAGE
        if message.parts or message.tool_calls:
            total += _attached_tokens(message, count)
    return total


def message_tokens(message: ChatMessage, count: TokenCounter) -> int:
    """Tokens one message of a prompt takes, with everything it carries."""
    tokens = count(message.content) + _TOKENS_PER_MESSAGE
    if message.parts or message.tool_calls:
        tokens += _attached_tokens(message, count)
    return tokens


def tools_tokens(request: ChatRequest, count: TokenCounter) -> int:
    """The tools a request offers, counted as their JSON text (OpenAI renders them into the
    prompt in a shape of its own, of about that length)."""
    tools = request.options.get("tools")
    if not tools:
        return 0
    return count(json.dumps(tools, ensure_ascii=False, separators=(",", ":")))


def _attached_tokens(message: ChatMessage, count: TokenCounter) -> int:
    """A message's images, files and tool calls (its text parts are its `content`). The
    reasoning an assistant message carries is not counted: providers drop it from later turns."""
    tokens = sum(part_tokens(part) for part in message.parts)
    return tokens + sum(count(call.name) + count(call.arguments) for call in message.tool_calls)


# OpenAI's published image costs (GPT-4o, GPT-4.1, o-series): a low-detail image is a flat 85;
# a high-detail one 85 plus 170 per 512-pixel tile of it, once scaled to fit 2048x2048 and
# then (when larger) to a shortest side of 768.
_IMAGE_BASE_TOKENS = 85
_IMAGE_TILE_TOKENS = 170
# An image whose size is not in the request (an https URL, a format read nowhere here) is
# counted as 1024x1024: 765 tokens at high detail, the size OpenAI's own examples use.
ASSUMED_IMAGE_SIZE = (1024, 1024)
# A file's base64 is decoded to bytes and counted as text at four bytes a token: a PDF costs
# its pages' text plus an image of each page, which lands in the same range. A file sent by
# id has no size here: it is counted as a few pages.
_FILE_BYTES_PER_TOKEN = 4
_FILE_BY_ID_TOKENS = 2_000


def part_tokens(part: ContentPart) -> int:
    """Tokens an image or file part takes (0 for text: it is the message's `content`)."""
    kind = part.get("type")
    if kind == "image_url":
        image = _mapping(part.get("image_url"))
        return image_tokens(str(image.get("url") or ""), image.get("detail"))
    if kind == "file":
        return file_tokens(_mapping(part.get("file")))
    return 0


def image_tokens(url: str, detail: object = "auto") -> int:
    """OpenAI's count for one image; `auto` is counted as `high`, the most it can cost."""
    if detail == "low":
        return _IMAGE_BASE_TOKENS
    width, height = image_size(url) or ASSUMED_IMAGE_SIZE
    width, height = max(width, 1), max(height, 1)
    if (longest := max(width, height)) > 2048:
        width, height = max(width * 2048 // longest, 1), max(height * 2048 // longest, 1)
    if (shortest := min(width, height)) > 768:
        width, height = width * 768 // shortest, height * 768 // shortest
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return _IMAGE_BASE_TOKENS + _IMAGE_TILE_TOKENS * tiles


def file_tokens(file: Mapping[str, Any]) -> int:
    """An estimate for one file part from its size (`file_data` is a base64 data URL)."""
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        return _FILE_BY_ID_TOKENS
    encoded = len(data) - (data.find(",") + 1)
    return math.ceil(encoded * 3 / 4 / _FILE_BYTES_PER_TOKEN)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def fit_to_window(
    request: ChatRequest, *, context_window: int, reply_reserve: int, count: TokenCounter
) -> ChatRequest:
    """The request with its oldest turns left out until prompt and reply fit the window.

    The system prompt, the tools and the newest message always stay (with the tool call a
    newest tool result answers); if they alone do not fit, they are sent anyway and the
    provider's own error says so. A tool call and its results are kept or left out together.
    """
    budget = context_window - reply_reserve
    # Most prompts are far below the window: a ceiling that costs no tokenizing proves it.
    if isinstance(count, BpeCounter) and prompt_tokens(request, utf8_bytes) <= budget:
        return request
    if prompt_tokens(request, count) <= budget or not request.messages:
        return request
    fixed = _REPLY_PRIMING_TOKENS + tools_tokens(request, count)
    if request.system_prompt:
        fixed += count(request.system_prompt) + _TOKENS_PER_MESSAGE
    *older, newest = tool_steps(request.messages)
    used = fixed + sum(message_tokens(message, count) for message in newest)
    kept: list[tuple[ChatMessage, ...]] = []
    for step in reversed(older):
        cost = sum(message_tokens(message, count) for message in step)
        if used + cost > budget:
            break
        kept.append(step)
        used += cost
    kept.reverse()
    # Never open with an orphaned assistant reply whose question was left out, nor with a
    # tool result whose call was.
    while kept and kept[0][0].role in ("assistant", "tool"):
        kept.pop(0)
    messages = tuple(message for step in (*kept, newest) for message in step)
    return dataclasses.replace(request, messages=messages)


def tool_steps(messages: Sequence[ChatMessage]) -> list[tuple[ChatMessage, ...]]:
    """The messages in the steps a history may be cut between: each message alone, but an
    assistant message with tool calls together with the tool results that follow it."""
    steps: list[list[ChatMessage]] = []
    for message in messages:
        if message.role == "tool" and steps and steps[-1][0].tool_calls:
            steps[-1].append(message)
        else:
            steps.append([message])
    return [tuple(step) for step in steps]
