"""The service as a real process, spoken to over real HTTP, on Postgres and on SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx

from tests.e2e.conftest import PROJECT_ROOT, LiveServer, start_server, stop_server


class TestLiveServer:
    async def test_a_conversation_round_trip_over_real_http(
        self, live_server: LiveServer, clean_database: None
    ) -> None:
        async with httpx.AsyncClient(base_url=live_server.base_url, timeout=10) as http:
            assert (await http.get("/ready")).json()["status"] == "ready"
            created = await http.post(
                "/api/v1/conversations", json={"title": "e2e", "user_id": "e2e-user"}
            )
            assert created.status_code == 201
            conversation_id = created.json()["id"]

            turn = await http.post(
                f"/api/v1/conversations/{conversation_id}/messages",
                json={"content": "Hello over the wire 🌍"},
                headers={"X-Request-ID": "e2e-request-1"},
            )
            assert turn.status_code == 201
            assert turn.headers["x-request-id"] == "e2e-request-1"
            cost = Decimal(str(turn.json()["cost_usd"]))
            assert cost > 0

            stored = (await http.get(f"/api/v1/conversations/{conversation_id}")).json()
            assert stored["message_count"] == 2
            assert Decimal(str(stored["total_cost_usd"])) == cost
            assert stored["messages"][0]["content"] == "Hello over the wire 🌍"

        access_lines = [
            json.loads(line)
            for line in live_server.log().splitlines()
            if line.startswith("{") and '"request"' in line
        ]
        turn_line = next(line for line in access_lines if line["request_id"] == "e2e-request-1")
        assert turn_line["route"] == "/api/v1/conversations/{conversation_id}/messages"
        assert turn_line["status"] == 201
        assert "Hello over the wire" not in live_server.log()


class TestStartUp:
    def test_an_invalid_setting_stops_start_up_with_one_line_naming_it(
        self, tmp_path: Path
    ) -> None:
        env = {
            **os.environ,
            "PORT": "not-a-port",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        }
        result = subprocess.run(
            [sys.executable, "-m", "app"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("invalid configuration: PORT:")
        assert "not-a-port" not in lines[0]

    def test_the_embedded_default_creates_its_sqlite_file_and_serves(self, tmp_path: Path) -> None:
        database = tmp_path / "nested" / "chat.db"
        server = start_server(
            {"DATABASE_URL": f"sqlite+aiosqlite:///{database}"}, tmp_path / "server.log"
        )
        try:
            assert httpx.get(f"{server.base_url}/ready", timeout=5).status_code == 200
            assert database.exists()
        finally:
            stop_server(server)
