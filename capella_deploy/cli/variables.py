"""Values for a manifest's ``${NAME}``: ``--var NAME=VALUE`` and ``--var-file FILE`` (a YAML mapping or dotenv)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import click
import yaml

from capella_deploy.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTENV_LINE = re.compile(r"(?:export\s+)?(?P<name>[^=\s]+)\s*=\s*(?P<value>.*)")
# A var file holds a few settings; anything this large is a wrong path.
_MAX_BYTES = 1024 * 1024


def parse_vars(items: Sequence[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.fullmatch(name):
            raise click.BadParameter(f"{item!r} is not NAME=VALUE (NAME: letters, digits and '_')", param_hint="--var")
        parsed[name] = value
    return parsed


def read_var_files(paths: Sequence[Path]) -> dict[str, str]:
    """The values of every file, later files winning."""
    values: dict[str, str] = {}
    for path in paths:
        values.update(read_var_file(path))
    return values


def read_var_file(path: Path) -> dict[str, str]:
    """NAME: value lines of a YAML mapping, or NAME=value lines of a dotenv file (``export`` and quotes allowed)."""
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise ConfigError(f"{path}: a var file of more than {_MAX_BYTES} bytes; check the --var-file path")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such var file; check the --var-file path") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the var file ({reason})") from None
    # The name decides when it can (prod.env, .env.staging, prod.yaml); otherwise the text does.
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        return _yaml_values(path, text)
    if suffix == ".env" or path.name.startswith(".env") or _looks_like_dotenv(text):
        return _dotenv_values(path, text)
    return _yaml_values(path, text)


def _looks_like_dotenv(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return bool(lines) and all(_DOTENV_LINE.fullmatch(line) and ":" not in line.split("=", 1)[0] for line in lines)


def _yaml_values(path: Path, text: str) -> dict[str, str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not a YAML mapping or a dotenv file ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a var file holds NAME: value lines (YAML) or NAME=value lines (dotenv)")
    values: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{path}: {name!r} is not a variable name (letters, digits and '_')")
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: {name} must be a single value, not a mapping or a list")
        values[name] = "" if value is None else _scalar_text(value)
    return values


def _scalar_text(value: object) -> str:
    # YAML reads `true` and `48` as a bool and a number; the manifest receives text, as from --var.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _dotenv_values(path: Path, text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _DOTENV_LINE.fullmatch(line)
        if match is None or not _NAME.fullmatch(match["name"]):
            raise ConfigError(f"{path}:{number}: expected NAME=value")
        value = match["value"]
        try:
            # Quotes and a trailing comment as a shell would read them: FOO="a b" # note
            words = shlex.split(value, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        values[match["name"]] = " ".join(words)
    return values
