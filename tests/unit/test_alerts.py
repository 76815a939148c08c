"""Alert rules and the dashboard name only metrics the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import enqueue_service.app  # noqa: F401 (registers the HTTP metrics)
import model_server.metrics  # noqa: F401
import orchestrator_service.metrics  # noqa: F401
import transcriber_service.metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "transcription-dashboard.json"
METRIC = re.compile(r"\btranscription_[a-z0-9_]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("_count", "_sum"),
}


def exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.add(family.name)
    return names


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


@pytest.mark.parametrize(("name", "expr"), rule_expressions() + dashboard_expressions())
def test_every_metric_named_is_exported(name: str, expr: str) -> None:
    unknown = set(METRIC.findall(expr)) - exported()
    assert not unknown, f"{name} names metrics no service exports: {unknown}"


def test_rules_are_well_formed() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= rule.keys()
            assert rule["annotations"]["runbook"].startswith("RUNBOOK.md#")
    names = [name for name, _ in rule_expressions()]
    assert {
        "TranscriptionQueueGrowing",
        "TranscriptionPermafailedBurst",
        "TranscriptionWebhooksFailing",
        "TranscriptionModelErrors",
        "TranscriptionJobRetriedBeyondItsBound",
        "TranscriptionChunksWaitForModel",
    } <= set(names)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _chunk_waits(seconds: float) -> list[dict[str, str]]:
    """Histogram series: 10 chunks a minute for 30 minutes, each waiting ``seconds``."""
    name = "transcription_model_capacity_wait_seconds_bucket"
    return [
        {
            "series": f'{name}{{le="{"+Inf" if bound == float("inf") else f"{bound:g}"}"}}',
            "values": "0+10x30" if seconds <= bound else "0+0x30",
        }
        for bound in transcriber_service.metrics.MODEL_CAPACITY_WAIT._upper_bounds
    ]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_chunks_waiting_a_minute_for_the_model_tier_raise_the_alert(tmp_path: Path) -> None:
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _chunk_waits(90),
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "TranscriptionChunksWaitForModel"},
                    {
                        "eval_time": "25m",
                        "alertname": "TranscriptionChunksWaitForModel",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "ticket"},
                                "exp_annotations": {
                                    # 95 % of the way through the 60-120 s bucket
                                    "summary": "5 % of chunks wait over 1m 57s for room at "
                                    "the model servers",
                                    "runbook": "RUNBOOK.md#chunks-wait-for-the-model-server",
                                },
                            }
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": _chunk_waits(4),
                "alert_rule_test": [
                    {"eval_time": "25m", "alertname": "TranscriptionChunksWaitForModel"}
                ],
            },
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _queue_alert_case(in_flight: int, limit: int, queue: str) -> dict[str, object]:
    """One promtool test: 40 minutes of the orchestrator's gauges."""
    return {
        "interval": "1m",
        "input_series": [
            {"series": "transcription_jobs_in_flight", "values": f"{in_flight}+0x40"},
            {"series": "transcription_in_flight_limit", "values": f"{limit}+0x40"},
            {"series": "transcription_queue_depth", "values": queue},
        ],
        "alert_rule_test": [{"eval_time": "30m", "alertname": "TranscriptionQueueGrowing"}],
    }


def _promtool_test(tmp_path: Path, tests: list[dict[str, object]]) -> None:
    path = tmp_path / "tests.yaml"
    path.write_text(
        yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests})
    )
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_a_growing_queue_pages_only_once_the_budget_is_reached(tmp_path: Path) -> None:
    at_budget = _queue_alert_case(600, 600, "0+50x40")
    at_budget["alert_rule_test"] = [
        {"eval_time": "5m", "alertname": "TranscriptionQueueGrowing"},  # not for 10m yet
        {
            "eval_time": "30m",
            "alertname": "TranscriptionQueueGrowing",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "page"},
                    "exp_annotations": {
                        "summary": "The budget is reached (600 jobs in flight, the limit) "
                        "and the queue still grows: raise the budget",
                        "runbook": "RUNBOOK.md#the-queue-is-growing",
                    },
                }
            ],
        },
    ]
    _promtool_test(
        tmp_path,
        [
            at_budget,
            # Autoscaling still has room: the queue grows while replicas are added.
            _queue_alert_case(400, 600, "0+50x40"),
            # At the budget, a queue that holds steady: jobs wait, nothing more to page on.
            _queue_alert_case(600, 600, "5000+0x40"),
            # A queue draining at the budget.
            _queue_alert_case(600, 600, "5000-50x40"),
        ],
    )
