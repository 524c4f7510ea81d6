"""OpenAI's Responses API schemas, pinned (README.md), as validators for what `/v1/responses`
sends: a `response` object, each stream event, a deletion and an input-items list."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from tests.openai_schema import _with_nulls

SCHEMA_FILE = Path(__file__).with_name("responses.json")
RESPONSE = "Response"
STREAM_EVENT = "ResponseStreamEvent"
DELETED = "DeleteResponseResponse"
ITEM_LIST = "ResponseItemList"
# The event schemas this service sends, by the `type` each one fixes.
_EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
    "error": "ResponseErrorEvent",
}
_INPUT_ITEMS = re.compile(r"/v1/responses/[^/]+/input_items$")


def response_body_errors(method: str, path: str, body: Any) -> list[str]:
    """Every way a non-streamed body of `method path` breaks its schema."""
    if method == "DELETE":
        return errors_of(DELETED, body)
    if _INPUT_ITEMS.search(path):
        return errors_of(ITEM_LIST, body)
    return errors_of(RESPONSE, body)


def stream_event_errors(event: Any) -> list[str]:
    """Every way one stream event's data breaks `ResponseStreamEvent`; when it does, the
    errors against the event schema its `type` names too (an `anyOf` alone says little)."""
    errors = errors_of(STREAM_EVENT, event)
    named = _EVENT_SCHEMAS.get(event.get("type")) if isinstance(event, dict) else None
    if errors and named is not None:
        errors += errors_of(named, event)
    return errors


def errors_of(name: str, instance: Any) -> list[str]:
    return [
        f"{name} {'/'.join(map(str, error.instance_path)) or '(root)'}: {error.message}"
        f" in {json.dumps(instance)[:300]}"
        for error in _validator(name).iter_errors(instance)
    ]


@cache
def _validator(name: str) -> jsonschema_rs.Draft202012Validator:
    components = _with_nulls(json.loads(SCHEMA_FILE.read_text()))["components"]
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
