"""With PROMETHEUS_MULTIPROC_DIR, `/metrics` adds up every worker's values, live gauges included.

prometheus_client picks its storage when first imported, so each "worker" is a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
from decimal import Decimal
from app.core import metrics
from app.providers.base import Usage
metrics.record_provider_call("openai", "gpt-4o", "ok", duration_s=1.5, time_to_first_token_s=0.2)
metrics.record_reply_usage("openai", "gpt-4o", Usage(10, 5), Decimal("0.25"))
metrics.OPEN_STREAMS.inc()
"""
SCRAPE = """
import sys
from app.core import metrics
sys.stdout.write(metrics.exposition().decode())
"""
GONE = """
from app.core import metrics
metrics.OPEN_STREAMS.inc()
metrics.mark_process_dead()
"""


def run(code: str, directory: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_and_histograms_are_summed_over_workers(tmp_path: Path) -> None:
    run(WORKER, tmp_path)
    run(WORKER, tmp_path)

    scraped = samples(run(SCRAPE, tmp_path))

    call = frozenset({"provider": "openai", "model": "gpt-4o", "status": "ok"}.items())
    assert scraped[("chat_api_provider_calls_total", call)] == 2
    model = frozenset({"provider": "openai", "model": "gpt-4o"}.items())
    assert scraped[("chat_api_cost_usd_total", model)] == 0.5
    assert scraped[("chat_api_provider_call_duration_seconds_count", model)] == 2
    prompt = frozenset({"provider": "openai", "model": "gpt-4o", "kind": "prompt"}.items())
    assert scraped[("chat_api_tokens_total", prompt)] == 20


def test_a_worker_that_shut_down_leaves_the_open_streams_gauge(tmp_path: Path) -> None:
    run(GONE, tmp_path)

    scraped = samples(run(SCRAPE, tmp_path))

    assert scraped.get(("chat_api_open_streams", frozenset()), 0.0) == 0
