"""A Responses API request as the Chat Completions request the service's turn runs: each
field mapped to its Chat Completions name, or refused with a 400 naming it as the client sent
it (the Responses name, not the one it was mapped to)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.schemas.openai_compat import ChatCompletionCreate
from app.schemas.responses import ResponseCreate
from app.services.turns.request_options import InvalidChatRequest
from app.services.turns.response_items import (
    chat_messages_of,
    chat_tool_choice_of,
    chat_tools_of,
)

# Chat Completions names -> the Responses names a client sent them under.
_FIELD_NAMES = {
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "verbosity": "text.verbosity",
    "reasoning_effort": "reasoning.effort",
    "messages": "input",
}
# Passed to the chat turn under the same name.
_SAME_NAMES = (
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "metadata",
    "user",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
)


def refuse_unserved(body: ResponseCreate) -> None:
    """A 400 naming the first field this service cannot honour on any provider."""
    for name in body.model_extra or {}:
        raise InvalidChatRequest(name, f"Unrecognized request argument supplied: {name}")
    refusals: list[tuple[bool, str, str]] = [
        (
            body.store is False,
            "store",
            "every reply is stored and charged: `store: false` "
            "cannot be honoured (delete the response instead)",
        ),
        (bool(body.background), "background", "background responses are not supported"),
        (body.conversation is not None, "conversation", "use `previous_response_id`"),
        (body.prompt is not None, "prompt", "stored prompts are not supported"),
        (bool(body.include), "include", "no extra output data can be included"),
        (body.truncation == "auto", "truncation", "only `disabled` is supported"),
        (body.max_tool_calls is not None, "max_tool_calls", "is not supported"),
        (bool(body.top_logprobs), "top_logprobs", "log probabilities are not returned"),
        (
            body.reasoning is not None
            and (body.reasoning.summary or body.reasoning.generate_summary) is not None,
            "reasoning.summary",
            "reasoning summaries are not supported",
        ),
    ]
    for refused, name, reason in refusals:
        if refused:
            raise InvalidChatRequest(name, reason)


def chat_body_of(body: ResponseCreate) -> ChatCompletionCreate:
    """The Chat Completions request a Responses request asks for."""
    chat: dict[str, Any] = {
        "model": body.model,
        "messages": chat_messages_of(body.instructions, body.input),
    }
    for name in _SAME_NAMES:
        if name in body.model_fields_set:
            chat[name] = getattr(body, name)
    if body.tools is not None:
        chat["tools"] = chat_tools_of(body.tools)
    if body.tool_choice is not None:
        chat["tool_choice"] = chat_tool_choice_of(body.tool_choice)
    if body.max_output_tokens is not None:
        chat["max_completion_tokens"] = body.max_output_tokens
    if body.text is not None and body.text.verbosity is not None:
        chat["verbosity"] = body.text.verbosity
    if body.text is not None and body.text.format is not None:
        chat["response_format"] = _response_format_of(body)
    if body.reasoning is not None and body.reasoning.effort is not None:
        chat["reasoning_effort"] = body.reasoning.effort
    try:
        return ChatCompletionCreate.model_validate(chat)
    except ValidationError as error:
        first = error.errors()[0]
        raise renamed(".".join(map(str, first["loc"])), first["msg"]) from None


def _response_format_of(body: ResponseCreate) -> dict[str, Any]:
    assert body.text is not None
    assert body.text.format is not None
    given = body.text.format.model_dump(mode="json", by_alias=True, exclude_none=True)
    kind = given.pop("type")
    if kind != "json_schema":
        return {"type": kind}
    return {"type": "json_schema", "json_schema": given}


def renamed(field: str, reason: str) -> InvalidChatRequest:
    head, _, rest = field.partition(".")
    if head == "messages":
        return InvalidChatRequest("input", reason)
    return InvalidChatRequest(".".join(filter(None, [_FIELD_NAMES.get(head, head), rest])), reason)
