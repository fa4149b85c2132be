"""Planner edges: the rotation boundary, pruning by id, numbers that only look different, unset attributes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from capella_deploy.kinds.base import Action, Kind
from capella_deploy.kinds.model import parse_model
from capella_deploy.live import LiveState
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan
from tests.planning_support import APP, CHAT, NOW, live_key, live_model, manifest


def one(result: Plan, address: str) -> Any:
    [change] = [c for c in result.changes if c.address == address]
    return change


# -- rotation -------------------------------------------------------------------------------------------------


def rotating(rotate_before: int = 30) -> Any:
    return manifest(apiKeys=[{**APP, "rotateBeforeDays": rotate_before}])


def test_a_key_expiring_exactly_rotate_before_days_from_now_is_rotated() -> None:
    created = NOW - timedelta(days=180 - 30)  # expires at NOW + 30 days to the second
    result = plan(rotating(), LiveState("org", (live_model(),), (live_key(created_at=created),)), now=NOW)
    change = one(result, "apiKey.app")
    assert change.action is Action.ROTATE and change.live_id == "k-1"
    assert change.reason == "expires 2026-07-01, within rotateBeforeDays=30"
    assert change.cause == "rotate_because_expiring"


def test_a_key_expiring_a_second_after_the_window_is_left_alone() -> None:
    created = NOW - timedelta(days=150) + timedelta(seconds=1)
    result = plan(rotating(), LiveState("org", (live_model(),), (live_key(created_at=created),)), now=NOW)
    assert one(result, "apiKey.app").action is Action.NOOP


def test_an_expired_key_is_rotated_and_said_to_be_expired() -> None:
    for age in (180, 181, 400):
        key = live_key(created_at=NOW - timedelta(days=age))
        change = one(plan(rotating(), LiveState("org", (live_model(),), (key,)), now=NOW), "apiKey.app")
        assert change.action is Action.ROTATE
        assert change.reason == "expired, within rotateBeforeDays=30"


def test_a_key_rotates_only_within_a_window_when_rotate_before_days_is_zero() -> None:
    young = live_key(created_at=NOW - timedelta(days=179))
    assert one(plan(rotating(0), LiveState("org", (), (young,)), now=NOW), "apiKey.app").action is Action.NOOP
    due = live_key(created_at=NOW - timedelta(days=180))
    assert one(plan(rotating(0), LiveState("org", (), (due,)), now=NOW), "apiKey.app").action is Action.ROTATE


def test_a_key_whose_expiry_is_unknown_is_never_rotated_for_it() -> None:
    for key in (live_key(created_at=None), live_key(expiry_days=None)):
        result = plan(rotating(), LiveState("org", (), (key,)), now=NOW)
        change = one(result, "apiKey.app")
        assert change.action in (Action.NOOP, Action.REPLACE_CREATE_FIRST), change
        assert change.action is not Action.ROTATE


# -- pruning --------------------------------------------------------------------------------------------------


def test_a_pruned_delete_carries_the_live_id_of_each_resource_it_removes() -> None:
    live = LiveState(
        "org",
        models=(live_model(), live_model(id="m-8", name="team-a-old"), live_model(id="m-9", name="team-a-old")),
        keys=(live_key(), live_key(id="k-8", name="team-a-key")),
    )
    result = plan(manifest(prune={"match": "team-a-*"}), live, now=NOW)
    assert [(c.kind, c.name, c.live_id, c.action) for c in result.pending] == [
        (Kind.MODEL, "team-a-old", "m-8", Action.DELETE),
        (Kind.MODEL, "team-a-old", "m-9", Action.DELETE),
        (Kind.API_KEY, "team-a-key", "k-8", Action.DELETE),
    ]
    for change in result.pending:
        assert change.reason == "pruned: matches 'team-a-*'" and change.cause == "delete_because_pruned"
        assert change.before is not None and change.address == f"{change.kind.value}.{change.name}[{change.live_id}]"
    assert result.unmanaged == ()


def test_prune_patterns_are_case_sensitive_and_leave_the_rest_unmanaged_with_their_ids() -> None:
    live = LiveState("org", models=(live_model(), live_model(id="m-7", name="Team-A-x")), keys=(live_key(),))
    result = plan(manifest(prune={"match": "team-a-*"}), live, now=NOW)
    assert not result.has_changes
    assert [(u.kind, u.name, u.live_id) for u in result.unmanaged] == [(Kind.MODEL, "Team-A-x", "m-7")]


def test_unmanaged_resources_are_listed_by_kind_then_name_then_id() -> None:
    live = LiveState(
        "org",
        models=(live_model(id="m-3", name="b"), live_model(id="m-2", name="a"), live_model(id="m-1", name="b")),
        keys=(live_key(id="k-9", name="a"),),
    )
    result = plan(manifest(models=[], apiKeys=[]), live, now=NOW)
    assert [(u.kind.value, u.name, u.live_id) for u in result.unmanaged] == [
        ("apiKey", "a", "k-9"),
        ("model", "a", "m-2"),
        ("model", "b", "m-1"),
        ("model", "b", "m-3"),
    ]


# -- numbers ----------------------------------------------------------------------------------------------------

CACHED = manifest(
    defaults={
        "provider": "aws",
        "region": "us-east-1",
        "cache": {"type": "semantic", "threshold": 0.85, "expirySeconds": 3600},
    }
)


def api_model(caching: dict[str, Any], **compute: Any) -> dict[str, Any]:
    """A model as the API returns it, sent through JSON as it would be on the wire."""
    body = {
        "id": "m-1",
        "name": "chat",
        "status": "healthy",
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48, **compute}},
        "config": {"catalogModelName": "mistralai/mistral-7b-instruct-v0.3", "caching": caching},
    }
    return json.loads(json.dumps(body))  # type: ignore[no-any-return]


def caching(threshold: float, ttl: float) -> dict[str, Any]:
    return {
        "enableStandard": True,
        "defaultCache": "semantic",
        "expiryTTL": ttl,
        "semantic": {"scoreThreshold": threshold},
    }


def test_whole_numbers_written_as_floats_and_float_noise_are_not_changes() -> None:
    for threshold, ttl, gpu in (
        (0.85, 3600, 48),
        (0.8500000000000001, 3600.0, 48.0),
        (0.84999999999999, 3600, 48),
        (0.8500000001, 3600, 48),
    ):
        live = parse_model(api_model(caching(threshold, ttl), gpuMemory=gpu))
        result = plan(CACHED, LiveState("org", (live,), ()), now=NOW)
        assert one(result, "model.chat").action is Action.NOOP, (threshold, ttl, gpu)


def test_a_real_difference_in_a_number_is_still_a_change() -> None:
    for threshold, ttl, path in ((0.86, 3600, "cache.threshold"), (0.85, 3601, "cache.expirySeconds")):
        live = parse_model(api_model(caching(threshold, ttl)))
        change = one(plan(CACHED, LiveState("org", (live,), ()), now=NOW), "model.chat")
        assert change.action is Action.UPDATE
        assert [c.path for c in change.attribute_changes] == [path]
        assert not change.attribute_changes[0].forces_replace


def test_a_number_and_the_same_number_as_text_are_different() -> None:
    live = live_model(caching={"enableStandard": True, "defaultCache": "semantic", "expiryTTL": "3600"})
    doc = manifest(
        defaults={"region": "us-east-1", "provider": "aws", "cache": {"type": "semantic", "expirySeconds": 3600}}
    )
    assert one(plan(doc, LiveState("org", (live,), ()), now=NOW), "model.chat").action is Action.UPDATE


# -- what the manifest leaves unset ------------------------------------------------------------------------------


def test_attributes_only_a_replace_can_change_are_left_to_the_api_when_unset() -> None:
    live = live_model(quantization="fp8", optimization="latency", dimensions=2048, cpu=32)
    assert one(plan(manifest(), LiveState("org", (live,), ()), now=NOW), "model.chat").action is Action.NOOP


def test_a_declared_mapping_is_compared_as_a_subset_of_the_live_one() -> None:
    live = live_model(caching={"enableStandard": True, "defaultCache": "standard", "expiryTTL": 600, "extra": 1})
    doc = manifest(defaults={"region": "us-east-1", "provider": "aws", "cache": {"type": "standard"}})
    assert one(plan(doc, LiveState("org", (live,), ()), now=NOW), "model.chat").action is Action.NOOP


def test_a_model_that_failed_and_matches_the_manifest_is_left_with_a_reason() -> None:
    change = one(plan(manifest(), LiveState("org", (live_model(status="unhealthy"),), ()), now=NOW), "model.chat")
    assert change.action is Action.NOOP and change.reason == "live status is unhealthy; nothing the manifest can change"


def test_an_in_place_change_and_a_state_change_together_are_one_update_that_says_both() -> None:
    doc = manifest(models=[{**CHAT, "state": "paused", "enableBatching": True}])
    change = one(plan(doc, LiveState("org", (live_model(enable_batching=False),), ()), now=NOW), "model.chat")
    assert change.action is Action.UPDATE and change.reason == "in-place change of enableBatching, then pause"
    resumed = manifest(models=[{**CHAT, "enableBatching": True}])
    live = live_model(enable_batching=False, status="paused")
    change = one(plan(resumed, LiveState("org", (live,), ()), now=NOW), "model.chat")
    assert change.reason == "in-place change of enableBatching, then resume"


def test_a_key_description_is_compared_only_when_the_manifest_sets_one() -> None:
    described = live_key(description="made by hand")
    assert one(plan(manifest(), LiveState("org", (), (described,)), now=NOW), "apiKey.app").action is Action.NOOP
    doc = manifest(apiKeys=[{**APP, "description": "the app"}])
    change = one(plan(doc, LiveState("org", (), (described,)), now=NOW), "apiKey.app")
    assert change.action is Action.REPLACE_CREATE_FIRST
    assert change.reason == "description cannot change in place (API keys are immutable)"
    assert [(c.path, c.before, c.after, c.forces_replace) for c in change.attribute_changes] == [
        ("description", "made by hand", "the app", True)
    ]
