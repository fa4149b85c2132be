"""AI provider integrations end to end: the real CLI, client, planner and applier against the sandbox.

Credentials reach the sandbox only as the SHA-256 it keeps of each; that is how these tests see what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.apply.applier import Applier
from capella_deploy.live import read_live
from capella_deploy.manifest import load_manifest
from capella_deploy.outputs import Outputs
from capella_deploy.plan.planner import plan
from capella_deploy.sandbox import CONFLICTS, IN_PROCESS_BASE_URL, SPEC, Rules
from capella_deploy.sandbox.server import running_server
from capella_deploy.sandbox.state import Audit, ProviderRecord
from capella_deploy.secrets import Secret
from tests.conftest import World

OPENAI_KEY = "sk-e2e-openai-3f9a71c2d8"
ACCESS_KEY = "AKIAE2EPROVIDER0001"
SECRET_KEY = "e2e/secret+access/key-77d1"
MANIFEST = """\
apiVersion: capella-deploy/v1
providers:
  - name: openai
    type: {openai_type}
    credentials: {openai_credentials}
    credentialsVersion: {version}
  - name: docs
    type: awsS3
    awsRegion: us-east-1
    bucket: {bucket}
    credentials:
      accessKeyId: {{env: AWS_ACCESS_KEY_ID}}
      secretAccessKey: {{file: {secret_file}}}
    preventDestroy: {protected}
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest(
    world: World,
    *,
    version: int = 1,
    bucket: str = "team-docs",
    openai_type: str = "openAI",
    protected: bool = False,
    secret_file: str = "secrets/aws-secret",
    name: str = "capella.yaml",
) -> str:
    credentials = (
        "{apiKey: {env: OPENAI_API_KEY}}"
        if openai_type == "openAI"
        else "{accessKeyId: {env: AWS_ACCESS_KEY_ID}, secretAccessKey: {env: OPENAI_API_KEY}}"
    )
    text = MANIFEST.format(
        openai_type=openai_type,
        openai_credentials=credentials,
        version=version,
        bucket=bucket,
        secret_file=secret_file,
        protected=str(protected).lower(),
    )
    return str(world.write(name, text))


@pytest.fixture
def creds(world: World) -> World:
    """The world with every credential the manifest refers to: two variables and a file beside the manifest."""
    world.env.update({"OPENAI_API_KEY": OPENAI_KEY, "AWS_ACCESS_KEY_ID": ACCESS_KEY})
    (world.root / "secrets").mkdir()
    (world.root / "secrets" / "aws-secret").write_text(SECRET_KEY + "\n")
    return world


def live(world: World) -> dict[str, ProviderRecord]:
    return {p.name: p for p in world.sandbox.world().providers.values()}


def outputs(world: World) -> dict[str, Any]:
    section: dict[str, Any] = json.loads(world.outputs.read_text()).get("providers", {})
    return section


def plan_json(world: World, path: str, *extra: str) -> dict[str, Any]:
    result = world.cli("plan", "-f", path, "--json", "--outputs", str(world.outputs), *extra)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def changes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["address"]: c for c in doc["resource_changes"]}


def apply(world: World, path: str, *extra: str) -> Any:
    result = world.cli("apply", "-f", path, "--auto-approve", *extra)
    assert result.exit_code == 0, result.output
    return result


def add_provider(world: World, name: str, kind: str = "openAI", **settings: str) -> str:
    """A provider made outside this manifest's runs (by hand, or by another run)."""
    provider_id = str(uuid.uuid4())
    with world.sandbox.mutate() as state:
        state.providers[provider_id] = ProviderRecord(
            provider_id, name, kind, dict(settings), {"apiKey": sha("other")}, Audit.new("someone", world.sandbox.now())
        )
    return provider_id


# -- the life of a provider ------------------------------------------------------------------------------


