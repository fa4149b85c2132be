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
    from capella_deploy.manifest import Manifest
    from capella_deploy.run.session import Target


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    CHANGES = 2
    INTERRUPTED = 130


F = TypeVar("F", bound=Callable[..., Any])


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


def manifest_options(func: F) -> F:
    func = environment_option(func)
    func = click.option(
        "-f",
        "--file",
        "files",
        multiple=True,
        required=True,
        type=click.Path(path_type=Path),
        help="Manifest file; repeat to overlay files in order.",
    )(func)
    func = click.option("--var", "variables", multiple=True, metavar="K=V", help="Set a ${K} manifest variable.")(func)
    return func


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


def load_manifest_files(files: Sequence[Path], variables: Sequence[str], environment: str | None = None) -> Manifest:
    from capella_deploy.manifest import load_manifest

    parsed: dict[str, str] = {}
    for item in variables:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not K=V", param_hint="--var")
        parsed[key] = value
    return load_manifest(list(files), variables=parsed, environment=environment)


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


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip()
    try:
        if value and value[-1] in units:
            return float(value[:-1]) * units[value[-1]]
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m or 2h", param_hint="--timeout") from None
