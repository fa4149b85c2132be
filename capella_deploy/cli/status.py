"""`capella-deploy status`: what is deployed, read through the Management API; changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from capella_deploy.cli.common import (
    files_option,
    guarded,
    load_manifest_files,
    make_target,
    target_options,
    variable_options,
)
from capella_deploy.cli.conventions import Command
from capella_deploy.plan import OrgSource

if TYPE_CHECKING:
    from capella_deploy.plan.status import StatusReport


@click.command(cls=Command)
@files_option("Manifest file(s): mark what they declare, and use their organization.")
@variable_options
@target_options
@click.option(
    "--org",
    "org_id",
    metavar="ORG_ID",
    help="Organization (default: the manifest's, CAPELLA_ORG_ID, else the only one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@guarded
def status(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    sandbox: str | None,
    token_file: Path | None,
    org_id: str | None,
    as_json: bool,
) -> None:
    """Show what is deployed: each model and key, its region, GPU, state and age, whether the manifest
    declares it, and the model's connection string.

    \b
    Example:
      capella-deploy status -f capella.yaml --sandbox
    """
    from capella_deploy.views.status import render_status, render_status_json

    manifest = load_manifest_files(files, variables, var_files) if files else None
    target = make_target(sandbox, token_file)
    org = org_id or (manifest.organizationId if manifest is not None else None)
    source = OrgSource.OPTION if org_id else OrgSource.MANIFEST
    expected = manifest.expectOrganizationName if manifest is not None and not org_id else None

    async def run() -> StatusReport:
        from capella_deploy.run.session import open_session
        from capella_deploy.run.status import read_status

        async with open_session(target, org, source, expected_name=expected) as session:
            return await read_status(session, manifest)

    report = asyncio.run(run())
    click.echo((render_status_json if as_json else render_status)(report), nl=False)
