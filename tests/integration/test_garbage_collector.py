"""A serving worker keeps the garbage collector off its start-up heap; a test process doesn't."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.core.config import Settings

StartApp = Callable[..., Any]


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """Whatever the app does to the collector is undone for the rest of the test session."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_a_serving_app_freezes_what_start_up_built_and_collects_less_often(
    start_app: StartApp, settings: Settings, restored_collector: None
) -> None:
    gc.unfreeze()

    client: httpx.AsyncClient = await start_app(settings, tune_garbage_collector=True)

    assert gc.get_freeze_count() > 50_000  # the modules, schemas and tables, at the least
    assert gc.get_threshold()[0] == 10_000
    assert (await client.get("/health")).status_code == 200


async def test_an_app_started_as_tests_do_leaves_the_collector_alone(
    start_app: StartApp, settings: Settings, restored_collector: None
) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()

    await start_app(settings)

    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold
