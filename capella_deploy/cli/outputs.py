"""`capella-deploy outputs` and `capella-deploy env`: what the last apply wrote, for people, scripts and SDKs.

Both read the outputs file; neither calls the Management API. The file is the one ``--outputs`` names, else
the ``outputs.path`` of the manifest given with ``-f`` (relative to that manifest), else
``.capella/outputs.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from capella_deploy.cli.common import files_option, guarded, load_manifest_files, variable_options, warn
from capella_deploy.cli.conventions import Command
from capella_deploy.errors import ConfigError

if TYPE_CHECKING:
    from capella_deploy.manifest import Manifest
    from capella_deploy.outputs import Outputs

DEFAULT_OUTPUTS = Path(".capella/outputs.json")


def _sections() -> dict[str, str]:
    """Address prefix -> outputs section, for every kind: {"model": "models", "apiKey": "apiKeys", ...}."""
    from capella_deploy.kinds import REGISTRY

    return {kind.kind.value: kind.section for kind in REGISTRY}


def outputs_source_options(func: Any) -> Any:
    """-f (optional) with its variables, and --outputs: where the outputs file is."""
    func = click.option(
        "--outputs",
        "outputs_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"The outputs file (default: the manifest's outputs.path, else {DEFAULT_OUTPUTS}).",
    )(func)
    func = variable_options(func)
    func = files_option("Manifest file(s) whose outputs.path to read.")(func)
    return func


def locate_outputs(
    outputs_path: Path | None, files: Sequence[Path], variables: Sequence[str], var_files: Sequence[Path]
) -> tuple[Path, Manifest | None]:
    """The outputs file to read (it must exist), and the manifest when one was given."""
    manifest = load_manifest_files(files, variables, var_files) if files else None
    path = outputs_path or (Path(manifest.outputs_path) if manifest is not None else DEFAULT_OUTPUTS)
    if not path.exists():
        if outputs_path is not None:
            where = ""
        elif manifest is not None:
            where = " (the manifest's outputs.path, relative to the manifest)"
        else:
            where = " (the default; -f MANIFEST reads the manifest's outputs.path)"
        raise ConfigError(f"{path}{where}: no outputs file; run `capella-deploy apply` first or pass --outputs")
    return path, manifest


@click.command(cls=Command)
@click.argument("name", required=False)
@outputs_source_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "dotenv"]),
    default="json",
    show_default=True,
    help="Print the whole document as.",
)
@click.option("--json", "as_json", is_flag=True, help="Print NAME's value as JSON.")
@click.option("--raw", is_flag=True, help="Print NAME's value as plain text, for scripts (a single value only).")
@click.option("--show-secrets", is_flag=True, help="Print key tokens instead of a mask.")
@guarded
def outputs(
    name: str | None,
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    outputs_path: Path | None,
    output_format: str,
    as_json: bool,
    raw: bool,
    show_secrets: bool,
) -> None:
    """Print the outputs of the last apply (tokens masked), or one of them: NAME is a model, key or provider
    name, or KIND.NAME (model.NAME, apiKey.NAME, provider.NAME), optionally followed by .FIELD.

    \b
    Example:
      curl "$(capella-deploy outputs -f capella.yaml model.chat.connectionString --raw)/v1/models"
    """
    from capella_deploy.outputs import Outputs, render_dotenv, render_json
    from capella_deploy.secrets import revealed

    if as_json and raw:
        raise click.UsageError("choose one of --json and --raw")
    if (as_json or raw) and name is None:
        raise click.UsageError("--json and --raw print one output: give its NAME, e.g. model.chat.connectionString")
    path, _ = locate_outputs(outputs_path, files, variables, var_files)
    store = Outputs(path)
    if name is None:
        doc = store.document() if show_secrets else store.masked()
        text = (render_json if output_format == "json" else render_dotenv)(doc)
    else:
        text = _render_one(store, name, as_json=as_json, raw=raw, show_secrets=show_secrets)
    # Masked above unless --show-secrets: what is left to print is meant to be seen.
    with revealed():
        click.echo(text, nl=False)


def _render_one(store: Outputs, name: str, *, as_json: bool, raw: bool, show_secrets: bool) -> str:
    value = _lookup(store.document(), name)
    if not show_secrets:
        masked = _lookup(store.masked(), name)
        if raw and masked != value:
            raise ConfigError(f"{name} holds a key token; add --show-secrets to print it")
        value = masked
    if raw:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{name} is not a single value; use --json, or name one field, e.g. {name}.id")
        return (str(value).lower() if isinstance(value, bool) else str(value)) + "\n"
    if as_json or isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, sort_keys=True) + "\n"
    return ("null" if value is None else str(value)) + "\n"


def _lookup(doc: dict[str, Any], name: str) -> Any:
    """``chat``, ``model.chat``, ``apiKey.app.token``, ``organizationId``... in the outputs document."""
    sections = _sections()
    head, _, rest = name.partition(".")
    if head in sections and rest:
        entries = doc.get(sections[head]) or {}
        entry_name, _, field = _split_entry(rest, entries)
        if entry_name not in entries:
            raise ConfigError(f"no {head} '{entry_name}' in the outputs ({_known(doc)})")
        return _field(entries[entry_name], field, f"{head}.{entry_name}")
    if head in doc and head not in sections.values():
        return _field(doc[head], rest, head)
    found = []
    for kind, section in sections.items():
        entries = doc.get(section) or {}
        entry_name, _, field = _split_entry(name, entries)
        if entry_name in entries:
            found.append((kind, entry_name, field, entries[entry_name]))
    if not found:
        raise ConfigError(f"no output named '{name}' ({_known(doc)})")
    if len(found) > 1:
        spelled = " or ".join(f"{kind}.{entry_name}" for kind, entry_name, _, _ in found)
        raise ConfigError(f"'{name}' names outputs of several kinds; say {spelled}")
    kind, entry_name, field, entry = found[0]
    return _field(entry, field, f"{kind}.{entry_name}")


def _split_entry(text: str, entries: dict[str, Any]) -> tuple[str, str, str]:
    """Names may hold dots: take the longest leading part that names an entry."""
    parts = text.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in entries:
            return candidate, ".", ".".join(parts[cut:])
    return text, "", ""


def _field(value: Any, path: str, where: str) -> Any:
    for part in path.split(".") if path else ():
        if not isinstance(value, dict) or part not in value:
            fields = ", ".join(sorted(value)) if isinstance(value, dict) else "none"
            raise ConfigError(f"{where} has no field '{part}' (fields: {fields})")
        value, where = value[part], f"{where}.{part}"
    return value


def _known(doc: dict[str, Any]) -> str:
    from capella_deploy.kinds import REGISTRY

    return "; ".join(f"{kind.noun}s: {', '.join(sorted(doc.get(kind.section) or {})) or 'none'}" for kind in REGISTRY)


@click.command(cls=Command)
@click.argument("model")
@outputs_source_options
@click.option(
    "--key", "key_name", help="The API key to use (default: the key of the model's region allowed to call it)."
)
@click.option("--show-secrets", is_flag=True, help="Print the key token instead of a mask.")
@guarded
def env(
    model: str,
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    outputs_path: Path | None,
    key_name: str | None,
    show_secrets: bool,
) -> None:
    """Print OPENAI_BASE_URL and OPENAI_API_KEY for MODEL, and the X-cb-* headers to send.

    \b
    Example:
      set -a; eval "$(capella-deploy env chat -f capella.yaml --show-secrets)"; set +a
    """
    from capella_deploy.outputs import Outputs
    from capella_deploy.secrets import revealed
    from capella_deploy.views.env import render_env

    path, manifest = locate_outputs(outputs_path, files, variables, var_files)
    declared = {key.name: list(key.allowedModels) for key in manifest.apiKeys} if manifest is not None else None
    settings = render_env(
        Outputs(path).document(), model, key_name=key_name, show_secrets=show_secrets, declared_allowed=declared
    )
    for warning in settings.warnings:
        warn(warning)
    with revealed():  # the token is masked in the text unless --show-secrets asked for it
        click.echo(settings.text, nl=False)
