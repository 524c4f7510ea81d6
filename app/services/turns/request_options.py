"""What a /v1 turn does with each option of the body: send it, map it, store it, or refuse it.

Never accept a field and ignore it: an option the chosen provider cannot honour is a 400 that
names it (`param`), before anything is stored. A value that changes nothing (`n: 1`,
`logprobs: false`, `tools: []`, `response_format: {"type": "text"}`, null) is no request at
all and is not sent. The /v1 table in docs/api/openai-compatible.md lists what each provider
does with each field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel

from app.errors import ChatAPIError
from app.providers.options import option_support_of
from app.providers.registry import ModelChoice
from app.schemas.openai_compat import ChatCompletionCreate


class InvalidChatRequest(ChatAPIError):
    """A body that is well-formed JSON but not a chat this service can run (400 under /v1)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_error"

    def __init__(self, field: str, reason: str) -> None:
        """`field` is a dotted path (`messages.2.content`), as pydantic's `loc` spells it."""
        super().__init__(
            "the request is not valid",
            extra={"errors": [{"loc": ["body", *field.split(".")], "msg": reason}]},
        )


# Served by the service itself, whatever the provider.
_SERVED = frozenset({"model", "messages", "stream", "stream_options"})
# Carried by `ChatRequest`'s own fields rather than its `options`.
_REQUEST_FIELDS = frozenset({"temperature", "top_p", "max_tokens", "stop"})


def _always(_: object) -> bool:
    return True


# Values that ask for nothing: OpenAI's defaults, and settings about absent tools.
_NO_OPS: Mapping[str, Callable[[object], bool]] = {
    "n": _always,  # only 1 validates
    "logprobs": lambda value: value is False,
    "top_logprobs": lambda value: value == 0,
    "frequency_penalty": lambda value: value == 0,
    "presence_penalty": lambda value: value == 0,
    "logit_bias": lambda value: value == {},
    "metadata": lambda value: value == {},
    "store": lambda value: value is False,
    "modalities": lambda value: value == ["text"],
    "response_format": lambda value: getattr(value, "type", None) == "text",
    "tools": lambda value: value == [],
    "functions": lambda value: value == [],
    "tool_choice": lambda value: value == "none",
    "function_call": lambda value: value == "none",
}

_FUNCTIONS = "`functions` and `function_call` are deprecated: use `tools` and `tool_choice`"
# Refused on every provider, and why.
_UNSERVED: Mapping[str, str] = {
    "functions": _FUNCTIONS,
    "function_call": _FUNCTIONS,
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "logprobs": "log probabilities are not returned by this service",
    "top_logprobs": "log probabilities are not returned by this service",
}


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """The options a body asks of its turn, checked against the provider that will answer.

    `requested` is every option that asks for something (OpenAI's names, values as sent);
    `unknown` names those OpenAI lacks (an OpenAI-compatible server's own); `sent` is what
    the provider's request carries in `ChatRequest.options`.
    """

    requested: Mapping[str, object] = field(default_factory=dict)
    unknown: frozenset[str] = frozenset()

    @property
    def sent(self) -> dict[str, Any]:
        return {k: v for k, v in self.requested.items() if k not in _REQUEST_FIELDS}


def turn_options(choice: ModelChoice, body: ChatCompletionCreate) -> TurnOptions:
    """The options of `body` that ask for something; a 400 naming the first one `choice`'s
    provider cannot honour (its message names the provider when only that one cannot)."""
    requested: dict[str, object] = {}
    for name in body.model_fields_set:
        if name in _SERVED:
            continue
        value = getattr(body, name)
        if value is None or ((no_op := _NO_OPS.get(name)) is not None and no_op(value)):
            continue
        requested[name] = _wire_value(value)
    extra = body.model_extra or {}
    requested.update(extra)
    if not requested:
        return TurnOptions()
    if body.max_completion_tokens is not None:
        # One limit, under the name the client used: `max_tokens` rides on ChatRequest.
        requested.pop("max_tokens", None)
    refuse_tool_settings_without_tools(requested)
    options = TurnOptions(requested, frozenset(extra))
    provider = choice.provider.name
    refused = option_support_of(choice.provider).first_refused(requested, options.unknown)
    if refused is None:
        return options
    if refused in options.unknown:
        raise InvalidChatRequest(refused, f"Unrecognized request argument supplied: {refused}")
    if refused in _UNSERVED:
        raise InvalidChatRequest(refused, _UNSERVED[refused])
    raise InvalidChatRequest(
        refused, f"the {provider!r} provider does not support {refused}={requested[refused]!r}"
    )


def refuse_tool_settings_without_tools(options: Mapping[str, object]) -> None:
    """`tool_choice` or `parallel_tool_calls` with no `tools` asks about nothing: a 400 (as
    OpenAI answers it), on every provider."""
    if "tools" in options:
        return
    for name in ("tool_choice", "parallel_tool_calls"):
        if name in options:
            raise InvalidChatRequest(name, f"`{name}` is only allowed when `tools` are given")


def _wire_value(value: object) -> object:
    """The value as JSON would carry it (a nested model as the fields the client set)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, list):
        return [_wire_value(item) for item in value]
    return value
