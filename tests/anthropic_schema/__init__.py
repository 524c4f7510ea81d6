"""Anthropic's response schemas, pinned (README.md), as validators: what the `anthropic` SDKs
rely on, checked on what `/v1/messages` really sends (bodies, every stream event, errors)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from tests.openai_schema.traffic import Exchange, Recorder
from tests.sse import parse_frames

HERE = Path(__file__).parent
MESSAGE, EVENT, ERROR, COUNT = (
    "message.json",
    "stream_event.json",
    "error_response.json",
    "message_tokens_count.json",
)
# Stream events the SDK reads besides the message's own (keep-alives and failures).
_OUT_OF_BAND = {"ping": None, "error": ERROR}


def errors_of(schema: str, instance: Any) -> list[str]:
    """Every way `instance` breaks the pinned `schema` (none when it conforms)."""
    return [
        f"{'/'.join(map(str, error.instance_path)) or '(root)'}: {error.message}"
        for error in _validator(schema).iter_errors(instance)
    ]


@cache
def _validator(schema: str) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(json.loads((HERE / schema).read_text()))


def events_of(exchange: Exchange) -> list[tuple[str, Any]]:
    """A stream's (event name, data) pairs, in order."""
    frames = parse_frames(exchange.body.decode())
    return [(f.event or "message", json.loads(f.data)) for f in frames if f.data is not None]


def exchange_errors(exchange: Exchange) -> list[str]:
    """Every way one `/v1/messages*` exchange breaks Anthropic's schemas."""
    if exchange.status_code != 200:
        return errors_of(ERROR, exchange.json())
    if exchange.path.endswith("/count_tokens"):
        return errors_of(COUNT, exchange.json())
    if not exchange.streamed:
        return errors_of(MESSAGE, exchange.json())
    found: list[str] = []
    for name, data in events_of(exchange):
        if data.get("type") != name:
            found.append(f"event {name!r} carries data of type {data.get('type')!r}")
        schema = _OUT_OF_BAND.get(name, EVENT)
        if schema is not None:
            found.extend(f"{name}: {error}" for error in errors_of(schema, data))
    return found


def messages_exchanges(recorder: Recorder) -> list[Exchange]:
    """The calls to `/v1/messages` and `/v1/messages/count_tokens`, in order."""
    return [e for e in recorder.exchanges if "/v1/messages" in e.path]


def schema_violations(recorder: Recorder) -> list[str]:
    """Every violation in every recorded `/v1/messages*` exchange, with the exchange."""
    return [
        f"{error}\n  in {exchange.describe()}"
        for exchange in messages_exchanges(recorder)
        for error in exchange_errors(exchange)
    ]
