"""What a plan says about each change: its reason for people, its cause for machines (docs/plan-json.md), and
the before/after it shows. Reviewers approve plans by reading these, so they are behaviour, not decoration."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from capella_deploy.kinds.base import Action
from capella_deploy.live import LiveState
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan
from tests.planning_support import APP, CHAT, NOW, live_key, live_model, manifest


def change(result: Plan, address: str) -> Any:
    [found] = [c for c in result.changes if c.address == address]
    return found


def test_a_create_says_why_and_carries_what_the_manifest_declares() -> None:
    doc = manifest(models=[{**CHAT, "preventDestroy": True}], apiKeys=[{**APP, "preventDestroy": True}])
    result = plan(doc, LiveState("org"), now=NOW)
    for address in ("model.chat", "apiKey.app"):
        created = change(result, address)
        assert created.action is Action.CREATE and created.reason == "not in the organization"
        assert created.prevent_destroy and created.live_id is None and created.before is None
    assert change(result, "apiKey.app").after == {
        "region": "us-east-1",
        "expiryDays": 180,
        "allowedCIDRs": ["10.0.0.0/16"],
        "allowedModels": ["*"],
    }


def test_replacing_a_model_names_every_attribute_that_forces_it() -> None:
    live = live_model(gpu_memory=24, catalog_model="other/model")
    replaced = change(plan(manifest(), LiveState("org", (live,), ()), now=NOW), "model.chat")
    assert replaced.action is Action.REPLACE
    assert replaced.reason == "catalogModel, gpuMemory cannot change in place"
    assert replaced.cause == "replace_because_cannot_update"


def test_an_in_place_update_names_each_top_level_attribute_once() -> None:
    doc = manifest(
        models=[{**CHAT, "enableBatching": True}],
        defaults={"provider": "aws", "region": "us-east-1", "cache": {"type": "standard", "expirySeconds": 600}},
    )
    live = live_model(
        enable_batching=False, caching={"enableStandard": False, "defaultCache": "none", "expiryTTL": 300}
    )
    updated = change(plan(doc, LiveState("org", (live,), ()), now=NOW), "model.chat")
    assert updated.action is Action.UPDATE and updated.reason == "in-place change of cache, enableBatching"
    assert updated.cause is None


def test_a_nested_cache_value_missing_live_is_named_by_its_manifest_path() -> None:
    doc = manifest(defaults={"provider": "aws", "region": "us-east-1", "cache": {"type": "semantic", "threshold": 0.9}})
    live = live_model(caching={"enableStandard": True, "defaultCache": "semantic"})
    updated = change(plan(doc, LiveState("org", (live,), ()), now=NOW), "model.chat")
    assert [(c.path, c.before, c.after, c.forces_replace) for c in updated.attribute_changes] == [
        ("cache.threshold", None, 0.9, False)
    ]
    doc = manifest(defaults={"provider": "aws", "region": "us-east-1", "cache": {"type": "standard"}})
    live = live_model(caching={"enableStandard": True, "defaultCache": {"odd": "shape"}})
    updated = change(plan(doc, LiveState("org", (live,), ()), now=NOW), "model.chat")
    assert [c.path for c in updated.attribute_changes] == ["cache.type"]


def test_replacing_a_key_names_every_attribute_that_differs_and_shows_what_was_compared() -> None:
    live = live_key(allowed_cidrs=("10.9.0.0/16",), region="eu-west-1", description="by hand")
    replaced = change(plan(manifest(), LiveState("org", (), (live,)), now=NOW), "apiKey.app")
    assert replaced.reason == "allowedCIDRs, region cannot change in place (API keys are immutable)"
    assert replaced.cause == "replace_because_cannot_update"
    assert replaced.before == {
        "region": "eu-west-1",
        "expiryDays": 180,
        "allowedCIDRs": ["10.9.0.0/16"],
        "allowedModels": ["*"],
    }, "a description the manifest does not set is neither compared nor shown"


def test_a_key_naming_a_model_that_gets_a_new_id_says_so() -> None:
    doc = manifest(
        models=[CHAT, {**CHAT, "name": "embed"}],
        apiKeys=[{**APP, "allowedModels": ["chat", "embed"]}],
    )
    key = live_key(allowed_models=(("m-1", "chat"), ("m-2", "embed")))
    result = plan(doc, LiveState("org", (live_model(gpu_memory=24),), (key,)), now=NOW)
    replaced = change(result, "apiKey.app")
    assert replaced.action is Action.REPLACE_CREATE_FIRST
    assert replaced.reason == "allowedModels: chat, embed will get a new id"
    assert replaced.cause == "replace_because_dependency_renewed"


def test_requested_replacements_say_they_were_requested() -> None:
    live = LiveState("org", (live_model(),), (live_key(),))
    result = plan(manifest(), live, now=NOW, force_replace=frozenset({"model.chat", "apiKey.app"}))
    assert (change(result, "model.chat").reason, change(result, "model.chat").cause) == (
        "replacement requested",
        "replace_by_request",
    )
    assert (change(result, "apiKey.app").reason, change(result, "apiKey.app").cause) == (
        "rotation requested",
        "replace_by_request",
    )


def test_a_plan_records_the_snapshot_and_manifest_it_was_made_from() -> None:
    live = LiveState("org", (live_model(),), (live_key(),))
    result = plan(manifest(), live, now=NOW, manifest_digest="sha256:abc")
    assert result.live_fingerprint == live.fingerprint() and result.manifest_digest == "sha256:abc"
    assert plan(manifest(), live, now=NOW).manifest_digest == ""


def test_protected_duplicates_are_each_named_in_a_warning() -> None:
    doc = manifest(models=[{**CHAT, "preventDestroy": True}], apiKeys=[{**APP, "preventDestroy": True}])
    keys = tuple(live_key(id=f"k-{age}", created_at=NOW - timedelta(days=age)) for age in (1, 2, 3))
    models = (live_model(id="m-1"), live_model(id="m-2"))
    result = plan(doc, LiveState("org", models, keys), now=NOW)
    assert not result.has_changes
    assert result.warnings == (
        "model.chat: another live model m-2 has the same name; left alone because preventDestroy is set",
        "apiKey.app: an older live key k-3 has the same name; left alone because preventDestroy is set",
        "apiKey.app: an older live key k-2 has the same name; left alone because preventDestroy is set",
    )


def test_an_older_duplicate_key_is_deleted_showing_what_it_was() -> None:
    older = live_key(id="k-0", created_at=NOW - timedelta(days=20), allowed_cidrs=("10.7.0.0/16",))
    result = plan(manifest(), LiveState("org", (), (live_key(), older)), now=NOW)
    assert change(result, "apiKey.app[k-0]").before == older.attributes


def test_a_protected_resource_the_plan_would_destroy_is_an_error_that_says_what_to_do() -> None:
    doc = manifest(models=[{**CHAT, "preventDestroy": True}])
    result = plan(doc, LiveState("org", (live_model(gpu_memory=24),), ()), now=NOW)
    assert result.errors == (
        "model.chat: this plan would replace it (gpuMemory cannot change in place), but it has preventDestroy: "
        "true; change the manifest or remove preventDestroy first",
    )
