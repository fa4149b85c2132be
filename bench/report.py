"""The benchmark's outputs: one text table for people, one JSON document for machines."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.scenarios import Result, Settings

_HEADERS = ("#", "scenario / measure", "value", "target", "ok")


def table(results: Sequence[Result]) -> str:
    rows: list[tuple[str, ...]] = []
    for number, result in enumerate(results, start=1):
        rows.append((str(number), result.title, "", "", ""))
        for row in result.rows:
            ok = "" if row.met is None else ("yes" if row.met else "NO")
            rows.append(("", "  " + row.measure, row.value, row.target, ok))
    widths = [max(len(r[i]) for r in (*rows, _HEADERS)) for i in range(len(_HEADERS))]
    lines = [_line(_HEADERS, widths), _line(tuple("-" * w for w in widths), widths)]
    lines += [_line(r, widths) for r in rows]
    return "\n".join(lines) + "\n"


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def document(results: Sequence[Result], settings: Settings, *, quick: bool, seconds: float) -> dict[str, Any]:
    checks = [check for r in results for check in r.to_json()["checks"]]
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "settings": _settings(settings),
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "run_seconds": seconds,
        "all_targets_met": all(c["met"] for c in checks),
        "scenarios": {r.key: r.to_json() for r in results},
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _settings(settings: Settings) -> dict[str, Any]:
    data = asdict(settings)
    data["schedules"] = [asdict(s) for s in settings.schedules]
    return data
