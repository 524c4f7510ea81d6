"""The history as the Messages API takes it: alternating turns that start with the user, and
the client's prompt-caching breakpoints on the blocks they mark."""

from __future__ import annotations

from typing import Any

import anthropic

from app.providers.anthropic_requests import MessagesRequest, to_anthropic_messages
from app.providers.base import CacheBreak, ChatMessage, ChatRequest, ChatRole, ToolCall, text_pieces
from app.services.turns.turn_messages import redacted_request


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


EPHEMERAL: Any = {"type": "ephemeral"}


class TestCacheBreakpoints:
    """Breakpoints (`CacheBreak`) reach the block that ends the prefix the client marked."""

    def test_a_breakpoint_at_the_end_of_a_text_turn_makes_it_one_marked_block(self) -> None:
        messages = (ChatMessage("user", "Hello", cache_breaks=(CacheBreak(5),)),)

        assert to_anthropic_messages(messages) == [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello", "cache_control": EPHEMERAL}],
            }
        ]

    def test_a_breakpoint_inside_a_text_cuts_it_where_the_marked_block_ended(self) -> None:
        said = ChatMessage("user", "Part one. Part two.", cache_breaks=(CacheBreak(10, "1h"),))

        [turn] = to_anthropic_messages((said,))

        assert turn["content"] == [
            {
                "type": "text",
                "text": "Part one. ",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
            {"type": "text", "text": "Part two."},
        ]

    def test_a_marked_message_is_not_joined_to_the_next_one_of_its_role(self) -> None:
        messages = (
            ChatMessage("user", "First try", cache_breaks=(CacheBreak(9),)),
            ChatMessage("user", "Second try"),
        )

        assert to_anthropic_messages(messages)[0]["content"] == [
            {"type": "text", "text": "First try", "cache_control": EPHEMERAL},
            {"type": "text", "text": "Second try"},
        ]

    def test_parts_are_marked_by_index(self) -> None:
        image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        parts = ({"type": "text", "text": "Look:"}, image, {"type": "text", "text": "What?"})
        said = ChatMessage("user", "Look:What?", parts=parts, cache_breaks=(CacheBreak(1),))

        [turn] = to_anthropic_messages((said,))

        assert turn["content"] == [
            {"type": "text", "text": "Look:"},
            {
                "type": "image",
                "source": {"type": "url", "url": "https://example.com/a.png"},
                "cache_control": EPHEMERAL,
            },
            {"type": "text", "text": "What?"},
        ]

    def test_a_tool_call_and_a_tool_result_carry_their_marks(self) -> None:
        calls = (ToolCall("toolu_1", "f", "{}"), ToolCall("toolu_2", "g", "{}"))
        messages = (
            ChatMessage("user", "Go"),
            ChatMessage(
                "assistant", "", tool_calls=calls, cache_breaks=(CacheBreak(0, tool_call=True),)
            ),
            ChatMessage("tool", "1", tool_call_id="toolu_1"),
            ChatMessage("tool", "2", tool_call_id="toolu_2", cache_breaks=(CacheBreak(0, "5m"),)),
        )

        _, called, answered = to_anthropic_messages(messages)

        assert [b.get("cache_control") for b in called["content"]] == [EPHEMERAL, None]  # type: ignore[union-attr]
        assert [b.get("cache_control") for b in answered["content"]] == [  # type: ignore[union-attr]
            None,
            {"type": "ephemeral", "ttl": "5m"},
        ]

    def test_two_breakpoints_on_one_block_are_one_with_the_longer_ttl(self) -> None:
        assert text_pieces("abc", [CacheBreak(3, "5m"), CacheBreak(3, "1h"), CacheBreak(3)]) == [
            ("abc", CacheBreak(3, "1h"))
        ]

    def test_a_message_is_the_same_message_whatever_its_breakpoints(self) -> None:
        # A client repeating its history with the breakpoint moved on repeats the same messages.
        assert ChatMessage("user", "Hi", cache_breaks=(CacheBreak(2),)) == ChatMessage("user", "Hi")


class TestTheRequest:
    def request(self, **fields: Any) -> ChatRequest:
        return ChatRequest(
            **{"model": "claude", "messages": (ChatMessage("user", "Hi"),), **fields}
        )

    def test_a_marked_system_prompt_is_sent_as_blocks_without_the_joining_blank_line(self) -> None:
        request = self.request(
            system_prompt="Be terse.\n\nKnow this.\n\nToday.",
            system_cache_breaks=(CacheBreak(9), CacheBreak(21, "1h")),
        )

        assert MessagesRequest.of("anthropic", request, 100).system == [
            {"type": "text", "text": "Be terse.", "cache_control": EPHEMERAL},
            {
                "type": "text",
                "text": "Know this.",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
            {"type": "text", "text": "Today."},
        ]

    def test_an_unmarked_system_prompt_stays_a_string(self) -> None:
        assert MessagesRequest.of(
            "anthropic", self.request(system_prompt="Be terse."), 100
        ).system == ("Be terse.")

    def test_a_marked_tool_carries_its_cache_control(self) -> None:
        tools = [
            {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
            for name in ("a", "b")
        ]
        request = self.request(options={"tools": tools}, tool_cache_breaks=(CacheBreak(1),))

        sent = MessagesRequest.of("anthropic", request, 100).tools

        assert [tool.get("cache_control") for tool in sent] == [None, EPHEMERAL]  # type: ignore[union-attr]

    def test_a_clients_output_config_is_sent_as_given_over_a_response_formats(self) -> None:
        derived = {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {"type": "object"}},
        }
        given = {"effort": "high", "format": {"type": "json_schema", "schema": {"x": 1}}}

        both = self.request(options={"response_format": derived, "output_config": given})
        effort_only = self.request(
            options={"response_format": derived, "output_config": {"effort": "low"}}
        )

        assert MessagesRequest.of("anthropic", both, 100).output_config == given
        # One format, never two: the response format's fills in what the client left out.
        assert MessagesRequest.of("anthropic", effort_only, 100).output_config == {
            "format": {"type": "json_schema", "schema": {"type": "object"}},
            "effort": "low",
        }
        assert MessagesRequest.of("anthropic", both, 100).thinking is anthropic.omit

    def test_masking_personal_data_keeps_each_breakpoint_at_the_end_of_its_block(self) -> None:
        request = self.request(
            system_prompt="Mail bob@example.com\n\nRules.",
            system_cache_breaks=(CacheBreak(20),),
            messages=(
                ChatMessage("user", "I am ann@example.com. Hi", cache_breaks=(CacheBreak(21),)),
            ),
        )

        masked = redacted_request(request)

        assert masked.system_prompt == "Mail [email]\n\nRules."
        assert masked.system_cache_breaks == (CacheBreak(12),)
        assert masked.messages[0].content == "I am [email]. Hi"
        assert masked.messages[0].cache_breaks == (CacheBreak(13),)
