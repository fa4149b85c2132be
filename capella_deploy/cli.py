"""The capella-deploy command line: parsing, prompting, exit codes. The work happens elsewhere."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from capella_deploy import __version__
from capella_deploy.cli_common import (
    ExitCode,
    F,
    guarded,
    load_manifest_files,
    make_plan,
    make_target,
    manifest_options,
    parse_duration,
    target_options,
)

if TYPE_CHECKING:
    from capella_deploy.applier import ApplyResult
    from capella_deploy.clock import Clock
    from capella_deploy.manifest import Manifest
    from capella_deploy.outputs import Outputs
    from capella_deploy.plan import Plan
    from capella_deploy.planfile import SavedPlan
    from capella_deploy.session import Session, Target


class _LazyGroup(click.Group):
    """Commands kept in other modules load only when run, so `--help` and `validate` start fast."""

    # name -> (module, attribute, the one-line help `--help` shows without importing the module)
    lazy = {
        "sandbox": ("capella_deploy.sandbox.cli", "sandbox_group", "Run or reset the embedded Capella sandbox."),
        "drift": ("capella_deploy.cli_ops", "drift", "Report how the organization differs from the manifest."),
        "export": ("capella_deploy.cli_ops", "export", "Write a manifest of what is live."),
        "clone": ("capella_deploy.cli_ops", "clone", "Write the manifest for the same deployment in another region."),
        "verify": ("capella_deploy.cli_checks", "verify", "Run the manifest's checks against the deployed models."),
        "env": ("capella_deploy.cli_checks", "env", "Print OPENAI_BASE_URL and OPENAI_API_KEY for a model."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr, _ = self.lazy[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        from capella_deploy.secrets import API_TOKEN_VARIABLE, masked_output, remember

        # click exits 2 on a usage error, which here means "changes present"; a mistyped command is an error.
        kwargs["standalone_mode"] = False
        # Known from the start, so even `validate`, which never reads the token, masks it in what it prints.
        remember(os.environ.get(API_TOKEN_VARIABLE, "").strip())
        with masked_output():
            try:
                return super().main(*args, **kwargs)
            except click.ClickException as exc:
                exc.show()
                sys.exit(ExitCode.ERROR)
            except click.Abort:
                click.echo("Aborted.", err=True)
                sys.exit(ExitCode.ERROR)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, cmd.get_short_help_str()) for name, cmd in self.commands.items() if not cmd.hidden]
        rows += [(name, short) for name, (_, _, short) in self.lazy.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capella-deploy")
@click.option("--debug", is_flag=True, help="Log every API request (never a secret) to stderr.")
def main(debug: bool) -> None:
    """Plan and apply Couchbase Capella AI Services deployments from YAML manifests."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)


@main.command()
@manifest_options
@guarded
def validate(files: Sequence[Path], variables: Sequence[str]) -> None:
    """Check manifests without talking to Capella."""
    manifest = load_manifest_files(files, variables)
    click.echo(f"The manifest is valid: {len(manifest.models)} model(s), {len(manifest.apiKeys)} API key(s).")


@main.command()
@manifest_options
@target_options
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when the plan has changes, 0 when none.")
@click.option("--out", "-out", "out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (docs/plan-json.md).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the plan as a Markdown PR comment.")
@click.option(
    "--replace", "replace", multiple=True, metavar="ADDRESS", help="Plan a replace of model.NAME or apiKey.NAME."
)
@click.option("--allow-mass-change", is_flag=True, help="Allow deleting or replacing more than 30% of resources.")
@guarded
def plan(
    files: Sequence[Path],
    variables: Sequence[str],
    sandbox: str | None,
    token_file: Path | None,
    detailed_exitcode: bool,
    out: Path | None,
    as_json: bool,
    as_markdown: bool,
    replace: Sequence[str],
    allow_mass_change: bool,
) -> None:
    """Show what apply would change."""
    from capella_deploy.render import RENDERERS

    if as_json and as_markdown:
        raise click.UsageError("choose one of --json and --markdown")
    manifest = load_manifest_files(files, variables)
    target = make_target(sandbox, token_file)

    async def run() -> Plan:
        from capella_deploy.session import open_session

        async with open_session(target, manifest.organizationId or None) as session:
            return await make_plan(session, manifest, replace)

    import asyncio

    result = asyncio.run(run())
    click.echo(RENDERERS["json" if as_json else "markdown" if as_markdown else "human"](result), nl=False)
    if not as_json and not as_markdown:
        click.echo(f"Plan checksum: {result.checksum()}")
    blocked = _blockers(result, allow_mass_change)
    if out is not None and not blocked:
        from capella_deploy import planfile

        planfile.save(out, result, manifest)
        click.echo(
            f"Saved the plan to {out}; apply exactly it with `capella-deploy apply {out}`.", err=as_json or as_markdown
        )
    if blocked:
        for reason in blocked:
            click.echo(click.style("Error: ", fg="red", bold=True) + reason, err=True)
        sys.exit(ExitCode.ERROR)
    if detailed_exitcode and result.has_changes:
        sys.exit(ExitCode.CHANGES)


