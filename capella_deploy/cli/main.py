"""The capella-deploy command line: parsing, prompting, exit codes. The work happens elsewhere."""

from __future__ import annotations

import importlib
import logging
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
    guarded,
    load_manifest_files,
    make_target,
    manifest_options,
    parse_duration,
    target_options,
)

if TYPE_CHECKING:
    from capella_deploy.manifest import Manifest
    from capella_deploy.plan import Plan
    from capella_deploy.run.apply import ApplyRequest
    from capella_deploy.run.lock import Lease
    from capella_deploy.run.session import Target


class _LazyGroup(click.Group):
    """Commands kept in other modules load only when run, so `--help` and `validate` start fast."""

    # name -> (module, attribute, the one-line help `--help` shows without importing the module)
    lazy = {
        "sandbox": ("capella_deploy.cli.sandbox", "sandbox_group", "Run or reset the embedded Capella sandbox."),
        "drift": ("capella_deploy.cli.ops", "drift", "Report how the organization differs from the manifest."),
        "export": ("capella_deploy.cli.ops", "export", "Write a manifest of what is live."),
        "clone": ("capella_deploy.cli.ops", "clone", "Write the manifest for the same deployment in another region."),
        "verify": ("capella_deploy.cli.checks", "verify", "Run the manifest's checks against the deployed models."),
        "env": ("capella_deploy.cli.checks", "env", "Print OPENAI_BASE_URL and OPENAI_API_KEY for a model."),
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
    # A CI runner cancels a job with SIGTERM: stop as at Ctrl-C, releasing the organization lock on the way out.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
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
def validate(files: Sequence[Path], variables: Sequence[str], environment: str | None) -> None:
    """Check manifests without talking to Capella."""
    manifest = load_manifest_files(files, variables, environment)
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
    environment: str | None,
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
    from capella_deploy.views.plan import RENDERERS

    if as_json and as_markdown:
        raise click.UsageError("choose one of --json and --markdown")
    manifest = load_manifest_files(files, variables, environment)
    target = make_target(sandbox, token_file)

    async def run() -> Plan:
        from capella_deploy.run.planning import make_plan
        from capella_deploy.run.session import open_session

        async with open_session(target, manifest.organizationId or None) as session:
            return await make_plan(session, manifest, replace)

    import asyncio

    result = asyncio.run(run())
    click.echo(RENDERERS["json" if as_json else "markdown" if as_markdown else "human"](result), nl=False)
    if not as_json and not as_markdown:
        click.echo(f"Plan checksum: {result.checksum()}")
    from capella_deploy.run.apply import blockers

    blocked = blockers(result, allow_mass_change)
    if out is not None and not blocked:
        from capella_deploy.plan import planfile

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
@environment_option
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
    environment: str | None,
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
    request = _request(
        make_target(sandbox, token_file),
        options,
        allow_mass_change=allow_mass_change,
        checksum=checksum,
        replace=tuple(replace),
        planfile=planfile,
        environment=environment,
    )
    _run_apply(load_manifest_files(files, variables, environment) if planfile is None else None, request)


@main.command()
@manifest_options
@target_options
@apply_options
@guarded
def destroy(
    files: Sequence[Path],
    variables: Sequence[str],
    environment: str | None,
    sandbox: str | None,
    token_file: Path | None,
    **options: Any,
) -> None:
    """Delete every model and key the manifest manages (preventDestroy still protects)."""
    # Destroying everything the manifest names is the point of the command: no mass-change guard.
    request = _request(make_target(sandbox, token_file), options, allow_mass_change=True, destroy=True)
    _run_apply(load_manifest_files(files, variables, environment), request)


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
@click.option("--org", "org_id", metavar="ORG_ID", help="The organization (default CAPELLA_ORG_ID, else the only one).")
@target_options
@guarded
def force_unlock(lock_id: str, org_id: str | None, sandbox: str | None, token_file: Path | None) -> None:
    """Remove the lock LOCK_ID from the organization, from anywhere: a run that died holding it, for one.

    The lock error of the run that found it locked prints this command in full. A run still holding the lock
    stops at its next lease renewal.
    """
    import asyncio

    from capella_deploy.run.lock import force_unlock as unlock
    from capella_deploy.run.session import open_session

    target = make_target(sandbox, token_file)

    async def run() -> tuple[str, list[Lease]]:
        async with open_session(target, org_id) as session:
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
        timeout=parse_duration(options["timeout"]),
        outputs_target=options["outputs_target"],
        output_format=options["output_format"],
        lock_timeout=parse_duration(options["lock_timeout"]),
        **extra,
    )


def _run_apply(manifest: Manifest | None, request: ApplyRequest) -> None:
    import asyncio

    from capella_deploy.cli.terminal import TerminalApplyView
    from capella_deploy.run.apply import run_apply

    ok = asyncio.run(run_apply(manifest, request, TerminalApplyView(interactive=sys.stdout.isatty())))
    sys.exit(ExitCode.OK if ok else ExitCode.ERROR)
