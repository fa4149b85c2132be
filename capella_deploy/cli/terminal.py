"""The apply operation's hooks for a terminal or a CI log: texts come from views/, this module only prints and asks."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from capella_deploy.apply.applier import ApplyResult
from capella_deploy.checks import CheckReport
from capella_deploy.errors import ConfigError
from capella_deploy.plan import Plan
from capella_deploy.views.apply import render_apply_result, render_elapsed
from capella_deploy.views.checks import render_checks
from capella_deploy.views.plan import render_plan

# Wall seconds between reminders of what is still under way: a person watches a terminal, a CI log is read later.
TERMINAL_REMINDER_SECONDS = 10.0
CI_REMINDER_SECONDS = 30.0


def warn(text: str) -> None:
    click.echo(click.style("Warning: ", fg="yellow", bold=True) + text, err=True)


def error(text: str) -> None:
    click.echo(click.style("Error: ", fg="red", bold=True) + text, err=True)


class TerminalApplyView:
    """Prints what apply does, a line per event, and reminds of long waits; asks for confirmation on a terminal."""

    def __init__(self, *, interactive: bool) -> None:
        self.reminder_seconds: float | None = TERMINAL_REMINDER_SECONDS if interactive else CI_REMINDER_SECONDS
        self._interactive = interactive
        self._doing: dict[str, str] = {}

    def plan_ready(self, plan: Plan) -> None:
        click.echo(render_plan(plan), nl=False)

    def blocked(self, reasons: Sequence[str]) -> None:
        for reason in reasons:
            error(reason)

    def confirm(self, verb: str, org_id: str | None) -> bool:
        """Ask for 'yes' (or, to destroy, the organization id) on a terminal; never prompt a pipeline."""
        if not sys.stdin.isatty():
            raise ConfigError(
                "refusing to ask for confirmation: standard input is not a terminal; "
                f"review the plan above and run again with --auto-approve to {verb} it"
            )
        expected = org_id or "yes"
        what = f"the organization id ({org_id})" if org_id else "'yes'"
        click.echo(f"Do you want to {verb} these changes? Only {what} will be accepted.")
        answer: str = click.prompt("  Enter a value", default="", show_default=False)
        return answer.strip() == expected

    def declined(self) -> None:
        click.echo("Nothing was changed.")

    def progress(self, address: str, message: str, elapsed: float) -> None:
        self._doing[address] = message
        click.echo(f"{address}: {message} [{render_elapsed(elapsed)}]")

    def still_working(self, items: Sequence[tuple[str, float]]) -> None:
        for address, since in items:
            doing = self._doing.get(address, "working")
            line = f"{address}: still {doing}... [{render_elapsed(since)} elapsed]"
            click.echo(click.style(line, dim=True) if self._interactive else line)

    def applied(self, result: ApplyResult, outputs_path: Path) -> None:
        click.echo(render_apply_result(result, outputs_path=outputs_path), nl=False)

    def checks(self, report: CheckReport) -> None:
        click.echo(render_checks(report), nl=False)
        if not report.ok:
            click.echo("The resources are kept; fix what the checks report and run `capella-deploy verify` again.")

    def note(self, text: str) -> None:
        click.echo(text)

    def warning(self, text: str) -> None:
        warn(text)

    def error(self, text: str) -> None:
        error(text)
