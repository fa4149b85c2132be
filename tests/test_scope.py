"""Shared organizations: a manifest's scope (the names it owns), renames (renamedFrom), and saved plans that say
what changed. Every test runs the real CLI against the in-process sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import Result

from capella_deploy.sandbox import lifecycle
from tests.conftest import World

CHAT = "mistralai/mistral-7b-instruct-v0.3"


def team_manifest(
    team: str,
    *,
    scope: bool = True,
    gpu: int = 24,
    model: str = "chat",
    model_from: str | None = None,
    key: str = "key",
    key_from: str | None = None,
    extra: str = "",
) -> str:
    """A team's manifest: one model and one key named ``team-<team>-...``, each optionally renamed from another."""
    renamed_model = f", renamedFrom: team-{team}-{model_from}" if model_from else ""
    renamed_key = f", renamedFrom: team-{team}-{key_from}" if key_from else ""
    return (
        "apiVersion: capella-deploy/v1\n"
        "defaults: {region: us-east-1}\n" + (f"scope: {{match: [team-{team}-*]}}\n" if scope else "") + "models:\n"
        f"  - {{name: team-{team}-{model}{renamed_model}, catalogModel: {CHAT}, gpuMemory: {gpu}}}\n"
        "apiKeys:\n"
        f"  - {{name: team-{team}-{key}{renamed_key}, allowedCIDRs: [127.0.0.1/32], "
        f"allowedModels: [team-{team}-{model}]}}\n" + extra
    )


class Team:
    """One team: its manifest file and its own outputs file, on the world's shared organization."""

    def __init__(self, world: World, name: str, text: str) -> None:
        self.world = world
        self.name = name
        self.outputs = world.root / f"{name}-outputs.json"
        self.path = self.write(text)

    def write(self, text: str) -> Path:
        return self.world.write(f"{self.name}.yaml", text)

    def run(self, command: str, *args: str) -> Result:
        extra = [f"--sandbox={self.world.state}"]
        if command in ("plan", "apply"):
            extra += ["--outputs", str(self.outputs)]
        return self.world.run(command, *args, *extra)

    def apply(self) -> Result:
        result = self.run("apply", "-f", str(self.path), "--auto-approve")
        assert result.exit_code == 0, result.output
        return result

    def plan_json(self) -> dict[str, Any]:
        result = self.run("plan", "-f", str(self.path), "--json")
        assert result.exit_code == 0, result.output
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc

    def recorded(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.outputs.read_text())
        return doc


