"""Check reports rendered as a table, JSON and Markdown."""

from __future__ import annotations

import json

from capella_deploy.checks import CheckReport, CheckResult


def _latency(result: CheckResult) -> str:
    if result.latency_ms is None:
        return "-"
    text = f"{result.latency_ms:.0f} ms"
    if result.first_token_ms is not None:
        text += f" (first token {result.first_token_ms:.0f} ms)"
    return text


def _summary(report: CheckReport) -> str:
    return f"{report.count('pass')} passed, {report.count('fail')} failed, {report.count('skip')} skipped"


def render_checks(report: CheckReport) -> str:
    """A table for people: check, target, kind, status, latency; then why each failure failed."""
    if not report.results:
        return "No checks declared.\n"
    header = ("CHECK", "TARGET", "KIND", "STATUS", "LATENCY")
    rows = [header] + [(r.name, r.target, r.kind, r.status if r.ok else "FAIL", _latency(r)) for r in report.results]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = ["", "Checks:"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  " + "  ".join([*cells, row[-1]]).rstrip())
    notes = [r for r in report.results if r.reason is not None]
    if notes:
        lines.append("")
        lines += [f"  {r.name}: {'skipped: ' if r.status == 'skip' else ''}{r.reason}" for r in notes]
    verdict = "all checks passed" if report.ok else "checks failed"
    lines += ["", f"Checks: {_summary(report)} ({verdict})."]
    return "\n".join(lines) + "\n"


def render_checks_json(report: CheckReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"


_MD_STATUS = {"pass": "✅ pass", "fail": "❌ fail", "skip": "⏭️ skip"}


def render_checks_markdown(report: CheckReport) -> str:
    """A section for a pull-request comment or job summary."""
    lines = ["#### Checks", ""]
    if not report.results:
        return "\n".join([*lines, "No checks declared.", ""])
    lines += ["| check | target | kind | status | latency | notes |", "|---|---|---|---|---|---|"]
    for r in report.results:
        notes = r.reason or r.detail or ""
        cells = [f"`{r.name}`", f"`{r.target}`", r.kind, _MD_STATUS[r.status], _latency(r), notes]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    lines += ["", f"{_summary(report)}.", ""]
    return "\n".join(lines)
