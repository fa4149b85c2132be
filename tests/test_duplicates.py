"""Several live resources of one name: one is managed, every other is deleted by its own id, tokens stay put."""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from datetime import timedelta
from pathlib import Path

from capella_deploy.kinds.base import Action, Kind
from capella_deploy.live import LiveState
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan
from capella_deploy.sandbox import lifecycle
from capella_deploy.secrets import Secret
from tests.conftest import World
from tests.planning_support import CHAT, NOW, live_key, live_model, manifest


def managed_and_deleted(result: Plan, kind: Kind, name: str) -> tuple[str | None, list[str | None]]:
    changes = [c for c in result.changes if c.kind is kind and c.name == name]
    kept = [c.live_id for c in changes if c.action is not Action.DELETE]
    assert len(kept) == 1, changes
    return kept[0], sorted(c.live_id for c in changes if c.action is Action.DELETE)


# -- models ---------------------------------------------------------------------------------------------------


def test_of_three_live_models_of_one_name_the_healthy_one_is_managed_and_the_two_others_deleted() -> None:
    models = (
        live_model(id="m-a", status="deployFailed"),
        live_model(id="m-b", status="healthy"),
        live_model(id="m-c", status="unhealthy"),
    )
    for order in itertools.permutations(models):
        result = plan(manifest(), LiveState("org", order, (live_key(),)), now=NOW)
        assert managed_and_deleted(result, Kind.MODEL, "chat") == ("m-b", ["m-a", "m-c"])
        [managed] = [c for c in result.changes if c.address == "model.chat"]
        assert managed.action is Action.NOOP
        for delete in (c for c in result.pending if c.kind is Kind.MODEL):
            assert delete.address == f"model.chat[{delete.live_id}]"
            assert delete.cause == "delete_because_duplicate" and delete.reason == "duplicate of a managed name"
            assert delete.before == next(m.attributes for m in models if m.id == delete.live_id)


def test_a_model_that_is_merely_unhealthy_is_kept_over_one_whose_deployment_failed() -> None:
    models = (live_model(id="m-1", status="deployFailed"), live_model(id="m-2", status="unhealthy"))
    for order in itertools.permutations(models):
        result = plan(manifest(), LiveState("org", order, (live_key(),)), now=NOW)
        assert managed_and_deleted(result, Kind.MODEL, "chat") == ("m-2", ["m-1"])


def test_between_equally_healthy_models_the_choice_does_not_depend_on_the_listing_order() -> None:
    models = (live_model(id="m-2"), live_model(id="m-1"), live_model(id="m-3", status="paused"))
    outcomes = {
        managed_and_deleted(plan(manifest(), LiveState("org", order, ()), now=NOW), Kind.MODEL, "chat")[0]
        for order in itertools.permutations(models)
    }
    assert len(outcomes) == 1


def test_duplicate_models_of_a_protected_name_are_left_alone_with_a_warning_naming_each() -> None:
    doc = manifest(models=[{**CHAT, "preventDestroy": True}])
    models = (live_model(id="m-1"), live_model(id="m-2", status="deployFailed"), live_model(id="m-3"))
    result = plan(doc, LiveState("org", models, (live_key(),)), now=NOW)
    assert not result.has_changes and not result.errors
    assert sorted(w.split(" ")[4] for w in result.warnings if "same name" in w) == ["m-2", "m-3"]
    assert all("preventDestroy" in w for w in result.warnings)


def test_a_duplicate_of_a_model_being_replaced_is_still_deleted() -> None:
    models = (live_model(id="m-1", gpu_memory=24), live_model(id="m-2", gpu_memory=24, status="deployFailed"))
    result = plan(manifest(), LiveState("org", models, (live_key(),)), now=NOW)
    assert [(c.address, c.action) for c in result.pending] == [
        ("model.chat", Action.REPLACE),
        ("model.chat[m-2]", Action.DELETE),
    ]
    assert result.pending[0].live_id == "m-1"


# -- keys -----------------------------------------------------------------------------------------------------


def test_of_three_live_keys_of_one_name_the_newest_is_kept_and_each_older_deleted_by_id() -> None:
    keys = (
        live_key(id="k-mid", created_at=NOW - timedelta(days=5)),
        live_key(id="k-new", created_at=NOW - timedelta(days=1)),
        live_key(id="k-old", created_at=NOW - timedelta(days=9)),
    )
    for order in itertools.permutations(keys):
        result = plan(manifest(), LiveState("org", (live_model(),), order), now=NOW)
        assert managed_and_deleted(result, Kind.API_KEY, "app") == ("k-new", ["k-mid", "k-old"])
        for delete in result.pending:
            assert delete.cause == "delete_because_duplicate" and delete.reason == "superseded by a newer key"


