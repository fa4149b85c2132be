"""The apply operation's hooks for a terminal or a CI log: texts come from views/, this module only prints and asks."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from capella_deploy.apply.applier import ApplyResult
from capella_deploy.checks import CheckReport
from capella_deploy.cli.common import error, warn
from capella_deploy.errors import ConfigError
from capella_deploy.plan import Plan
from capella_deploy.views.apply import render_apply_result, render_elapsed, render_remaining, render_still_working
from capella_deploy.views.checks import render_checks
from capella_deploy.views.plan import render_plan

# Wall seconds between reminders of what is still under way: a person watches a terminal, a CI log is read later.
TERMINAL_REMINDER_SECONDS = 10.0
CI_REMINDER_SECONDS = 30.0


class TerminalApplyView:
    """Prints what apply does, a line per event, and reminds of long waits; asks for confirmation on a terminal."""

    def __init__(self, *, interactive: bool, destroy: bool = False) -> None:
        self.reminder_seconds: float | None = TERMINAL_REMINDER_SECONDS if interactive else CI_REMINDER_SECONDS
        self._interactive = interactive
        self._destroy = destroy
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
        what_changes = "resources" if self._destroy else "changes"
        click.echo(f"Do you want to {verb} these {what_changes}? Only {what} will be accepted.")
        answer: str = click.prompt("  Enter a value", default="", show_default=False)
        return answer.strip() == expected

    def declined(self) -> None:
        click.echo("Nothing was changed.")

    def progress(self, address: str, message: str, elapsed: float) -> None:
        self._doing[address] = message
        click.echo(f"{address}: {message} [{render_elapsed(elapsed)}]")

    def still_working(self, items: Sequence[tuple[str, float]], remaining: float) -> None:
        """One line per change still under way, each with its elapsed time (a CI log shows the run is alive), and
        how long the rest should take."""
        for address, since in items:
            line = render_still_working(address, self._doing.get(address), since)
            click.echo(click.style(line, dim=True) if self._interactive else line)
        click.echo(render_remaining(len(items), remaining))

    def applied(self, result: ApplyResult, outputs_path: Path) -> None:
        click.echo(render_apply_result(result, outputs_path=outputs_path, destroy=self._destroy), nl=False)

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
