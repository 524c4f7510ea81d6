"""The README's one-minute tour, run as a newcomer would: every command, against a fresh server.

The tour's ```bash blocks are read from the front door itself, so the test and the page cannot
drift apart. The server is `python -m app` (what `make run` runs) started as from a fresh
clone: in an empty folder (no `.env`, the default SQLite file under `./data`), with none of the
service's variables from this shell (so no provider key), and with only the variables the
tour's start command sets. The other blocks run in order in one bash, as pasted into a second
terminal, with `.venv/bin/python` being this interpreter; each block's output is checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.providers.base import ChatMessage, ChatRequest
from app.providers.mock import reply_words
from tests.e2e.conftest import PROJECT_ROOT, LiveServer, free_port, healthy, stop_server

# The front door.
FRONT_DOOR = PROJECT_ROOT / "README.md"
TOUR_HEADING = "## A one-minute tour"
# Where the tour says the service listens; the test's server listens on a free port instead.
SERVED_AT = "http://127.0.0.1:8000"
MAX_LINES = 250
START_COMMAND = re.compile(r"^(?P<variables>(?:[A-Z][A-Z0-9_]*=\S+ )*)make run$")
BLOCK_END = re.compile(r"\n?@@ block (\d+) exit (\d+) @@\n")


def tour_section() -> str:
    text = FRONT_DOOR.read_text()
    start = text.index(f"\n{TOUR_HEADING}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", tour_section(), re.DOTALL | re.MULTILINE)


def tour_variables() -> dict[str, str]:
    """The variables of the tour's first block, `NAME=value ... make run`."""
    first = bash_blocks()[0].strip()
    match = START_COMMAND.match(first)
    assert match, f"the tour must start with `[NAME=value ...] make run`, not {first!r}"
    return dict(item.split("=", 1) for item in match["variables"].split())


def mock_reply(content: str) -> str:
    """What the mock answers to a last user message of `content` (it depends on nothing else)."""
    request = ChatRequest(model="mock", messages=(ChatMessage("user", content),))
    return "".join(w if i == 0 else f" {w}" for i, w in enumerate(reply_words(request)))


def clean_environment() -> dict[str, str]:
    """This shell's environment without any of the service's settings: no key, no `.env`."""
    settings = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
    return {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in settings and not name.upper().startswith("OTEL_")
    }


