"""Saved plans the Terraform way: `plan -out`, `show`, `apply PLANFILE` without a question, one JSON style."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from capella_deploy.cli import main
from capella_deploy.schemas import schema_text
from tests.conftest import World
from tests.test_cli_e2e import manifest

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$|^no-op$")


def keys_of(doc: Any, *, skip: frozenset[str] = frozenset()) -> set[str]:
    """Every key of the document's own structure; the values under ``skip`` (attributes, a manifest) are data."""
    found: set[str] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.add(key)
            if key not in skip:
                found |= keys_of(value, skip=skip)
    elif isinstance(doc, list):
        for item in doc:
            found |= keys_of(item, skip=skip)
    return found


# Where the documents carry manifest or API attributes (named as the manifest names them), not their own keys.
DATA = frozenset({"before", "after", "manifest", "before_sensitive", "after_sensitive"})


def save_plan(world: World, path: str, *extra: str) -> str:
    planfile = str(world.root / "capella.plan.json")
    result = world.cli("plan", "-f", path, "-out", planfile, *extra)
    assert result.exit_code == 0, result.output
    return planfile


def test_apply_of_a_saved_plan_never_asks(world: World) -> None:
    planfile = save_plan(world, manifest(world))
    # Where `apply -f` would ask (or, off a terminal, refuse without --auto-approve), a saved plan goes ahead:
    # the review happened at plan time.
    result = CliRunner().invoke(
        main, ["apply", planfile, f"--sandbox={world.state}", "--outputs", str(world.outputs)], env=world.env
    )
    assert result.exit_code == 0, result.output
    assert "Do you want" not in result.output and "Apply complete!" in result.stdout
    assert len(world.sandbox.world().models) == 2


def test_show_prints_a_saved_plan_in_each_rendering_without_the_api(world: World) -> None:
    path = manifest(world)
    planfile = save_plan(world, path)
    planned = world.cli("plan", "-f", path, "--json")

    world.env["CAPELLA_API_TOKEN"] = ""  # show needs no token, no API
    human = world.run("show", planfile)
    assert human.exit_code == 0, human.output
    assert human.stdout.startswith(f"Saved plan {planfile}, made at ")
    assert f"apply it with `capella-deploy apply {planfile}`" in human.stdout
    assert "+ model 'chat'" in human.stdout and "Plan: 3 to create" in human.stdout
    checksum = json.loads(planned.stdout)["checksum"]
    assert f"Plan checksum: {checksum}" in human.stdout

    # `show --json` is the very document `plan --json` printed for the same plan.
    shown = world.run("show", planfile, "--json")
    assert json.loads(shown.stdout) == json.loads(planned.stdout)
    markdown = world.run("show", planfile, "--markdown")
    assert markdown.stdout.startswith("<!-- capella-deploy-plan -->") and f"`{checksum}`" in markdown.stdout

    world.env["CAPELLA_API_TOKEN"] = world.token
    assert world.cli("apply", planfile).exit_code == 0
    after = world.run("show", planfile)
    assert re.search(r"; applied at \d{4}-\d\d-\d\dT", after.stdout), after.stdout


def test_every_json_document_speaks_snake_case_and_matches_its_schema(world: World) -> None:
    path = manifest(world)
    planfile = save_plan(world, path)
    saved = json.loads((world.root / "capella.plan.json").read_text())
    jsonschema.validate(saved, json.loads(schema_text("planfile")))
    jsonschema.validate(saved["manifest"], json.loads(schema_text("manifest")))
    assert world.cli("apply", planfile).exit_code == 0

    changed = manifest(world, gpu=192, cidr="10.9.0.0/16")
    plan_doc = json.loads(world.cli("plan", "-f", changed, "--json").stdout)
    jsonschema.validate(plan_doc, json.loads(schema_text("plan")))
    report = world.root / "drift.json"
    assert world.cli("drift", "-f", changed, "--report", str(report)).exit_code == 2
    drift_doc = json.loads(report.read_text())
    jsonschema.validate(drift_doc, json.loads(schema_text("drift")))
    status_doc = json.loads(world.cli("status", "-f", changed, "--json").stdout)
    jsonschema.validate(status_doc, json.loads(schema_text("status")))

    for doc in (saved, plan_doc, drift_doc, status_doc):
        odd = {key for key in keys_of(doc, skip=DATA) if not SNAKE_CASE.match(key)}
        assert not odd, odd
    assert {"format_version", "live_id", "forces_replace"} <= keys_of(plan_doc, skip=DATA)
    assert saved["format_version"] == 3 and "live_id" in saved["plan"]["changes"][0]


def test_an_older_plan_file_is_refused_with_what_to_do(world: World) -> None:
    planfile = world.root / "old.plan.json"
    planfile.write_text(json.dumps({"format": "capella-deploy-plan", "formatVersion": 1, "plan": {}, "manifest": {}}))
    for result in (world.run("show", str(planfile)), world.cli("apply", str(planfile))):
        assert result.exit_code == 1
        assert "saved plan format 1 is not the format 3" in result.stderr
        assert f"run `capella-deploy plan -out {planfile}` again" in result.stderr


def test_a_manifest_given_as_planfile_is_recognised(world: World) -> None:
    path = manifest(world)
    result = world.cli("apply", path, "--auto-approve")
    assert result.exit_code == 1
    assert f"{path} looks like a manifest, not a saved plan" in result.stderr
    assert f"`capella-deploy apply -f {path}`" in result.stderr
    assert "JSONDecodeError" not in result.output
    missing = world.run("show", str(world.root / "nope.json"))
    assert missing.exit_code == 1 and "no such saved plan" in missing.stderr
    assert not world.sandbox.world().models


def test_a_plan_with_errors_prints_each_error_once_and_no_checksum(world: World) -> None:
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    guarded = world.write(
        "guarded.yaml",
        (world.root / "capella.yaml")
        .read_text()
        .replace("gpuMemory: 48\n", "gpuMemory: 192\n    preventDestroy: true\n", 1),
    )
    result = world.cli("plan", "-f", str(guarded), "-out", str(world.root / "p.json"))
    assert result.exit_code == 1
    assert result.output.count("preventDestroy: true") == 1, result.output
    assert "Plan checksum" not in result.output
    assert not (world.root / "p.json").exists()
    markdown = world.cli("plan", "-f", str(guarded), "--markdown")
    assert markdown.exit_code == 1 and "Plan checksum" not in markdown.stdout
    assert markdown.stdout.count("preventDestroy: true") == 1 and markdown.stderr.count("preventDestroy: true") == 1


@pytest.mark.parametrize("option", ["--var", "--var-file", "--target", "--replace"])
def test_a_saved_plan_takes_no_manifest_options(world: World, option: str) -> None:
    planfile = save_plan(world, manifest(world))
    result = world.cli("apply", planfile, option, "model.chat")
    assert result.exit_code == 1
    assert "a saved plan already holds its manifest" in result.stderr
