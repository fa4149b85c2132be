"""``capella-deploy sandbox serve|reset``: the sandbox as a standalone local Capella."""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from capella_deploy.cli.common import guarded
from capella_deploy.cli.conventions import Group
from capella_deploy.errors import ConfigError

if TYPE_CHECKING:
    from capella_deploy.sandbox.operations import Rules

DEFAULT_STATE = Path(".capella/sandbox.json")
DEFAULT_PORT = 8480
TOKEN_ENV = "CAPELLA_API_TOKEN"

_world_option = click.option(
    "--world",
    type=click.Choice(["spec", "conflicts"]),
    help="The rules the world follows, kept in the state file: spec (the official API spec: names may repeat, "
    "validation errors are 422) or conflicts (duplicate names and edits during a transition answer 409).",
)
_state_option = click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    help="JSON file holding the sandbox world; every process given the same file sees one world.",
)


@click.group("sandbox", cls=Group)
def sandbox_group() -> None:
    """A local Capella AI Services (Management API and Model Service API) for trying things safely.

    \b
    Example:
      capella-deploy sandbox serve --port 8480 --speed 600
    """


@sandbox_group.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@_state_option
@_world_option
@click.option(
    "--faults",
    "faults_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML or JSON fault file (see 'The sandbox' in README.md).",
)
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), help="Sandbox seconds per real second.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of responses and fault dice.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File holding the Management API token to accept (else ${TOKEN_ENV}, else the default).",
)
@click.option("--latency-ms", type=click.FloatRange(min=0), help="Added latency on every request.")
@click.option("--error-rate", type=click.FloatRange(0, 1), help="Share of requests answered 503.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), help="Share of requests whose connection drops.")
@click.option("--rate-limit", type=click.IntRange(min=1), help="Requests per minute per token before 429.")
@click.option("--deploy-fail-rate", type=click.FloatRange(0, 1), help="Share of deployments that fail.")
@click.option("--deploy-hang-rate", type=click.FloatRange(0, 1), help="Share of deployments that never finish.")
@guarded
def serve_command(
    port: int,
    state_path: Path,
    world: Rules | None,
    faults_path: Path | None,
    speed: float | None,
    seed: int,
    token_file: Path | None,
    latency_ms: float | None,
    error_rate: float | None,
    drop_rate: float | None,
    rate_limit: int | None,
    deploy_fail_rate: float | None,
    deploy_hang_rate: float | None,
) -> None:
    """Serve the sandbox on 127.0.0.1 until interrupted.

    \b
    Example:
      capella-deploy sandbox serve --port 8480 --error-rate 0.1 --seed 7
    """
    from capella_deploy.sandbox import DEFAULT_TOKEN, Faults, RouteFault, Sandbox
    from capella_deploy.sandbox.server import serve

    # The export line says how a client gets the token, never the token itself unless it is the public default.
    if token_file is not None:
        token, token_source = token_file.read_text(encoding="utf-8").strip(), f"read from {token_file}"
        token_export = f' CAPELLA_API_TOKEN="$(cat {shlex.quote(str(token_file.resolve()))})"'
    elif os.environ.get(TOKEN_ENV):
        token, token_source = os.environ[TOKEN_ENV], f"from ${TOKEN_ENV}"
        token_export = f"  # and keep ${TOKEN_ENV} as it is in this shell"
    else:
        token, token_source = DEFAULT_TOKEN, "the default sandbox token (see 'The sandbox' in README.md)"
        token_export = f" {TOKEN_ENV}={DEFAULT_TOKEN}"
    try:
        faults = Faults.load(faults_path) if faults_path else Faults()
        routes = list(faults.routes)
        if error_rate or drop_rate or latency_ms:
            flat = (latency_ms or 0.0, latency_ms or 0.0)
            routes.append(RouteFault(error_rate=error_rate or 0, drop_after=drop_rate or 0, latency_ms=flat))
        faults = dataclasses.replace(
            faults,
            routes=routes,
            rate_limit_per_minute=faults.rate_limit_per_minute if rate_limit is None else rate_limit,
            deploy_fail_rate=faults.deploy_fail_rate if deploy_fail_rate is None else deploy_fail_rate,
            deploy_hang_rate=faults.deploy_hang_rate if deploy_hang_rate is None else deploy_hang_rate,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    sandbox = Sandbox(state_path, token=token, faults=faults, seed=seed, rules=world)
    if speed is not None:
        sandbox.set_speed(speed)
    try:
        serve(sandbox, port=port, token_source=token_source, token_export=token_export)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc


@sandbox_group.command("reset")
@_state_option
@_world_option
@guarded
def reset_command(state_path: Path, world: Rules | None) -> None:
    """Empty the sandbox world (models, keys, providers, files, batches); the organization id stays.

    \b
    Example:
      capella-deploy sandbox reset --state .capella/sandbox.json
    """
    from capella_deploy.sandbox import Sandbox

    # Resetting never creates a world: a mistyped path would otherwise get a new organization, silently.
    if not state_path.parent.is_dir():
        raise ConfigError(f"{state_path}: no such directory {state_path.parent}; check the --state path")
    if not state_path.exists():
        click.echo(f"No sandbox world at {state_path}; nothing to reset.")
        return
    sandbox = Sandbox(state_path, rules=world)
    sandbox.reset()
    click.echo(
        f"Emptied the sandbox world in {state_path} (organization {sandbox.org_id} kept; "
        f"it follows the {sandbox.rules} rules)."
    )