def test_create_then_no_changes_then_an_s3_setting_in_place(creds: World) -> None:
    world = creds
    path = manifest(world)
    first = plan_json(world, path)
    assert [c["change"]["actions"] for c in first["resource_changes"]] == [["create"], ["create"]]
    assert changes(first)["provider.docs"]["type"] == "capella_ai_provider"
    applied = apply(world, path)
    assert "provider.openai: created" in applied.stdout

    made = live(world)
    assert made["openai"].type == "openAI" and made["openai"].credential_sha256 == {"apiKey": sha(OPENAI_KEY)}
    # The file's final newline is not part of the credential.
    assert made["docs"].credential_sha256 == {"accessKeyId": sha(ACCESS_KEY), "secretAccessKey": sha(SECRET_KEY)}
    assert made["docs"].settings == {"awsRegion": "us-east-1", "bucket": "team-docs", "folderPath": ""}
    assert outputs(world) == {
        "docs": {"id": made["docs"].id, "type": "awsS3", "credentialsVersion": 1},
        "openai": {"id": made["openai"].id, "type": "openAI", "credentialsVersion": 1},
    }

    again = world.cli("plan", "-f", path, "--detailed-exitcode", "--outputs", str(world.outputs))
    assert again.exit_code == 0 and "No changes." in again.stdout, again.output
    one = world.run("outputs", "--outputs", str(world.outputs), "provider.docs.credentialsVersion", "--raw")
    assert one.exit_code == 0 and one.stdout == "1\n", one.output

    moved = manifest(world, bucket="team-docs-2")
    doc = plan_json(world, moved)
    docs = changes(doc)["provider.docs"]
    assert docs["change"]["actions"] == ["update"]
    assert docs["change"]["attributes"] == [
        {"path": "bucket", "before": "team-docs", "after": "team-docs-2", "forces_replace": False, "to_default": False}
    ]
    assert changes(doc)["provider.openai"]["change"]["actions"] == ["no-op"]
    world.env["AWS_ACCESS_KEY_ID"] = "AKIA-NOT-SENT-ON-A-SETTINGS-CHANGE"
    apply(world, moved)
    after = live(world)["docs"]
    assert after.settings["bucket"] == "team-docs-2" and after.id == made["docs"].id
    assert after.credential_sha256["accessKeyId"] == sha(ACCESS_KEY), "a settings change sends no credentials"
    assert outputs(world)["docs"]["credentialsVersion"] == 1


def test_raising_credentials_version_plans_one_roll_and_sends_the_credentials_again(creds: World) -> None:
    world = creds
    apply(world, manifest(world))
    before = live(world)
    world.env["OPENAI_API_KEY"] = "sk-e2e-openai-rolled-55aa"
    path = manifest(world, version=2)

    doc = plan_json(world, path)
    rolled = changes(doc)["provider.openai"]
    assert rolled["change"]["actions"] == ["update"]
    assert rolled["change"]["attributes"] == [
        {"path": "credentialsVersion", "before": 1, "after": 2, "forces_replace": False, "to_default": False}
    ]
    assert changes(doc)["provider.docs"]["change"]["actions"] == ["no-op"]
    human = world.cli("plan", "-f", path, "--outputs", str(world.outputs))
    assert "~ credentialsVersion = 1 -> 2" in human.stdout and "Plan: 0 to create, 1 to update" in human.stdout

    apply(world, path)
    after = live(world)
    assert after["openai"].id == before["openai"].id
    assert after["openai"].credential_sha256 == {"apiKey": sha("sk-e2e-openai-rolled-55aa")}
    assert after["docs"].credential_sha256 == before["docs"].credential_sha256
    assert outputs(world)["openai"]["credentialsVersion"] == 2
    assert world.cli("plan", "-f", path, "--detailed-exitcode", "--outputs", str(world.outputs)).exit_code == 0


def test_replace_by_request_rolls_the_credentials_of_that_provider_only(creds: World) -> None:
    world = creds
    path = manifest(world)
    apply(world, path)
    world.env["AWS_ACCESS_KEY_ID"] = "AKIA-ROLLED-BY-REQUEST"
    doc = plan_json(world, path, "--replace", "provider.docs")
    docs = changes(doc)["provider.docs"]
    assert docs["change"]["actions"] == ["update"] and docs["action_reason"] == "replace_by_request"
    apply(world, path, "--replace", "provider.docs")
    after = live(world)
    assert after["docs"].credential_sha256["accessKeyId"] == sha("AKIA-ROLLED-BY-REQUEST")
    assert after["openai"].credential_sha256 == {"apiKey": sha(OPENAI_KEY)}