def apply_options(func: F) -> F:
    for option in reversed(
        [
            click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation."),
            click.option("--parallelism", default=10, show_default=True, type=click.IntRange(1, 100)),
            click.option("--timeout", default="60m", show_default=True, help="Per-resource wait limit: 90s, 30m, 2h."),
            click.option(
                "--outputs",
                "outputs_target",
                metavar="PATH|github|aws-secretsmanager:PREFIX",
                help="Outputs file (default from the manifest), or also publish to $GITHUB_OUTPUT or Secrets Manager.",
            ),
            click.option(
                "--format", "output_format", type=click.Choice(["json", "dotenv"]), help="Outputs file format."
            ),
            click.option(
                "--lock-timeout", default="0s", show_default=True, help="How long to wait for another run's lock."
            ),
        ]
    ):
        func = option(func)
    return func


@main.command()
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-f", "--file", "files", multiple=True, type=click.Path(path_type=Path), help="Manifest file(s).")
@click.option("--var", "variables", multiple=True, metavar="K=V", help="Set a ${K} manifest variable.")
@target_options
@apply_options
@click.option("--checksum", help="Apply only if the plan computed now has this checksum.")
@click.option(
    "--replace", "replace", multiple=True, metavar="ADDRESS", help="Replace model.NAME or rotate apiKey.NAME."
)
@click.option("--allow-mass-change", is_flag=True, help="Allow deleting or replacing more than 30% of resources.")
@guarded
def apply(
    planfile: Path | None,
    files: Sequence[Path],
    variables: Sequence[str],
    sandbox: str | None,
    token_file: Path | None,
    checksum: str | None,
    replace: Sequence[str],
    allow_mass_change: bool,
    **options: Any,
) -> None:
    """Make the organization match the manifest (or apply a saved PLANFILE), wait, write outputs."""
    if planfile is not None and (files or variables or replace):
        raise click.UsageError("a saved plan already holds its manifest: give PLANFILE or -f, not both")
    if planfile is None and not files:
        raise click.UsageError("give a saved plan (PLANFILE) or the manifest (-f FILE)")
    request = _ApplyRequest.of(
        make_target(sandbox, token_file),
        options,
        allow_mass_change=allow_mass_change,
        checksum=checksum,
        replace=tuple(replace),
        planfile=planfile,
    )
    manifest = load_manifest_files(files, variables) if planfile is None else None
    import asyncio

    sys.exit(asyncio.run(_apply(manifest, request, destroy=False)))


@main.command()
@manifest_options
@target_options
@apply_options
@guarded
def destroy(
    files: Sequence[Path], variables: Sequence[str], sandbox: str | None, token_file: Path | None, **options: Any
) -> None:
    """Delete every model and key the manifest manages (preventDestroy still protects)."""
    # Destroying everything the manifest names is the point of the command: no mass-change guard.
    request = _ApplyRequest.of(make_target(sandbox, token_file), options, allow_mass_change=True)
    import asyncio

    sys.exit(asyncio.run(_apply(load_manifest_files(files, variables), request, destroy=True)))


@main.command()
@click.option(
    "--outputs",
    "outputs_path",
    default=".capella/outputs.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "dotenv"]),
    default="json",
    show_default=True,
    help="Print as.",
)
@click.option("--show-secrets", is_flag=True, help="Print key tokens instead of a mask.")
@guarded
def outputs(outputs_path: Path, output_format: str, show_secrets: bool) -> None:
    """Print the outputs of the last apply (tokens masked); the file may be JSON or dotenv."""
    from capella_deploy.errors import ConfigError
    from capella_deploy.outputs import Outputs, render_dotenv, render_json
    from capella_deploy.secrets import revealed

    if not outputs_path.exists():
        raise ConfigError(f"{outputs_path}: no outputs file; run `capella-deploy apply` first or pass --outputs")
    store = Outputs(outputs_path)
    doc = store.document() if show_secrets else store.masked()
    with revealed():
        click.echo((render_json if output_format == "json" else render_dotenv)(doc), nl=False)


