"""`capella-deploy verify` (run the manifest's checks) and `capella-deploy env` (settings for an OpenAI client).

Both read the outputs file that apply wrote; neither calls the Management API.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from capella_deploy.cli_common import ExitCode, guarded, load_manifest_files, manifest_options, sandbox_option

if TYPE_CHECKING:
    from capella_deploy.checks import CheckReport, TransportFor
    from capella_deploy.manifest import Manifest

DEFAULT_OUTPUTS = Path(".capella/outputs.json")


def read_outputs(path: Path) -> dict[str, Any]:
    """The outputs document at ``path`` (JSON or dotenv); an empty one when there is no file yet."""
    from capella_deploy.outputs import Outputs

    return Outputs(path).document()


def sandbox_transport_for(state: Path, environ: Mapping[str, str]) -> TransportFor:
    """Route the embedded sandbox's connection strings (http://capella.sandbox/...) through its in-process app.

    The sandbox gets the same state file and fault file (CAPELLA_SANDBOX_FAULTS) as the commands that manage it,
    so a failure drill reaches the Model Service too. Other URLs go to the network.
    """
    import httpx

    from capella_deploy.sandbox import IN_PROCESS_BASE_URL
    from capella_deploy.session import embedded_sandbox

    sandbox = embedded_sandbox(state, environ)
    host = httpx.URL(IN_PROCESS_BASE_URL).host

    def transport_for(base_url: str) -> httpx.AsyncBaseTransport | None:
        return sandbox.transport() if httpx.URL(base_url).host == host else None

    return transport_for


async def run_manifest_checks(
    manifest: Manifest, outputs: Mapping[str, Any], *, sandbox_state: Path | None, environ: Mapping[str, str]
) -> CheckReport:
    from capella_deploy.checks import run_checks

    if sandbox_state is None:
        _refuse_sandbox_urls(manifest, outputs)
        return await run_checks(manifest, outputs, environ=environ)
    transport_for = sandbox_transport_for(sandbox_state, environ)
    return await run_checks(manifest, outputs, transport_for=transport_for, environ=environ)


def _refuse_sandbox_urls(manifest: Manifest, outputs: Mapping[str, Any]) -> None:
    """Sandbox connection strings resolve nowhere on the network: say so instead of failing on DNS."""
    from capella_deploy.errors import ConfigError
    from capella_deploy.sandbox import IN_PROCESS_BASE_URL

    models = outputs.get("models") or {}
    checked = [models.get(check.model) for check in manifest.checks if check.model is not None]
    if any(
        isinstance(e, Mapping) and str(e.get("connectionString", "")).startswith(IN_PROCESS_BASE_URL) for e in checked
    ):
        raise ConfigError(
            f"the outputs point at the embedded sandbox ({IN_PROCESS_BASE_URL}/...), which only --sandbox reaches; "
            "run again with --sandbox[=STATE]"
        )


async def checks_after_apply(
    manifest: Manifest, outputs: Mapping[str, Any], *, sandbox_state: Path | None
) -> CheckReport | None:
    """Run the manifest's checks after an apply and print their table; None when the manifest has none."""
    from capella_deploy.checks import render_checks

    if not manifest.checks:
        return None
    report = await run_manifest_checks(manifest, outputs, sandbox_state=sandbox_state, environ=dict(os.environ))
    click.echo(render_checks(report), nl=False)
    if not report.ok:
        click.echo("The resources are kept; fix what the checks report and run `capella-deploy verify` again.")
    return report


@click.command()
@manifest_options
@sandbox_option("Reach the embedded sandbox's models (state file, default .capella/sandbox.json).")
@click.option(
    "--outputs",
    "outputs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Outputs file with connection strings and tokens (default: the manifest's outputs.path).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the results as a Markdown section.")
