"""deploy/grafana/chat-api.json: importable, and every query names metrics the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from app.core import metrics

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "chat-api.json"
DATASOURCE = "${DS_PROMETHEUS}"
# Labels Prometheus adds at scrape time, and the histogram bucket label.
SCRAPE_LABELS = {"job", "instance", "le"}
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
METRIC_NAME = re.compile(r"\bchat_api_\w+")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")


def exported_metrics() -> dict[str, MetricWrapperBase]:
    """Every metric declared in app/core/metrics.py, by its base name."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            found[value._name] = value
    return found


def sample_names() -> dict[str, set[str]]:
    """The series names each metric exposes, mapped to the labels they carry."""
    names: dict[str, set[str]] = {}
    for name, metric in exported_metrics().items():
        for suffix in SAMPLE_SUFFIXES[str(metric._type)]:
            names[name + suffix] = set(metric._labelnames)
    return names


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in load()["panels"] if panel["type"] != "row"]


def expressions() -> list[str]:
    return [target["expr"] for panel in query_panels() for target in panel["targets"]]


class TestImportable:
    def test_it_asks_for_a_prometheus_data_source_on_import(self) -> None:
        dashboard = load()
        assert dashboard["schemaVersion"] >= 36
        [source] = dashboard["__inputs"]
        assert (source["name"], source["pluginId"]) == ("DS_PROMETHEUS", "prometheus")

    def test_every_panel_and_query_uses_that_data_source(self) -> None:
        for panel in query_panels():
            assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE, panel["title"]

    def test_panel_ids_are_unique_and_every_panel_has_a_place(self) -> None:
        panels = load()["panels"]
        assert len({panel["id"] for panel in panels}) == len(panels)
        for panel in panels:
            assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


class TestQueries:
    @pytest.mark.parametrize("expr", expressions())
    def test_it_names_only_metrics_the_service_exports(self, expr: str) -> None:
        named = set(METRIC_NAME.findall(expr))
        assert named, f"no chat_api metric in {expr!r}"
        unknown = named - sample_names().keys()
        assert not unknown, f"{sorted(unknown)} are not exported by app/core/metrics.py"

    @pytest.mark.parametrize("expr", expressions())
    def test_it_groups_and_filters_only_by_labels_those_metrics_have(self, expr: str) -> None:
        labels = set().union(*(sample_names()[name] for name in METRIC_NAME.findall(expr)))
        used = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        used |= set(MATCHER.findall(expr))
        unknown = used - labels - SCRAPE_LABELS - {""}
        assert not unknown, f"labels {sorted(unknown)} do not exist on the metrics of {expr!r}"

    def test_every_exported_metric_is_on_the_dashboard(self) -> None:
        shown = {name for expr in expressions() for name in METRIC_NAME.findall(expr)}
        missing = {
            name
            for name, metric in exported_metrics().items()
            if not shown & {name + suffix for suffix in SAMPLE_SUFFIXES[str(metric._type)]}
        }
        assert not missing, f"metrics without a panel: {sorted(missing)}"
