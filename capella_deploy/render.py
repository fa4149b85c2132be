"""Plans and apply results as text for people: Terraform's symbols, attribute-level before -> after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from capella_deploy.applier import ApplyResult
from capella_deploy.plan import Action, AttributeChange, Plan, ResourceChange

_SYMBOL = {
    Action.CREATE: ("+", "green", "will be created"),
    Action.UPDATE: ("~", "yellow", "will be updated in place"),
    Action.REPLACE: ("-/+", "red", "must be replaced"),
    Action.PAUSE: ("~", "yellow", "will be paused"),
    Action.RESUME: ("~", "yellow", "will be resumed"),
    Action.DELETE: ("-", "red", "will be destroyed"),
    Action.ROTATE: ("+/-", "yellow", "will be rotated (new key first, then the old one deleted)"),
}

_SUMMARY_ORDER = (
    (Action.CREATE, "to create"),
    (Action.UPDATE, "to update"),
    (Action.REPLACE, "to replace"),
    (Action.PAUSE, "to pause"),
    (Action.RESUME, "to resume"),
    (Action.ROTATE, "to rotate"),
    (Action.DELETE, "to destroy"),
)

_PAST = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.REPLACE: "replaced",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.ROTATE: "rotated",
    Action.DELETE: "destroyed",
}


def render_plan(plan: Plan) -> str:
    lines: list[str] = []
    pending = plan.pending
    if pending:
        lines.append(f"capella-deploy will perform the following actions in organization {plan.org_id}:")
        lines.append("")
        for change in pending:
            lines.extend(_render_change(change))
            lines.append("")
    else:
        lines.append(f"No changes. Organization {plan.org_id} matches the manifest.")
        lines.append("")
    if plan.unmanaged:
        lines.append("Unmanaged (live but not in the manifest; left alone):")
        for item in plan.unmanaged:
            lines.append(f"  {item.kind.value} {item.name!r} ({item.live_id})")
        lines.append("")
    for warning in plan.warnings:
        lines.append(click.style("Warning: ", fg="yellow", bold=True) + warning)
    for error in plan.errors:
        lines.append(click.style("Error: ", fg="red", bold=True) + error)
    if pending:
        lines.append(summary_line(plan))
    return "\n".join(lines).rstrip() + "\n"


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    parts = [f"{counts[action.value]} {label}" for action, label in _SUMMARY_ORDER]
    return click.style("Plan: ", bold=True) + ", ".join(parts) + "."


def _render_change(change: ResourceChange) -> list[str]:
    symbol, colour, verb = _SYMBOL[change.action]
    reason = f" ({change.reason})" if change.reason else ""
    header = [f"  # {change.address} {verb}{reason}"]
    opener = click.style(f"{symbol:>3}", fg=colour, bold=True) + f" {change.kind.value} {change.name!r}"
    if change.action is Action.CREATE:
        body = [_line("+", "green", key, None, value) for key, value in sorted((change.after or {}).items())]
    elif change.action is Action.DELETE:
        body = [_line("-", "red", key, value, None) for key, value in sorted((change.before or {}).items())]
    else:
        body = [_change_line(c) for c in change.attribute_changes]
    if not body:
        return [*header, opener]
    return [*header, opener + " {", *body, "    }"]


def _change_line(change: AttributeChange) -> str:
    note = click.style("  # forces replacement", fg="red") if change.forces_replace else ""
    return _line("~", "yellow", change.path, change.before, change.after) + note


def _line(symbol: str, colour: str, key: str, before: Any, after: Any) -> str:
    mark = click.style(symbol, fg=colour)
    if symbol == "+":
        return f"      {mark} {key} = {_value(after)}"
    if symbol == "-":
        return f"      {mark} {key} = {_value(before)}"
    return f"      {mark} {key} = {_value(before)} -> {_value(after)}"


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    return json.dumps(value, sort_keys=True)


def render_apply_result(result: ApplyResult, *, outputs_path: Path) -> str:
    done: dict[Action, int] = {}
    for item in result.results:
        if item.ok:
            done[item.action] = done.get(item.action, 0) + 1
    counts = ", ".join(f"{done.get(action, 0)} {_PAST[action]}" for action, _ in _SUMMARY_ORDER)
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
    lines.append(
        f"Outputs: {outputs_path} (show them with `capella-deploy outputs --outputs {outputs_path}`)"
    )
    return "\n".join(lines) + "\n"
