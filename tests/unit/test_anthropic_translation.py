"""The pure parts of /v1/messages: thinking budgets as effort bands, our problems as Anthropic's
statuses and error types, and stored replies as Anthropic's content blocks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from app.api.anthropic_compat.errors import anthropic_status_of, translate_problem
from app.providers.options import OptionSupport
from app.providers.registry import ModelChoice
from app.schemas.anthropic_messages import MessageCreate
from app.schemas.messages import MessageRead
from app.services.turns.anthropic_messages import effort_of, plan_message_turn
from app.services.turns.anthropic_replies import content_of, stop_reason_of, usage_of
from app.services.turns.request_options import InvalidChatRequest


def reply(**fields: Any) -> MessageRead:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "conversation_id": uuid.uuid4(),
        "role": "assistant",
        "content": "",
        "status": "completed",
        "provider": "mock",
        "model": "mock",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "cached_tokens": 30,
        "cache_write_tokens": 10,
        "cost_usd": None,
        "latency_ms": None,
        "time_to_first_token_ms": None,
        "finish_reason": "stop",
        "metadata_": {},
        "created_at": datetime.now(UTC),
    }
    return MessageRead.model_validate(values | fields)


@pytest.mark.parametrize(
    ("budget", "effort"),
    [(1024, "low"), (4095, "low"), (4096, "medium"), (16383, "medium"), (16384, "high")],
)
def test_a_thinking_budget_maps_to_the_effort_band_it_is_in(budget: int, effort: str) -> None:
    assert effort_of(budget) == effort


@dataclass
class _ThreeEfforts:
    """A provider whose `reasoning_effort` takes only OpenAI's older three values."""

    name: str = "three-efforts"
    option_support = OptionSupport({"reasoning_effort": lambda v: v in ("low", "medium", "high")})


@pytest.mark.parametrize("effort", ["xhigh", "max"])
def test_an_effort_the_provider_cannot_honour_is_refused_naming_output_config_effort(
    effort: str,
) -> None:
    choice = ModelChoice(cast(Any, _ThreeEfforts()), "m")
    body = MessageCreate.model_validate(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "Hi"}],
            "output_config": {"effort": effort},
        }
    )

    with pytest.raises(InvalidChatRequest) as raised:
        plan_message_turn(choice, body, None)

    [error] = raised.value.extra["errors"]
    assert error["loc"] == ["body", "output_config", "effort"]
    assert effort in error["msg"]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (422, "validation_error", (400, "invalid_request_error")),
        (401, "unauthenticated", (401, "authentication_error")),
        (422, "unknown_model", (404, "not_found_error")),
        (404, "conversation_not_found", (404, "not_found_error")),
        (402, "budget_exceeded", (429, "rate_limit_error")),
        (429, "rate_limited", (429, "rate_limit_error")),
        (409, "generation_in_progress", (409, "invalid_request_error")),
        (422, "idempotency_key_reused", (422, "invalid_request_error")),
        (413, "payload_too_large", (413, "invalid_request_error")),
        (502, "upstream_error", (500, "api_error")),
        (504, "upstream_timeout", (504, "timeout_error")),
        (503, "not_ready", (529, "overloaded_error")),
    ],
)
def test_our_problems_get_anthropics_status_and_type(
    status: int, code: str, expected: tuple[int, str]
) -> None:
    assert anthropic_status_of(status, code) == expected


def test_a_validation_problem_names_its_field_without_pydantics_branch_names() -> None:
    problem = {
        "code": "validation_error",
        "detail": "the request is not valid",
        "errors": [
            {"loc": ["body", "messages", 0, "content", "str"], "msg": "Value error, too long"}
        ],
    }

    status, body = translate_problem(422, problem)

    assert status == 400
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "messages.0.content: too long",
    }


def test_blocks_come_as_thinking_text_then_tool_uses_with_inputs_parsed() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}},
    ]
    stored = reply(
        content="Let me check.",
        reasoning="Hmm.",
        tool_calls=calls,
        finish_reason="tool_calls",
        metadata_={"reasoning_signature": "sig"},
    )

    blocks = [block.model_dump() for block in content_of(stored)]

    assert blocks == [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
        {"type": "text", "text": "Let me check.", "citations": None},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "c2", "name": "g", "input": {"_raw": "not json"}},
    ]
    assert stop_reason_of(stored.finish_reason) == "tool_use"


def test_usage_counts_input_without_cache_reads_and_writes() -> None:
    usage = usage_of(reply())

    assert (usage.input_tokens, usage.output_tokens) == (60, 20)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (30, 10)
