"""Plans rendered three ways (human, JSON, Markdown) behind one interface, and apply summaries."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from capella_deploy import __version__
from capella_deploy.kinds import kind_of
from capella_deploy.kinds.base import Action, AttributeChange, OutputChange, ResourceChange
from capella_deploy.plan import Plan, display
from capella_deploy.views.target import target_line, target_markdown

_SYMBOL = {
    Action.CREATE: ("+", "green", "will be created"),
    Action.UPDATE: ("~", "yellow", "will be updated in place"),
    Action.REPLACE: ("-/+", "red", "must be replaced"),
    Action.REPLACE_CREATE_FIRST: ("+/-", "red", "must be replaced (the new one first, then the old one deleted)"),
    Action.PAUSE: ("~", "yellow", "will be paused"),
    Action.RESUME: ("~", "yellow", "will be resumed"),
    Action.DELETE: ("-", "red", "will be destroyed"),
    Action.ROTATE: ("+/-", "yellow", "will be rotated (a new key, and the old one deleted)"),
}

SUMMARY_ORDER = (
    (Action.CREATE, "to create"),
    (Action.UPDATE, "to update"),
    (Action.REPLACE, "to replace"),
    (Action.PAUSE, "to pause"),
    (Action.RESUME, "to resume"),
    (Action.ROTATE, "to rotate"),
    (Action.DELETE, "to destroy"),
)


def render_plan(plan: Plan) -> str:
    lines: list[str] = []
    pending = plan.pending
    if plan.where is not None:
        lines += [target_line(plan.where), ""]
        acting, whole = "", "The organization"
    else:
        place = f"organization {plan.org_id}" + (f" (environment {plan.environment})" if plan.environment else "")
        acting, whole = f" in {place}", place[0].upper() + place[1:]
    if pending:
        lines.append(f"capella-deploy will perform the following actions{acting}:")
        lines.append("")
        for change in pending:
            lines.extend(_render_change(change))
            lines.append("")
    elif plan.output_changes:
        lines.append(f"No changes to resources. {whole} matches the manifest, but the outputs do not.")
        lines.append("")
    else:
        lines.append(f"No changes. {whole} matches the manifest.")
        lines.append("")
    if plan.output_changes:
        lines.extend(_render_outputs(plan))
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
    elif plan.output_changes:
        lines.append(
            click.style("Plan: ", bold=True) + f"{len(plan.output_changes)} output value(s) to change; "
            "apply rewrites the outputs file and changes nothing in the organization."
        )
    return "\n".join(lines).rstrip() + "\n"


def _render_outputs(plan: Plan) -> list[str]:
    lines = ["Changes to outputs (what applications read from the outputs file):"]
    shown: ResourceChange | None = None
    for change, output in plan.output_changes:
        if change is not shown:
            lines.append(f"  {change.ref}:")
            shown = change
        symbol, colour = _output_symbol(output)
        lines.append(f"    {click.style(symbol, fg=colour)} {output.path} = {_output_value(output)}")
    return lines


def _output_symbol(output: OutputChange) -> tuple[str, str]:
    if output.before is None:
        return "+", "green"
    if output.after is None and not output.known_after_apply:
        return "-", "red"
    return "~", "yellow"


def _output_value(output: OutputChange) -> str:
    after = KNOWN_AFTER_APPLY if output.known_after_apply else display(output.after)
    if output.before is None:
        return after
    if output.after is None and not output.known_after_apply:
        return display(output.before)
    return f"{display(output.before)} -> {after}"


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    parts = [f"{counts[action.value]} {label}" for action, label in SUMMARY_ORDER]
    return click.style("Plan: ", bold=True) + ", ".join(parts) + "."


def _render_change(change: ResourceChange) -> list[str]:
    symbol, colour, verb = _SYMBOL[change.action]
    reason = f" ({change.reason})" if change.reason else ""
    header = [f"  # {change.address} {verb}{reason}"]
    header += [f"  # (after {address} is ready)" for address in change.depends_on]
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
    mark = click.style("~", fg="yellow")
    return f"      {mark} {change.path} = {display(change.before)} -> {declared(change)}{note}"


def declared(change: AttributeChange) -> str:
    """The value a change makes, as shown: ``(default: [])`` when it resets what the manifest leaves unset."""
    return f"(default: {display(change.after)})" if change.to_default else display(change.after)


def _line(symbol: str, colour: str, key: str, before: Any, after: Any) -> str:
    mark = click.style(symbol, fg=colour)
    if symbol == "+":
        return f"      {mark} {key} = {display(after)}"
    return f"      {mark} {key} = {display(before)}"


# -- JSON ------------------------------------------------------------------------------------------

JSON_FORMAT_VERSION = "3.0"
SENSITIVE = "(sensitive value)"
KNOWN_AFTER_APPLY = "(known after apply)"


def _with_sensitive_markers(change: ResourceChange) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A value known only after apply and secret (a new key's token) is named, masked, and listed as sensitive."""
    after = change.after
    sensitive = kind_of(change.kind).sensitive
    if not sensitive or after is None or change.action is Action.NOOP:
        return after, {}
    return {**after, **dict.fromkeys(sensitive, SENSITIVE)}, dict.fromkeys(sensitive, True)


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as a document in the spirit of ``terraform show -json`` (see docs/plan-json.md)."""
    resource_changes = []
    drift = []
    for change in plan.changes:
        after, after_sensitive = _with_sensitive_markers(change)
        entry: dict[str, Any] = {
            "address": change.address,
            "type": kind_of(change.kind).resource_type,
            "name": change.name,
            "live_id": change.live_id,
            "change": {
                "actions": list(change.action.steps),
                "before": change.before,
                "after": after,
                "before_sensitive": {},
                "after_sensitive": after_sensitive,
                "replace_paths": [[c.path] for c in change.attribute_changes if c.forces_replace],
                "attributes": [c.to_dict() for c in change.attribute_changes],
            },
            "reason": change.reason,
            "depends_on": [str(a) for a in change.depends_on],
        }
        if change.cause:
            entry["action_reason"] = change.cause
        resource_changes.append(entry)
        if change.before is not None and change.after is not None and change.attribute_changes:
            drift.append(
                {
                    "address": change.address,
                    "type": kind_of(change.kind).resource_type,
                    "name": change.name,
                    "live_id": change.live_id,
                    "attributes": [c.to_dict() for c in change.attribute_changes],
                }
            )
    return {
        "format_version": JSON_FORMAT_VERSION,
        "tool_version": __version__,
        "organization_id": plan.org_id,
        "environment": plan.environment,
        "target": plan.where.to_dict() if plan.where is not None else None,
        "checksum": plan.checksum(),
        "live_fingerprint": plan.live_fingerprint,
        "manifest_digest": plan.manifest_digest,
        "summary": plan.counts(),
        "resource_changes": resource_changes,
        "resource_drift": drift,
        "output_changes": [{"address": str(change.ref), **output.to_dict()} for change, output in plan.output_changes],
        "unmanaged": [u.to_dict() for u in plan.unmanaged],
        "errors": list(plan.errors),
        "warnings": list(plan.warnings),
        "targets": list(plan.targets),
    }


def render_json_plan(plan: Plan) -> str:
    return json.dumps(plan_json(plan), indent=2, sort_keys=True) + "\n"


# -- Markdown ----------------------------------------------------------------------------------------

MARKDOWN_MARKER = "<!-- capella-deploy-plan -->"


def markdown_marker(environment: str | None) -> str:
    """The first line of a plan comment: a pipeline finds its comment again by it, one per environment."""
    return f"<!-- capella-deploy-plan:{environment} -->" if environment else MARKDOWN_MARKER


_EMOJI = {
    Action.CREATE: "🟢",
    Action.UPDATE: "🟡",
    Action.REPLACE: "🔴",
    Action.REPLACE_CREATE_FIRST: "🔴",
    Action.PAUSE: "⏸️",
    Action.RESUME: "▶️",
    Action.ROTATE: "🔁",
    Action.DELETE: "🔴",
}


def render_markdown(plan: Plan) -> str:
    """A pull-request comment: counts, a table of changes, the full diff folded away. No secrets."""
    counts = plan.counts()
    summary = ", ".join(f"**{counts[a.value]}** {label}" for a, label in SUMMARY_ORDER if counts[a.value])
    title = f"environment `{plan.environment}` (organization `{plan.org_id}`)" if plan.environment else None
    lines = [
        markdown_marker(plan.environment),
        f"### capella-deploy plan for {title or f'organization `{plan.org_id}`'}",
        "",
    ]
    if plan.where is not None:
        lines += [target_markdown(plan.where), ""]
    if summary:
        lines.append(summary + ".")
    elif plan.output_changes:
        lines.append(
            f"**No changes to resources**, but **{len(plan.output_changes)}** output value(s) change: apply "
            "rewrites the outputs file."
        )
    else:
        lines.append("**No changes.** The organization matches the manifest.")
    lines.append("")
    if plan.errors:
        lines.append("> [!CAUTION]")
        lines.extend(f"> {md_cell(error)}" for error in plan.errors)
        lines.append("")
    if plan.warnings:
        lines.append("> [!WARNING]")
        lines.extend(f"> {md_cell(warning)}" for warning in plan.warnings)
        lines.append("")
    if plan.pending:
        lines += ["| | resource | action | why |", "|---|---|---|---|"]
        for change in plan.pending:
            why = md_cell(change.reason or "")
            lines.append(f"| {_EMOJI[change.action]} | `{change.address}` | {change.action.value} | {why} |")
        lines += ["", "<details><summary>Details</summary>", "", "```diff"]
        for change in plan.pending:
            lines.extend(_diff_lines(change))
        lines += ["```", "", "</details>", ""]
    if plan.output_changes:
        lines += ["#### Changes to outputs", "", "| resource | value | before | after |", "|---|---|---|---|"]
        for change, output in plan.output_changes:
            before = "(none)" if output.before is None else f"`{md_cell(display(output.before))}`"
            after = KNOWN_AFTER_APPLY if output.known_after_apply else f"`{md_cell(display(output.after))}`"
            if output.after is None and not output.known_after_apply:
                after = "(removed)"
            lines.append(f"| `{change.ref}` | `{output.path}` | {before} | {after} |")
        lines.append("")
    if plan.unmanaged:
        names = ", ".join(f"`{u.kind.value}.{u.name}`" for u in plan.unmanaged)
        lines += [f"Unmanaged (left alone): {names}", ""]
    if not plan.errors:  # a plan that cannot be applied has no checksum to approve
        lines.append(f"Plan checksum: `{plan.checksum()}`")
    return "\n".join(lines).rstrip("\n") + "\n"


def _diff_lines(change: ResourceChange) -> list[str]:
    out = [f"# {change.address}: {change.action.value}" + (f" ({change.reason})" if change.reason else "")]
    out += [f"# after {address} is ready" for address in change.depends_on]
    if change.action is Action.CREATE:
        out += [f"+ {k} = {display(v)}" for k, v in sorted((change.after or {}).items())]
    elif change.action is Action.DELETE:
        out += [f"- {k} = {display(v)}" for k, v in sorted((change.before or {}).items())]
    for c in change.attribute_changes:
        out += [f"- {c.path} = {display(c.before)}", f"+ {c.path} = {declared(c)}"]
    return out


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


RENDERERS: dict[str, Callable[[Plan], str]] = {
    "human": lambda plan: render_plan(plan),
    "json": render_json_plan,
    "markdown": render_markdown,
}
