"""Habits users bring from Terraform and from Unix: single-dash long flags, NO_COLOR / FORCE_COLOR, --debug
anywhere on the line, CAPELLA_LOG and CAPELLA_LOG_PATH.

Every command is a ``Command`` (every group a ``Group``), so each of them accepts ``-var`` for ``--var``, and
``--debug`` / ``--no-color`` before or after the subcommand.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

from capella_deploy.errors import ConfigError

LOG_LEVEL_ENV = "CAPELLA_LOG"
# Set by the completion scripts of `capella-deploy completion` when the shell asks for completions.
COMPLETE_VAR = "_CAPELLA_DEPLOY_COMPLETE"
LOG_PATH_ENV = "CAPELLA_LOG_PATH"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# trace: debug, and the HTTP libraries' own debug lines (connections, headers) too, for the rare deep look.
TRACE = "trace"
# Our loggers all live under this name; other libraries (httpcore, asyncio) only ever show warnings.
_OUR_LOGGER = "capella_deploy"


# -- Terraform's single-dash long flags ----------------------------------------------------------------


def translate_single_dash(ctx: click.Context, command: click.Command, args: Sequence[str]) -> list[str]:
    """Spell ``-var`` (or ``-var=x``) as ``--var`` where the command has ``--var``; refuse other ``-word``s clearly.

    Option values are left alone (``--name-suffix -eu`` keeps ``-eu``), and so is everything after ``--``.
    A group stops at its first positional argument: the rest belongs to the subcommand, which translates it.
    """
    stop_at_positional = isinstance(command, click.Group)
    long_options: dict[str, click.Option | None] = {}
    short_options: dict[str, click.Option | None] = {}
    params = [*command.params, command.get_help_option(ctx)]
    for param in params:
        if isinstance(param, click.Option):
            for opt in [*param.opts, *param.secondary_opts]:
                (long_options if opt.startswith("--") else short_options)[opt] = param
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            out.extend(args[index - 1 :])
            break
        if not arg.startswith("-") or arg == "-":
            out.append(arg)
            if stop_at_positional:
                out.extend(args[index:])
                break
            continue
        name, sep, _ = arg.partition("=")
        if not name.startswith("--") and name not in short_options and len(name) > 2:
            if "-" + name in long_options:
                arg, name = "-" + arg, "-" + name
            elif name[:2] not in short_options and not ctx.resilient_parsing:
                # Not a short option with its value attached (-fFILE) either.
                raise click.UsageError(_no_such_option(name, long_options), ctx=ctx)
        option = long_options.get(name) or short_options.get(name)
        out.append(arg)
        if option is not None and not sep and _takes_a_value(option) and index < len(args):
            out.append(args[index])  # the value, whatever it looks like
            index += 1
    return out


def _takes_a_value(option: click.Option) -> bool:
    # Flags take none; an option with an optional value (``--sandbox[=STATE]``) takes one only after '='.
    return not option.is_flag and not option.count and not getattr(option, "_flag_needs_value", False)


# Terraform flags without a counterpart here, and what to do instead.
_TERRAFORM_ONLY = {
    "-lock": "apply and destroy always lock the organization; --lock-timeout waits for another run's lock",
    "-input": "nothing is asked off a terminal; --auto-approve applies without the question",
    "-refresh": "every plan reads the organization as it is now",
}


def _no_such_option(name: str, long_options: Mapping[str, click.Option | None]) -> str:
    if name in _TERRAFORM_ONLY:
        return f"No such option: {name} (Terraform's; here {_TERRAFORM_ONLY[name]})."
    close = difflib.get_close_matches("-" + name, list(long_options), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]}?" if close else " Long options take two dashes here, e.g. --var."
    return f"No such option: {name}.{hint}"


# -- colour -------------------------------------------------------------------------------------------


def color_from_environment(environ: Mapping[str, str]) -> bool | None:
    """False for NO_COLOR, True for FORCE_COLOR, None (colour on a terminal only) otherwise.

    NO_COLOR wins over FORCE_COLOR, and --no-color over both (see no-color.org and force-color.org).
    """
    if environ.get("NO_COLOR"):
        return False
    force = environ.get("FORCE_COLOR")
    if force and force.lower() not in ("0", "false"):
        return True
    return None


def _no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        root = ctx.find_root()
        root.color = ctx.color = False


# -- logging ------------------------------------------------------------------------------------------


class _OursOrWarnings(logging.Filter):
    """Our own lines at any level, other libraries' warnings only: no httpcore or asyncio chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] == _OUR_LOGGER or record.levelno >= logging.WARNING


