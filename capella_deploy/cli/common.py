"""What every capella-deploy command shares: exit codes, options, error handling, loading and planning."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from capella_deploy.manifest import LoadedManifest, Manifest
    from capella_deploy.manifest.credentials import CredentialFinding
    from capella_deploy.manifest.offered import CatalogCheck
    from capella_deploy.run.session import Target


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    CHANGES = 2
    INTERRUPTED = 130


F = TypeVar("F", bound=Callable[..., Any])


def warn(text: str) -> None:
    click.echo(click.style("Warning: ", fg="yellow", bold=True) + text, err=True)


def error(text: str) -> None:
    click.echo(click.style("Error: ", fg="red", bold=True) + text, err=True)


def sandbox_option(help: str) -> Callable[[F], F]:
    """`--sandbox` alone means the default state file; `--sandbox=FILE` picks another."""
    return click.option(
        "--sandbox",
        "sandbox",
        is_flag=False,
        flag_value=".capella/sandbox.json",
        default=None,
        metavar="[STATE]",
        help=help,
    )


def target_options(func: F) -> F:
    """Options every command that talks to Capella takes."""
    func = sandbox_option("Run against the embedded sandbox (state file, default .capella/sandbox.json).")(func)
    func = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the Management API token from this file instead of CAPELLA_API_TOKEN.",
    )(func)
    return func


def environment_option(func: F) -> F:
    return click.option(
        "--environment",
        "environment",
        metavar="NAME",
        callback=_check_environment,
        help="The environment the manifest deploys (or `environment:` in it): names the plan comment, the lock "
        "holder and the default outputs path .capella/NAME/outputs.json.",
    )(func)


def _check_environment(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from capella_deploy.manifest import NAME_PATTERN

    if value is not None and (len(value) > 32 or not re.fullmatch(NAME_PATTERN, value)):
        raise click.BadParameter(
            f"{value!r} is not an environment name: up to 32 letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def files_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """-f/--file, repeatable: manifest files overlaid in order."""
    return click.option(
        "-f", "--file", "files", multiple=True, required=required, type=click.Path(path_type=Path), help=help
    )


def manifest_options(func: F) -> F:
    """-f (required), --var, --var-file and --environment."""
    func = environment_option(func)
    func = files_option("Manifest file; repeat to overlay files in order.", required=True)(func)
    return variable_options(func)


def variable_options(func: F) -> F:
    func = click.option(
        "--var",
        "variables",
        multiple=True,
        metavar="NAME=VALUE",
        help="Set the manifest variable ${NAME}; repeatable. A name no manifest file uses is an error.",
    )(func)
    func = click.option(
        "--var-file",
        "var_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help="Variables from a YAML mapping (NAME: value) or a dotenv file (NAME=value); --var wins.",
    )(func)
    return func


def target_option(func: F) -> F:
    return click.option(
        "--target",
        "targets",
        multiple=True,
        metavar="ADDRESS",
        help="Only this resource (model.NAME, apiKey.NAME, provider.NAME) and what it needs; repeatable. "
        "Not for routine use.",
    )(func)


def skip_catalog_option(func: F) -> F:
    return click.option(
        "--skip-catalog-check",
        is_flag=True,
        help="Do not refuse what the tool's catalog says Capella does not offer (for a region or model newer "
        "than the catalog); Capella still refuses what it does not offer.",
    )(func)


def guarded(func: F) -> F:
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
        except OSError as exc:
            # A file that cannot be written or read (outputs, plan, report, lock): name it, no traceback.
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(click.style("Error: ", fg="red", bold=True) + f"{where}{exc.strerror or exc}", err=True)
            sys.exit(ExitCode.ERROR)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(ExitCode.INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def read_manifest_files(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path] = (),
    *,
    environment: str | None = None,
) -> LoadedManifest:
    """The manifest as its files said it, with where each value came from."""
    from capella_deploy.cli.variables import parse_vars, read_var_files
    from capella_deploy.manifest import read_manifest

    from_files = read_var_files(var_files)
    # --var values must be used by the manifest; a var file may serve several manifests, as in Terraform.
    loaded = read_manifest(
        list(files), variables=parse_vars(variables), environ={**os.environ, **from_files}, environment=environment
    )
    unused = sorted(set(from_files) - loaded.variables_used)
    if unused:
        files_text = ", ".join(str(f) for f in var_files)
        warn(f"{files_text} sets {', '.join(unused)}, which no manifest file uses")
    return loaded


def load_manifest_files(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path] = (),
    *,
    environment: str | None = None,
    resolve_outputs: bool = True,
) -> Manifest:
    """The manifest; ``resolve_outputs`` makes ``outputs.path`` and credential files relative to the working
    directory (see ``outputs_path_from``), for every command but one that writes the manifest out again."""
    loaded = read_manifest_files(files, variables, var_files, environment=environment)
    return _with_paths_resolved(loaded) if resolve_outputs else loaded.manifest


def load_checked_manifest(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    *,
    environment: str | None = None,
    skip_catalog_check: bool,
) -> tuple[Manifest, CatalogCheck, tuple[CredentialFinding, ...]]:
    """The manifest, what it asks for that the catalog does not offer, and the credentials it refers to that
    cannot be read now (plan and apply make errors of both where the plan needs them)."""
    from capella_deploy.catalog import CATALOG
    from capella_deploy.manifest.credentials import check_credentials
    from capella_deploy.manifest.offered import check_catalog

    loaded = read_manifest_files(files, variables, var_files, environment=environment)
    manifest = _with_paths_resolved(loaded)
    credentials = check_credentials(manifest, os.environ, loaded)
    return manifest, check_catalog(loaded, CATALOG, skipped=skip_catalog_check), credentials


def _with_paths_resolved(loaded: LoadedManifest) -> Manifest:
    manifest = loaded.manifest
    origin = loaded.file_that_set("outputs", "path")
    resolved = outputs_path_from(manifest.outputs.path, origin)
    if resolved != manifest.outputs.path:
        manifest = manifest.model_copy(update={"outputs": manifest.outputs.model_copy(update={"path": resolved})})
    # A credential file is relative to the manifest file that names it, like outputs.path.
    providers = []
    for index, provider in enumerate(manifest.providers):
        moved = {}
        for field, ref in provider.credentials:
            if ref is not None and ref.file is not None:
                origin = loaded.file_that_set("providers", index, "credentials", field, "file")
                moved[field] = ref.model_copy(update={"file": outputs_path_from(ref.file, origin)})
        if moved:
            provider = provider.model_copy(update={"credentials": provider.credentials.model_copy(update=moved)})
        providers.append(provider)
    return manifest.model_copy(update={"providers": tuple(providers)}) if manifest.providers else manifest


def outputs_path_from(path: str, manifest_file: str | None) -> str:
    """A declared relative ``outputs.path`` is relative to the manifest file that declares it.

    It is rewritten relative to the working directory, so apply, outputs, env and verify (and a saved plan
    applied later from the same directory) all find one file. Left to the default, it stays
    ``.capella/outputs.json`` in the working directory, beside the sandbox state and the lock.
    """
    if manifest_file is None or Path(path).is_absolute():
        return path
    base = Path(manifest_file).parent
    return os.path.normpath(base / path) if base != Path(".") else path


def make_target(sandbox: str | None, token_file: Path | None) -> Target:
    from capella_deploy.errors import ConfigError
    from capella_deploy.run.session import Target

    limit = os.environ.get("CAPELLA_RATE_LIMIT")  # requests per minute the client keeps under, e.g. 100
    try:
        requests_per_minute = float(limit) if limit else None
    except ValueError:
        raise ConfigError(f"CAPELLA_RATE_LIMIT={limit!r} is not a number of requests per minute") from None
    if requests_per_minute is not None and requests_per_minute <= 0:
        raise ConfigError("CAPELLA_RATE_LIMIT must be a positive number of requests per minute")
    return Target(
        sandbox_state=Path(sandbox) if sandbox is not None else None,
        token_file=token_file,
        environ=dict(os.environ),
        requests_per_minute=requests_per_minute,
    )


def parse_duration(text: str, option: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip()
    try:
        seconds = float(value[:-1]) * units[value[-1]] if value and value[-1] in units else float(value)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m or 2h", param_hint=option) from None
    if seconds < 0 or seconds != seconds:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m or 2h", param_hint=option)
    return seconds
