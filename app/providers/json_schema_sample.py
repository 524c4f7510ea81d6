"""A deterministic instance of a JSON Schema, for replies the mock provider must shape.

Covers the subset OpenAI's structured outputs and function parameters accept: objects
(`properties`, `required`), arrays (`items`, `minItems`, `maxItems`), strings (`enum`,
`const`, `format`, `minLength`, `maxLength`), integers and numbers (`minimum`, `maximum`,
exclusive bounds, `multipleOf`), booleans, null, `anyOf`/`oneOf`, type lists and `$ref`s into
`$defs`/`definitions`. A `pattern` is not followed: nothing short of a regex generator could.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Past this depth a recursive schema gets only what it requires: no optional properties,
# no items beyond `minItems`, the null branch where there is one.
_SHALLOW = 6
# A schema that recurses through required properties has no finite instance.
_GIVE_UP = 64

# A fixed value that satisfies each `format` OpenAI lists for structured outputs.
_FORMATS: Mapping[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
}


def sample_instance(
    schema: Mapping[str, Any] | bool | None,
    *,
    text: str = "",
    strings: Mapping[str, str] | None = None,
) -> Any:
    """A value valid against `schema`, the same every time: its strings are `strings[name]`
    for a property called `name` (when that value fits), else `text`."""
    if not isinstance(schema, Mapping):
        return {}
    return _Sampler(schema, text, strings or {}).sample(schema, "", 0)


class _Sampler:
    __slots__ = ("root", "strings", "text")

    def __init__(self, root: Mapping[str, Any], text: str, strings: Mapping[str, str]) -> None:
        self.root = root
        self.text = text
        self.strings = strings

    def sample(self, schema: Any, name: str, depth: int) -> Any:
        if depth > _GIVE_UP or not isinstance(schema, Mapping):
            return None
        if "$ref" in schema:
            return self.sample(self._resolve(str(schema["$ref"])), name, depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema and schema["enum"]:
            return self._enum(list(schema["enum"]), name)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            return self.sample(self._branch(branches, depth), name, depth + 1)
        kind = _type_of(schema, shallow=depth <= _SHALLOW)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "string":
            return self._string(schema, name)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        return None

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        return {
            key: self.sample(sub, key, depth + 1)
            for key, sub in properties.items()
            if depth <= _SHALLOW or key in required
        }

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        least = int(schema.get("minItems") or 0)
        most = schema.get("maxItems")
        length = least if depth > _SHALLOW else max(least, 1)
        if most is not None:
            length = min(length, int(most))
        return [self.sample(schema.get("items", {}), name, depth + 1) for _ in range(length)]

    def _string(self, schema: Mapping[str, Any], name: str) -> str:
        form = schema.get("format")
        value = _FORMATS.get(form, self.text) if form else self.strings.get(name, self.text)
        least, most = int(schema.get("minLength") or 0), schema.get("maxLength")
        value = value.ljust(least, "x")
        return value if most is None else value[: int(most)]

    def _enum(self, values: list[Any], name: str) -> Any:
        given = self.strings.get(name)
        return given if given in values else values[0]

    def _branch(self, branches: list[Any], depth: int) -> Any:
        """The first branch that is not null, or the null one once deep in a recursion."""
        nulls = [b for b in branches if _is_null(b)]
        others = [b for b in branches if not _is_null(b)]
        if depth > _SHALLOW and nulls:
            return nulls[0]
        return (others or branches)[0]

    def _resolve(self, ref: str) -> Any:
        """A `#/...` JSON pointer into the root schema (`#` is the root itself)."""
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for token in ref[1:].split("/")[1:]:
            key = token.replace("~1", "/").replace("~0", "~")
            node = node.get(key) if isinstance(node, Mapping) else None
        return node if isinstance(node, Mapping) else {}


def _is_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _type_of(schema: Mapping[str, Any], *, shallow: bool) -> str | None:
    """The schema's type (a type list's first non-null one, or null once deep)."""
    kind = schema.get("type")
    if isinstance(kind, list):
        concrete = [k for k in kind if k != "null"]
        if "null" in kind and (not shallow or not concrete):
            return "null"
        return str(concrete[0]) if concrete else None
    if kind is None:
        if "properties" in schema:
            return "object"
        return "array" if "items" in schema else None
    return str(kind)


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    """0 when the bounds allow it, else the allowed value nearest a bound, on `multipleOf`'s
    grid (an integer's grid is 1)."""
    step = schema.get("multipleOf") or (1 if integer else None)
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(above, bool):  # draft 4: a flag that makes `minimum` exclusive
        above, low = (low, None) if above else (None, low)
    if isinstance(below, bool):
        below, high = (high, None) if below else (None, high)
    floor = max((b for b in (low, above) if b is not None), default=None)
    ceiling = min((b for b in (high, below) if b is not None), default=None)

    def allowed(value: float) -> bool:
        return (
            (low is None or value >= low)
            and (high is None or value <= high)
            and (above is None or value > above)
            and (below is None or value < below)
        )

    candidates: list[float] = [0]
    if floor is not None:
        candidates.append(_on_grid(floor, step, up=True))
    if ceiling is not None:
        candidates.append(_on_grid(ceiling, step, up=False))
    if floor is not None and ceiling is not None:
        candidates.append(_on_grid((floor + ceiling) / 2, step, up=True))
    elif floor is not None:
        candidates.append(_on_grid(floor + 1, step, up=True))
    elif ceiling is not None:
        candidates.append(_on_grid(ceiling - 1, step, up=False))
    value = next((v for v in candidates if allowed(v)), candidates[-1])
    return int(value) if integer else float(value)


def _on_grid(value: float, step: float | None, *, up: bool) -> float:
    if not step:
        return value
    return (math.ceil(value / step) if up else math.floor(value / step)) * step
