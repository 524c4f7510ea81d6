"""The Docker image builds and answers `/health`, and compose serves a service whose first key
comes from the documented one-liner. Skipped, saying why, where no Docker engine runs.

Building needs the base images (python:3.11-slim, and postgres and redis for compose) and PyPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import PROJECT_ROOT, free_port

BUILD_TIMEOUT_S = 1200
START_TIMEOUT_S = 180
# The Dockerfile's HEALTHCHECK runs every 15 s after a 20 s start period.
HEALTHY_TIMEOUT_S = 120


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def missing_engine() -> str | None:
    """Why Docker cannot be used here, or None when an engine answers."""
    if shutil.which("docker") is None:
        return "no Docker engine on this machine: the docker client is not installed"
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "no Docker engine on this machine: `docker info` did not answer in 30 s"
    if probe.returncode != 0:
        said = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine on this machine: `docker info` says: {said}"
    return None


def compose_command() -> list[str] | None:
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (v1), else None."""
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def wait_for_health(base_url: str, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.get(f"{base_url}/health", timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{base_url}/health did not answer 200 within {timeout_s} s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def engine() -> None:
    reason = missing_engine()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def image(engine: None) -> Iterator[str]:
    tag = f"chat-api:test-{uuid.uuid4().hex[:12]}"
    docker("build", "--tag", tag, str(PROJECT_ROOT), timeout=BUILD_TIMEOUT_S)
    try:
        yield tag
    finally:
        docker("rmi", "--force", tag, check=False)


@pytest.fixture
def container(image: str) -> Iterator[tuple[str, str]]:
    """A container of the image, as `docker run` starts it, and its base URL."""
    name = f"chat-api-test-{uuid.uuid4().hex[:12]}"
    docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::8000", image)
    try:
        address = docker("port", name, "8000/tcp").splitlines()[0]
        yield name, f"http://{address}"
    finally:
        docker("rm", "--force", name, check=False)


class TestImage:
    def test_it_answers_health_and_reports_itself_healthy(self, container: tuple[str, str]) -> None:
        name, base_url = container
        assert wait_for_health(base_url, START_TIMEOUT_S).json() == {"status": "ok"}
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        status = ""
        while time.monotonic() < deadline:
            status = docker("inspect", "--format", "{{.State.Health.Status}}", name)
            if status == "healthy":
                break
            time.sleep(2)
        assert status == "healthy", docker("logs", name, check=False)

    def test_auth_is_on_and_the_first_key_comes_from_the_cli(
        self, container: tuple[str, str]
    ) -> None:
        name, base_url = container
        wait_for_health(base_url, START_TIMEOUT_S)
        assert httpx.get(f"{base_url}/api/v1/models", timeout=10).status_code == 401
        key = docker("exec", name, "python", "-m", "app.cli", "keys", "create", "--user", "me")
        answer = httpx.get(
            f"{base_url}/api/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert answer.status_code == 200


class TestCompose:
    def test_compose_up_serves_and_the_documented_one_liner_makes_the_first_key(
        self, engine: None
    ) -> None:
        command = compose_command()
        if command is None:
            pytest.skip("neither the docker compose plugin (v2) nor docker-compose (v1) is here")
        port = free_port()
        env = {
            **os.environ,
            "CHAT_API_PORT": str(port),
            "COMPOSE_PROJECT_NAME": f"chatapitest{uuid.uuid4().hex[:8]}",
        }

        def compose(*args: str, timeout: float = 300) -> str:
            result = subprocess.run(
                [*command, *args],
                cwd=PROJECT_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
            return result.stdout.strip()

        base_url = f"http://127.0.0.1:{port}"
        try:
            compose("up", "--build", "--detach", timeout=BUILD_TIMEOUT_S)
            wait_for_health(base_url, START_TIMEOUT_S)
            assert httpx.get(f"{base_url}/api/v1/models", timeout=10).status_code == 401
            # The one-liner of the README and docs/operations.md (-T: no terminal in a test).
            key = compose(
                "exec", "-T", "api", "python", "-m", "app.cli", "keys", "create", "--user", "me"
            )
            headers = {"Authorization": f"Bearer {key}"}
            created = httpx.post(
                f"{base_url}/api/v1/conversations", json={}, headers=headers, timeout=10
            )
            assert created.status_code == 201
            checks = httpx.get(f"{base_url}/ready", timeout=10).json()["checks"]
            assert (checks["database"], checks["redis"]) == ("ok", "ok")
        finally:
            # Leaves the chat-api:local image that `up --build` made, as a user's run would.
            compose("down", "--volumes", timeout=300)
