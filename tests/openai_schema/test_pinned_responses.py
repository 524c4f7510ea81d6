"""The pinned Responses schemas judge as OpenAI's spec does: its own example passes (with the
`cache_write_tokens` and `logprobs` its schemas now require and its example predates), and the
mistakes a server could make are named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.openai_schema.responses import errors_of, response_body_errors, stream_event_errors

# The spec's `Response` example, with what its schemas require since: `cache_write_tokens`
# (`ResponseUsage`) and `logprobs` (`OutputTextContent`).
RESPONSE: dict[str, Any] = {
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
    "object": "response",
    "created_at": 1741476777,
    "status": "completed",
    "completed_at": 1741476778,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "gpt-4o-2024-08-06",
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "A boardwalk.", "annotations": [], "logprobs": []}
            ],
        }
    ],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None, "context": None},
    "store": True,
    "temperature": 1,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 52,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 380,
    },
    "metadata": {},
}


def broken(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(RESPONSE)
    change(body)
    return body


class TestResponse:
    def test_openai_s_example_is_valid(self) -> None:
        assert response_body_errors("POST", "/v1/responses", RESPONSE) == []

    @pytest.mark.parametrize(
        "change",
        [
            lambda b: b["usage"]["input_tokens_details"].pop("cache_write_tokens"),
            lambda b: b.update(usage=None),  # no null usage: left out while it runs
            lambda b: b.pop("tool_choice"),
            lambda b: b["output"][0].pop("status"),
            lambda b: b["output"].append({"type": "function_call", "name": "f", "arguments": ""}),
            lambda b: b.update(status="done"),
        ],
    )
    def test_a_mistake_is_named(self, change: Any) -> None:
        assert response_body_errors("POST", "/v1/responses", broken(change))


class TestStreamEvents:
    def test_a_text_delta_needs_its_logprobs(self) -> None:
        delta = {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi",
            "sequence_number": 3,
        }
        assert stream_event_errors({**delta, "logprobs": []}) == []
        assert stream_event_errors(delta)

    def test_an_unknown_event_type_is_refused(self) -> None:
        assert stream_event_errors({"type": "response.thinking", "sequence_number": 0})


class TestLists:
    def test_an_input_item_list_holds_user_and_assistant_messages(self) -> None:
        items = {
            "object": "list",
            "data": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hi"}],
                    "status": "completed",
                },
                RESPONSE["output"][0],
            ],
            "first_id": "msg_1",
            "last_id": RESPONSE["output"][0]["id"],
            "has_more": False,
        }
        assert response_body_errors("GET", "/v1/responses/resp_1/input_items", items) == []
        assert errors_of("ResponseItemList", {**items, "first_id": None})
