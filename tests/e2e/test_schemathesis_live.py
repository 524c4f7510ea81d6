"""Schemathesis against the running server's own /openapi.json, with auth on and a real key.

RELIABILITY.md promise 13: generated requests, valid and invalid, to every operation of a
real `python -m app` process never get a 5xx, and every response matches the documented
status codes, content types and body schemas. The key is issued by the CLI, as an operator would.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from app.core.config import Environment, Settings
from app.main import create_app
from tests.databases import REDIS_URL, postgres_database
from tests.e2e.conftest import LiveServer, create_key, start_server, stop_server

# Bounded: all operations together stay well under a minute; raise it for a deeper hunt.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# The operations to expect, from the app's own document (building it starts nothing); the
# test itself checks that the live server serves the same ones.
_DOCUMENT = create_app(Settings(_env_file=None, app_env=Environment.TEST)).openapi()
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, methods in _DOCUMENT["paths"].items()
    for method in methods
    if method in {"get", "post", "put", "patch", "delete"}
]


@dataclass
class LiveAPI:
    server: LiveServer
    key: str
    conversation_id: str
    schema: Any  # schemathesis's OpenApiSchema, loaded from the live URL

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
async def live_api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveAPI]:
    """One server with auth on, Postgres and Redis; a key for alice and one of her chats."""
    logs = tmp_path_factory.mktemp("schemathesis-live")
    async with postgres_database() as database_url:
        server = start_server(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": REDIS_URL,
                "AUTH_ENABLED": "true",
                "DEFAULT_PROVIDER": "mock",
            },
            logs / "server.log",
        )
        try:
            key = create_key(database_url, "alice")
            conversation_id = conversation_with_a_turn(server.base_url, key)
            schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", timeout=10)
            schema.config.generation.update(
                modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], database="none"
            )
            yield LiveAPI(server, key, conversation_id, schema)
        finally:
            stop_server(server)


def conversation_with_a_turn(base_url: str, key: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        created = http.post("/api/v1/conversations", json={"title": "generated"})
        assert created.status_code == 201, created.text
        conversation_id: str = created.json()["id"]
        turn = http.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"content": "Hello"}
        )
        assert turn.status_code == 201, turn.text
    return conversation_id


def test_the_live_server_serves_every_documented_operation(live_api: LiveAPI) -> None:
    live = sorted(result.ok().label for result in live_api.schema.get_all_operations())
    assert live == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_generated_request_gets_a_server_error_or_an_undocumented_response(
    live_api: LiveAPI, label: str
) -> None:
    operation = live_api.schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the live /openapi.json"
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        if case.path_parameters and is_uuid(case.path_parameters.get("conversation_id")):
            # A random id only reaches the 404; alice's conversation reaches the handler.
            case.path_parameters["conversation_id"] = live_api.conversation_id
        case.call_and_validate(
            base_url=live_api.server.base_url,
            headers=live_api.auth,
            checks=CHECKS,
            timeout=30,
        )

    run()


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
