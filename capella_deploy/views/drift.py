"""Drift reports rendered as text, JSON, Markdown and a Slack-compatible message."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from capella_deploy.plan import display
from capella_deploy.plan.drift import Drifted, DriftReport
from capella_deploy.views.target import target_line, target_markdown

MARKDOWN_MARKER = "<!-- capella-deploy-drift -->"
# Slack refuses a text block over 3000 characters; long lists are cut well before that.
_NOTIFY_ITEMS = 15


def render_json(report: DriftReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"


def render_text(report: DriftReport) -> str:
    lines = [target_line(report.where), ""] if report.where is not None else []
    if report.in_sync:
        lines.append(f"No drift: organization {report.org_id} matches the manifest.")
    else:
        lines.append(f"Drift in organization {report.org_id}: {_counts(report)}.")
    lines.extend(_sections(report, bullets=("  ", "      "), code=lambda text: text))
    if report.ignored:
        lines.append("")
        lines.append(f"Ignored by rules: {len(report.ignored)} difference(s).")
    return "\n".join(lines) + "\n"


def render_markdown(report: DriftReport) -> str:
    """An issue body: a marker line (so a bot can find and update the issue), counts, then the details."""
    lines = [MARKDOWN_MARKER, f"### capella-deploy drift in organization `{report.org_id}`", ""]
    if report.where is not None:
        lines += [target_markdown(report.where), ""]
    lines.append("**No drift.** The organization matches the manifest." if report.in_sync else _counts(report) + ".")
    lines.extend(_sections(report, bullets=("- ", "  - "), code=lambda text: f"`{text}`"))
    if report.ignored:
        lines += ["", f"<details><summary>Ignored by rules ({len(report.ignored)})</summary>", ""]
        lines += [f"- `{item}`" for item in report.ignored]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def slack_payload(report: DriftReport) -> dict[str, Any]:
    """A message for a Slack-compatible incoming webhook: ``text`` as fallback, ``blocks`` for layout."""
    headline = f"capella-deploy: drift in organization {report.org_id}: {_counts(report)}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}}]
    if report.where is not None:
        # Plain text: Slack's mrkdwn would read markup in an organization's name.
        blocks.append({"type": "section", "text": {"type": "plain_text", "text": target_line(report.where)}})
    groups: list[tuple[str, Sequence[str]]] = [
        ("Drifted (live differs from the manifest)", [_drift_line(d) for d in report.drifted]),
        ("Missing (declared, not live)", [m.address for m in report.missing]),
        ("Unmanaged (live, not declared)", [f"{u.address} ({u.live_id})" for u in report.unmanaged]),
    ]
    for title, items in groups:
        if not items:
            continue
        shown = [f"• `{item}`" for item in items[:_NOTIFY_ITEMS]]
        if len(items) > _NOTIFY_ITEMS:
            shown.append(f"… and {len(items) - _NOTIFY_ITEMS} more")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n" + "\n".join(shown)}})
    return {"text": headline, "blocks": blocks}


def _counts(report: DriftReport) -> str:
    s = report.summary()
    return f"{s['drifted']} drifted, {s['missing']} missing, {s['unmanaged']} unmanaged"


def _drift_line(item: Drifted) -> str:
    paths = ", ".join(a.path for a in item.attributes) or item.reason or ""
    return f"{item.address}: {paths}"


def _sections(report: DriftReport, *, bullets: tuple[str, str], code: Callable[[str], str]) -> list[str]:
    bullet, sub = bullets
    lines: list[str] = []
    if report.drifted:
        lines += ["", "Drifted (live differs from the manifest):"]
        for item in report.drifted:
            lines.append(f"{bullet}{code(item.address)}: apply would {item.action.value} it ({item.reason})")
            for attr in item.attributes:
                declared = f"unset (API default {display(attr.after)})" if attr.to_default else display(attr.after)
                lines.append(f"{sub}{code(attr.path)}: live {display(attr.before)}, manifest {declared}")
    if report.missing:
        lines += ["", "Missing (declared, not live; apply would create):"]
        lines += [f"{bullet}{code(item.address)}" for item in report.missing]
    if report.unmanaged:
        lines += ["", "Unmanaged (live, not declared):"]
        for unmanaged in report.unmanaged:
            planned = f"; the plan deletes it: {unmanaged.planned}" if unmanaged.planned else ""
            lines.append(f"{bullet}{code(unmanaged.address)} ({unmanaged.live_id}){planned}")
    return lines
