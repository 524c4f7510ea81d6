"""OpenAI's own schemas for a chat completion and a stream chunk, pinned (README.md), as
validators: what any OpenAI client may rely on, checked on what `/v1` really sends.

The copy is OpenAPI 3.1 with a few OpenAPI 3.0 `nullable: true` left in it (on a chunk's
`finish_reason`, `logprobs` and `usage`); they are read as OpenAPI means them, "or null",
since JSON Schema 2020-12 alone would ignore the keyword and refuse every `null` there.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

SCHEMA_FILE = Path(__file__).with_name("chat_completion.json")
COMPLETION = "CreateChatCompletionResponse"
CHUNK = "CreateChatCompletionStreamResponse"


def completion_errors(body: Any) -> list[str]:
    """Every way `body` breaks OpenAI's `chat.completion` schema (none when it conforms)."""
    return _errors(COMPLETION, body)


def chunk_errors(chunk: Any) -> list[str]:
    """Every way `chunk` breaks OpenAI's `chat.completion.chunk` schema."""
    return _errors(CHUNK, chunk)


def validate_completion(body: Any) -> None:
    """Fail, naming every violation, unless `body` is a valid `chat.completion`."""
    _assert_valid(COMPLETION, body)


def validate_chunk(chunk: Any) -> None:
    """Fail, naming every violation, unless `chunk` is a valid `chat.completion.chunk`."""
    _assert_valid(CHUNK, chunk)


def _assert_valid(name: str, instance: Any) -> None:
    errors = _errors(name, instance)
    assert not errors, f"not a valid {name}: {errors}\n{json.dumps(instance, indent=1)}"


def _errors(name: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.instance_path)) or '(root)'}: {error.message}"
        for error in _validator(name).iter_errors(instance)
    ]


@cache
def _validator(name: str) -> jsonschema_rs.Draft202012Validator:
    components = _with_nulls(json.loads(SCHEMA_FILE.read_text()))["components"]
    # The components ride along so `#/components/schemas/...` resolves inside one document.
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=False)


def _with_nulls(node: Any) -> Any:
    """`node` with each OpenAPI 3.0 `nullable: true` written as JSON Schema's "or null"."""
    if isinstance(node, list):
        return [_with_nulls(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _with_nulls(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted
