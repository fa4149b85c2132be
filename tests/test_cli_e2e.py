"""plan / apply / destroy end to end: the real CLI, client and applier against the sandbox."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from tests.conftest import World

MANIFEST = """\
apiVersion: capella-deploy/v1
defaults:
  provider: aws
  region: us-east-1
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: {gpu}
    state: {state}
  - name: embed
    catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
    gpuMemory: 24
    dimensions: 2048
apiKeys:
  - name: app
    expiryDays: 90
    allowedCIDRs: [{cidr}]
"""


def manifest(world: World, *, gpu: int = 48, state: str = "running", cidr: str = "10.0.0.0/16") -> str:
    return str(world.write("capella.yaml", MANIFEST.format(gpu=gpu, state=state, cidr=cidr)))


def plan_json(world: World, path: str) -> dict[str, Any]:
    result = world.cli("plan", "-f", path, "--json")
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def actions(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {c["address"]: c["change"]["actions"] for c in doc["resource_changes"]}


def test_empty_org_to_healthy_and_back_to_no_changes(world: World) -> None:
    path = manifest(world)
    planned = world.cli("plan", "-f", path, "--detailed-exitcode")
    assert planned.exit_code == 2, planned.output
    assert "+ model 'chat'" in planned.stdout and "+ apiKey 'app'" in planned.stdout
    assert "Plan: 3 to create" in planned.stdout

    applied = world.cli("apply", "-f", path, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert "Apply complete!" in applied.stdout

    outputs = json.loads(world.outputs.read_text())
    assert stat.S_IMODE(world.outputs.stat().st_mode) == 0o600
    assert set(outputs["models"]) == {"chat", "embed"}
    assert {m["status"] for m in outputs["models"].values()} == {"healthy"}
    assert all(m["connectionString"].endswith("/ai/" + m["id"]) for m in outputs["models"].values())
    token = outputs["apiKeys"]["app"]["token"]
    assert token and token not in applied.output  # written to the file, never printed

    live = world.sandbox.world()
    assert sorted(m.name for m in live.models.values()) == ["chat", "embed"]
    assert [k.name for k in live.api_keys.values()] == ["app"]

    again = world.cli("plan", "-f", path, "--detailed-exitcode")
    assert again.exit_code == 0, again.output
    assert "No changes." in again.stdout


def test_each_kind_of_change_gets_its_action(world: World) -> None:
    assert world.cli("apply", "-f", manifest(world), "--auto-approve").exit_code == 0

    assert actions(plan_json(world, manifest(world, gpu=192)))["model.chat"] == ["delete", "create"]
    assert actions(plan_json(world, manifest(world, state="paused")))["model.chat"] == ["update"]
    assert actions(plan_json(world, manifest(world, cidr="192.168.0.0/24")))["apiKey.app"] == ["create", "delete"]

    paused = world.cli("apply", "-f", manifest(world, state="paused"), "--auto-approve")
    assert paused.exit_code == 0, paused.output
    assert json.loads(world.outputs.read_text())["models"]["chat"]["status"] == "paused"
    resumed = plan_json(world, manifest(world))
    assert actions(resumed)["model.chat"] == ["update"]
    assert resumed["summary"]["resume"] == 1

    old_token = json.loads(world.outputs.read_text())["apiKeys"]["app"]["token"]
    rotated = world.cli("apply", "-f", manifest(world, cidr="192.168.0.0/24"), "--auto-approve")
    assert rotated.exit_code == 0, rotated.output
    new_entry = json.loads(world.outputs.read_text())["apiKeys"]["app"]
    assert new_entry["token"] and new_entry["token"] != old_token
    assert len(world.sandbox.world().api_keys) == 1  # the old key is gone
    assert world.cli("plan", "-f", manifest(world, cidr="192.168.0.0/24"), "--detailed-exitcode").exit_code == 0


def test_unmanaged_resources_are_reported_and_left_alone(world: World) -> None:
    stray = world.write(
        "stray.yaml",
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\n"
        "models:\n  - {name: hand-made, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 24}\n",
    )
    assert world.cli("apply", "-f", str(stray), "--auto-approve").exit_code == 0
    path = manifest(world)
    result = world.cli("plan", "-f", path)
    assert "Unmanaged" in result.stdout and "'hand-made'" in result.stdout
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    names = sorted(m.name for m in world.sandbox.world().models.values())
    assert names == ["chat", "embed", "hand-made"]


def test_prevent_destroy_blocks_a_replace(world: World) -> None:
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    guarded = MANIFEST.format(gpu=192, state="running", cidr="10.0.0.0/16").replace(
        "    state: running\n", "    state: running\n    preventDestroy: true\n", 1
    )
    guarded_path = world.write("guarded.yaml", guarded)
    before = {m.id for m in world.sandbox.world().models.values()}
    result = world.cli("apply", "-f", str(guarded_path), "--auto-approve")
    assert result.exit_code == 1
    assert "preventDestroy" in result.output and "model.chat" in result.output
    assert {m.id for m in world.sandbox.world().models.values()} == before
    assert world.cli("destroy", "-f", str(guarded_path), "--auto-approve").exit_code == 1


def test_destroy_removes_what_the_manifest_manages(world: World) -> None:
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    result = world.cli("destroy", "-f", path, "--auto-approve")
    assert result.exit_code == 0, result.output
    assert not world.sandbox.world().api_keys
    assert all(m.status == "destroying" for m in world.sandbox.world().models.values()) or not (
        world.sandbox.world().models
    )
    assert json.loads(world.outputs.read_text())["apiKeys"] == {}
    assert json.loads(world.outputs.read_text())["models"] == {}


def test_a_failed_deployment_fails_the_run_but_not_the_rest(world: World) -> None:
    # With this seed the first deployment rolled (chat) fails and the second (embed) does not.
    faults = world.write("faults.yaml", "seed: 1\ndeploy_fail_rate: 0.5\n")
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(faults)
    result = world.cli("apply", "-f", manifest(world), "--auto-approve")
    assert result.exit_code == 1, result.output
    assert "Apply failed" in result.stdout and "model.chat" in result.stdout
    outputs = json.loads(world.outputs.read_text())
    assert outputs["models"]["embed"]["status"] == "healthy"
    assert outputs["apiKeys"]["app"]["token"]

    # The next run, with the fault gone, replaces the failed deployment and converges.
    world.env["CAPELLA_SANDBOX_FAULTS"] = ""
    retry = world.cli("apply", "-f", manifest(world), "--auto-approve")
    assert retry.exit_code == 0, retry.output
    assert world.cli("plan", "-f", manifest(world), "--detailed-exitcode").exit_code == 0


def test_a_malformed_manifest_lists_every_error_with_its_line(world: World) -> None:
    bad = world.write(
        "bad.yaml",
        "apiVersion: capella-deploy/v1\n"
        "models:\n"
        "  - name: chat\n"
        "    catalogModel: mistralai/mistral-7b-instruct-v0.3\n"
        "    gpuMemory: 47\n"
        "    region: us-east-1\n"
        "apiKeys:\n"
        "  - name: app\n"
        "    region: us-east-1\n"
        "    allowedCIDRs: [not-a-cidr]\n",
    )
    result = world.cli("plan", "-f", str(bad))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{bad}:5:" in result.stderr and "gpuMemory" in result.stderr
    assert f"{bad}:10:" in result.stderr and "allowedCIDRs" in result.stderr


def test_apply_refuses_to_prompt_without_a_terminal(world: World) -> None:
    result = world.cli("apply", "-f", manifest(world))
    assert result.exit_code == 1
    assert "--auto-approve" in result.stderr
    assert not world.sandbox.world().models


def test_an_organization_id_that_is_not_an_id_is_refused_before_any_call(world: World) -> None:
    # Nothing listens there: a call made would end in "no answer" instead.
    world.env.update({"CAPELLA_ORG_ID": "../../v4/organizations", "CAPELLA_API_URL": "http://127.0.0.1:9"})
    result = world.run("plan", "-f", manifest(world))
    assert result.exit_code == 1
    assert "'../../v4/organizations' (from CAPELLA_ORG_ID) is not an id" in result.stderr
    assert "no answer" not in result.stderr and "Traceback" not in result.output


def test_an_outputs_path_that_cannot_be_written_stops_apply_before_anything_is_created(world: World) -> None:
    blocker = world.write("not-a-dir", "a file where a directory should be")
    result = world.run(
        "apply", "-f", manifest(world), f"--sandbox={world.state}", "--auto-approve", "--outputs", f"{blocker}/out.json"
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "not-a-dir" in result.stderr
    assert not world.sandbox.world().models and not world.sandbox.world().api_keys


def test_a_rotation_whose_new_token_is_lost_keeps_the_old_key_and_token(world: World) -> None:
    world.sandbox.set_rules("spec")  # an API that lets the new key exist beside the old one
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    old = json.loads(world.outputs.read_text())["apiKeys"]["app"]
    faults = world.write(
        "faults.yaml",
        'routes:\n  - {match: "POST /v4/organizations/*/aiServices/models/apiKeys", drop_after: 1.0}\n',
    )
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(faults)
    result = world.cli("apply", "-f", path, "--auto-approve", "--replace", "apiKey.app")
    assert result.exit_code == 1
    assert "token was lost" in result.stdout and "old key and its token are kept" in result.stdout
    assert json.loads(world.outputs.read_text())["apiKeys"]["app"] == old
    assert [k.id for k in world.sandbox.world().api_keys.values()] == [old["id"]]


def test_a_usage_error_exits_1_not_the_changes_code(world: World) -> None:
    for args in (["plan", "--bogus"], ["plan", "-f", manifest(world), "--json", "--markdown"], ["nope"]):
        result = world.run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output


def test_a_client_side_rate_limit_from_the_environment(world: World) -> None:
    world.env["CAPELLA_RATE_LIMIT"] = "lots"
    bad = world.cli("plan", "-f", manifest(world))
    assert bad.exit_code == 1 and "CAPELLA_RATE_LIMIT" in bad.stderr
    world.env["CAPELLA_RATE_LIMIT"] = "6000"
    assert world.cli("apply", "-f", manifest(world), "--auto-approve").exit_code == 0


def test_plan_reads_the_outputs_to_keep_the_key_whose_token_they_hold(world: World) -> None:
    from tests.test_drift import by_hand

    with world.sandbox.mutate() as state:
        state.reject_duplicate_names = False  # the spec's world: two keys may share a name
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    held = json.loads(world.outputs.read_text())["apiKeys"]["app"]["id"]
    world.sandbox.advance_clock(60)
    body = {"name": "app", "expiry": 90, "allowedCIDRs": ["10.0.0.0/16"], "region": "us-east-1"}
    stray = by_hand(world, lambda client, org: client.create_api_key(org, body)).id  # newer; nobody kept its token
    with_outputs = world.cli("plan", "-f", path, "--outputs", str(world.outputs))
    assert with_outputs.exit_code == 0, with_outputs.output
    assert f"apiKey.app[{stray}] will be destroyed (a newer key whose token nobody holds" in with_outputs.stdout
    without = world.cli("plan", "-f", path)  # the manifest's outputs path holds nothing: the newest is kept
    assert f"apiKey.app[{held}] will be destroyed (superseded by a newer key)" in without.stdout
    applied = world.cli("apply", "-f", path, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert [k.id for k in world.sandbox.world().api_keys.values()] == [held]


def test_an_update_not_yet_visible_at_the_timeout_is_a_warning_not_a_failure(world: World) -> None:
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    faults = world.write("faults.yaml", "edit_delay_seconds: 86400\n")
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(faults)
    text = Path(path).read_text().replace("    state: running\n", "    state: running\n    keywordFiltering: [x]\n", 1)
    edited = world.write("edited.yaml", text)
    result = world.cli("apply", "-f", str(edited), "--auto-approve", "--timeout", "5m")
    assert result.exit_code == 0, result.output
    assert "Apply complete!" in result.stdout
    assert (
        "Warning: model.chat: the update was accepted but is not yet visible after 300 s (--timeout)" in result.stdout
    )
