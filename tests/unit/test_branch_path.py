"""Turning the branch walk's result (Postgres arrays or SQLite rows) into a prompt path."""

from __future__ import annotations

from uuid import uuid4

from app.db.models import MessageRole
from app.providers.base import ChatMessage, ToolCall
from app.repositories.branch_path import BranchEnd, BranchPath
from app.repositories.messages import prompt_message

FIRST, REPLY, FAILED = uuid4(), uuid4(), uuid4()
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


class TestBranchPath:
    def test_arrays_give_the_end_and_the_messages_the_model_sees_in_order(self) -> None:
        # The end (a failed reply, not in the prompt) comes as arrays of one; the prompt
        # columns only for the messages the model sees, first to end.
        arrays = [
            [FAILED],
            [REPLY],
            ["assistant"],
            [FIRST, REPLY],
            ["user", "assistant"],
            ["hi 🎉", ""],
            [None, None],
            [None, [CALL]],
            [None, None],
        ]

        path = BranchPath.of_arrays(arrays)

        assert path.end == BranchEnd(FAILED, REPLY, "assistant")
        assert path.nodes == [
            (FIRST, ChatMessage("user", "hi 🎉")),
            (REPLY, ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "f", "{}"),))),
        ]

    def test_an_empty_walk_has_no_end_and_no_messages(self) -> None:
        assert BranchPath.of_arrays([None] * 9) == BranchPath(None, [])
        assert BranchPath.of_rows([]) == BranchPath(None, [])

    def test_rows_keep_the_end_even_when_the_model_does_not_see_it(self) -> None:
        rows = [
            (FIRST, None, True, "user", "hi", None, None, None),
            (REPLY, FIRST, False, "assistant", "", None, None, None),
        ]

        path = BranchPath.of_rows(rows)

        assert path.end == BranchEnd(REPLY, FIRST, "assistant")
        assert path.nodes == [(FIRST, ChatMessage("user", "hi"))]


def test_every_stored_role_reads_back_as_a_prompt_role() -> None:
    for role in MessageRole:
        assert prompt_message(role, "x", None, None, None).role == role.value
        assert prompt_message(role.value, "x", None, None, None).role == role.value
