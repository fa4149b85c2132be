"""Apply outcomes rendered for people and for a CI job summary."""

from __future__ import annotations

from pathlib import Path

import click

from capella_deploy.apply.applier import ApplyResult
from capella_deploy.plan import Action
from capella_deploy.views.plan import SUMMARY_ORDER, md_cell

_PAST = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.REPLACE: "replaced",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.ROTATE: "rotated",
    Action.DELETE: "destroyed",
}


def render_apply_result(result: ApplyResult, *, outputs_path: Path) -> str:
    done: dict[Action, int] = {}
    for item in result.results:
        if item.ok:
            done[item.action] = done.get(item.action, 0) + 1
    counts = ", ".join(f"{done.get(action, 0)} {_PAST[action]}" for action, _ in SUMMARY_ORDER)
    lines = [""]
    if result.ok:
        lines.append(click.style("Apply complete! ", fg="green", bold=True) + f"Resources: {counts}.")
    else:
        lines.append(
            click.style("Apply failed: ", fg="red", bold=True)
            + f"{len(result.failed)} of {len(result.results)} change(s) did not complete. Done: {counts}."
        )
        for item in result.failed:
            lines.append(f"  {item.address} ({item.action.value}): {item.detail}")
        lines.append("Run apply again to retry what failed; what succeeded is kept.")
    lines.append(f"Outputs: {outputs_path} (show them with `capella-deploy outputs --outputs {outputs_path}`)")
    return "\n".join(lines) + "\n"


def render_apply_markdown(result: ApplyResult | None) -> str:
    """The apply outcome for a CI job summary; ``None`` means there was nothing to change."""
    if result is None:
        return "### capella-deploy apply\n\n**No changes.** The organization matched the manifest.\n"
    lines = ["### capella-deploy apply", ""]
    lines.append(
        "**Apply complete.**" if result.ok else f"**Apply failed:** {len(result.failed)} change(s) did not complete."
    )
    lines += ["", "| resource | action | result |", "|---|---|---|"]
    for item in result.results:
        outcome = "✅ " + md_cell(item.detail) if item.ok else "❌ " + md_cell(item.detail)
        lines.append(f"| `{item.address}` | {item.action.value} | {outcome} |")
    return "\n".join(lines) + "\n"


def render_elapsed(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"
