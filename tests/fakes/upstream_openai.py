"""The wire formats of OpenAI Chat Completions and of Azure OpenAI, for the fake upstream.

Pure functions of the request and of what to answer: no scripting, no I/O. The server in
`tests.fakes.upstream` decides *what* to answer; these dialects say it as the services do.
What the services refuse in a body is checked in `upstream_openai_checks`.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.upstream_openai_checks import JsonObject, Rejection, openai_error, reject_body

if TYPE_CHECKING:
    from tests.fakes.upstream import FakeToolCall, Reply

Headers = list[tuple[str, str]]

API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULTS = {"hate": SAFE, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}

# (type, code, message) per status, as api.openai.com words them.
OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-te****fake. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", None, "You are not allowed to sample from this model."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: (
        "tokens",
        "rate_limit_exceeded",
        "Rate limit reached for gpt-4o in organization org-fake on tokens per min (TPM): "
        "Limit 30000, Used 30000, Requested 120. Please try again in 2s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}


def _random_id(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def mask_key(key: str) -> str:
    """Mask a key as OpenAI's 401 message does: its start and its last four characters."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:5]}{'*' * (len(key) - 9)}{key[-4:]}"


def _sse(payload: JsonObject | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


@dataclass
class OpenAIDialect:
    """`POST /v1/chat/completions` on api.openai.com, `Authorization: Bearer <key>`."""

    api_key: str
    completion_id: str = field(default_factory=lambda: f"chatcmpl-{_random_id(29)}")
    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")
    malformed_body: bytes = b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": ['

    def headers(self) -> Headers:
        return [
            ("x-request-id", self.request_id),
            ("openai-version", "2020-10-01"),
            ("openai-processing-ms", "42"),
        ]

    def reject(self, query: dict[str, str], headers: dict[str, str], body: Any) -> Rejection | None:
        """The error the service gives before reaching a model, if any: auth, then the body."""
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            return 401, openai_error(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password. You can "
                "obtain an API key from https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
            )
        key = authorization[7:].strip()
        if key != self.api_key:
            return 401, openai_error(
                f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        return reject_body(body, model_required=True)

    def wants_stream(self, body: Any) -> bool:
        return bool(body.get("stream"))

    def reported_model(self, body: Any) -> str:
        """The model id a reply names when the script does not say: the requested one."""
        return str(body.get("model", ""))

    def prompt_text(self, body: Any) -> str:
        """The prompt's text: every message's text (parts too) and its tool calls."""
        parts: list[str] = []
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                parts.append(f"{function.get('name', '')}{function.get('arguments', '')}")
        return "".join(parts)

    def error(self, status: int, message: str | None, error_type: str | None) -> JsonObject:
        default_type, code, default_message = OPENAI_ERRORS.get(
            status,
            ("server_error", None, "The server had an error processing your request.")
            if status >= 500
            else ("invalid_request_error", None, "Invalid request."),
        )
        return openai_error(message or default_message, error_type or default_type, code)

    def usage(
        self,
        prompt: int,
        completion: int,
        cached: int,
        cache_write: int,
        reasoning: int = 0,
        cache_write_1h: int = 0,
    ) -> JsonObject:
        del cache_write, cache_write_1h  # OpenAI caches automatically and reports only reads.
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def message(
        self, text: str, model: str, finish_reason: str, usage: JsonObject, reply: Reply
    ) -> JsonObject:
        calls = [_tool_call(call) for call in reply.tool_calls]
        message: JsonObject = {
            "role": "assistant",
            # OpenAI says `null`, not "", when the reply is only tool calls.
            "content": None if calls and not text else text,
            "refusal": None,
            "annotations": [],
        }
        if reply.reasoning:  # vLLM's and DeepSeek's field; OpenAI's models show none
            message["reasoning_content"] = reply.reasoning
        if calls:
            message["tool_calls"] = calls
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_f00dfake01",
        }

    def _chunk(self, model: str, choices: list[JsonObject], body: Any) -> JsonObject:
        chunk: JsonObject = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_f00dfake01",
            "choices": choices,
        }
        if _includes_usage(body):
            chunk["usage"] = None
        return chunk

    def _delta(self, delta: JsonObject, finish_reason: str | None = None) -> JsonObject:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def stream(
        self,
        pieces: list[str],
        model: str,
        finish_reason: str,
        usage: JsonObject,
        body: Any,
        reply: Reply,
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The events of a streamed reply: (before the text: its role and reasoning; one per
        piece of text; after it: tool calls, the end, usage)."""
        calls = [_tool_call(call) for call in reply.tool_calls]
        call_deltas = [
            delta for index, call in enumerate(calls) for delta in _call_deltas(index, call)
        ]
        role: JsonObject = {"role": "assistant", "content": "", "refusal": None}
        if calls and not pieces and not reply.reasoning:
            # A reply of only tool calls: OpenAI's first chunk opens the first call too.
            role = {"role": "assistant", "content": None, **call_deltas.pop(0), "refusal": None}
        head = [self._sse_delta(model, role, body)]
        head.extend(
            self._sse_delta(model, {"content": None, "reasoning_content": piece}, body)
            for piece in _words(reply.reasoning)
        )
        content = [self._sse_delta(model, {"content": piece}, body) for piece in pieces]
        tail = [self._sse_delta(model, delta, body) for delta in call_deltas]
        tail.append(_sse(self._chunk(model, [self._delta({}, finish_reason)], body)))
        if _includes_usage(body):
            tail.append(_sse({**self._chunk(model, [], body), "usage": usage}))
        tail.append(_sse("[DONE]"))
        return head, content, tail

    def _sse_delta(self, model: str, delta: JsonObject, body: Any) -> bytes:
        return _sse(self._chunk(model, [self._delta(delta)], body))


def _tool_call(call: FakeToolCall) -> JsonObject:
    """A `tool_calls[]` item as OpenAI writes it, with an id like OpenAI's when none is set."""
    return {
        "id": call.id or f"call_{_random_id(24)}",
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _call_deltas(index: int, call: JsonObject) -> list[JsonObject]:
    """A tool call as OpenAI streams it: a first delta with its id, type, name and empty
    arguments, then one delta per token-sized piece of its arguments."""
    function = call["function"]
    opening = {
        "index": index,
        "id": call["id"],
        "type": "function",
        "function": {"name": function["name"], "arguments": ""},
    }
    pieces = re.findall(r"\w+|\W+", function["arguments"])
    return [
        {"tool_calls": [opening]},
        *({"tool_calls": [{"index": index, "function": {"arguments": p}}]} for p in pieces),
    ]


def _words(text: str) -> list[str]:
    """Word-sized pieces (leading whitespace kept) that concatenate back to `text`."""
    return re.findall(r"\s*\S+|\s+$", text)


def _includes_usage(body: Any) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


@dataclass
class AzureDialect(OpenAIDialect):
    """`POST /openai/deployments/{deployment}/chat/completions?api-version=...`, `api-key`.

    Replies as OpenAI does, plus Azure's content-filter annotations; a stream opens with
    Azure's chunk that has no choices (only `prompt_filter_results`).
    """

    deployment: str = ""
    deployments: frozenset[str] = frozenset()
    underlying_model: str = "gpt-4o-2024-11-20"

    def reported_model(self, body: Any) -> str:
        """Azure names the model behind the deployment, whatever the body says."""
        return self.underlying_model

    def headers(self) -> Headers:
        return [
            ("apim-request-id", str(uuid.uuid4())),
            ("x-request-id", self.request_id),
            ("x-ms-region", "East US"),
        ]

    def reject(self, query: dict[str, str], headers: dict[str, str], body: Any) -> Rejection | None:
        if not API_VERSION.fullmatch(query.get("api-version", "")):
            return 404, {"error": {"code": "404", "message": "Resource not found"}}
        if headers.get("api-key") != self.api_key:
            return 401, {
                "error": {
                    "code": "401",
                    "message": "Access denied due to invalid subscription key or wrong API "
                    "endpoint. Make sure to provide a valid key for an active subscription and "
                    "use a correct regional API endpoint for your resource.",
                }
            }
        if self.deployment not in self.deployments:
            return 404, {
                "error": {
                    "code": "DeploymentNotFound",
                    "message": "The API deployment for this resource does not exist. If you "
                    "created the deployment within the last 5 minutes, please wait a moment "
                    "and try again.",
                }
            }
        return reject_body(body, model_required=False)

    def error(self, status: int, message: str | None, error_type: str | None) -> JsonObject:
        default = self._default_message(status)
        return {"error": {"code": error_type or str(status), "message": message or default}}

    @staticmethod
    def _default_message(status: int) -> str:
        if status == 429:
            return (
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                "version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 "
                "pricing tier. Please retry after 2 seconds."
            )
        if status >= 500:
            return "The server had an error while processing your request. Sorry about that!"
        return "Invalid request."

    def message(
        self, text: str, model: str, finish_reason: str, usage: JsonObject, reply: Reply
    ) -> JsonObject:
        body = super().message(text, model, finish_reason, usage, reply)
        body["choices"][0]["content_filter_results"] = CONTENT_FILTER_RESULTS
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": CONTENT_FILTER_RESULTS}
        ]
        return body

    def stream(
        self,
        pieces: list[str],
        model: str,
        finish_reason: str,
        usage: JsonObject,
        body: Any,
        reply: Reply,
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        head, content, tail = super().stream(pieces, model, finish_reason, usage, body, reply)
        filters = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": CONTENT_FILTER_RESULTS}
            ],
        }
        return [_sse(filters), *head], content, tail
