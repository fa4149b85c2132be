"""Saved plans, checksums and the machine-readable renderings used in pipelines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import Result

from tests.conftest import World
from tests.test_cli_e2e import MANIFEST, manifest

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


# -- output sinks: checked before the first change, publishing this manifest's entries only ----------------


def nothing_created(world: World) -> bool:
    state = world.sandbox.world()
    return not state.models and not state.api_keys


def sink_apply(world: World, path: str, target: str) -> Result:
    return world.run("apply", "-f", path, "--auto-approve", f"--sandbox={world.state}", "--outputs", target)


def test_github_outputs_without_github_output_are_refused_before_anything_is_created(world: World) -> None:
    world.env.pop("GITHUB_OUTPUT", None)
    refused = sink_apply(world, manifest(world), "github")
    assert refused.exit_code == 1
    assert "--outputs github needs $GITHUB_OUTPUT" in refused.stderr
    assert nothing_created(world)
    world.env["GITHUB_OUTPUT"] = str(world.root / "no-such-directory" / "output")
    unwritable = sink_apply(world, manifest(world), "github")
    assert unwritable.exit_code == 1 and "cannot append to $GITHUB_OUTPUT" in unwritable.stderr
    assert nothing_created(world)


def test_secrets_manager_without_boto3_is_refused_before_anything_is_created(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as where the aws extra is not installed
    refused = sink_apply(world, manifest(world), "aws-secretsmanager:capella/prod")
    assert refused.exit_code == 1 and "needs boto3: pip install 'capella-deploy[aws]'" in refused.stderr
    assert nothing_created(world)


def test_secrets_manager_without_credentials_is_refused_before_anything_is_created(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("boto3", reason="boto3 is not installed (the aws extra)")
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
    refused = sink_apply(world, manifest(world), "aws-secretsmanager:capella/prod")
    assert refused.exit_code == 1, refused.output
    assert "NoCredentialsError; give boto3 credentials" in refused.stderr
    assert nothing_created(world)


OTHER_TEAM = """\
apiVersion: capella-deploy/v1
defaults: {{provider: aws, region: us-east-1}}
apiKeys:
  - {{name: other-key, expiryDays: 30, allowedCIDRs: [10.1.0.0/16]}}
outputs: {{path: {shared}}}
"""


def test_github_outputs_publish_only_this_manifests_entries(world: World) -> None:
    shared = world.root / "shared-outputs.json"
    other = world.write("other.yaml", OTHER_TEAM.format(shared=shared))
    ours = world.write("ours.yaml", MANIFEST.format(gpu=48, state="running", cidr="10.0.0.0/16"))
    ours.write_text(ours.read_text() + f"outputs: {{path: {shared}}}\n")
    assert world.run("apply", "-f", str(other), "--auto-approve", f"--sandbox={world.state}").exit_code == 0
    github_output = world.root / "github_output"
    world.env["GITHUB_OUTPUT"] = str(github_output)
    applied = sink_apply(world, str(ours), "github")
    assert applied.exit_code == 0, applied.output
    names = {line.split("=", 1)[0] for line in github_output.read_text().splitlines()}
    assert {"key_app_token", "model_chat_url", "model_embed_id"} <= names
    assert not any(name.startswith("key_other_key") for name in names), "another manifest's key is not ours"
    assert set(json.loads(shared.read_text())["apiKeys"]) == {"app", "other-key"}, "the file keeps both"


# -- environments -------------------------------------------------------------------------------------------


def staging_manifest(world: World) -> Path:
    return world.write(
        "staging.yaml", "environment: staging\n" + MANIFEST.format(gpu=48, state="running", cidr="10.0.0.0/16")
    )


def test_an_environment_names_the_plan_comment_the_json_plan_and_the_checksum(world: World) -> None:
    path = world.write(
        "staging.yaml", "environment: staging\n" + MANIFEST.format(gpu=48, state="running", cidr="10.0.0.0/16")
    )
    markdown = world.cli("plan", "-f", str(path), "--markdown")
    assert markdown.exit_code == 0, markdown.output
    lines = markdown.stdout.splitlines()
    assert lines[:2] == [
        "<!-- capella-deploy-plan:staging -->",
        f"### capella-deploy plan for environment `staging` (organization `{world.sandbox.org_id}`)",
    ]
    doc = json.loads(world.cli("plan", "-f", str(path), "--json").stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["environment"] == "staging"
    plain = json.loads(world.cli("plan", "-f", manifest(world), "--json").stdout)
    assert plain["environment"] is None and plain["checksum"] != doc["checksum"]
    human = world.cli("plan", "-f", str(path))
    assert human.stdout.splitlines()[0].endswith(
        f"({world.sandbox.org_id}, the sandbox's own organization), environment staging"
    )


def test_environment_flag_and_manifest_must_agree(world: World) -> None:
    path = world.write(
        "staging.yaml", "environment: staging\n" + MANIFEST.format(gpu=48, state="running", cidr="10.0.0.0/16")
    )
    clash = world.cli("plan", "-f", str(path), "--environment", "production")
    assert clash.exit_code == 1
    assert f"{path}:1: environment: this manifest is for environment 'staging', not 'production'" in clash.stderr
    assert world.cli("plan", "-f", str(path), "--environment", "staging").exit_code == 0
    bad = world.run("validate", "-f", str(path), "--environment", "prod/eu")
    assert bad.exit_code == 1 and "'prod/eu' is not an environment name" in bad.output


def test_each_environment_has_its_own_default_outputs_file(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(world.root)
    path = manifest(world)
    applied = world.run("apply", "-f", path, "--environment", "canary", "--auto-approve", f"--sandbox={world.state}")
    assert applied.exit_code == 0, applied.output
    outputs = world.root / ".capella" / "canary" / "outputs.json"
    assert set(json.loads(outputs.read_text())["apiKeys"]) == {"app"}
    assert not (world.root / ".capella" / "outputs.json").exists()
    checked = world.run("verify", "-f", path, "--environment", "canary", f"--sandbox={world.state}")
    assert checked.exit_code == 0, checked.output  # verify finds the environment's outputs by itself


def test_a_saved_plan_is_applied_only_to_its_environment(world: World) -> None:
    planfile = world.root / "staging.plan.json"
    planned = world.cli("plan", "-f", manifest(world), "--environment", "staging", "--out", str(planfile))
    assert planned.exit_code == 0, planned.output
    wrong = world.cli("apply", str(planfile), "--environment", "production", "--auto-approve")
    assert wrong.exit_code == 1
    assert "is a plan for environment staging, not for environment production" in wrong.stderr
    assert not world.sandbox.world().models
    assert world.cli("apply", str(planfile), "--environment", "staging", "--auto-approve").exit_code == 0
