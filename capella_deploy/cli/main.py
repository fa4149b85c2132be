"""The capella-deploy command line: parsing, prompting, exit codes. The work happens elsewhere."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from capella_deploy import __version__
from capella_deploy.cli.common import (
    ExitCode,
    F,
    environment_option,
    files_option,
    guarded,
    load_checked_manifest,
    load_manifest_files,
    make_target,
    manifest_options,
    parse_duration,
    read_manifest_files,
    skip_catalog_option,
    target_option,
    target_options,
    variable_options,
    warn,
)
from capella_deploy.cli.conventions import (
    COMPLETE_VAR,
    Group,
    color_from_environment,
    configure_logging,
    reset_logging,
)
from capella_deploy.errors import CapellaError

if TYPE_CHECKING:
    from capella_deploy.manifest import Manifest
    from capella_deploy.plan import Plan
    from capella_deploy.run.apply import ApplyRequest
    from capella_deploy.run.lock import Lease
    from capella_deploy.run.session import Target

ENVIRONMENT = """\b
Environment:
  CAPELLA_API_TOKEN       Management API token (or --token-file); never a command-line value
  CAPELLA_API_URL         API base URL (default https://cloudapi.cloud.couchbase.com)
  CAPELLA_ORG_ID          organization, when the manifest sets no organizationId
  CAPELLA_RATE_LIMIT      requests per minute the client keeps under
  CAPELLA_SANDBOX_FAULTS  fault file for the embedded sandbox of --sandbox
  CAPELLA_DRIFT_WEBHOOK   where `drift --notify` posts
  CAPELLA_LOG             log level: debug, info, warning (default), error
  CAPELLA_LOG_PATH        write the log to this file instead of stderr
  NO_COLOR, FORCE_COLOR   plain text, or colours even off a terminal
"""


class _LazyGroup(Group):
    """Commands kept in other modules load only when run, so `--help` and `validate` start fast."""

    # name -> (module, attribute, the one-line help `--help` shows without importing the module)
    lazy = {
        "sandbox": ("capella_deploy.cli.sandbox", "sandbox_group", "Run or reset the embedded Capella sandbox."),
        "drift": ("capella_deploy.cli.ops", "drift", "Report how the organization differs from the manifest."),
        "export": ("capella_deploy.cli.ops", "export", "Write a manifest of what is live."),
        "clone": ("capella_deploy.cli.ops", "clone", "Write the manifest for the same deployment in another region."),
        "verify": ("capella_deploy.cli.checks", "verify", "Run the manifest's checks against the deployed models."),
        "env": ("capella_deploy.cli.outputs", "env", "Print OPENAI_BASE_URL and OPENAI_API_KEY for a model."),
        "outputs": ("capella_deploy.cli.outputs", "outputs", "Print the outputs of the last apply (tokens masked)."),
        "status": ("capella_deploy.cli.status", "status", "Show what is deployed in the organization."),
        "schema": ("capella_deploy.cli.meta", "schema", "Print a JSON Schema: the manifest, the JSON plan, ..."),
        "completion": ("capella_deploy.cli.meta", "completion", "Print the shell completion script."),
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
        if COMPLETE_VAR in os.environ:
            # A shell asking for completions: click answers in bytes, with names of commands, options and files.
            return super().main(*args, **kwargs)
        try:
            # Before parsing: a --debug anywhere on the line then raises the level as its option is read.
            configure_logging(os.environ)
        except CapellaError as exc:
            click.echo(click.style("Error: ", fg="red", bold=True) + str(exc), err=True)
            sys.exit(ExitCode.ERROR)
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
            finally:
                reset_logging()

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Whole summaries, wrapped: click's default cuts them at 45 characters.
        rows = [(name, cmd.get_short_help_str(limit=200)) for name, cmd in self.commands.items() if not cmd.hidden]
        rows += [(name, short) for name, (_, _, short) in self.lazy.items()]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=ENVIRONMENT)
@click.version_option(__version__, prog_name="capella-deploy")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Plan and apply Couchbase Capella AI Services deployments from YAML manifests.

    \b
    Example:
      capella-deploy plan -f capella.yaml -out capella.plan.json
      capella-deploy apply capella.plan.json
    """
    if ctx.color is None:  # --no-color, when given, has already said False
        ctx.color = color_from_environment(os.environ)
    # A CI runner cancels a job with SIGTERM: stop as at Ctrl-C, releasing the organization lock on the way out.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@main.command()
@click.argument("manifests", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@files_option("Manifest file; repeat to overlay files in order (checked together).")
@variable_options
@environment_option
@guarded
def validate(
    manifests: Sequence[Path],
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    environment: str | None,
) -> None:
    """Check manifests without talking to Capella: the -f files together (an overlay), each MANIFEST alone.

    \b
    Example:
      capella-deploy validate -f base.yaml -f prod.yaml --var-file prod.env
      capella-deploy validate capella/*.yaml          # each file on its own, as pre-commit runs it
    """
    from capella_deploy.catalog import CATALOG
    from capella_deploy.kinds import REGISTRY, tally
    from capella_deploy.manifest import ManifestError
    from capella_deploy.manifest.offered import check_catalog

    if not files and not manifests:
        raise click.UsageError("give the manifest: -f FILE (repeat to overlay) or MANIFEST ... (each on its own)")
    groups = ([list(files)] if files else []) + [[path] for path in manifests]
    problems = 0
    unoffered = 0
    for group in groups:
        try:
            loaded = read_manifest_files(group, variables, var_files, environment=environment)
        except ManifestError as exc:
            click.echo(str(exc), err=True)
            problems += len(exc.issues)
            continue
        manifest = loaded.manifest
        counts = tally({kind.kind: len(kind.specs(manifest)) for kind in REGISTRY})
        if len(groups) == 1:
            click.echo(f"The manifest is valid: {counts}.")
        else:
            click.echo(f"{' + '.join(str(path) for path in group)}: valid: {counts}.")
        # Warnings only: the catalog may be older than what Capella offers today; plan and apply decide.
        for finding in check_catalog(loaded, CATALOG).findings:
            warn(finding.text)
            unoffered += 1
    if unoffered:
        warn(
            f"{unoffered} value(s) above are not in the {CATALOG.label}: Capella would refuse to create them, "
            "and plan and apply refuse them too (--skip-catalog-check overrides that, should Capella offer them now)"
        )
    if problems:
        click.echo(f"{problems} problem(s) in the manifest{'s' if len(groups) > 1 else ''}.", err=True)
        sys.exit(ExitCode.ERROR)


@main.command()
@manifest_options
@target_options
@target_option
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when the plan has changes, 0 when none.")
@click.option("--out", "-out", "out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan here.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (docs/plan-json.md).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the plan as a Markdown PR comment.")
@click.option(
    "--replace",
    "replace",
    multiple=True,
    metavar="ADDRESS",
    help="Plan a replace of model.NAME or apiKey.NAME, or a credentials roll of provider.NAME.",
)
@click.option("--allow-mass-change", is_flag=True, help="Allow deleting or replacing more than 30% of resources.")
@click.option(
    "--outputs",
    "outputs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The outputs file apply writes (default from the manifest): which key tokens it holds decides "
    "which key of a name is kept, the credential versions it records whether credentials are rolled, and the "
    "plan lists what apply would change in it.",
)
@skip_catalog_option
@guarded
def plan(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    environment: str | None,
    sandbox: str | None,
    token_file: Path | None,
    targets: Sequence[str],
    detailed_exitcode: bool,
    out: Path | None,
    as_json: bool,
    as_markdown: bool,
    replace: Sequence[str],
    allow_mass_change: bool,
    outputs_path: Path | None,
    skip_catalog_check: bool,
) -> None:
    """Show what apply would change.

    \b
    Example:
      capella-deploy plan -f capella.yaml -out capella.plan.json -detailed-exitcode
    """
    from capella_deploy.views.plan import RENDERERS

    if as_json and as_markdown:
        raise click.UsageError("choose one of --json and --markdown")
    manifest, catalog, credentials = load_checked_manifest(
        files, variables, var_files, environment=environment, skip_catalog_check=skip_catalog_check
    )
    target = make_target(sandbox, token_file)

    async def run() -> Plan:
        from capella_deploy.run.apply import outputs_store
        from capella_deploy.run.planning import make_plan
        from capella_deploy.run.session import open_session

        async with open_session(
            target, manifest.organizationId, expected_name=manifest.expectOrganizationName
        ) as session:
            store = outputs_store(manifest, session.org_id, outputs_path)
            return await make_plan(
                session,
                manifest,
                replace,
                targets=targets,
                catalog=catalog,
                credentials=credentials,
                held_tokens=store.held_key_ids(),
                outputs=store.recorded(),
            )

    import asyncio

    result = asyncio.run(run())
    human = not as_json and not as_markdown
    click.echo(RENDERERS["json" if as_json else "markdown" if as_markdown else "human"](result), nl=False)
    if human and not result.errors:
        # A plan that cannot be applied has nothing to review: no checksum to hand on.
        click.echo(f"Plan checksum: {result.checksum()}")
    from capella_deploy.run.apply import blockers

    blocked = blockers(result, allow_mass_change)
    if out is not None and not blocked:
        from capella_deploy.plan import planfile

        planfile.save(out, result, manifest)
        click.echo(f"Saved the plan to {out}; apply exactly it with `capella-deploy apply {out}`.", err=not human)
    if blocked:
        # The human rendering already shows the plan's own errors; print each reason once.
        for reason in blocked:
            if not (human and reason in result.errors):
                click.echo(click.style("Error: ", fg="red", bold=True) + reason, err=True)
        sys.exit(ExitCode.ERROR)
    if detailed_exitcode and result.has_changes:
        sys.exit(ExitCode.CHANGES)


@main.command()
@click.argument("planfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON, exactly as `plan --json` does.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the plan as a Markdown PR comment.")
@guarded
def show(planfile: Path, as_json: bool, as_markdown: bool) -> None:
    """Show a saved plan (from `plan -out PLANFILE`) without talking to Capella.

    \b
    Example:
      capella-deploy show capella.plan.json --markdown
    """
    from capella_deploy.plan import planfile as planfiles
    from capella_deploy.views.plan import RENDERERS

    if as_json and as_markdown:
        raise click.UsageError("choose one of --json and --markdown")
    saved = planfiles.load(planfile)
    if as_json or as_markdown:
        click.echo(RENDERERS["json" if as_json else "markdown"](saved.plan), nl=False)
        return
    applied = (
        f"applied at {saved.applied_at}" if saved.applied_at else f"apply it with `capella-deploy apply {planfile}`"
    )
    click.echo(f"Saved plan {planfile}, made at {saved.created_at} by capella-deploy {saved.tool_version}; {applied}.")
    click.echo("")
    click.echo(RENDERERS["human"](saved.plan), nl=False)
    if not saved.plan.errors:
        click.echo(f"Plan checksum: {saved.plan.checksum()}")


def apply_options(func: F) -> F:
    for option in reversed(
        [
            click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation."),
            click.option(
                "--parallelism",
                default=10,
                show_default=True,
                type=click.IntRange(1, 100),
                help="How many changes run at once (the client's rate limit still applies).",
            ),
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
@files_option("Manifest file(s).")
@variable_options
@environment_option
@target_options
@target_option
@apply_options
@click.option("--checksum", help="Apply only if the plan computed now has this checksum.")
@click.option(
    "--replace",
    "replace",
    multiple=True,
    metavar="ADDRESS",
    help="Replace model.NAME, rotate apiKey.NAME, or roll the credentials of provider.NAME.",
)
@click.option("--allow-mass-change", is_flag=True, help="Allow deleting or replacing more than 30% of resources.")
@skip_catalog_option
@guarded
def apply(
    planfile: Path | None,
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    environment: str | None,
    sandbox: str | None,
    token_file: Path | None,
    targets: Sequence[str],
    checksum: str | None,
    replace: Sequence[str],
    allow_mass_change: bool,
    skip_catalog_check: bool,
    **options: Any,
) -> None:
    """Make the organization match the manifest (or apply a saved PLANFILE), wait, write outputs.

    A saved plan is applied without a question: it was reviewed when it was made.

    \b
    Example:
      capella-deploy apply capella.plan.json        # or: apply -f capella.yaml --auto-approve
    """
    if planfile is not None and (files or variables or var_files or replace or targets or skip_catalog_check):
        raise click.UsageError(
            "a saved plan already holds its manifest, variables, targets and catalog check: "
            "give PLANFILE or -f, not both"
        )
    if planfile is None and not files:
        raise click.UsageError("give a saved plan (PLANFILE) or the manifest (-f FILE)")
    manifest, catalog, credentials = None, None, None
    if planfile is None:
        manifest, catalog, credentials = load_checked_manifest(
            files, variables, var_files, environment=environment, skip_catalog_check=skip_catalog_check
        )
    else:
        options = {**options, "auto_approve": True}
    request = _request(
        make_target(sandbox, token_file),
        options,
        allow_mass_change=allow_mass_change,
        checksum=checksum,
        replace=tuple(replace),
        targets=tuple(targets),
        planfile=planfile,
        catalog=catalog,
        credentials=credentials or (),
        environment=environment,
    )
    _run_apply(manifest, request)


@main.command()
@manifest_options
@target_options
@target_option
@apply_options
@guarded
def destroy(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    environment: str | None,
    sandbox: str | None,
    token_file: Path | None,
    targets: Sequence[str],
    **options: Any,
) -> None:
    """Delete every model and key the manifest manages (preventDestroy still protects).

    \b
    Example:
      capella-deploy destroy -f capella.yaml --sandbox
    """
    # Destroying everything the manifest names is the point of the command: no mass-change guard.
    request = _request(
        make_target(sandbox, token_file), options, allow_mass_change=True, destroy=True, targets=tuple(targets)
    )
    _run_apply(load_manifest_files(files, variables, var_files, environment=environment), request)


@main.command(name="force-unlock")
@click.argument("lock_id")
@click.option("--org", "org_id", metavar="ORG_ID", help="The organization (default CAPELLA_ORG_ID, else the only one).")
@target_options
@guarded
def force_unlock(lock_id: str, org_id: str | None, sandbox: str | None, token_file: Path | None) -> None:
    """Free the organization lock LOCK_ID from anywhere, e.g. the lock of a run that died holding it.

    The lock error of the run that found it locked prints this command in full. A run still holding the lock
    stops at its next lease renewal.

    \b
    Example:
      capella-deploy force-unlock 3f2a9c1e --org 6af08c0a-8cab-4c1c-b257-b521575c16d0
    """
    import asyncio

    from capella_deploy.plan import OrgSource
    from capella_deploy.run.lock import force_unlock as unlock
    from capella_deploy.run.session import open_session

    target = make_target(sandbox, token_file)

    async def run() -> tuple[str, list[Lease]]:
        async with open_session(target, org_id, OrgSource.OPTION) as session:
            return session.org_id, await unlock(session.client, session.org_id, lock_id)

    org, removed = asyncio.run(run())
    click.echo(f"Removed the lock {lock_id} from organization {org}: {removed[0].describe()}.")


# -- internals ----------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with Ctrl-C ignored (in the background)
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


def _request(target: Target, options: Mapping[str, Any], **extra: Any) -> ApplyRequest:
    """A request from the options `apply_options` adds to a command, plus the command's own."""
    from capella_deploy.run.apply import ApplyRequest

    return ApplyRequest(
        target=target,
        auto_approve=options["auto_approve"],
        parallelism=options["parallelism"],
        timeout=parse_duration(options["timeout"], "--timeout"),
        outputs_target=options["outputs_target"],
        output_format=options["output_format"],
        lock_timeout=parse_duration(options["lock_timeout"], "--lock-timeout"),
        **extra,
    )


def _run_apply(manifest: Manifest | None, request: ApplyRequest) -> None:
    import asyncio

    from capella_deploy.cli.terminal import TerminalApplyView
    from capella_deploy.run.apply import run_apply

    view = TerminalApplyView(interactive=sys.stdout.isatty(), destroy=request.destroy)
    ok = asyncio.run(run_apply(manifest, request, view))
    sys.exit(ExitCode.OK if ok else ExitCode.ERROR)
