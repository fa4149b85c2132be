"""`capella-deploy verify`: run the manifest's checks against what apply deployed.

It reads the outputs file apply wrote (the manifest's ``outputs.path``, relative to the manifest, unless
``--outputs`` says otherwise); it never calls the Management API.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from capella_deploy.cli.common import ExitCode, guarded, load_manifest_files, manifest_options, sandbox_option
from capella_deploy.cli.conventions import Command


def read_outputs(path: Path) -> dict[str, Any]:
    """The outputs document at ``path`` (JSON or dotenv); an empty one when there is no file yet."""
    from capella_deploy.outputs import Outputs

    return Outputs(path).document()


@click.command(cls=Command)
@manifest_options
@sandbox_option("Reach the embedded sandbox's models (state file, default .capella/sandbox.json).")
@click.option(
    "--outputs",
    "outputs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Outputs file with connection strings and tokens (default: the manifest's outputs path).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the results as a Markdown section.")
@guarded
def verify(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    environment: str | None,
    sandbox: str | None,
    outputs_path: Path | None,
    as_json: bool,
    as_markdown: bool,
) -> None:
    """Run the manifest's checks against what apply deployed; exit 1 if any fails.

    \b
    Example:
      capella-deploy verify -f capella.yaml --markdown >> "$GITHUB_STEP_SUMMARY"
    """
    from capella_deploy.run.verify import run_manifest_checks
    from capella_deploy.views.checks import render_checks, render_checks_json, render_checks_markdown

    if as_json and as_markdown:
        raise click.UsageError("choose one of --json and --markdown")
    manifest = load_manifest_files(files, variables, var_files, environment=environment)
    outputs = read_outputs(outputs_path or Path(manifest.outputs_path))
    report = asyncio.run(
        run_manifest_checks(
            manifest, outputs, sandbox_state=Path(sandbox) if sandbox else None, environ=dict(os.environ)
        )
    )
    render = render_checks_json if as_json else render_checks_markdown if as_markdown else render_checks
    click.echo(render(report), nl=False)
    sys.exit(ExitCode.OK if report.ok else ExitCode.ERROR)
