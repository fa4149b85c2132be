"""The capella-deploy command line: parsing, prompting, exit codes. The work happens elsewhere."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from capella_deploy import __version__

if TYPE_CHECKING:
    from capella_deploy.manifest import Manifest
    from capella_deploy.plan import Plan
    from capella_deploy.session import Session, Target


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    CHANGES = 2
    INTERRUPTED = 130


F = TypeVar("F", bound=Callable[..., Any])


def _target_options(func: F) -> F:
    """Options every command that talks to Capella takes."""
    func = click.option(
        "--sandbox",
        "sandbox",
        is_flag=False,
        flag_value=".capella/sandbox.json",
        default=None,
        metavar="[STATE]",
        help="Run against the embedded sandbox (state file, default .capella/sandbox.json).",
    )(func)
    func = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the Management API token from this file instead of CAPELLA_API_TOKEN.",
    )(func)
    return func


def _manifest_options(func: F) -> F:
    func = click.option(
        "-f",
        "--file",
        "files",
        multiple=True,
        required=True,
        type=click.Path(path_type=Path),
        help="Manifest file; repeat to overlay files in order.",
    )(func)
    func = click.option(
        "--var", "variables", multiple=True, metavar="K=V", help="Set a ${K} manifest variable."
    )(func)
    return func


def _guarded(func: F) -> F:
    """Turn every expected failure into a message and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from capella_deploy.errors import CapellaError
        from capella_deploy.manifest import ManifestError

        try:
            return func(*args, **kwargs)
        except ManifestError as exc:
            click.echo(str(exc), err=True)
            click.echo(f"{len(exc.issues)} problem(s) in the manifest.", err=True)
            sys.exit(ExitCode.ERROR)
        except CapellaError as exc:
            click.echo(click.style("Error: ", fg="red", bold=True) + str(exc), err=True)
            sys.exit(ExitCode.ERROR)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(ExitCode.INTERRUPTED)

    return wrapper  # type: ignore[return-value]


class _LazyGroup(click.Group):
    """Keeps the sandbox's server stack out of start-up until its commands are asked for."""

    lazy = {"sandbox": ("capella_deploy.sandbox.cli", "sandbox_group")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


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
@_manifest_options
@_guarded
def validate(files: Sequence[Path], variables: Sequence[str]) -> None:
    """Check manifests without talking to Capella."""
    manifest = _load(files, variables)
    click.echo(f"The manifest is valid: {len(manifest.models)} model(s), {len(manifest.apiKeys)} API key(s).")


@main.command()
@_manifest_options
@_target_options
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when the plan has changes, 0 when none.")
@click.option(
    "--replace",
    "replace",
    multiple=True,
    metavar="ADDRESS",
    help="Plan a replace of model.NAME or apiKey.NAME.",
)
@_guarded
def plan(
    files: Sequence[Path],
    variables: Sequence[str],
    sandbox: str | None,
    token_file: Path | None,
    detailed_exitcode: bool,
    replace: Sequence[str],
) -> None:
    """Show what apply would change."""
    from capella_deploy.render import render_plan

    manifest = _load(files, variables)
    target = _target(sandbox, token_file)

    async def run() -> Plan:
        from capella_deploy.session import open_session

        async with open_session(target, manifest.organizationId or None) as session:
            return await _make_plan(session, manifest, replace)

    result = asyncio.run(run())
    click.echo(render_plan(result), nl=False)
    if result.errors:
        sys.exit(ExitCode.ERROR)
    if detailed_exitcode and result.has_changes:
        sys.exit(ExitCode.CHANGES)


@main.command()
@_manifest_options
@_target_options
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--parallelism", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--timeout", default="60m", show_default=True, help="Per-resource wait limit, e.g. 90s, 30m, 2h."
)
@click.option(
    "--outputs", "outputs_path", type=click.Path(dir_okay=False, path_type=Path), help="Outputs file."
)
@click.option("--format", "output_format", type=click.Choice(["json", "dotenv"]), help="Outputs file format.")
@click.option(
    "--replace", "replace", multiple=True, metavar="ADDRESS", help="Replace model.NAME or rotate apiKey.NAME."
)
@_guarded
def apply(
    files: Sequence[Path],
    variables: Sequence[str],
    sandbox: str | None,
    token_file: Path | None,
    auto_approve: bool,
    parallelism: int,
    timeout: str,
    outputs_path: Path | None,
    output_format: str | None,
    replace: Sequence[str],
) -> None:
    """Make the organization match the manifest, wait for models, write outputs."""
    manifest = _load(files, variables)
    target = _target(sandbox, token_file)
    limit = _duration(timeout)
    code = asyncio.run(
        _apply(
            manifest,
            target,
            auto_approve,
            parallelism,
            limit,
            outputs_path,
            output_format,
            replace,
            destroy=False,
        )
    )
    sys.exit(code)