def test_a_type_change_replaces_the_provider_under_its_name(creds: World) -> None:
    world = creds
    apply(world, manifest(world))
    old = live(world)["openai"].id
    path = manifest(world, openai_type="awsBedrock")
    doc = plan_json(world, path)
    assert changes(doc)["provider.openai"]["change"]["actions"] == ["delete", "create"]
    apply(world, path)
    new = live(world)["openai"]
    assert new.id != old and new.type == "awsBedrock"
    assert new.credential_sha256 == {"accessKeyId": sha(ACCESS_KEY), "secretAccessKey": sha(OPENAI_KEY)}
    assert outputs(world)["openai"] == {"id": new.id, "type": "awsBedrock", "credentialsVersion": 1}
    assert old not in world.sandbox.world().providers


def test_without_a_record_no_roll_is_planned_and_the_next_apply_records_one(creds: World) -> None:
    world = creds
    apply(world, manifest(world))
    world.outputs.unlink()  # a fresh checkout: the outputs are gone
    path = manifest(world, version=4)
    assert world.cli("plan", "-f", path, "--detailed-exitcode", "--outputs", str(world.outputs)).exit_code == 0
    settled = apply(world, path)
    assert "provider.openai: the outputs held no record of which credentials version" in settled.stderr
    assert "--replace provider.openai" in settled.stderr
    assert outputs(world)["openai"]["credentialsVersion"] == 4
    assert live(world)["openai"].credential_sha256 == {"apiKey": sha(OPENAI_KEY)}, "nothing was sent"
    # From the recorded version on, raising it rolls.
    doc = plan_json(world, manifest(world, version=5))
    assert changes(doc)["provider.openai"]["change"]["actions"] == ["update"]


def test_destroy_prune_and_prevent_destroy(creds: World) -> None:
    world = creds
    guarded = manifest(world, protected=True)
    apply(world, guarded)
    refused = world.cli("destroy", "-f", guarded, "--auto-approve")
    assert refused.exit_code == 1 and "provider.docs: has preventDestroy: true" in refused.stderr + refused.stdout
    replaced = world.cli("plan", "-f", manifest(world, protected=True, name="typed.yaml"), "--replace", "provider.docs")
    assert replaced.exit_code == 0, "a roll deletes nothing, so preventDestroy allows it"

    stray = add_provider(world, "team-a-openai")
    kept = add_provider(world, "other-openai")
    pruning = world.write("prune.yaml", Path(guarded).read_text() + "prune: {match: 'team-a-*'}\n")
    doc = plan_json(world, str(pruning))
    assert changes(doc)[f"provider.team-a-openai[{stray}]"]["change"]["actions"] == ["delete"]
    assert [u["name"] for u in doc["unmanaged"]] == ["other-openai"]
    apply(world, str(pruning))
    assert stray not in world.sandbox.world().providers and kept in world.sandbox.world().providers

    gone = world.cli("destroy", "-f", manifest(world), "--auto-approve")
    assert gone.exit_code == 0, gone.output
    assert set(live(world)) == {"other-openai"}
    assert outputs(world) == {}


# -- credentials that cannot be read ------------------------------------------------------------------------


def test_a_missing_credential_is_a_plan_error_at_its_line_and_apply_creates_nothing(creds: World) -> None:
    world = creds
    del world.env["OPENAI_API_KEY"]
    path = manifest(world, secret_file="secrets/missing")
    planned = world.cli("plan", "-f", path)
    assert planned.exit_code == 1
    said = planned.stdout + planned.stderr
    assert f"{path}:5: providers[0].credentials.apiKey.env: the environment variable OPENAI_API_KEY is not set" in said
    assert f"{path}:13: providers[1].credentials.secretAccessKey.file: the file" in said
    assert "secrets/missing does not exist" in said
    applied = world.cli("apply", "-f", path, "--auto-approve")
    assert applied.exit_code == 1 and world.sandbox.world().providers == {}


