"""OpenAPI descriptions of the problem+json errors each route can return."""

from __future__ import annotations

from typing import Any

from app.api.problems import PROBLEM_JSON

_DESCRIPTIONS = {
    400: "upstream_rejected: the provider refused the request (its status: 400, 404, 413, ...)",
    401: "unauthenticated: missing, invalid, expired or revoked credentials",
    402: "budget_exceeded: the monthly spending budget is used up",
    404: "not found, or not yours (the two are indistinguishable)",
    409: "conflict",
    413: "body larger than the configured limit",
    415: "body is not application/json",
    422: "validation_error, unknown_model or provider_not_configured",
    429: "rate limited",
    502: "the provider failed",
    504: "the provider timed out",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"description": _DESCRIPTIONS[status], "content": {PROBLEM_JSON: {}}}
        for status in statuses
    }
