"""The pinned schemas judge as OpenAI's spec does: its own examples pass, mistakes are named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.openai_schema import chunk_errors, completion_errors, validate_chunk

# OpenAI's own examples (the spec's `x-oaiMeta.example`, as JSON).
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The image shows a wooden boardwalk path.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}
CHUNK: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1694268190,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}


class TestPinnedSchema:
    def test_openai_s_own_examples_are_valid(self) -> None:
        assert completion_errors(COMPLETION) == []
        assert chunk_errors(CHUNK) == []

    def test_a_tool_call_completion_and_its_streamed_pieces_are_valid(self) -> None:
        calls = copy.deepcopy(COMPLETION)
        message = calls["choices"][0]
        message["finish_reason"] = "tool_calls"
        message["message"] |= {
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        }
        piece = copy.deepcopy(CHUNK)
        piece["choices"][0]["delta"] = {
            "tool_calls": [{"index": 0, "function": {"arguments": "{"}}]
        }

        assert completion_errors(calls) == []
        validate_chunk(piece)

    def test_the_usage_chunk_and_its_nulls_are_valid(self) -> None:
        usage = copy.deepcopy(CHUNK) | {
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }

        assert chunk_errors(usage) == []
        assert chunk_errors(CHUNK | {"usage": None}) == []

    @pytest.mark.parametrize(
        ("change", "error"),
        [
            ({"object": "chat.completion.chunk"}, 'object: "chat.completion.chunk" is not one of'),
            ({"system_fingerprint": None}, 'system_fingerprint: null is not of type "string"'),
            ({"created": "1741570283"}, 'created: "1741570283" is not of type "integer"'),
        ],
    )
    def test_a_wrong_field_is_named(self, change: dict[str, Any], error: str) -> None:
        errors = completion_errors(COMPLETION | change)

        assert len(errors) == 1
        assert errors[0].startswith(error)

    def test_a_null_tool_calls_and_a_missing_id_are_each_named(self) -> None:
        broken = copy.deepcopy(COMPLETION)
        del broken["id"]
        broken["choices"][0]["message"]["tool_calls"] = None

        assert sorted(completion_errors(broken)) == [
            '(root): "id" is a required property',
            'choices/0/message/tool_calls: null is not of type "array"',
        ]