@main.command(name="force-unlock")
@click.argument("lock_id")
@click.option("--org", "org_id", required=True, help="The organization whose lock to remove.")
@guarded
def force_unlock(lock_id: str, org_id: str) -> None:
    """Remove the lock a killed run left behind (its id is in the error the next run prints)."""
    from capella_deploy.lock import DEFAULT_LOCK_DIR
    from capella_deploy.lock import force_unlock as unlock

    holder = unlock(DEFAULT_LOCK_DIR, org_id, lock_id)
    click.echo(f"Removed the lock {holder.id} that {holder.owner} took for {holder.operation} at {holder.created_at}.")


# -- internals ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ApplyRequest:
    target: Target
    auto_approve: bool
    parallelism: int
    timeout: float
    outputs_target: str | None
    output_format: str | None
    allow_mass_change: bool
    lock_timeout: float = 0.0
    checksum: str | None = None
    replace: tuple[str, ...] = ()
    planfile: Path | None = None

    @classmethod
    def of(cls, target: Target, options: Mapping[str, Any], **extra: Any) -> _ApplyRequest:
        """A request from the options `apply_options` adds to a command, plus the command's own."""
        return cls(
            target=target,
            auto_approve=options["auto_approve"],
            parallelism=options["parallelism"],
            timeout=parse_duration(options["timeout"]),
            outputs_target=options["outputs_target"],
            output_format=options["output_format"],
            lock_timeout=parse_duration(options["lock_timeout"]),
            **extra,
        )


def _blockers(plan: Plan, allow_mass_change: bool) -> list[str]:
    """Reasons this plan must not be applied."""
    reasons = list(plan.errors)
    mass = None if allow_mass_change else plan.mass_change()
    if mass:
        reasons.append(mass)
    return reasons


async def _apply(manifest: Manifest | None, request: _ApplyRequest, *, destroy: bool) -> int:
    from capella_deploy import planfile
    from capella_deploy.lock import org_lock
    from capella_deploy.session import open_session

    saved = planfile.load(request.planfile) if request.planfile is not None else None
    if saved is not None:
        manifest = saved.manifest
    assert manifest is not None
    org = (saved.plan.org_id if saved else None) or manifest.organizationId or None
    async with open_session(request.target, org) as session:
        with org_lock(session.org_id, "destroy" if destroy else "apply", timeout=request.lock_timeout):
            return await _apply_locked(session, manifest, saved, request, destroy=destroy)


async def _apply_locked(
    session: Session, manifest: Manifest, saved: SavedPlan | None, request: _ApplyRequest, *, destroy: bool
) -> int:
    from capella_deploy import planfile
    from capella_deploy.applier import Applier, ApplyOptions
    from capella_deploy.errors import ConfigError
    from capella_deploy.live import read_live
    from capella_deploy.outputs import Outputs, format_for
    from capella_deploy.render import render_apply_result, render_plan

    if saved is not None:
        live = await read_live(session.client, session.org_id)
        planfile.check_fresh(saved, live.fingerprint())
        plan = saved.plan
    else:
        plan = await make_plan(session, manifest, request.replace, destroy=destroy)
    click.echo(render_plan(plan), nl=False)
    if request.checksum is not None and request.checksum != plan.checksum():
        raise ConfigError(
            f"the plan computed now has checksum {plan.checksum()}, not the reviewed {request.checksum}: "
            "the manifest or the organization changed since the review; plan and review again"
        )
    blocked = _blockers(plan, request.allow_mass_change)
    if blocked:
        for reason in blocked:
            click.echo(click.style("Error: ", fg="red", bold=True) + reason, err=True)
        return ExitCode.ERROR
    sink = _outputs_sink(request.outputs_target)
    path = Path(request.outputs_target) if request.outputs_target and sink is None else Path(manifest.outputs.path)
    store = Outputs(path, format_for(path, request.output_format, manifest.outputs.format), org_id=plan.org_id)
    if not plan.has_changes:
        # Nothing to change; the declared checks still say whether the deployment answers.
        return await _after_apply(session, manifest, store, request, sink, result=None, destroy=destroy)
    if not request.auto_approve and not _confirm("destroy" if destroy else "apply", plan.org_id if destroy else None):
        click.echo("Nothing was changed.")
        return ExitCode.ERROR
    # A token the API returns must have somewhere to go: find out now, before anything is created.
    store.save()
    if saved is not None:
        planfile.mark_applied(saved)
    progress = _Progress(session.clock, live=sys.stdout.isatty())
    applier = Applier(
        session.client,
        manifest,
        plan,
        store,
        clock=session.clock,
        options=ApplyOptions(parallelism=request.parallelism, timeout=request.timeout),
        progress=progress.report,
    )
    with progress.ticking(applier.active):
        result = await applier.run()
    click.echo(render_apply_result(result, outputs_path=store.path), nl=False)
    return await _after_apply(session, manifest, store, request, sink, result=result, destroy=destroy)


