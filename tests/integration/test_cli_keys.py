"""`python -m app.cli keys ...`: issue a key once, list without secrets, revoke by prefix or id."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.auth import bearer

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(database_url: str, issue_key: Callable[..., Any]) -> Callable[..., Any]:
    """Run the CLI against this backend's database (`issue_key` deletes the keys afterwards)."""

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DATABASE_URL": database_url, "APP_ENV": "test"}
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.cli", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def rows(listing: str) -> list[list[str]]:
    return [line.split("\t") for line in listing.strip().splitlines()[1:]]


class TestKeysCli:
    async def test_create_prints_the_key_once_and_it_authenticates(
        self,
        cli: Callable[..., Any],
        start_app: Callable[..., Any],
        auth_settings: Callable[..., Settings],
    ) -> None:
        created = await cli("keys", "create", "--user", "alice", "--name", "laptop")
        client: httpx.AsyncClient = await start_app(auth_settings())

        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        assert key.startswith("ca_")
        assert len(key) >= 40
        response = await client.post("/api/v1/conversations", json={}, headers=bearer(key))
        assert response.status_code == 201
        assert response.json()["user_id"] == "alice"

    async def test_list_shows_prefixes_never_secrets(self, cli: Callable[..., Any]) -> None:
        alice = (await cli("keys", "create", "--user", "alice")).stdout.strip()
        root = (await cli("keys", "create", "--user", "root", "--admin")).stdout.strip()

        everyone = await cli("keys", "list")
        only_alice = await cli("keys", "list", "--user", "alice")

        assert everyone.returncode == 0, everyone.stderr
        assert alice not in everyone.stdout
        assert root not in everyone.stdout
        listed = {row[1]: row for row in rows(everyone.stdout)}
        assert listed[alice[:8]][2:4] == ["alice", "user"]
        assert listed[root[:8]][2:4] == ["root", "admin"]
        assert [row[2] for row in rows(only_alice.stdout)] == ["alice"]

    async def test_a_revoked_key_is_401(
        self,
        cli: Callable[..., Any],
        start_app: Callable[..., Any],
        auth_settings: Callable[..., Settings],
    ) -> None:
        key = (await cli("keys", "create", "--user", "alice")).stdout.strip()
        client: httpx.AsyncClient = await start_app(auth_settings())
        assert (await client.get("/api/v1/conversations", headers=bearer(key))).status_code == 200

        revoked = await cli("keys", "revoke", key[:8])
        listing = await cli("keys", "list", "--user", "alice")

        assert revoked.returncode == 0, revoked.stderr
        assert rows(listing.stdout)[0][5] == "revoked"
        assert (await client.get("/api/v1/conversations", headers=bearer(key))).status_code == 401

    async def test_revoke_by_id(self, cli: Callable[..., Any]) -> None:
        await cli("keys", "create", "--user", "bob")
        key_id = rows((await cli("keys", "list", "--user", "bob")).stdout)[0][0]

        revoked = await cli("keys", "revoke", key_id)

        assert revoked.returncode == 0, revoked.stderr
        assert rows((await cli("keys", "list", "--user", "bob")).stdout)[0][5] == "revoked"

    async def test_revoking_an_unknown_key_fails(self, cli: Callable[..., Any]) -> None:
        result = await cli("keys", "revoke", "ca_nope")

        assert result.returncode == 1
        assert "no key matches" in result.stderr
