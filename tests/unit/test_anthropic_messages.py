"""The history as the Messages API takes it: alternating turns that start with the user."""

from __future__ import annotations

from app.providers.anthropic_requests import to_anthropic_messages
from app.providers.base import ChatMessage, ChatRole


def history(*pairs: tuple[ChatRole, str]) -> tuple[ChatMessage, ...]:
    return tuple(ChatMessage(role, content) for role, content in pairs)


class TestToAnthropicMessages:
    def test_an_alternating_history_is_passed_as_it_is(self) -> None:
        messages = history(("user", "Hi"), ("assistant", "Hello"), ("user", "How are you?"))

        assert to_anthropic_messages(messages) == [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "How are you?"},
        ]

    def test_two_user_messages_in_a_row_become_one_turn(self) -> None:
        # What a failed reply leaves behind: its question, then the next one.
        messages = history(
            ("user", "First try"), ("user", "Second try"), ("assistant", "Answer"), ("user", "Ok")
        )

        assert to_anthropic_messages(messages) == [
            {"role": "user", "content": "First try\n\nSecond try"},
            {"role": "assistant", "content": "Answer"},
            {"role": "user", "content": "Ok"},
        ]

    def test_consecutive_assistant_messages_are_joined_too(self) -> None:
        messages = history(("user", "Q"), ("assistant", "A1"), ("assistant", "A2"), ("user", "Q2"))

        assert to_anthropic_messages(messages)[1] == {"role": "assistant", "content": "A1\n\nA2"}

    def test_assistant_messages_before_the_first_user_message_are_left_out(self) -> None:
        messages = history(("assistant", "Welcome!"), ("assistant", "Ask me"), ("user", "Hi"))

        assert to_anthropic_messages(messages) == [{"role": "user", "content": "Hi"}]

    def test_a_system_message_in_the_history_is_sent_as_user_text(self) -> None:
        messages = history(("user", "Hi"), ("system", "Be brief."), ("assistant", "Ok"))

        assert to_anthropic_messages(messages) == [
            {"role": "user", "content": "Hi\n\nBe brief."},
            {"role": "assistant", "content": "Ok"},
        ]

    def test_the_result_always_alternates_and_starts_with_the_user(self) -> None:
        roles: tuple[ChatRole, ...] = ("assistant", "user", "user", "system", "assistant")
        messages = history(*((role, f"m{i}") for i, role in enumerate(roles * 3)))

        turns = to_anthropic_messages(messages)

        assert [turn["role"] for turn in turns][0] == "user"
        assert all(a["role"] != b["role"] for a, b in zip(turns, turns[1:], strict=False))
        assert all(turn["content"] for turn in turns)

    def test_an_empty_history_is_empty(self) -> None:
        assert to_anthropic_messages(()) == []