async def _after_apply(
    session: Session,
    manifest: Manifest,
    store: Outputs,
    request: _ApplyRequest,
    sink: Callable[[Outputs], None] | None,
    *,
    result: ApplyResult | None,
    destroy: bool,
) -> int:
    """Settle and record outputs, publish them, run the checks when all was applied, report to the job summary."""
    from capella_deploy.checks import render_checks_markdown
    from capella_deploy.cli_checks import checks_after_apply
    from capella_deploy.render import render_apply_markdown
    from capella_deploy.secrets import redact
    from capella_deploy.settle import settle_outputs

    applied = result is None or result.ok
    if not destroy:
        failed = frozenset(
            r.address.removeprefix("model.")
            for r in (result.failed if result else ())
            if r.address.startswith("model.")
        )
        settled = await settle_outputs(
            session.client, session.org_id, manifest, store, clock=session.clock, timeout=request.timeout, failed=failed
        )
        for warning in settled.warnings:
            click.echo(click.style("Warning: ", fg="yellow", bold=True) + warning, err=True)
        for problem in settled.unsettled:
            click.echo(click.style("Error: ", fg="red", bold=True) + problem, err=True)
        applied = applied and not settled.unsettled
    if sink is not None:
        sink(store)
    report = None
    if applied and not destroy:
        report = await checks_after_apply(manifest, store.document(), sandbox_state=request.target.sandbox_state)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        text = render_apply_markdown(result) + ("\n" + render_checks_markdown(report) if report is not None else "")
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(redact(text))
    return ExitCode.OK if applied and (report is None or report.ok) else ExitCode.ERROR


def _outputs_sink(target: str | None) -> Callable[[Outputs], None] | None:
    """Where outputs go besides the file: `github` or `aws-secretsmanager:PREFIX`; None for a plain path."""
    from capella_deploy.outputs import publish_to_github
    from capella_deploy.secretstores import aws_prefix, publish_to_aws_secrets_manager

    if target == "github":
        return lambda store: publish_to_github(store, os.environ)
    prefix = aws_prefix(target)
    if prefix is not None:
        return lambda store: click.echo(
            f"Wrote {len(publish_to_aws_secrets_manager(store.document(), prefix))} secret(s) under {prefix}/."
        )
    return None


def _confirm(verb: str, org_id: str | None) -> bool:
    """Ask for 'yes' (or, to destroy, the organization id) on a terminal; never prompt a pipeline."""
    from capella_deploy.errors import ConfigError

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


class _Progress:
    """Apply's progress: a line per event and, on a terminal, a 'still ...' line for long waits."""

    TICK_SECONDS = 10.0  # wall time between reminders of what is still under way

    def __init__(self, clock: Clock, *, live: bool) -> None:
        self._clock = clock
        self._started = clock.now()
        self._live = live
        self._doing: dict[str, str] = {}

    def report(self, address: str, message: str) -> None:
        self._doing[address] = message
        click.echo(f"{address}: {message} [{self._elapsed(self._started)}]")

    @contextlib.contextmanager
    def ticking(self, active: Mapping[str, float]) -> Iterator[None]:
        """While the block runs, remind a person at a terminal every few seconds of what is still going on."""
        if not self._live:
            yield
            return
        import asyncio

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.TICK_SECONDS)
                for address, since in sorted(active.items()):
                    doing = self._doing.get(address, "working")
                    click.echo(click.style(f"{address}: still {doing}... [{self._elapsed(since)} elapsed]", dim=True))

        task = asyncio.ensure_future(tick())
        try:
            yield
        finally:
            task.cancel()

    def _elapsed(self, since: float) -> str:
        seconds = int(self._clock.now() - since)
        return f"{seconds // 60}m{seconds % 60:02d}s"
