"""Commands about the tool itself: `schema` (the JSON Schemas it ships) and `completion` (shell scripts)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from capella_deploy.cli.conventions import COMPLETE_VAR, Command
from capella_deploy.schemas import SCHEMAS, schema_text

PROG_NAME = "capella-deploy"
_SHELLS = ("bash", "zsh", "fish")


@click.command(cls=Command, epilog="\b\nSchemas:\n" + "\n".join(f"  {n:<9} {d}" for n, d in SCHEMAS.items()))
@click.argument("name", type=click.Choice(list(SCHEMAS)), default="manifest")
def schema(name: str) -> None:
    """Print the JSON Schema NAME (default: manifest), as shipped with this version.

    \b
    Example:
      capella-deploy schema manifest > schemas/manifest.schema.json
    """
    click.echo(schema_text(name), nl=False)


@click.command(cls=Command)
@click.argument("shell", type=click.Choice(_SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL; load it from your shell's start-up file.

    \b
    Example:
      echo 'eval "$(capella-deploy completion bash)"' >> ~/.bashrc
      capella-deploy completion fish > ~/.config/fish/completions/capella-deploy.fish
    """
    completer = get_completion_class(shell)
    assert completer is not None  # the three shells click supports
    click.echo(completer(ctx.find_root().command, {}, PROG_NAME, COMPLETE_VAR).source())
