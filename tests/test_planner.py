"""The planner is pure: these tests build manifests and live snapshots in memory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from capella_deploy.live import LiveKey, LiveModel, LiveState
from capella_deploy.manifest import Manifest
from capella_deploy.plan import Action, Plan
from capella_deploy.plan.planner import plan, plan_destroy

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def manifest(**overrides: Any) -> Manifest:
    doc: dict[str, Any] = {
        "apiVersion": "capella-deploy/v1",
        "defaults": {"provider": "aws", "region": "us-east-1"},
        "models": [
            {"name": "chat", "catalogModel": "mistralai/mistral-7b-instruct-v0.3", "gpuMemory": 48},
        ],
        "apiKeys": [{"name": "app", "expiryDays": 180, "allowedCIDRs": ["10.0.0.0/16"]}],
    }
    doc.update(overrides)
    return Manifest.model_validate(doc)


def live_model(**overrides: Any) -> LiveModel:
    fields: dict[str, Any] = {
        "id": "m-1",
        "name": "chat",
        "status": "healthy",
        "actions": frozenset({"pause", "delete", "edit"}),
        "provider": "aws",
        "region": "us-east-1",
        "cpu": 4,
        "gpu_memory": 48,
        "catalog_model": "mistralai/mistral-7b-instruct-v0.3",
        "model_type": "text-generation",
        "vendor": "mistral",
        "dimensions": None,
        "quantization": None,
        "optimization": None,
        "caching": None,
        "enable_batching": None,
        "keyword_filtering": None,
        "connection_string": "https://m-1.ai.couchbase.com",
        "version": 1,
    }
    fields.update(overrides)
    return LiveModel(**fields)


def live_key(**overrides: Any) -> LiveKey:
    fields: dict[str, Any] = {
        "id": "k-1",
        "name": "app",
        "description": None,
        "region": "us-east-1",
        "expiry_days": 180,
        "allowed_cidrs": ("10.0.0.0/16",),
        "allowed_models": (("*", "*"),),
        "created_at": NOW - timedelta(days=10),
    }
    fields.update(overrides)
    return LiveKey(**fields)


def actions(result: Plan) -> dict[str, Action]:
    return {change.address: change.action for change in result.changes}


def test_empty_org_plans_creates() -> None:
    result = plan(manifest(), LiveState("org"), now=NOW)
    assert actions(result) == {"model.chat": Action.CREATE, "apiKey.app": Action.CREATE}
    create = result.changes[0]
    assert create.after is not None and create.after["gpuMemory"] == 48 and create.after["region"] == "us-east-1"


def test_matching_org_is_a_noop() -> None:
    result = plan(manifest(), LiveState("org", (live_model(),), (live_key(),)), now=NOW)
    assert not result.has_changes
    assert set(actions(result).values()) == {Action.NOOP}


def test_gpu_memory_change_replaces_and_names_the_attribute() -> None:
    result = plan(manifest(), LiveState("org", (live_model(gpu_memory=24),), (live_key(),)), now=NOW)
    change = result.changes[0]
    assert change.action is Action.REPLACE
    assert "gpuMemory" in (change.reason or "")
    assert [(c.path, c.before, c.after, c.forces_replace) for c in change.attribute_changes] == [
        ("gpuMemory", 24, 48, True)
    ]


def test_catalog_model_change_replaces() -> None:
    live = live_model(catalog_model="meta-llama/Llama-3.1-8B-Instruct")
    result = plan(manifest(), LiveState("org", (live,), (live_key(),)), now=NOW)
    assert result.changes[0].action is Action.REPLACE
    assert "catalogModel" in (result.changes[0].reason or "")


def test_state_paused_pauses_and_back_resumes() -> None:
    paused = manifest(
        models=[
            {"name": "chat", "catalogModel": "mistralai/mistral-7b-instruct-v0.3", "gpuMemory": 48, "state": "paused"}
        ]
    )
    result = plan(paused, LiveState("org", (live_model(),), (live_key(),)), now=NOW)
    assert actions(result)["model.chat"] is Action.PAUSE
    result = plan(manifest(), LiveState("org", (live_model(status="paused"),), (live_key(),)), now=NOW)
    assert actions(result)["model.chat"] is Action.RESUME


def test_caching_change_is_an_in_place_update() -> None:
    doc = manifest(defaults={"region": "us-east-1", "cache": {"type": "standard", "expirySeconds": 600}})
    live = live_model(caching={"enableStandard": True, "defaultCache": "standard", "expiryTTL": 300})
    result = plan(doc, LiveState("org", (live,), (live_key(),)), now=NOW)
    change = result.changes[0]
    assert change.action is Action.UPDATE
    assert [(c.path, c.before, c.after) for c in change.attribute_changes] == [("caching.expiryTTL", 300, 600)]


def test_key_cidr_change_replaces_the_key() -> None:
    result = plan(manifest(), LiveState("org", (live_model(),), (live_key(allowed_cidrs=("10.1.0.0/16",)),)), now=NOW)
    change = result.changes[-1]
    assert change.action is Action.REPLACE and change.address == "apiKey.app"
    assert "allowedCIDRs" in (change.reason or "")


def test_key_near_expiry_is_rotated() -> None:
    doc = manifest(
        apiKeys=[{"name": "app", "expiryDays": 180, "allowedCIDRs": ["10.0.0.0/16"], "rotateBeforeDays": 30}]
    )
    old = live_key(created_at=NOW - timedelta(days=160))
    assert actions(plan(doc, LiveState("org", (live_model(),), (old,)), now=NOW))["apiKey.app"] is Action.ROTATE
    young = live_key(created_at=NOW - timedelta(days=100))
    assert actions(plan(doc, LiveState("org", (live_model(),), (young,)), now=NOW))["apiKey.app"] is Action.NOOP


def test_unmanaged_resources_are_left_alone_unless_pruned() -> None:
    stray = live_model(id="m-9", name="team-a-old")
    other = live_model(id="m-8", name="team-b-thing")
    live = LiveState("org", (live_model(), stray, other), (live_key(),))
    result = plan(manifest(), live, now=NOW)
    assert not result.has_changes
    assert {u.name for u in result.unmanaged} == {"team-a-old", "team-b-thing"}
    pruned = plan(manifest(prune={"match": "team-a-*"}), live, now=NOW)
    assert [(c.name, c.action) for c in pruned.pending] == [("team-a-old", Action.DELETE)]
    assert {u.name for u in pruned.unmanaged} == {"team-b-thing"}


def test_prevent_destroy_turns_replace_into_an_error() -> None:
    doc = manifest(
        models=[
            {
                "name": "chat",
                "catalogModel": "mistralai/mistral-7b-instruct-v0.3",
                "gpuMemory": 48,
                "preventDestroy": True,
            }
        ]
    )
    result = plan(doc, LiveState("org", (live_model(gpu_memory=24),), (live_key(),)), now=NOW)
    assert result.errors and "preventDestroy" in result.errors[0] and "model.chat" in result.errors[0]
    destroy = plan_destroy(doc, LiveState("org", (live_model(),), (live_key(),)))
    assert [e for e in destroy.errors if "model.chat" in e]
    assert {c.address for c in destroy.changes} == {"model.chat[m-1]", "apiKey.app[k-1]"}


def test_failed_deployment_is_replaced() -> None:
    result = plan(manifest(), LiveState("org", (live_model(status="deployFailed"),), (live_key(),)), now=NOW)
    assert actions(result)["model.chat"] is Action.REPLACE


def test_a_key_naming_a_replaced_model_is_replaced_too() -> None:
    doc = manifest(apiKeys=[{"name": "app", "allowedCIDRs": ["10.0.0.0/16"], "allowedModels": ["chat"]}])
    key = live_key(allowed_models=(("m-1", "chat"),))
    result = plan(doc, LiveState("org", (live_model(gpu_memory=24),), (key,)), now=NOW)
    assert actions(result)["apiKey.app"] is Action.REPLACE


def test_duplicate_keys_keep_the_newest() -> None:
    older = live_key(id="k-old", created_at=NOW - timedelta(days=20))
    newer = live_key(id="k-new", created_at=NOW - timedelta(days=1))
    result = plan(manifest(), LiveState("org", (live_model(),), (newer, older)), now=NOW)
    assert [(c.address, c.action) for c in result.pending] == [("apiKey.app[k-old]", Action.DELETE)]


def test_plan_is_deterministic_and_round_trips() -> None:
    models = tuple(live_model(id=f"m-{i}", name=f"x-{i}") for i in range(5))
    live = LiveState("org", models, ())
    first = plan(manifest(), live, now=NOW)
    second = plan(manifest(), LiveState("org", tuple(reversed(models)), ()), now=NOW)
    assert first.checksum() == second.checksum()
    assert Plan.from_dict(first.to_dict()).checksum() == first.checksum()


def test_forced_replacement() -> None:
    live = LiveState("org", (live_model(),), (live_key(),))
    result = plan(manifest(), live, now=NOW, force_replace=frozenset({"model.chat", "apiKey.app"}))
    assert actions(result) == {"model.chat": Action.REPLACE, "apiKey.app": Action.ROTATE}
    bad = plan(manifest(), live, now=NOW, force_replace=frozenset({"model.nope"}))
    assert bad.errors


def test_prevent_destroy_on_a_key_blocks_rotation_and_keeps_duplicates() -> None:
    doc = manifest(
        apiKeys=[
            {"name": "app", "allowedCIDRs": ["10.0.0.0/16"], "rotateBeforeDays": 30, "preventDestroy": True},
        ]
    )
    old = live_key(created_at=NOW - timedelta(days=170))
    result = plan(doc, LiveState("org", (live_model(),), (old,)), now=NOW)
    assert actions(result)["apiKey.app"] is Action.ROTATE
    assert any("apiKey.app" in e and "preventDestroy" in e for e in result.errors)
    older = live_key(id="k-0", created_at=NOW - timedelta(days=20))
    newer = live_key(id="k-1", created_at=NOW - timedelta(days=1))
    kept = plan(doc, LiveState("org", (live_model(),), (newer, older)), now=NOW)
    assert not kept.has_changes and any("k-0" in w for w in kept.warnings)