@main.command()
@_manifest_options
@_target_options
@click.option("--auto-approve", is_flag=True, help="Destroy without asking for confirmation.")
@click.option("--parallelism", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--timeout", default="60m", show_default=True, help="Per-resource wait limit.")
@click.option(
    "--outputs", "outputs_path", type=click.Path(dir_okay=False, path_type=Path), help="Outputs file."
)
@_guarded
def destroy(
    files: Sequence[Path],
    variables: Sequence[str],
    sandbox: str | None,
    token_file: Path | None,
    auto_approve: bool,
    parallelism: int,
    timeout: str,
    outputs_path: Path | None,
) -> None:
    """Delete every model and key the manifest manages (preventDestroy still protects)."""
    manifest = _load(files, variables)
    target = _target(sandbox, token_file)
    code = asyncio.run(
        _apply(
            manifest,
            target,
            auto_approve,
            parallelism,
            _duration(timeout),
            outputs_path,
            None,
            (),
            destroy=True,
        )
    )
    sys.exit(code)


@main.command()
@click.option(
    "--outputs",
    "outputs_path",
    default=".capella/outputs.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--format", "output_format", type=click.Choice(["json", "dotenv"]), default="json", show_default=True
)
@click.option("--show-secrets", is_flag=True, help="Print key tokens instead of a mask.")
@_guarded
def outputs(outputs_path: Path, output_format: str, show_secrets: bool) -> None:
    """Print the outputs of the last apply (tokens masked)."""
    from capella_deploy.errors import ConfigError
    from capella_deploy.outputs import Outputs, render_json

    if not outputs_path.exists():
        raise ConfigError(
            f"{outputs_path}: no outputs file; run `capella-deploy apply` first or pass --outputs"
        )
    fmt = "dotenv" if output_format == "dotenv" or outputs_path.suffix == ".env" else "json"
    store = Outputs(outputs_path, fmt)  # type: ignore[arg-type]
    click.echo(render_json(store.document() if show_secrets else store.masked()), nl=False)


# -- helpers ----------------------------------------------------------------------------------------


def _load(files: Sequence[Path], variables: Sequence[str]) -> Manifest:
    from capella_deploy.manifest import load_manifest

    parsed: dict[str, str] = {}
    for item in variables:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="--var")
        parsed[key] = value
    return load_manifest(list(files), variables=parsed)


def _target(sandbox: str | None, token_file: Path | None) -> Target:
    from capella_deploy.session import Target

    return Target(
        sandbox_state=Path(sandbox) if sandbox is not None else None,
        token_file=token_file,
        environ=dict(os.environ),
    )


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip()
    try:
        if value and value[-1] in units:
            return float(value[:-1]) * units[value[-1]]
        return float(value)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a duration like 90s, 30m or 2h", param_hint="--timeout"
        ) from None


async def _make_plan(
    session: Session, manifest: Manifest, replace: Sequence[str], *, destroy: bool = False
) -> Plan:
    from capella_deploy.live import read_live
    from capella_deploy.planner import plan as make_plan
    from capella_deploy.planner import plan_destroy

    live = await read_live(session.client, session.org_id)
    if destroy:
        return plan_destroy(manifest, live)
    now = datetime.fromtimestamp(session.clock.now(), tz=timezone.utc)
    return make_plan(manifest, live, now=now, force_replace=frozenset(replace))


async def _apply(
    manifest: Manifest,
    target: Target,
    auto_approve: bool,
    parallelism: int,
    timeout: float,
    outputs_path: Path | None,
    output_format: str | None,
    replace: Sequence[str],
    *,
    destroy: bool,
) -> int:
    from capella_deploy.applier import Applier, ApplyOptions
    from capella_deploy.outputs import Outputs
    from capella_deploy.render import render_apply_result, render_plan
    from capella_deploy.session import open_session

    async with open_session(target, manifest.organizationId or None) as session:
        plan = await _make_plan(session, manifest, replace, destroy=destroy)
        click.echo(render_plan(plan), nl=False)
        if plan.errors:
            return ExitCode.ERROR
        if not plan.has_changes:
            return ExitCode.OK
        if not auto_approve and not _confirm("destroy" if destroy else "apply"):
            click.echo("Nothing was changed.")
            return ExitCode.ERROR
        path = outputs_path or Path(manifest.outputs.path)
        fmt = output_format or manifest.outputs.format
        store = Outputs(path, fmt, org_id=plan.org_id)  # type: ignore[arg-type]
        applier = Applier(
            session.client,
            manifest,
            plan,
            store,
            clock=session.clock,
            options=ApplyOptions(parallelism=parallelism, timeout=timeout),
            progress=_progress_printer(session),
        )
        result = await applier.run()
    click.echo(render_apply_result(result, outputs_path=path), nl=False)
    return ExitCode.OK if result.ok else ExitCode.ERROR


def _confirm(verb: str) -> bool:
    from capella_deploy.errors import ConfigError

    if not sys.stdin.isatty():
        raise ConfigError(
            f"refusing to ask for confirmation: standard input is not a terminal; "
            f"review the plan above and run again with --auto-approve to {verb} it"
        )
    click.echo(f"Do you want to {verb} these changes? Only 'yes' will be accepted.")
    answer: str = click.prompt("  Enter a value", default="", show_default=False)
    return answer.strip() == "yes"


def _progress_printer(session: Session) -> Callable[[str, str], None]:
    started = session.clock.now()

    def report(address: str, message: str) -> None:
        elapsed = int(session.clock.now() - started)
        click.echo(f"{address}: {message} [{elapsed // 60}m{elapsed % 60:02d}s]")

    return report
