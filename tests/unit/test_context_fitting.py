"""Fitting a conversation into a context window: oldest turns go first, the system prompt and
the newest message always stay, and OpenAI tokens are counted with the bundled encodings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.providers.base import ChatMessage, ChatRequest, ChatRole, Finished
from app.providers.context import (
    counter_for,
    estimate_tokens,
    fit_to_window,
    openai_counter,
    prompt_tokens,
    utf8_bytes,
)
from app.providers.mock import MockProvider
from app.providers.resilience import ResilientProvider, RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "sys"


def chars(text: str) -> int:
    """A counter that is easy to reason about: one token per character."""
    return len(text)


def conversation(*contents: str, system_prompt: str | None = SYSTEM) -> ChatRequest:
    """Alternating user/assistant messages, starting with the user."""
    roles: tuple[ChatRole, ChatRole] = ("user", "assistant")
    messages = tuple(ChatMessage(roles[i % 2], text) for i, text in enumerate(contents))
    return ChatRequest(model="gpt-4o", messages=messages, system_prompt=system_prompt)


# Five messages of 10 characters: each costs 14 with the per-message overhead; the system
# prompt 7; the reply priming 3. The whole prompt is 80.
HISTORY = conversation("user one..", "assistant1", "user two..", "assistant2", "user three")


def contents(request: ChatRequest) -> list[str]:
    return [message.content for message in request.messages]


class TestFitToWindow:
    def test_a_prompt_that_fits_is_returned_unchanged(self) -> None:
        assert prompt_tokens(HISTORY, chars) == 80

        fitted = fit_to_window(HISTORY, context_window=80, reply_reserve=0, count=chars)

        assert fitted is HISTORY

    def test_the_oldest_turns_are_left_out_first(self) -> None:
        fitted = fit_to_window(HISTORY, context_window=100, reply_reserve=40, count=chars)

        assert contents(fitted) == ["user two..", "assistant2", "user three"]
        assert fitted.system_prompt == SYSTEM
        assert prompt_tokens(fitted, chars) <= 60

    def test_the_reply_reserve_is_kept_free(self) -> None:
        fits = fit_to_window(HISTORY, context_window=80, reply_reserve=0, count=chars)
        reserved = fit_to_window(HISTORY, context_window=80, reply_reserve=1, count=chars)

        assert len(fits.messages) == 5
        assert len(reserved.messages) == 3

    def test_an_assistant_reply_is_never_left_without_its_question(self) -> None:
        # 45 leaves room for "assistant2" but not for "user two.." before it.
        fitted = fit_to_window(HISTORY, context_window=45, reply_reserve=0, count=chars)

        assert contents(fitted) == ["user three"]
        assert fitted.messages[0].role == "user"

    def test_the_newest_message_and_system_prompt_stay_even_when_alone_too_big(self) -> None:
        request = conversation("old question", "old answer", "x" * 500)

        fitted = fit_to_window(request, context_window=50, reply_reserve=10, count=chars)

        assert contents(fitted) == ["x" * 500]
        assert fitted.system_prompt == SYSTEM

    def test_without_a_system_prompt_its_room_goes_to_the_history(self) -> None:
        request = conversation(*contents(HISTORY), system_prompt=None)

        fitted = fit_to_window(request, context_window=59, reply_reserve=0, count=chars)

        assert contents(fitted) == ["user two..", "assistant2", "user three"]
        assert fitted.system_prompt is None

    def test_everything_but_the_messages_is_kept(self) -> None:
        request = ChatRequest(
            model="m",
            messages=HISTORY.messages,
            system_prompt=SYSTEM,
            temperature=0.3,
            max_tokens=7,
        )

        fitted = fit_to_window(request, context_window=60, reply_reserve=0, count=chars)

        assert (fitted.model, fitted.temperature, fitted.max_tokens) == ("m", 0.3, 7)


class TestCounting:
    def test_gpt_4o_tokens_are_counted_with_its_real_encoding(self) -> None:
        count = openai_counter("gpt-4o")

        assert count("hello world") == 2
        assert count("") == 0
        assert count("<|endoftext|>") > 1  # special tokens are text here, never an error

    def test_an_unknown_openai_model_falls_back_to_gpt_4o_s_encoding(self) -> None:
        assert openai_counter("my-finetune-xyz")("hello world") == 2

    def test_an_older_model_uses_its_own_bundled_encoding(self) -> None:
        # cl100k_base (GPT-4) spends more tokens than o200k_base (GPT-4o) on Russian.
        text = "Привет мир, как дела?"

        assert (openai_counter("gpt-4")(text), openai_counter("gpt-4o")(text)) == (10, 7)

    @pytest.mark.parametrize(
        ("provider", "uses_tiktoken"),
        [("openai", True), ("azure", True), ("anthropic", False), ("openai_compatible", False)],
    )
    def test_openai_format_providers_count_with_tiktoken_and_others_estimate(
        self, provider: str, uses_tiktoken: bool
    ) -> None:
        count = counter_for(provider, "gpt-4o")

        assert (count("hello world") == 2) is uses_tiktoken
        if not uses_tiktoken:
            assert count("hello world") == estimate_tokens("hello world") == 4

    def test_the_estimate_rounds_up_so_it_never_undercounts_short_texts(self) -> None:
        assert [estimate_tokens(t) for t in ("", "a", "abc", "abcd")] == [0, 1, 1, 2]

    def test_the_bundled_encodings_load_without_a_network(self) -> None:
        # A fresh interpreter, every proxy pointing at a closed port: a download would fail.
        env = {k: v for k, v in os.environ.items() if "CACHE_DIR" not in k}
        dead = "http://127.0.0.1:9"
        env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead)
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)
        code = (
            "from app.providers.context import openai_counter;"
            "print(openai_counter('gpt-4o')('hello world'), openai_counter('gpt-4')('hi'))"
        )

        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["2", "1"]


class TestFittingInTheRetryLayer:
    async def test_fitting_runs_off_the_event_loop(self) -> None:
        # Loading an encoding takes most of a second; other requests must not wait for it.
        def slow_fit(provider: str, request: ChatRequest) -> ChatRequest:
            time.sleep(0.3)
            return fit_to_window(request, context_window=45, reply_reserve=0, count=chars)

        provider = ResilientProvider(MockProvider(), RetryPolicy(), fit=slow_fit)
        long_history = conversation("x" * 20_000, "y" * 20_000, "user three")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            events = [event async for event in provider.stream(long_history)]
        finally:
            ticker.cancel()

        assert isinstance(events[-1], Finished)
        assert ticks >= 10

    async def test_a_short_prompt_is_fitted_without_a_thread_hop(self) -> None:
        fitted_on: list[threading.Thread] = []

        def fit(provider: str, request: ChatRequest) -> ChatRequest:
            fitted_on.append(threading.current_thread())
            return request

        provider = ResilientProvider(MockProvider(), RetryPolicy(), fit=fit)
        events = [event async for event in provider.stream(HISTORY)]

        assert isinstance(events[-1], Finished)
        assert fitted_on == [threading.current_thread()]


class TestTheByteCeiling:
    """Prompts far below the window are let through on their UTF-8 length, never tokenized;
    that is only sound because a BPE token always stands for at least one byte."""

    @pytest.mark.parametrize(
        "text",
        [
            "plain English words, the commonest case",
            "emoji 🙂🚀👩‍👩‍👧 and flags 🇫🇷",
            "中文、日本語、한국어 text",
            "'; DROP TABLE messages; --",
            "\x00\x01 control \t\n characters",
            "lone surrogate \ud800 from a JSON escape",
            " " * 500,
        ],
    )
    def test_bytes_are_never_fewer_than_tokens(self, text: str) -> None:
        for model in ("gpt-4o", "gpt-4"):
            assert utf8_bytes(text) >= openai_counter(model)(text)

    def test_a_prompt_over_the_ceiling_but_within_the_window_is_kept_whole(self) -> None:
        # 'hello ' is one token but six bytes: the ceiling says no, the exact count says yes.
        request = conversation("hello " * 100, "ok", "hello " * 100, system_prompt=None)
        count = openai_counter("gpt-4o")
        exact = prompt_tokens(request, count)
        ceiling = prompt_tokens(request, utf8_bytes)
        assert exact < ceiling

        fitted = fit_to_window(request, context_window=exact, reply_reserve=0, count=count)

        assert fitted is request

    def test_a_prompt_over_the_window_is_still_shortened(self) -> None:
        request = conversation("hello " * 100, "ok", "hello " * 100, system_prompt=None)
        count = openai_counter("gpt-4o")
        exact = prompt_tokens(request, count)

        fitted = fit_to_window(request, context_window=exact - 1, reply_reserve=0, count=count)

        assert contents(fitted) == ["hello " * 100]
