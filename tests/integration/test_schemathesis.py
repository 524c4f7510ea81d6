"""Generated requests, valid and invalid, against every operation in /openapi.json: never a 5xx.

The schema is the app's own OpenAPI document, read once at collection; each generated case is
then sent in-process to a fresh app started on the backend under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from app.core.config import Environment, Settings
from app.main import create_app

# Bounded: every operation on both backends stays well under a minute in total.
MAX_EXAMPLES = 25

# Building the document starts nothing: no engine, no connection, no lifespan.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None, app_env=Environment.TEST, log_format="json")).openapi()
)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], database="none"
)


@pytest.fixture
def app(make_settings: Callable[..., Settings], clean_database: None) -> Iterator[FastAPI]:
    """A fresh app on this backend's migrated database; schemathesis runs its lifespan."""
    fresh = create_app(make_settings())
    try:
        yield fresh
    finally:
        asgi.shutdown_lifespans()  # disposes the app's engine before its database is cleaned


@pytest.fixture
def conversation_for(app: FastAPI) -> Callable[[str], str]:
    """A real conversation for a case: one shared by reads and writes, a new one per DELETE."""
    shared: list[str] = []

    def conversation(method: str) -> str:
        if method.upper() == "DELETE":
            return conversation_with_a_turn(app)
        if not shared:
            shared.append(conversation_with_a_turn(app))
        return shared[0]

    return conversation


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(
    case: schemathesis.Case[Any], app: FastAPI, conversation_for: Callable[[str], str]
) -> None:
    if case.path_parameters and is_uuid(case.path_parameters.get("conversation_id")):
        # A random id only ever reaches the 404; a real conversation reaches the handler.
        case.path_parameters["conversation_id"] = conversation_for(case.method)
    case.call_and_validate(app=app, checks=[not_a_server_error])


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def conversation_with_a_turn(app: FastAPI) -> str:
    with asgi.get_client(app) as client:  # type: ignore[arg-type]
        created = client.post("/api/v1/conversations", json={"title": "generated"})
        assert created.status_code == 201, created.text
        conversation_id: str = created.json()["id"]
        turn = client.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"content": "Hello"}
        )
        assert turn.status_code == 201, turn.text
    return conversation_id
