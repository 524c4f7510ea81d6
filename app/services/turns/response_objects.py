"""A stored reply as OpenAI's `response` object, and the settings it echoes.

A Responses turn stores what the request asked for (`echoed_settings`) in its reply's
`metadata["response"]`, so `GET /v1/responses/{id}`, the stream's last event and the create
call's answer are built by one function from the stored row and agree.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from app.db.models import MessageStatus
from app.schemas.messages import MessageRead
from app.schemas.responses import RESPONSE_PREFIX, ResponseCreate
from app.services.turns.chat_completions import created_of
from app.services.turns.response_items import function_call_items

# The reply metadata key that holds a Responses turn's settings (and marks it as one).
SETTINGS_KEY = "response"
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(reply_id: UUID) -> str:
    """A response's id: its stored reply's, so `/api/v1` and `/v1` name the same thing."""
    return f"{RESPONSE_PREFIX}{reply_id}"


def reply_id_of(response: str) -> UUID | None:
    """The stored reply a response id names; None when it names none."""
    if not response.startswith(RESPONSE_PREFIX):
        return None
    try:
        return UUID(response.removeprefix(RESPONSE_PREFIX))
    except ValueError:
        return None


def echoed_settings(body: ResponseCreate) -> dict[str, Any]:
    """What a response echoes of its request, as stored with the reply (OpenAI's defaults
    where the client left a field out)."""
    text = body.text.model_dump(mode="json", by_alias=True, exclude_none=True) if body.text else {}
    text.setdefault("format", {"type": "text"})
    reasoning = body.reasoning.model_dump(mode="json") if body.reasoning else {}
    return {
        "instructions": body.instructions,
        "tools": [_echoed_tool(tool) for tool in body.tools or ()],
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_output_tokens": body.max_output_tokens,
        "previous_response_id": body.previous_response_id,
        "text": text,
        "reasoning": {
            "effort": reasoning.get("effort"),
            "summary": reasoning.get("summary"),
        },
        "truncation": body.truncation or "disabled",
        "user": body.user,
        "metadata": body.metadata or {},
    }


def _echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as OpenAI echoes it: `parameters` and `strict` always present."""
    return {"parameters": None, "strict": None, **tool}


def settings_of(message: MessageRead) -> dict[str, Any] | None:
    """A reply's Responses settings; None when it was not a Responses turn."""
    settings = message.metadata.get(SETTINGS_KEY)
    return settings if isinstance(settings, dict) else None


def response_of(message: MessageRead, settings: dict[str, Any]) -> dict[str, Any]:
    """The `response` object of a stored reply (in progress, finished or failed)."""
    status, incomplete, error = _status_of(message)
    output = [] if status == "in_progress" else output_of(message, item_status=_item_status(status))
    body = {
        "id": response_id(message.id),
        "object": "response",
        "created_at": created_of(message.id),
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": message.model or "",
        "output": output,
        "store": True,
        "background": False,
        **{key: value for key, value in settings.items() if key != "deleted"},
    }
    if status != "in_progress":  # the schema has no null usage: left out until known
        body["usage"] = usage_of(message)
    if body["user"] is None:
        del body["user"]
    return body


def _status_of(message: MessageRead) -> tuple[str, dict[str, str] | None, dict[str, str] | None]:
    if message.status == MessageStatus.IN_PROGRESS:
        return "in_progress", None, None
    if message.status == MessageStatus.FAILED:
        failure = message.metadata.get("error")
        detail = failure.get("detail") if isinstance(failure, dict) else None
        return "failed", None, {"code": "server_error", "message": str(detail or "failed")}
    if message.status == MessageStatus.CANCELLED:
        return "cancelled", None, None
    reason = _INCOMPLETE_REASONS.get(message.finish_reason or "")
    if reason is not None:
        return "incomplete", {"reason": reason}, None
    return "completed", None, None


def _item_status(status: str) -> str:
    return "completed" if status == "completed" else "incomplete"


def output_of(message: MessageRead, *, item_status: str = "completed") -> list[dict[str, Any]]:
    """A reply's output items in order: its reasoning, its text, then its function calls."""
    items: list[dict[str, Any]] = []
    if message.reasoning:
        items.append(reasoning_item(message.id, message.reasoning))
    if message.content or not message.tool_calls:
        items.append(message_item(message.id, message.content, status=item_status))
    items.extend(function_call_items(message.id, message.tool_calls or []))
    return items


def reasoning_item(reply_id: UUID, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"type": "reasoning", "id": f"rs_{reply_id.hex}", "summary": [], "content": content}


def message_item(reply_id: UUID, text: str | None, *, status: str) -> dict[str, Any]:
    """The reply's text as an output message (empty content while it has just started)."""
    content = [] if text is None else [output_text(text)]
    return {
        "type": "message",
        "id": message_item_id(reply_id),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def message_item_id(reply_id: UUID) -> str:
    return f"msg_{reply_id.hex}"


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def usage_of(message: MessageRead) -> dict[str, Any]:
    """A reply's tokens as the Responses API reports them."""
    return {
        "input_tokens": message.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": message.cached_tokens,
            "cache_write_tokens": message.cache_write_tokens,
        },
        "output_tokens": message.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": message.reasoning_tokens},
        "total_tokens": message.total_tokens,
    }
