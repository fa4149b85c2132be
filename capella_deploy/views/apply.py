"""Apply outcomes rendered for people and for a CI job summary."""

from __future__ import annotations

from pathlib import Path

import click

from capella_deploy.apply.applier import ApplyResult
from capella_deploy.kinds.base import Action
from capella_deploy.plan import Where
from capella_deploy.views.plan import SUMMARY_ORDER, md_cell
from capella_deploy.views.target import target_markdown

_PAST = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.REPLACE: "replaced",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.ROTATE: "rotated",
    Action.DELETE: "destroyed",
}


def render_apply_result(result: ApplyResult, *, outputs_path: Path, destroy: bool = False) -> str:
    done: dict[Action, int] = {}
    for item in result.results:
        if item.ok:
            action = Action.REPLACE if item.action is Action.REPLACE_CREATE_FIRST else item.action
            done[action] = done.get(action, 0) + 1
    lines = [""]
    if destroy:
        counts = f"{done.get(Action.DELETE, 0)} destroyed"
    else:
        counts = ", ".join(f"{done.get(action, 0)} {_PAST[action]}" for action, _ in SUMMARY_ORDER)
    run = "Destroy" if destroy else "Apply"
    if result.ok:
        lines.append(click.style(f"{run} complete! ", fg="green", bold=True) + f"Resources: {counts}.")
    else:
        lines.append(
            click.style(f"{run} failed: ", fg="red", bold=True)
            + f"{len(result.failed)} of {len(result.results)} change(s) did not complete. Done: {counts}."
        )
        for item in result.failed:
            lines.append(f"  {item.address} ({item.action.value}): {item.detail}")
            lines.extend(f"    {hint}" for hint in next_steps(item.detail))
        lines.append(f"Run {run.lower()} again to retry what failed; what succeeded is kept.")
    for warning in result.warnings:
        lines.append(click.style("Warning: ", fg="yellow", bold=True) + warning)
    lines.append(f"Outputs: {outputs_path} (show them with `capella-deploy outputs --outputs {outputs_path}`)")
    return "\n".join(lines) + "\n"


def next_steps(detail: str) -> list[str]:
    """What a person can do about a failure, for the failures that have a known way out."""
    if "deployFailed" in detail:
        return [
            "Capella could not deploy this model (capacity, quota, or a model/GPU combination it does not offer).",
            "The failed deployment is left in place: the next apply replaces it. Check the model, region and",
            "gpuMemory first; `capella-deploy status` shows what is deployed, and the Capella console says more.",
        ]
    return []


def render_still_working(address: str, doing: str | None, elapsed: float) -> str:
    """A reminder that a change is still under way, with how long it has been running."""
    return f"{address}: still {doing or 'waiting to start'}... [{render_elapsed(elapsed)} elapsed]"


def render_apply_markdown(result: ApplyResult | None, where: Where | None = None) -> str:
    """The apply outcome for a CI job summary; ``None`` means there was nothing to change."""
    lines = ["### capella-deploy apply", ""]
    if where is not None:
        lines += [target_markdown(where), ""]
    if result is None:
        return "\n".join([*lines, "**No changes.** The organization matched the manifest."]) + "\n"
    lines.append(
        "**Apply complete.**" if result.ok else f"**Apply failed:** {len(result.failed)} change(s) did not complete."
    )
    lines += ["", "| resource | action | result |", "|---|---|---|"]
    for item in result.results:
        outcome = "✅ " + md_cell(item.detail) if item.ok else "❌ " + md_cell(item.detail)
        if item.warning:
            outcome += " ⚠️ " + md_cell(item.warning)
        lines.append(f"| `{item.address}` | {item.action.value} | {outcome} |")
    return "\n".join(lines) + "\n"


def render_elapsed(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def render_remaining(under_way: int, seconds: float) -> str:
    """How long the rest of an apply should take, in the round figures a person would say."""
    changes = "1 change" if under_way == 1 else f"{under_way} changes"
    minutes = round(seconds / 60)
    left = "under a minute" if minutes < 1 else "about 1 minute" if minutes == 1 else f"about {minutes} minutes"
    return f"{changes} under way; expected to finish in {left}"
