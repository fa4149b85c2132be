"""`capella-deploy status` rendered as a table for people and as JSON for scripts."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import click

from capella_deploy.kinds import tally
from capella_deploy.kinds.base import Kind
from capella_deploy.plan.status import ResourceStatus, StatusReport
from capella_deploy.views.target import target_line

STATUS_FORMAT_VERSION = "1.1"
_HEADER = ("NAME", "KIND", "REGION", "GPU", "STATE", "AGE", "DECLARED", "CONNECTION")
_STATE_COLOURS = {"healthy": "green", "active": "green", "paused": "blue", "expired": "red"}


def render_status(report: StatusReport) -> str:
    header = [target_line(report.where), ""] if report.where is not None else []
    if not report.resources:
        return "\n".join([*header, f"Nothing is deployed in organization {report.org_id}."]) + "\n"
    rows = [_HEADER] + [_row(r, report) for r in report.resources]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADER) - 1)]
    lines = header or [f"Organization {report.org_id}:", ""]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        if index:
            state = report.resources[index - 1].state
            colour = _STATE_COLOURS.get(state, "red" if "Failed" in state or state == "unhealthy" else "yellow")
            cells[4] = click.style(cells[4], fg=colour)
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    counts = Counter(Kind(r.kind) for r in report.resources)
    lines += ["", f"{tally(counts)}."]
    lines += [click.style("Warning: ", fg="yellow", bold=True) + w for w in report.warnings]
    return "\n".join(lines) + "\n"


def _row(resource: ResourceStatus, report: StatusReport) -> tuple[str, ...]:
    declared = {True: "yes", False: "no", None: "-"}[resource.declared]
    gpu = f"{resource.gpu_memory} GB" if resource.gpu_memory is not None else "-"
    return (
        resource.name,
        resource.kind,
        resource.region or "-",
        gpu,
        resource.state,
        _age(resource, report),
        declared,
        resource.connection_string or "-",
    )


def _age(resource: ResourceStatus, report: StatusReport) -> str:
    if resource.created_at is None:
        return "-"
    seconds = max(0, int((report.now - resource.created_at).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def status_json(report: StatusReport) -> dict[str, Any]:
    return {
        "format_version": STATUS_FORMAT_VERSION,
        "organization_id": report.org_id,
        "target": report.where.to_dict() if report.where is not None else None,
        "read_at": report.now.isoformat(),
        "resources": [
            {
                "address": r.address,
                "kind": r.kind,
                "name": r.name,
                "live_id": r.live_id,
                "region": r.region,
                "gpu_memory": r.gpu_memory,
                "state": r.state,
                "created_at": r.created_at.isoformat() if r.created_at else None,
                "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                "declared": r.declared,
                "connection_string": r.connection_string,
            }
            for r in report.resources
        ],
        "warnings": list(report.warnings),
    }


def render_status_json(report: StatusReport) -> str:
    return json.dumps(status_json(report), indent=2, sort_keys=True) + "\n"
