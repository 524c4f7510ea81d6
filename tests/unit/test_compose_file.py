"""docker-compose.yml and its development override: valid for Compose v1 and v2, checked anywhere.

The structure is checked from the YAML on every run; where a Compose tool is installed
(`docker-compose`, v1; `docker compose`, v2) it validates the files too (`config -q`), which
needs no Docker engine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BASE = PROJECT_ROOT / "docker-compose.yml"
DEV = PROJECT_ROOT / "docker-compose.dev.yml"
# Compose v1 (1.27+) reads a file without `version` as the Compose Specification, and rejects
# `name`; v2 ignores `version` with a warning. These top-level keys both accept.
TOP_LEVEL_KEYS = {"services", "volumes", "networks", "configs", "secrets"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load(BASE)["services"]
    return found


class TestBothComposeVersionsAcceptIt:
    @pytest.mark.parametrize("path", [BASE, DEV], ids=["base", "dev"])
    def test_only_top_level_keys_that_v1_and_v2_both_know(self, path: Path) -> None:
        keys = {key for key in load(path) if not key.startswith("x-")}
        assert "name" not in keys, "Compose v1 rejects a top-level name"
        assert keys <= TOP_LEVEL_KEYS, keys - TOP_LEVEL_KEYS

    def test_every_service_has_an_image_or_a_build(self) -> None:
        for name, service in services().items():
            assert "image" in service or "build" in service, name

    def test_dependencies_exist_and_those_awaited_healthy_have_a_healthcheck(self) -> None:
        for name, service in services().items():
            for dependency, spec in service.get("depends_on", {}).items():
                assert dependency in services(), f"{name} depends on unknown {dependency}"
                assert spec["condition"] in CONDITIONS, (name, spec)
                if spec["condition"] == "service_healthy":
                    assert "healthcheck" in services()[dependency], dependency

    def test_named_volumes_are_declared(self) -> None:
        declared = set(load(BASE).get("volumes") or {})
        for name, service in services().items():
            for volume in service.get("volumes", []):
                source = volume.split(":", 1)[0]
                if not source.startswith((".", "/")):
                    assert source in declared, f"{name} uses undeclared volume {source}"

    @pytest.mark.parametrize("path", [BASE, DEV], ids=["base", "dev"])
    def test_environment_values_are_strings(self, path: Path) -> None:
        # v1 refuses booleans ("true") in `environment`, and YAML reads unquoted ones as such.
        for name, service in load(path)["services"].items():
            for variable, value in (service.get("environment") or {}).items():
                assert isinstance(value, str), f"{name}: {variable} must be a quoted string"

    def test_ports_are_strings_published_on_loopback_only(self) -> None:
        for name, service in services().items():
            for port in service.get("ports", []):
                # An unquoted 80:80 style value can be read by YAML 1.1 as a base-60 number.
                assert isinstance(port, str), f"{name}: quote {port!r}"
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


class TestAuthentication:
    def test_the_base_file_keeps_auth_on(self) -> None:
        environment = services()["api"].get("environment", {})
        assert environment.get("AUTH_ENABLED", "true") != "false"
        assert environment.get("APP_ENV", "production") == "production"

    def test_the_development_override_turns_auth_off_and_nothing_else_of_the_base(self) -> None:
        override = load(DEV)["services"]
        assert set(override) == {"api"}
        assert override["api"] == {
            "environment": {"APP_ENV": "development", "AUTH_ENABLED": "false"}
        }


def compose_commands() -> list[tuple[str, list[str]]]:
    commands = []
    if shutil.which("docker-compose"):
        commands.append(("v1", ["docker-compose"]))
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            commands.append(("v2", ["docker", "compose"]))
    return commands


@pytest.mark.parametrize("files", [[BASE], [BASE, DEV]], ids=["base", "base+dev"])
def test_installed_compose_tools_accept_the_files(files: list[Path]) -> None:
    commands = compose_commands()
    if not commands:
        pytest.skip("neither docker-compose (v1) nor the docker compose plugin (v2) is installed")
    for version, command in commands:
        arguments = [argument for path in files for argument in ("-f", str(path))]
        result = subprocess.run(
            [*command, *arguments, "config", "-q"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"compose {version} refuses the files:\n{result.stderr}"