def test_a_key_without_a_creation_time_counts_as_the_oldest() -> None:
    keys = (live_key(id="k-0", created_at=None), live_key(id="k-1", created_at=NOW - timedelta(days=300)))
    for order in itertools.permutations(keys):
        result = plan(manifest(), LiveState("org", (live_model(),), order), now=NOW)
        assert managed_and_deleted(result, Kind.API_KEY, "app") == ("k-1", ["k-0"])


# -- the outputs keep the managed key's token ---------------------------------------------------------------


def test_forgetting_an_older_duplicate_keeps_the_entry_of_the_key_that_stays(tmp_path: Path) -> None:
    store = Outputs(tmp_path / "outputs.json", org_id="org")
    store.record_key("app", key_id="k-new", token=Secret("tok-new"), region="us-east-1")
    store.record_model("chat", id="m-new", status="healthy")
    store.forget_key("app", "k-old")
    store.forget_model("chat", "m-old")
    again = Outputs(tmp_path / "outputs.json", org_id="org")
    assert again.token("app") == Secret("tok-new") and again.api_keys["app"]["id"] == "k-new"
    assert again.models["chat"]["id"] == "m-new"

    store.forget_key("app", "k-new")
    store.forget_model("chat", "m-new")
    assert Outputs(tmp_path / "outputs.json").document()["apiKeys"] == {}
    assert Outputs(tmp_path / "outputs.json").document()["models"] == {}


def test_forgetting_without_an_id_drops_whatever_the_entry_holds(tmp_path: Path) -> None:
    store = Outputs(tmp_path / "outputs.json")
    store.record_key("app", key_id="k-1", token=Secret("tok"))
    store.record_model("chat", id="m-1", status="healthy")
    store.forget_key("app")
    store.forget_model("chat")
    store.forget_key("never-recorded")
    assert json.loads((tmp_path / "outputs.json").read_text())["apiKeys"] == {}
    assert json.loads((tmp_path / "outputs.json").read_text())["models"] == {}


KEY_ONLY = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}
"""


def test_apply_deletes_an_older_duplicate_key_and_keeps_the_managed_keys_token(world: World) -> None:
    path = str(world.write("capella.yaml", KEY_ONLY))
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    recorded = json.loads(world.outputs.read_text())["apiKeys"]["app"]
    # The organization also holds an older key of the same name (made by hand, or by an older run).
    with world.sandbox.mutate() as state:
        kept = state.api_keys[recorded["id"]]
        older = dataclasses.replace(
            kept,
            id=str(uuid.uuid4()),
            audit=dataclasses.replace(kept.audit, created_at=kept.audit.created_at - 86400),
        )
        state.api_keys[older.id] = older

    applied = world.cli("apply", "-f", path, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert f"apiKey.app[{older.id}]" in applied.stdout
    assert set(world.sandbox.world().api_keys) == {recorded["id"]}
    after = json.loads(world.outputs.read_text())["apiKeys"]["app"]
    assert after["id"] == recorded["id"] and after["token"] == recorded["token"]


def test_apply_deletes_every_duplicate_model_by_its_id_and_keeps_the_managed_one(world: World) -> None:
    text = KEY_ONLY.replace("apiKeys:\n  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}\n", "")
    path = str(world.write("capella.yaml", text + "models:\n  - " + json.dumps(CHAT) + "\n"))
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    recorded = json.loads(world.outputs.read_text())["models"]["chat"]
    with world.sandbox.mutate() as state:
        kept = state.models[recorded["id"]]
        copies = [
            dataclasses.replace(kept, id=str(uuid.uuid4()), status="deployFailed", target_status=None) for _ in range(2)
        ]
        state.models.update({copy.id: copy for copy in copies})

    applied = world.cli("apply", "-f", path, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert "0 to create" in applied.stdout and "2 to destroy" in applied.stdout
    state = world.sandbox.world()
    now = world.sandbox.now()
    alive = {m.id for m in state.models.values() if lifecycle.status_at(m, now) not in ("destroying", "gone")}
    assert alive == {recorded["id"]}
    assert json.loads(world.outputs.read_text())["models"]["chat"]["id"] == recorded["id"]
