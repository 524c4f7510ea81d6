"""Several workers behind one port still give one `/metrics`: every worker's requests count.

`python -m app` with `WEB_CONCURRENCY=2` and no `PROMETHEUS_MULTIPROC_DIR` makes a private
directory for the run, so a scrape adds up both workers whichever one answers it.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import start_server, stop_server

LISTS = 30


def listed_requests(exposition: str) -> float:
    """`GET /api/v1/conversations` requests counted in one scrape, over every status."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "chat_api_http_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("route") == "/api/v1/conversations"
        and sample.labels.get("method") == "GET"
    )


class TestSeveralWorkers:
    def test_metrics_add_up_every_workers_requests(
        self, database_url: str, tmp_path: Path, clean_database: None
    ) -> None:
        env = {"DATABASE_URL": database_url, "WEB_CONCURRENCY": "2"}
        inherited = os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        server = start_server(env, tmp_path / "server.log")
        try:
            # New connections each time, so the kernel spreads them over both workers.
            for _ in range(LISTS):
                response = httpx.get(f"{server.base_url}/api/v1/conversations")
                assert response.status_code == 200, response.text
            scrapes = [httpx.get(f"{server.base_url}/metrics").text for _ in range(6)]
        finally:
            stop_server(server)
            if inherited is not None:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = inherited

        assert [listed_requests(scrape) for scrape in scrapes] == [LISTS] * 6
