"""Saved plans, checksums and the machine-readable renderings used in pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from tests.conftest import World
from tests.test_cli_e2e import manifest

SCHEMA = json.loads((Path(__file__).parent.parent / "schemas" / "plan.schema.json").read_text())


def checksum_of(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("Plan checksum: "))
    return line.removeprefix("Plan checksum: ").strip()


def test_saved_plan_applies_once(world: World) -> None:
    planfile = world.root / "plan.json"
    planned = world.cli("plan", "-f", manifest(world), "--out", str(planfile))
    assert planned.exit_code == 0, planned.output
    saved = planfile.read_text()
    assert world.token not in saved

    applied = world.cli("apply", str(planfile), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert len(world.sandbox.world().models) == 2

    again = world.cli("apply", str(planfile), "--auto-approve")
    assert again.exit_code == 1
    assert "already applied" in again.stderr
    assert len(world.sandbox.world().models) == 2


def test_stale_saved_plan_is_refused(world: World) -> None:
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    planfile = world.root / "plan.json"
    assert world.cli("plan", "-f", manifest(world, gpu=192), "--out", str(planfile)).exit_code == 0
    # Someone pauses the model by hand between review and apply.
    assert world.cli("apply", "-f", manifest(world, state="paused"), "--auto-approve").exit_code == 0
    result = world.cli("apply", str(planfile), "--auto-approve")
    assert result.exit_code == 1
    assert "stale" in result.stderr


def test_checksum_must_match_what_was_reviewed(world: World) -> None:
    path = manifest(world)
    reviewed = checksum_of(world.cli("plan", "-f", path).stdout)
    mismatch = world.cli("apply", "-f", manifest(world, gpu=192), "--checksum", reviewed, "--auto-approve")
    assert mismatch.exit_code == 1 and "checksum" in mismatch.stderr
    assert not world.sandbox.world().models
    ok = world.cli("apply", "-f", manifest(world), "--checksum", reviewed, "--auto-approve")
    assert ok.exit_code == 0, ok.output


def test_json_plan_matches_its_schema_and_holds_no_secret(world: World) -> None:
    first = world.cli("plan", "-f", manifest(world), "--json")
    jsonschema.validate(json.loads(first.stdout), SCHEMA)
    assert world.cli("apply", "-f", manifest(world), "--auto-approve").exit_code == 0
    token = json.loads(world.outputs.read_text())["apiKeys"]["app"]["token"]
    changed = world.cli("plan", "-f", manifest(world, gpu=192, cidr="10.9.0.0/16"), "--json")
    doc = json.loads(changed.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert token not in changed.stdout and world.token not in changed.stdout
    key = next(c for c in doc["resource_changes"] if c["address"] == "apiKey.app")
    assert key["change"]["after"]["token"] == "(sensitive value)"
    assert key["change"]["after_sensitive"] == {"token": True}
    model = next(c for c in doc["resource_changes"] if c["address"] == "model.chat")
    assert model["change"]["replace_paths"] == [["gpuMemory"]]
    assert model["action_reason"] == "replace_because_cannot_update"


def test_markdown_plan_is_a_pr_comment(world: World) -> None:
    result = world.cli("plan", "-f", manifest(world), "--markdown")
    lines = result.stdout.splitlines()
    assert lines[0] == "<!-- capella-deploy-plan -->"
    assert "**3** to create." in result.stdout
    assert "| 🟢 | `model.chat` | create | not in the organization |" in result.stdout
    assert "<details><summary>Details</summary>" in result.stdout
    assert lines[-1].startswith("Plan checksum: `")


def test_detailed_exitcode(world: World) -> None:
    path = manifest(world)
    assert world.cli("plan", "-f", path, "--detailed-exitcode").exit_code == 2
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    assert world.cli("plan", "-f", path, "--detailed-exitcode").exit_code == 0
    missing = world.cli("plan", "-f", str(world.root / "nope.yaml"), "--detailed-exitcode")
    assert missing.exit_code == 1


def test_apply_writes_a_job_summary_with_the_checks(world: World) -> None:
    summary = world.root / "summary.md"
    world.env["GITHUB_STEP_SUMMARY"] = str(summary)
    quickstart = Path(__file__).parent.parent / "examples" / "quickstart.yaml"
    result = world.cli("apply", "-f", str(quickstart), "--auto-approve")
    assert result.exit_code == 0, result.output
    text = summary.read_text()
    assert "**Apply complete.**" in text
    assert "| `model.chat` | create | ✅ healthy |" in text
    assert "chat-answers" in text and "✅ pass" in text
    token = json.loads(world.outputs.read_text())["apiKeys"]["chat-app"]["token"]
    assert token not in text and world.token not in text