def start_fresh_server(variables: dict[str, str], workdir: Path) -> LiveServer:
    """`python -m app` in an empty folder, as `make run` starts it in a fresh clone."""
    port = free_port()
    env = {
        **clean_environment(),
        **variables,
        "PORT": str(port),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    log_path = workdir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return healthy(LiveServer(f"http://127.0.0.1:{port}", process, log_path))


def run_blocks(blocks: list[str], base_url: str, workdir: Path) -> list[str]:
    """Run the blocks in order in one bash in `workdir`; each block's output, checked to exit 0."""
    script = "".join(
        f"{block.replace(SERVED_AT, base_url)}\nprintf '\\n@@ block {n} exit %s @@\\n' \"$?\"\n"
        for n, block in enumerate(blocks)
    )
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    parts = BLOCK_END.split(result.stdout)
    outputs, ends = parts[0::3], list(zip(parts[1::3], parts[2::3], strict=True))
    context = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert [int(n) for n, _ in ends] == list(range(len(blocks))), context
    assert all(status == "0" for _, status in ends), context
    return outputs[: len(blocks)]


def sse_events(lines: list[str]) -> list[tuple[str, Any, int]]:
    """(event, data, position) of each whole event in `lines`, the position read from its id."""
    events: list[tuple[str, Any, int]] = []
    event = data = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
        elif line.startswith("id: ") and event is not None:
            events.append((event, data, int(line.rsplit("/", 1)[1])))
            event = data = None
    return events


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder standing for a fresh clone, whose `.venv/bin/python` is this Python."""
    folder = tmp_path_factory.mktemp("fresh-clone")
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    # A wrapper, not a symlink: a symlinked venv interpreter would not find its venv.
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[LiveServer]:
    server = start_fresh_server(tour_variables(), workdir)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def outputs(server: LiveServer, workdir: Path) -> list[str]:
    """The output of each block after the start command, in order."""
    return run_blocks(bash_blocks()[1:], server.base_url, workdir)


class TestFrontDoor:
    def test_it_is_short(self) -> None:
        lines = len(FRONT_DOOR.read_text().splitlines())
        assert lines <= MAX_LINES, f"{FRONT_DOOR.name} has {lines} lines"

    def test_every_link_stays_in_the_repository(self) -> None:
        text = FRONT_DOOR.read_text()
        targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<(\w+://[^>]+)>", text)
        assert targets
        for target in targets:
            if "://" in target:
                assert target.startswith(SERVED_AT.rsplit(":", 1)[0]), f"link outside: {target}"
            else:
                path = (FRONT_DOOR.parent / target.split("#", 1)[0]).resolve()
                assert path.is_relative_to(PROJECT_ROOT), f"link outside the repository: {target}"
                assert path.exists(), f"dead link: {target}"

    def test_make_run_is_what_the_tour_server_runs(self) -> None:
        recipe = re.search(r"^run:.*\n\t(.+)$", (PROJECT_ROOT / "Makefile").read_text(), re.M)
        assert recipe
        assert recipe[1].endswith("python -m app")

    def test_the_tour_slows_the_mock_down_so_a_reply_can_be_watched(self) -> None:
        assert float(tour_variables()["MOCK_CHUNK_DELAY_MS"]) >= 100


class TestTour:
    """The blocks after the start command: a turn, the OpenAI SDK, then cancel and resume."""

    def test_the_tour_has_its_four_blocks(self) -> None:
        assert len(bash_blocks()) == 4

    def test_a_turn_is_answered_stored_and_charged_with_no_key(self, outputs: list[str]) -> None:
        turn = json.loads(outputs[0].strip().splitlines()[-1])
        assert turn["message"]["status"] == "completed"
        assert turn["message"]["provider"] == "mock"
        assert turn["message"]["content"] == mock_reply("Hello! What can you do?")
        assert turn["usage"]["total_tokens"] > 0
        assert turn["cost_usd"] > 0

    def test_the_openai_sdk_gets_a_reply_and_a_stream_from_the_mock(
        self, outputs: list[str]
    ) -> None:
        assert outputs[1].strip().splitlines() == [
            mock_reply("Hello from the OpenAI SDK"),
            mock_reply("Stream a short answer"),
        ]

    def test_a_reply_is_resumed_after_the_last_event_seen_then_cancelled(
        self, outputs: list[str]
    ) -> None:
        lines = outputs[2].splitlines()
        cancel_at = next(i for i, line in enumerate(lines) if line.startswith("{"))
        before, cancelled, after = (
            lines[:cancel_at],
            json.loads(lines[cancel_at]),
            lines[cancel_at + 1 :],
        )
        seen = sse_events(before)
        # The first stream read up to event 3; the resumed one went on at 4, with no gap.
        assert [position for *_, position in seen] == [1, 2, 3, 4, 5]
        assert [event for event, *_ in seen] == ["start"] + ["delta"] * 4
        assert cancelled["status"] == "cancelled"
        full = mock_reply("Tell me a story")
        assert full.startswith(cancelled["content"])
        assert len(cancelled["content"]) < len(full)
        # Resumed again from event 3: every later event, in order, then `done`.
        rest = sse_events(after)
        assert [position for *_, position in rest] == list(range(4, 4 + len(rest)))
        assert rest[-1][0] == "done"
        done = rest[-1][1]["message"]
        assert done["status"] == "cancelled"
        assert done["content"] == cancelled["content"]
        words = [data["content"] for event, data, _ in seen[1:3] + rest if event == "delta"]
        assert "".join(words) == cancelled["content"]

    def test_every_sdk_call_is_stored_as_a_conversation(
        self, outputs: list[str], server: LiveServer
    ) -> None:
        page = httpx.get(f"{server.base_url}/api/v1/conversations", timeout=10).json()
        assert len(page["items"]) == 3  # the tour's own, and one per SDK call

    def test_the_pages_the_tour_links_to_are_served(self, server: LiveServer) -> None:
        urls = re.findall(rf"<({re.escape(SERVED_AT)}[^>]*)>", tour_section())
        assert f"{SERVED_AT}/playground" in urls
        for url in urls:
            response = httpx.get(url.replace(SERVED_AT, server.base_url), timeout=10)
            assert response.status_code == 200, url
            assert response.headers["content-type"].startswith("text/html"), url
