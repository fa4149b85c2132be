"""GitOps commands: drift (is the organization still what the manifest says?), export and clone.

``cli.py`` loads this module only when one of these commands is asked for.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from capella_deploy.cli.common import (
    ExitCode,
    files_option,
    guarded,
    load_manifest_files,
    make_target,
    manifest_options,
    read_manifest_files,
    skip_catalog_option,
    target_options,
    variable_options,
    warn,
)
from capella_deploy.cli.conventions import Command
from capella_deploy.errors import ConfigError
from capella_deploy.secrets import redact

if TYPE_CHECKING:
    from capella_deploy.live import LiveState
    from capella_deploy.plan import Plan, Where
    from capella_deploy.plan.drift import IgnoreRules

DEFAULT_IGNORE_FILE = Path(".capella/drift-ignore")
WEBHOOK_ENV = "CAPELLA_DRIFT_WEBHOOK"
SCHEMA_FILE = Path("schemas/manifest.schema.json")


# -- drift ---------------------------------------------------------------------------------------------


@click.command(cls=Command)
@manifest_options
@target_options
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here."
)
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a Markdown summary (for an issue body).")
@click.option(
    "--ignore",
    "ignores",
    multiple=True,
    metavar="PATTERN",
    help="Ignore differences at ADDRESS[.ATTRIBUTE] matching this fnmatch pattern, e.g. 'model.*.cache.expirySeconds'.",
)
@click.option(
    "--ignore-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"More ignore patterns, one a line (default: {DEFAULT_IGNORE_FILE} when it exists).",
)
@click.option(
    "--notify",
    metavar="URL",
    envvar=WEBHOOK_ENV,
    help=f"POST the report to this Slack-compatible webhook when there is drift (or set {WEBHOOK_ENV}).",
)
@guarded
def drift(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    environment: str | None,
    sandbox: str | None,
    token_file: Path | None,
    report_path: Path | None,
    as_markdown: bool,
    ignores: Sequence[str],
    ignore_file: Path | None,
    notify: str | None,
) -> None:
    """Report how the organization differs from the manifest; changes nothing, asks nothing.

    Exit status: 0 in sync, 2 drift found, 1 error.

    \b
    Example:
      capella-deploy drift -f capella.yaml --report drift.json --ignore 'model.*.cache.expirySeconds'
    """
    from capella_deploy.outputs import atomic_write
    from capella_deploy.plan.drift import drift_report, unmatched_patterns
    from capella_deploy.views.drift import render_json, render_markdown, render_text, slack_payload

    manifest = load_manifest_files(files, variables, var_files, environment=environment)
    rules = _ignore_rules(ignores, ignore_file)
    for pattern, spellings in rules.respellings.items():
        warn(
            f"the ignore pattern {pattern!r} names an attribute in the API's words; plans and drift speak the "
            f"manifest's: write {' and '.join(repr(s) for s in spellings)} (read that way for now)"
        )
    target = make_target(sandbox, token_file)

    async def run() -> Plan:
        from capella_deploy.run.planning import make_plan
        from capella_deploy.run.session import open_session

        async with open_session(
            target, manifest.organizationId, expected_name=manifest.expectOrganizationName
        ) as session:
            return await make_plan(session, manifest, ())

    planned = asyncio.run(run())
    report = drift_report(planned, rules)
    click.echo(render_markdown(report) if as_markdown else render_text(report), nl=False)
    for warning in report.warnings:
        warn(warning)
    for pattern in unmatched_patterns(rules, planned):
        warn(
            f"the ignore pattern {pattern!r} matches no resource or attribute here; check its spelling "
            "(ADDRESS[.ATTRIBUTE], e.g. 'model.*.cache.expirySeconds')"
        )
    if report_path is not None:
        atomic_write(report_path, redact(render_json(report)))
        click.echo(f"Wrote the drift report to {report_path}.", err=True)
    if notify and not report.in_sync:
        from capella_deploy.gitops.notify import post_report

        outcome, delivered = post_report(notify, slack_payload(report))
        if delivered:
            click.echo(outcome, err=True)
        else:
            warn(outcome)
    sys.exit(ExitCode.OK if report.in_sync else ExitCode.CHANGES)


def _ignore_rules(patterns: Sequence[str], ignore_file: Path | None) -> IgnoreRules:
    from capella_deploy.plan.drift import IgnoreRules

    rules = IgnoreRules(tuple(patterns))
    path = ignore_file or (DEFAULT_IGNORE_FILE if DEFAULT_IGNORE_FILE.is_file() else None)
    if path is None:
        return rules
    try:
        return rules + IgnoreRules.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the ignore file ({type(exc).__name__})") from None


# -- export --------------------------------------------------------------------------------------------


@click.command(cls=Command)
@target_options
@files_option("A manifest whose scope (and organizationId) to export: only what it owns. Repeat to overlay files.")
@variable_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout.")
@click.option("--match", metavar="PATTERN", help="Only resources whose name matches this fnmatch pattern.")
@click.option("--region", metavar="REGION", help="Only resources in this region.")
@click.option(
    "--org", "org_id", metavar="ORG_ID", help="Organization (default: -f's, else CAPELLA_ORG_ID, else the only one)."
)
@guarded
def export(
    sandbox: str | None,
    token_file: Path | None,
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    output: Path | None,
    match: str | None,
    region: str | None,
    org_id: str | None,
) -> None:
    """Write a manifest of what is live; planning it against the same organization shows no changes.

    The manifest owns what it exports (its scope is the --match pattern, or the scope of the -f manifest).

    \b
    Example:
      capella-deploy export --match 'team-a-*' -o capella/team-a.yaml
      capella-deploy export -f capella/team-a.yaml -o capella/team-a-live.yaml
    """
    from capella_deploy.gitops.export import export_manifest, manifest_yaml
    from capella_deploy.kinds import REGISTRY, tally
    from capella_deploy.plan import OrgSource

    target = make_target(sandbox, token_file)
    manifest = load_manifest_files(files, variables, var_files, resolve_outputs=False) if files else None
    owned = manifest.scope if manifest is not None else None
    org, source = (org_id, OrgSource.OPTION)
    if org_id is None and manifest is not None and manifest.organizationId is not None:
        org, source = manifest.organizationId, OrgSource.MANIFEST

    async def run() -> tuple[Where, LiveState]:
        from capella_deploy.live import read_live
        from capella_deploy.run.session import open_session

        expected = manifest.expectOrganizationName if manifest is not None else None
        async with open_session(target, org, source, expected_name=expected) as session:
            return session.where(), (await read_live(session.client, session.org_id)).within(owned)

    where, live = asyncio.run(run())
    result = export_manifest(live, match=match, region=region, scope=owned.patterns if owned is not None else ())
    flags = [("-f", str(path)) for path in files] + [("--match", match), ("--region", region)]
    scope = "".join(f" {flag} {value}" for flag, value in flags if value)
    comments = [
        f"Exported from {where.organization} by `capella-deploy export{scope}`.",
        "Guardrails and jailbreak settings are write-only in the Capella API and cannot be exported.",
        *(f"Not exported: {item}" for item in result.omitted),
    ]
    text = manifest_yaml(result.document, comments, schema_ref=_schema_ref(output))
    for item in result.omitted:
        warn(f"not exported: {item}")
    for warning in result.warnings:
        warn(warning)
    _emit(text, output)
    counts = tally({kind.kind: len(result.document.get(kind.section, [])) for kind in REGISTRY})
    click.echo(f"Exported {counts}.", err=True)


# -- clone ---------------------------------------------------------------------------------------------


@click.command(cls=Command)
@manifest_options
@click.option("--to-region", "region", required=True, metavar="REGION", help="The region of the clone.")
@click.option(
    "--name-suffix",
    metavar="SUFFIX",
    help="Appended to every model, key and provider name (default: -REGION). '' keeps the names, for another "
    "organization.",
)
@click.option("--provider", type=click.Choice(["aws", "gcp", "azure"]), help="Move to this cloud provider too.")
@click.option("--org", "org_id", metavar="ORG_ID", help="Set the clone's organizationId.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout.")
@skip_catalog_option
@guarded
def clone(
    files: Sequence[Path],
    variables: Sequence[str],
    var_files: Sequence[Path],
    environment: str | None,
    region: str,
    name_suffix: str | None,
    provider: str | None,
    org_id: str | None,
    output: Path | None,
    skip_catalog_check: bool,
) -> None:
    """Write a manifest for the same deployment in another region (new names, new API keys).

    The clone is refused when the catalog says Capella does not offer what it asks for in that region.

    \b
    Example:
      capella-deploy clone -f capella.yaml --to-region eu-west-1 -o capella-eu.yaml
    """
    from pydantic import ValidationError

    from capella_deploy.catalog import CATALOG
    from capella_deploy.gitops.clone import clone_manifest, default_suffix, unoffered_in_clone
    from capella_deploy.gitops.export import manifest_yaml
    from capella_deploy.manifest import Manifest

    # The clone is written out as a manifest: its outputs.path stays as the source manifest wrote it.
    source = read_manifest_files(files, variables, var_files, environment=environment)
    manifest = source.manifest
    suffix = default_suffix(region) if name_suffix is None else name_suffix
    try:
        result = clone_manifest(
            manifest.model_dump(mode="json", exclude_unset=True),
            region=region,
            name_suffix=suffix,
            provider=provider,
            org_id=org_id,
        )
        cloned = Manifest.model_validate(result.document)
    except ValueError as exc:
        problems = [_problem(e) for e in exc.errors()] if isinstance(exc, ValidationError) else [str(exc)]
        raise ConfigError("the clone would not be a valid manifest: " + "; ".join(problems)) from None
    unoffered = unoffered_in_clone(cloned, source, CATALOG, region=region, provider=provider)
    if unoffered and not skip_catalog_check:
        raise ConfigError(
            f"Capella would refuse to create this clone ({CATALOG.label}):\n"
            + "".join(f"  {problem}\n" for problem in unoffered)
            + "Choose what is offered, or pass --skip-catalog-check if Capella offers it now."
        )
    for problem in unoffered:
        warn(f"{problem} (--skip-catalog-check: written anyway)")
    for warning in result.warnings:
        warn(warning)
    flags = [f"-f {shlex.quote(str(f))}" for f in files] + [f"--to-region {shlex.quote(region)}"]
    flags += [
        f"{flag} {shlex.quote(value)}"
        for flag, value in (("--name-suffix", name_suffix), ("--provider", provider), ("--org", org_id))
        if value is not None
    ]
    flags += ["--skip-catalog-check"] if skip_catalog_check else []
    comments = [
        f"Made by: capella-deploy clone {' '.join(flags)}",
        "API keys are declared anew: apply creates them and writes new tokens (a token cannot be copied).",
        *(f"Not in the {CATALOG.label}: {problem}" for problem in unoffered),
    ]
    _emit(manifest_yaml(result.document, comments, schema_ref=_schema_ref(output)), output)


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


# -- shared --------------------------------------------------------------------------------------------


def _schema_ref(output: Path | None) -> str:
    """A ``$schema`` path the written file's editor can open: relative to the file, and pointing at a file.

    A ``schemas/manifest.schema.json`` beside the output or in a folder above it (a repository's published
    copy) comes first; else the copy installed with the tool.
    """
    from capella_deploy.schemas import schema_path

    where = (output.resolve().parent if output is not None else Path.cwd()).resolve()
    for directory in (where, *where.parents):
        candidate = directory / SCHEMA_FILE
        if candidate.is_file():
            return Path(os.path.relpath(candidate, where)).as_posix()
    installed = schema_path("manifest").resolve()
    warn(
        f"no {SCHEMA_FILE} beside the manifest or above it, so its $schema names this installation's copy "
        f"({installed}); for a path everyone can open, commit one: capella-deploy schema > {SCHEMA_FILE}"
    )
    if installed.is_relative_to(Path.cwd().resolve()):
        return Path(os.path.relpath(installed, where)).as_posix()
    return installed.as_posix()


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(redact(text), encoding="utf-8")
    click.echo(f"Wrote {output}.", err=True)