def configure_logging(environ: Mapping[str, str], *, debug: bool = False) -> None:
    """Send our log lines to stderr, or to CAPELLA_LOG_PATH: warnings only, or everything with --debug.

    CAPELLA_LOG=debug|info|warning|error sets the level; --debug means debug. With CAPELLA_LOG_PATH, the
    lines go to that file (debug unless CAPELLA_LOG says otherwise) and stderr keeps the warnings.
    """
    named = environ.get(LOG_LEVEL_ENV, "").strip().lower()
    if named and named not in (*_LEVELS, TRACE):
        raise ConfigError(f"{LOG_LEVEL_ENV}={named!r} is not a log level; use one of {', '.join([*_LEVELS, TRACE])}")
    path = environ.get(LOG_PATH_ENV, "").strip()
    trace = named == TRACE
    level = logging.DEBUG if debug or trace else _LEVELS.get(named, logging.DEBUG if path else logging.WARNING)

    reset_logging()
    # Our loggers at the level asked for; with trace, every logger (the root's level is what others inherit).
    for name in (_OUR_LOGGER, "") if trace else (_OUR_LOGGER,):
        logger = logging.getLogger(name)
        _saved_levels.setdefault(name, logger.level)
        logger.setLevel(level)

    handlers: list[logging.Handler] = []
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    stderr.setLevel(logging.WARNING if path else level)
    handlers.append(stderr)
    if path:
        try:
            # Created private: request lines carry organization and resource ids.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise ConfigError(f"{LOG_PATH_ENV}={path}: cannot open the log file ({exc.strerror})") from None
        log_file = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
        log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log_file.setLevel(level)
        handlers.append(log_file)
    root = logging.getLogger()
    for handler in handlers:
        handler._capella_deploy = True  # type: ignore[attr-defined]
        if not trace:
            handler.addFilter(_OursOrWarnings())
        root.addHandler(handler)


# Levels as they were before the command changed them: a command run in-process (a test, an embedding
# program) leaves logging as it found it.
_saved_levels: dict[str, int] = {}


def reset_logging() -> None:
    """Remove the handlers ``configure_logging`` added and restore the level it changed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_capella_deploy", False)]:
        root.removeHandler(handler)
        handler.close()
    for name, level in _saved_levels.items():
        logging.getLogger(name).setLevel(level)
    _saved_levels.clear()


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        configure_logging(os.environ, debug=True)


# -- the command classes ------------------------------------------------------------------------------


def common_options() -> list[click.Option]:
    """--debug and --no-color, taken by every command as well as by the top level."""
    return [
        click.Option(
            ["--debug"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_debug,
            help=f"Log each API request (never a secret) to stderr, or to ${LOG_PATH_ENV}.",
        ),
        click.Option(
            ["--no-color"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_no_color,
            help="Plain text without colours (also NO_COLOR=1; FORCE_COLOR=1 forces colours).",
        ),
    ]


API_ENVIRONMENT = (
    "\b\nEnvironment: CAPELLA_API_TOKEN, CAPELLA_API_URL, CAPELLA_ORG_ID, CAPELLA_RATE_LIMIT,\n"
    "CAPELLA_SANDBOX_FAULTS, CAPELLA_LOG, CAPELLA_LOG_PATH, NO_COLOR (see capella-deploy --help)."
)


class Command(click.Command):
    """A command that takes Terraform's single-dash spellings and the common options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Commands that talk to Capella say which variables steer them.
        if self.epilog is None and any(p.name == "token_file" for p in self.params):
            self.epilog = API_ENVIRONMENT
        self.params.extend(common_options())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, translate_single_dash(ctx, self, args))


class Group(click.Group):
    """A group whose subcommands are ``Command``s and whose own options take single-dash spellings too."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(common_options())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, translate_single_dash(ctx, self, args))


Group.group_class = Group