def actions(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {
        c["address"]: c["change"]["actions"] for c in doc["resource_changes"] if c["change"]["actions"] != ["no-op"]
    }


def live_names(world: World) -> tuple[list[str], list[str]]:
    """The models (those not on their way out) and keys of the organization."""
    now, live = world.sandbox.now(), world.sandbox.world()
    gone = ("destroying", lifecycle.GONE)
    models = sorted(m.name for m in live.models.values() if lifecycle.status_at(m, now) not in gone)
    return models, sorted(k.name for k in live.api_keys.values())


# -- scope --------------------------------------------------------------------------------------------------


def test_two_teams_on_one_organization_each_plan_and_drift_only_their_own(world: World) -> None:
    a, b = Team(world, "a", team_manifest("a")), Team(world, "b", team_manifest("b"))
    a.apply()
    b.apply()
    assert live_names(world) == (["team-a-chat", "team-b-chat"], ["team-a-key", "team-b-key"])

    for team in (a, b):
        doc = team.plan_json()
        assert actions(doc) == {} and doc["unmanaged"] == []
        assert doc["target"]["scope"] == [f"team-{team.name}-*"]
        human = team.run("plan", "-f", str(team.path), "--detailed-exitcode")
        assert human.exit_code == 0, human.output
        assert "Unmanaged" not in human.stdout and f"scope team-{team.name}-*" in human.stdout.splitlines()[0]
        drift = team.run("drift", "-f", str(team.path))
        assert drift.exit_code == 0, drift.output

    # The same manifest without its scope sees the other team's resources: drift exits 2 on them.
    unscoped = Team(world, "a-unscoped", team_manifest("a", scope=False))
    drift = unscoped.run("drift", "-f", str(unscoped.path))
    assert drift.exit_code == 2 and "team-b-chat" in drift.stdout


def test_a_name_outside_the_manifests_scope_is_a_manifest_error_at_its_line(world: World) -> None:
    # Team b's manifest claims team a's model by name: refused before anything talks to the organization.
    text = (
        team_manifest("b").replace("name: team-b-chat", "name: team-a-chat").replace("[team-b-chat]", "[team-a-chat]")
    )
    b = Team(world, "b", text)
    result = b.run("plan", "-f", str(b.path))
    assert result.exit_code == 1
    assert f"{b.path}:5: models[0].name: 'team-a-chat' is outside the manifest's scope (team-b-*)" in result.stderr
    assert "Traceback" not in result.output


def test_prune_deletes_only_inside_the_scope_and_a_prune_reaching_outside_is_an_error(world: World) -> None:
    a = Team(world, "a", team_manifest("a"))
    b = Team(world, "b", team_manifest("b", key="tmp-key"))
    b.apply()
    stray = Team(world, "stray", team_manifest("a", scope=False, model="tmp-model", key="tmp-key"))
    stray.apply()

    a.write(team_manifest("a", extra="prune: {match: team-a-tmp-*}\n"))
    doc = a.plan_json()
    made = stray.recorded()
    assert actions(doc) == {
        "model.team-a-chat": ["create"],
        "apiKey.team-a-key": ["create"],
        f"model.team-a-tmp-model[{made['models']['team-a-tmp-model']['id']}]": ["delete"],
        f"apiKey.team-a-tmp-key[{made['apiKeys']['team-a-tmp-key']['id']}]": ["delete"],
    }
    assert doc["unmanaged"] == []  # team b's team-b-tmp-key is not even seen
    a.apply()
    assert live_names(world) == (["team-a-chat", "team-b-chat"], ["team-a-key", "team-b-tmp-key"])

    a.write(team_manifest("a", extra="prune: {match: '*-tmp-*'}\n"))
    refused = a.run("plan", "-f", str(a.path))
    assert refused.exit_code == 1
    assert "prune.match: '*-tmp-*' reaches outside the manifest's scope (team-a-*)" in refused.stderr


def test_without_a_scope_replacing_a_model_the_outputs_do_not_record_warns(world: World) -> None:
    a = Team(world, "a", team_manifest("a"))
    a.apply()
    warning = (
        "model.team-a-chat exists live and was not made from this outputs file: is it another team's? "
        "set scope or renamedFrom"
    )
    # Another team, with no scope and outputs of its own, takes the name and would replace the model.
    other = Team(world, "other", team_manifest("b", scope=False))
    other.apply()
    claimed = f"  - {{name: team-a-chat, catalogModel: {CHAT}, gpuMemory: 48}}\napiKeys:\n"
    other.write(team_manifest("b", scope=False).replace("apiKeys:\n", claimed))
    doc = other.plan_json()
    assert actions(doc) == {"model.team-a-chat": ["delete", "create"]}
    assert doc["warnings"] == [warning]
    # A run with no outputs file at all (a fresh checkout) knows nothing of who made what: no warning.
    fresh = Team(world, "fresh", team_manifest("a", scope=False, gpu=48))
    assert fresh.plan_json()["warnings"] == []
    # The team's own manifest, reading the outputs its applies wrote, replaces its own model without a word.
    a.write(team_manifest("a", scope=False, gpu=48))
    doc = a.plan_json()
    assert actions(doc)["model.team-a-chat"] == ["delete", "create"] and doc["warnings"] == []


def test_export_of_a_manifests_scope_plans_as_no_changes_and_sees_nothing_else(world: World) -> None:
    a, b = Team(world, "a", team_manifest("a")), Team(world, "b", team_manifest("b"))
    a.apply()
    b.apply()
    exported = world.root / "exported.yaml"
    result = world.run("export", "-f", str(a.path), "-o", str(exported), f"--sandbox={world.state}")
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(exported.read_text())
    assert doc["scope"] == {"match": ["team-a-*"]}
    assert [m["name"] for m in doc["models"]] == ["team-a-chat"]
    assert [k["name"] for k in doc["apiKeys"]] == ["team-a-key"]
    planned = world.run("plan", "-f", str(exported), "--detailed-exitcode", f"--sandbox={world.state}")
    assert planned.exit_code == 0, planned.output
    assert "No changes." in planned.stdout and "Unmanaged" not in planned.stdout

    # --match alone: the export owns what it matched.
    matched = world.run("export", "--match", "team-b-*", f"--sandbox={world.state}")
    assert yaml.safe_load(matched.stdout)["scope"] == {"match": ["team-b-*"]}


# -- saved plans ---------------------------------------------------------------------------------------------


def test_a_new_key_outside_the_scope_leaves_a_saved_plan_fresh_and_one_inside_is_named(world: World) -> None:
    a = Team(world, "a", team_manifest("a"))
    a.apply()
    a.write(team_manifest("a", extra="  - {name: team-a-second, allowedCIDRs: [10.0.0.0/8]}\n"))
    planfile = str(world.root / "a.plan.json")
    saved = a.run("plan", "-f", str(a.path), "-out", planfile)
    assert saved.exit_code == 0, saved.output

    Team(world, "b", team_manifest("b")).apply()  # another team's model and key, outside a's scope
    applied = a.run("apply", planfile)
    assert applied.exit_code == 0, applied.output
    assert "apiKey.team-a-second: created" in applied.stdout

    a.write(team_manifest("a", gpu=48))
    saved = a.run("plan", "-f", str(a.path), "-out", planfile)
    assert saved.exit_code == 0, saved.output
    # Inside the scope: a key another manifest (without a scope) makes, and an in-place change of the model.
    intruder = Team(
        world,
        "intruder",
        team_manifest("a", scope=False, key="intruder").replace(
            "gpuMemory: 24}", "gpuMemory: 24, keywordFiltering: [secret]}"
        ),
    )
    intruder.apply()
    stale = a.run("apply", planfile)
    assert stale.exit_code == 1
    model_id = a.recorded()["models"]["team-a-chat"]["id"]
    key_id = intruder.recorded()["apiKeys"]["team-a-intruder"]["id"]
    assert "the plan is stale: since it was made," in stale.stderr
    assert f"apiKey.team-a-intruder[{key_id}] appeared" in stale.stderr
    assert f'model.team-a-chat[{model_id}] changed: keywordFiltering [] -> ["secret"]' in stale.stderr
    assert "team-b" not in stale.stderr


# -- renames ---------------------------------------------------------------------------------------------------


def test_a_model_rename_is_one_in_place_update_and_then_no_changes(world: World) -> None:
    a = Team(world, "a", team_manifest("a"))
    a.apply()
    model_id = a.recorded()["models"]["team-a-chat"]["id"]

    a.write(team_manifest("a", model="assistant", model_from="chat"))
    doc = a.plan_json()
    assert actions(doc) == {"model.team-a-assistant": ["update"]}
    change = next(c for c in doc["resource_changes"] if c["address"] == "model.team-a-assistant")
    assert change["live_id"] == model_id
    assert change["change"]["attributes"] == [
        {
            "path": "name",
            "before": "team-a-chat",
            "after": "team-a-assistant",
            "forces_replace": False,
            "to_default": False,
        }
    ]
    assert change["reason"] == "renamed from team-a-chat" and doc["unmanaged"] == []
    human = a.run("plan", "-f", str(a.path))
    assert "Changes to outputs" not in human.stdout  # the entry moves to the new name; nothing in it changes

    a.apply()
    live = world.sandbox.world()
    assert [(m.id, m.name) for m in live.models.values()] == [(model_id, "team-a-assistant")]  # no new deployment
    assert list(a.recorded()["models"]) == ["team-a-assistant"]
    assert a.recorded()["models"]["team-a-assistant"]["id"] == model_id
    again = a.run("plan", "-f", str(a.path), "--detailed-exitcode")
    assert again.exit_code == 0, again.output
    assert "No changes." in again.stdout


def test_a_key_rename_keeps_a_working_token_under_the_new_name(world: World) -> None:
    check = "checks:\n  - {name: answers, model: team-a-chat, kind: chat, apiKey: team-a-%s}\n"
    a = Team(world, "a", team_manifest("a", extra=check % "key"))
    a.apply()
    old = a.recorded()["apiKeys"]["team-a-key"]

    a.write(team_manifest("a", key="app", key_from="key", extra=check % "app"))
    doc = a.plan_json()
    assert actions(doc) == {"apiKey.team-a-app": ["create", "delete"]}
    change = next(c for c in doc["resource_changes"] if c["address"] == "apiKey.team-a-app")
    assert change["live_id"] == old["id"] and change["action_reason"] == "replace_because_renamed"

    applied = a.apply()  # its check calls the model with the token the outputs hold under the new name
    assert "answers" in applied.stdout and "1 passed" in applied.stdout, applied.stdout
    keys = a.recorded()["apiKeys"]
    assert list(keys) == ["team-a-app"]
    assert keys["team-a-app"]["token"] and keys["team-a-app"]["token"] != old["token"]
    live = world.sandbox.world()
    assert [(k.id, k.name) for k in live.api_keys.values()] == [(keys["team-a-app"]["id"], "team-a-app")]
    verified = a.run("verify", "-f", str(a.path), "--outputs", str(a.outputs))
    assert verified.exit_code == 0, verified.output
    assert a.run("plan", "-f", str(a.path), "--detailed-exitcode").exit_code == 0


def test_a_rename_when_both_names_exist_is_an_error_and_when_neither_does_a_create(world: World) -> None:
    a = Team(world, "a", team_manifest("a"))
    a.apply()
    Team(world, "twin", team_manifest("a", model="assistant", key="twin-key")).apply()

    a.write(team_manifest("a", model="assistant", model_from="chat"))
    refused = a.run("plan", "-f", str(a.path))
    assert refused.exit_code == 1
    assert "model.team-a-assistant: renamedFrom: team-a-chat, but live resources of both names exist" in refused.stdout

    fresh = Team(world, "fresh", team_manifest("c", model="new", model_from="old"))
    doc = fresh.plan_json()
    assert actions(doc)["model.team-c-new"] == ["create"]
    assert any("renamedFrom: team-c-old names nothing live here, so it is created" in w for w in doc["warnings"])