@guarded
def verify(
    files: Sequence[Path],
    variables: Sequence[str],
    sandbox: str | None,
    outputs_path: Path | None,
    as_json: bool,
    as_markdown: bool,
) -> None:
    """Run the manifest's checks against what apply deployed; exit 1 if any fails."""
    from capella_deploy.checks import render_checks, render_checks_json, render_checks_markdown

    if as_json and as_markdown:
        raise click.UsageError("choose one of --json and --markdown")
    manifest = load_manifest_files(files, variables)
    outputs = read_outputs(outputs_path or Path(manifest.outputs.path))
    report = asyncio.run(
        run_manifest_checks(
            manifest, outputs, sandbox_state=Path(sandbox) if sandbox else None, environ=dict(os.environ)
        )
    )
    render = render_checks_json if as_json else render_checks_markdown if as_markdown else render_checks
    click.echo(render(report), nl=False)
    sys.exit(ExitCode.OK if report.ok else ExitCode.ERROR)


@click.command()
@click.argument("model")
@click.option(
    "--outputs",
    "outputs_path",
    default=str(DEFAULT_OUTPUTS),
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option("--key", "key_name", help="The API key to use (default: the only key of the model's region).")
@click.option("--show-secrets", is_flag=True, help="Print the key token instead of a mask.")
@guarded
def env(model: str, outputs_path: Path, key_name: str | None, show_secrets: bool) -> None:
    """Print OPENAI_BASE_URL and OPENAI_API_KEY for MODEL, and the X-cb-* headers to send."""
    from capella_deploy.errors import ConfigError
    from capella_deploy.secrets import revealed

    if not outputs_path.exists():
        raise ConfigError(f"{outputs_path}: no outputs file; run `capella-deploy apply` first or pass --outputs")
    text = render_env(read_outputs(outputs_path), model, key_name=key_name, show_secrets=show_secrets)
    with revealed():
        click.echo(text, nl=False)


def render_env(outputs: Mapping[str, Any], model: str, *, key_name: str | None, show_secrets: bool) -> str:
    """Lines an OpenAI client (or a shell, via eval) can use to call ``model``."""
    from capella_deploy.errors import ConfigError
    from capella_deploy.secrets import MASK

    models: Mapping[str, Any] = outputs.get("models") or {}
    entry = models.get(model)
    if not isinstance(entry, Mapping):
        known = ", ".join(sorted(models)) or "none"
        raise ConfigError(f"no model '{model}' in the outputs (models: {known})")
    connection = entry.get("connectionString")
    if not connection:
        raise ConfigError(f"the outputs have no connection string for model '{model}'; run apply first")
    name, key = _pick_key(outputs.get("apiKeys") or {}, entry.get("region"), key_name, model)
    token = key.get("token")
    if not token:
        raise ConfigError(
            f"the outputs hold no token for key '{name}'; rotate it with `capella-deploy apply --replace apiKey.{name}`"
        )
    lines = [
        f"# model {model} ({entry.get('region') or 'unknown region'}), key {name}",
        f"OPENAI_BASE_URL={shlex.quote(str(connection).rstrip('/') + '/v1')}",
        f"OPENAI_API_KEY={shlex.quote(str(token)) if show_secrets else MASK}",
    ]
    headers = entry.get("headers") or {}
    if headers:
        lines.append("# Send these headers with each request for the declared routing and cache:")
        lines += [f"# {header}: {value}" for header, value in sorted(headers.items())]
    return "\n".join(lines) + "\n"


def _pick_key(
    keys: Mapping[str, Any], region: object, key_name: str | None, model: str
) -> tuple[str, Mapping[str, Any]]:
    from capella_deploy.errors import ConfigError

    if key_name is not None:
        key = keys.get(key_name)
        if not isinstance(key, Mapping):
            raise ConfigError(f"no API key '{key_name}' in the outputs (keys: {', '.join(sorted(keys)) or 'none'})")
        return key_name, key
    # A key works only for the models of its own region.
    same_region = sorted(name for name, key in keys.items() if isinstance(key, Mapping) and key.get("region") == region)
    if len(same_region) == 1:
        return same_region[0], keys[same_region[0]]
    if not same_region:
        raise ConfigError(
            f"no API key of region {region} in the outputs can call model '{model}'; add one to the manifest"
        )
    raise ConfigError(
        f"several API keys of region {region} could call model '{model}'; choose one with --key: "
        + ", ".join(same_region)
    )
