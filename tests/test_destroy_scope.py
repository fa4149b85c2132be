"""destroy removes what the manifest names, every live copy of it, and nothing else in the organization."""

from __future__ import annotations

import itertools

from capella_deploy.kinds.base import Action, Kind
from capella_deploy.live import LiveState
from capella_deploy.plan.planner import plan_destroy
from capella_deploy.sandbox import lifecycle
from tests.conftest import World
from tests.planning_support import APP, CHAT, live_key, live_model, manifest

# Live names that share a prefix, a case, or the other kind's name with the two the manifest declares.
NEIGHBOURS = LiveState(
    "org",
    models=(
        live_model(id="m-1", name="chat"),
        live_model(id="m-2", name="chat-2"),
        live_model(id="m-3", name="chatbot"),
        live_model(id="m-4", name="Chat"),
        live_model(id="m-5", name="cha"),
        live_model(id="m-6", name="app"),
    ),
    keys=(
        live_key(id="k-1", name="app"),
        live_key(id="k-2", name="app-old"),
        live_key(id="k-3", name="ap"),
        live_key(id="k-4", name="chat"),
    ),
    warnings=("skipped an unreadable model entry: a model entry has no id or name",),
)


def deletes(result: object) -> set[tuple[Kind, str, str | None]]:
    changes = result.changes  # type: ignore[attr-defined]
    assert all(c.action is Action.DELETE for c in changes)
    return {(c.kind, c.name, c.live_id) for c in changes}


def test_destroy_leaves_every_live_resource_the_manifest_does_not_name() -> None:
    result = plan_destroy(manifest(), NEIGHBOURS)
    assert deletes(result) == {(Kind.MODEL, "chat", "m-1"), (Kind.API_KEY, "app", "k-1")}
    assert not result.errors


def test_destroy_of_a_manifest_with_only_keys_or_only_models_touches_only_those() -> None:
    assert deletes(plan_destroy(manifest(models=[]), NEIGHBOURS)) == {(Kind.API_KEY, "app", "k-1")}
    assert deletes(plan_destroy(manifest(apiKeys=[]), NEIGHBOURS)) == {(Kind.MODEL, "chat", "m-1")}
    assert plan_destroy(manifest(models=[], apiKeys=[]), NEIGHBOURS).changes == ()


def test_destroy_deletes_every_live_copy_of_a_named_resource_by_its_id() -> None:
    live = LiveState(
        "org",
        models=(live_model(id="m-2"), live_model(id="m-1", status="deployFailed"), live_model(id="m-3", name="other")),
        keys=(live_key(id="k-2"), live_key(id="k-1"), live_key(id="k-3", name="other")),
    )
    result = plan_destroy(manifest(), live)
    assert [c.address for c in result.changes] == [
        "model.chat[m-1]",
        "model.chat[m-2]",
        "apiKey.app[k-1]",
        "apiKey.app[k-2]",
    ]
    for change in result.changes:
        assert change.reason == "destroy requested" and change.cause == "delete_by_request"
        assert change.before is not None and change.after is None


def test_a_model_already_being_destroyed_is_not_deleted_again() -> None:
    live = LiveState("org", models=(live_model(id="m-1", status="destroying"), live_model(id="m-2")))
    assert deletes(plan_destroy(manifest(), live)) == {(Kind.MODEL, "chat", "m-2")}


def test_the_destroy_plan_is_the_same_whatever_order_the_api_lists_resources_in() -> None:
    results = {
        plan_destroy(manifest(), LiveState("org", models, keys)).checksum()
        for models in itertools.permutations(NEIGHBOURS.models[:3])
        for keys in itertools.permutations(NEIGHBOURS.keys[:2])
    }
    assert len(results) == 1


def test_the_destroy_plan_records_the_organization_and_the_snapshot_it_was_made_from() -> None:
    result = plan_destroy(manifest(), NEIGHBOURS)
    assert result.org_id == "org"
    assert result.live_fingerprint == NEIGHBOURS.fingerprint()
    assert result.warnings == NEIGHBOURS.warnings


def test_prevent_destroy_marks_only_the_protected_resource_and_names_it_in_an_error() -> None:
    doc = manifest(
        models=[{**CHAT, "preventDestroy": True}, {**CHAT, "name": "embed"}],
        apiKeys=[APP, {**APP, "name": "ops", "preventDestroy": True}],
    )
    live = LiveState(
        "org",
        models=(live_model(id="m-1"), live_model(id="m-2", name="embed")),
        keys=(live_key(id="k-1"), live_key(id="k-2", name="ops")),
    )
    result = plan_destroy(doc, live)
    protected = {c.address for c in result.changes if c.prevent_destroy}
    assert protected == {"model.chat[m-1]", "apiKey.ops[k-2]"}
    assert len(result.errors) == 2
    assert any(e.startswith("model.chat: has preventDestroy: true") for e in result.errors)
    assert any(e.startswith("apiKey.ops: has preventDestroy: true") for e in result.errors)


# -- through the CLI, against the sandbox ------------------------------------------------------------------

EVERYTHING = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
  - {name: chat-2, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 24}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}
  - {name: app-old, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}
"""
ONLY_CHAT_AND_APP = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}
"""


def live_names(world: World) -> tuple[list[str], list[str]]:
    now = world.sandbox.now()
    state = world.sandbox.world()
    models = sorted(
        m.name for m in state.models.values() if lifecycle.status_at(m, now) not in ("destroying", lifecycle.GONE)
    )
    return models, sorted(k.name for k in state.api_keys.values())


def test_destroy_in_an_organization_with_other_resources_removes_only_the_named_ones(world: World) -> None:
    applied = world.cli("apply", "-f", str(world.write("all.yaml", EVERYTHING)), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert live_names(world) == (["chat", "chat-2"], ["app", "app-old"])

    destroyed = world.cli("destroy", "-f", str(world.write("some.yaml", ONLY_CHAT_AND_APP)), "--auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    assert live_names(world) == (["chat-2"], ["app-old"])
    assert "chat-2" not in destroyed.stdout and "app-old" not in destroyed.stdout