def test_a_credential_file_is_relative_to_the_manifest_wherever_the_command_runs(
    creds: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = creds
    path = manifest(world)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    apply(world, path)
    assert live(world)["docs"].credential_sha256["secretAccessKey"] == sha(SECRET_KEY)


def test_a_saved_plan_applied_where_a_credential_is_missing_creates_nothing(creds: World) -> None:
    world = creds
    path = manifest(world)
    saved = world.root / "providers.plan.json"
    assert world.cli("plan", "-f", path, "-out", str(saved)).exit_code == 0
    assert OPENAI_KEY not in saved.read_text() and SECRET_KEY not in saved.read_text()
    del world.env["OPENAI_API_KEY"]
    applied = world.cli("apply", str(saved))
    assert applied.exit_code == 1
    assert "provider.openai: providers[0].credentials.apiKey.env: the environment variable OPENAI_API_KEY" in (
        applied.stderr + applied.stdout
    )
    assert world.sandbox.world().providers == {}
    # Nothing was applied: with the variable back, the same plan goes through.
    world.env["OPENAI_API_KEY"] = OPENAI_KEY
    assert world.cli("apply", str(saved)).exit_code == 0
    assert set(live(world)) == {"openai", "docs"}


# -- lost answers and duplicates -----------------------------------------------------------------------------


def faults(world: World, **route: Any) -> None:
    path = world.write("faults.json", json.dumps({"seed": 1, "routes": [route]}))
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(path)


def test_a_lost_create_answer_adopts_the_provider_it_made_and_never_makes_two(creds: World) -> None:
    world = creds
    faults(world, match="POST /v4/organizations/*/aiServices/providers", drop_after=1.0)
    result = apply(world, manifest(world))
    assert "after an unclear create answer; adopting it" in result.stdout
    made = live(world)
    assert len(world.sandbox.world().providers) == 2
    assert outputs(world)["openai"]["id"] == made["openai"].id
    world.env["CAPELLA_SANDBOX_FAULTS"] = ""
    assert (
        world.cli("plan", "-f", manifest(world), "--detailed-exitcode", "--outputs", str(world.outputs)).exit_code == 0
    )


def test_a_create_that_never_goes_through_is_tried_again_then_reported(creds: World) -> None:
    world = creds
    faults(world, match="POST /v4/organizations/*/aiServices/providers", error_rate=1.0, error_status=503)
    result = world.cli("apply", "-f", manifest(world), "--auto-approve")
    assert result.exit_code == 1
    assert "provider.openai (create): create did not go through after 5 attempts" in result.stdout
    assert world.sandbox.world().providers == {}


def plan_then_another_run_makes(world: World, rules: Rules) -> tuple[list[str], dict[str, ProviderRecord]]:
    """Plan, let another run make a provider of a planned name, then apply that plan: what each change says."""
    world.sandbox.set_rules(rules)
    # The command line makes a credential file relative to the manifest; the operation itself takes it as given.
    loaded = load_manifest([manifest(world, secret_file=str(world.root / "secrets" / "aws-secret"))], environ=world.env)

    async def run() -> list[str]:
        async with CapellaClient(
            base_url=IN_PROCESS_BASE_URL, token=Secret(world.token), transport=world.sandbox.transport()
        ) as client:
            org = world.sandbox.org_id
            now = datetime.fromtimestamp(world.sandbox.now(), tz=timezone.utc)
            planned = plan(loaded, await read_live(client, org), now=now)
            add_provider(world, "openai")
            applier = Applier(
                client, loaded, planned, Outputs(world.outputs), clock=world.sandbox.clock, environ=world.env
            )
            return [f"{r.address}: {r.detail}" for r in (await applier.run()).results]

    return asyncio.run(run()), live(world)


def test_in_the_conflicts_world_a_name_taken_since_the_plan_fails_that_create_only(creds: World) -> None:
    world = creds
    said, _ = plan_then_another_run_makes(world, CONFLICTS)
    assert any(
        line.startswith("provider.openai: a provider named 'openai' already exists that this plan did not know of")
        for line in said
    ), said
    assert [p.name for p in world.sandbox.world().providers.values()].count("openai") == 1


def test_in_the_spec_world_the_duplicate_is_made_and_the_next_plan_deletes_the_one_not_recorded(creds: World) -> None:
    world = creds
    said, _ = plan_then_another_run_makes(world, SPEC)
    assert any(line.startswith("provider.openai: created") for line in said), said
    ours = outputs(world)["openai"]["id"]
    doc = plan_json(world, manifest(world))
    [extra] = [c for c in doc["resource_changes"] if c["change"]["actions"] == ["delete"]]
    assert extra["address"].startswith("provider.openai[") and ours not in extra["address"]
    assert extra["action_reason"] == "delete_because_duplicate"
    apply(world, manifest(world))
    assert [p.id for p in world.sandbox.world().providers.values() if p.name == "openai"] == [ours]


# -- drift, export, status, a served sandbox -----------------------------------------------------------------


def test_drift_export_and_status_show_providers(creds: World) -> None:
    world = creds
    path = manifest(world)
    apply(world, path)
    with world.sandbox.mutate() as state:
        docs = next(p for p in state.providers.values() if p.name == "docs")
        docs.settings["folderPath"] = "changed/by/hand"
    drift = world.cli("drift", "-f", path)
    assert drift.exit_code == 2 and "provider.docs: apply would update it" in drift.stdout
    assert 'folderPath: live "changed/by/hand", manifest ""' in drift.stdout
    # A credentials roll waiting to be applied is not drift: the organization did not change.
    assert "provider.openai" not in world.cli("drift", "-f", manifest(world, version=9)).stdout

    exported = world.cli("export", "-o", str(world.root / "exported.yaml"))
    assert exported.exit_code == 0, exported.output
    text = (world.root / "exported.yaml").read_text()
    assert "apiKey:\n      env: OPENAI_API_KEY" in text and "env: DOCS_SECRET_ACCESS_KEY" in text
    assert "# Not exported: provider 'openai': its credentials (the API never returns them)" in text
    assert OPENAI_KEY not in text and "Exported 2 provider(s)." in exported.stderr
    replanned = world.cli("plan", "-f", str(world.root / "exported.yaml"), "--detailed-exitcode")
    assert replanned.exit_code == 0, replanned.output  # no credentials needed: nothing is created or rolled

    status = world.cli("status", "--json")
    rows = {r["address"]: r for r in json.loads(status.stdout)["resources"]}
    assert rows["provider.docs"]["region"] == "us-east-1" and rows["provider.openai"]["kind"] == "provider"


def test_providers_against_a_served_sandbox(creds: World) -> None:
    world = creds
    path = manifest(world)
    with running_server(world.sandbox) as base:
        world.env.update({"CAPELLA_API_URL": base, "CAPELLA_ORG_ID": world.sandbox.org_id})
        outputs_flag = ["--outputs", str(world.outputs)]
        applied = world.run("apply", "-f", path, "--auto-approve", *outputs_flag)
        assert applied.exit_code == 0, applied.output
        again = world.run("plan", "-f", path, "--detailed-exitcode", *outputs_flag)
        assert again.exit_code == 0, again.output
        world.env["OPENAI_API_KEY"] = "sk-served-rolled-0099"
        rolled = world.run("apply", "-f", manifest(world, version=2), "--auto-approve", *outputs_flag)
        assert rolled.exit_code == 0 and "1 updated" in rolled.stdout, rolled.output
        gone = world.run("destroy", "-f", path, "--auto-approve", *outputs_flag)
        assert gone.exit_code == 0, gone.output
    assert world.sandbox.world().providers == {}


def test_a_clone_declares_providers_of_its_own(creds: World) -> None:
    world = creds
    cloned = world.run("clone", "-f", manifest(world), "--to-region", "eu-west-1", "-o", str(world.root / "eu.yaml"))
    assert cloned.exit_code == 0, cloned.output
    doc = load_manifest([world.root / "eu.yaml"], environ={})
    assert [p.name for p in doc.providers] == ["openai-eu-west-1", "docs-eu-west-1"]
    assert (
        doc.providers[0].credentials.apiKey is not None and doc.providers[0].credentials.apiKey.env == "OPENAI_API_KEY"
    )
    assert doc.providers[1].awsRegion == "us-east-1", "an S3 bucket's AWS region is not the deployment's region"
    assert "provider 'docs-eu-west-1' reads credentials from secrets/aws-secret" in cloned.stderr


def test_the_example_applies_with_its_three_variables_and_then_rolls_on_a_new_version(world: World) -> None:
    example = (Path(__file__).resolve().parent.parent / "examples" / "providers.yaml").read_text()
    path = str(world.write("providers.yaml", example))
    world.env.update(
        {"OPENAI_API_KEY": OPENAI_KEY, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    )
    apply(world, path)
    assert {p.name: p.type for p in world.sandbox.world().providers.values()} == {
        "openai": "openAI",
        "docs-bucket": "awsS3",
    }
    assert world.cli("plan", "-f", path, "--detailed-exitcode", "--outputs", str(world.outputs)).exit_code == 0
    bumped = str(world.write("bumped.yaml", example.replace("credentialsVersion: 1 ", "credentialsVersion: 2 ")))
    doc = plan_json(world, bumped)
    assert {a: c["change"]["actions"] for a, c in changes(doc).items()} == {
        "provider.openai": ["update"],
        "provider.docs-bucket": ["no-op"],
    }
