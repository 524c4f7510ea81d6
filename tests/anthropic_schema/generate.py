"""Write the pinned schemas (README.md) from the installed `anthropic` SDK's response types:
`python -m tests.anthropic_schema.generate`. Run only when the SDK pin moves, and commit the
diff with the new version in the README."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
from anthropic import types
from pydantic import TypeAdapter

HERE = Path(__file__).parent
# File name -> the SDK type it is the JSON Schema of.
SCHEMAS: dict[str, Any] = {
    "message.json": types.Message,
    "stream_event.json": types.RawMessageStreamEvent,
    "error_response.json": types.ErrorResponse,
    "message_tokens_count.json": types.MessageTokensCount,
}


def main() -> None:
    for name, type_ in SCHEMAS.items():
        # Validation mode: what the SDK accepts when it parses a response.
        schema = TypeAdapter(type_).json_schema(mode="validation")
        schema["$comment"] = f"generated from anthropic {anthropic.__version__}"
        (HERE / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
