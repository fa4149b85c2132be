"""Keeps the benchmark harness from rotting: `bench/run.py --quick` runs end to end and reports every scenario.

The full benchmark (minutes) stays out of CI; this runs the same code at tiny sizes in a few seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "plan_at_scale",
    "apply_new_models",
    "rate_limited_apply",
    "polling_cost",
    "cold_start",
    "plan_scaling",
    "rate_limited_at_scale",
}


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _run_quick(out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.read_text())
    # The table names every scenario too.
    for number in range(1, len(SCENARIOS) + 1):
        assert f"\n{number}  " in "\n" + done.stdout
    return doc


def test_quick_run_reports_every_scenario_with_figures(tmp_path: Path) -> None:
    doc = _run_quick(tmp_path / "results.json")

    assert doc["mode"] == "quick"
    assert set(doc["scenarios"]) == SCENARIOS
    for key, scenario in doc["scenarios"].items():
        figures = scenario["figures"]
        assert "error" not in figures, f"{key}: {figures.get('error')}"
        assert _numbers(figures), f"{key} has no figures"
        assert all(math.isfinite(n) for n in _numbers(figures)), key
        assert scenario["checks"], f"{key} checks nothing"

    plan = doc["scenarios"]["plan_at_scale"]["figures"]
    per_page = plan["perPage"]
    assert plan["list_calls"] == {
        "models": math.ceil(plan["models"] / per_page),
        "apiKeys": math.ceil(plan["keys"] / per_page),
        "providers": 1,  # none live: one empty page
    }
    assert plan["list_calls"]["models"] > 1, "the smoke should read more than one page"
    assert plan["other_calls"] == 0
    assert plan["baseline_http_calls"] == plan["models"] + plan["keys"] + plan["http_calls"]

    at_scale = doc["scenarios"]["rate_limited_at_scale"]["figures"]
    assert at_scale["surfaced_errors"] == [] and at_scale["completed"]
    assert at_scale["requests_sent"] >= at_scale["minimum_requests"]
    assert at_scale["over_bound"] == at_scale["total_seconds"] / at_scale["bound_seconds"]
    assert at_scale["eta_error_at_half"] >= 0 and at_scale["eta_samples"]

    scaling = doc["scenarios"]["plan_scaling"]["figures"]["points"]
    assert [p["resources"] for p in scaling] == sorted(p["resources"] for p in scaling)
    assert all(p["planner_cpu_seconds"] > 0 for p in scaling)
