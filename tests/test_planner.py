"""The planner is pure: these tests build manifests and live snapshots in memory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from capella_deploy.kinds.api_key import parse_key
from capella_deploy.kinds.base import Action
from capella_deploy.live import LiveState
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan, plan_destroy
from capella_deploy.plan.target import restrict
from capella_deploy.views.plan import plan_json, render_plan
from tests.planning_support import NOW, live_key, live_model, manifest


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
    assert [(c.path, c.before, c.after) for c in change.attribute_changes] == [("cache.expirySeconds", 300, 600)]


def test_key_cidr_change_replaces_the_key() -> None:
    result = plan(manifest(), LiveState("org", (live_model(),), (live_key(allowed_cidrs=("10.1.0.0/16",)),)), now=NOW)
    change = result.changes[-1]
    assert change.action is Action.REPLACE_CREATE_FIRST and change.address == "apiKey.app"
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
    assert actions(result)["apiKey.app"] is Action.REPLACE_CREATE_FIRST


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


def test_replace_reports_every_address_it_cannot_use_and_how_to_write_one() -> None:
    live = LiveState("org", (live_model(),), (live_key(),))
    asked = frozenset({"bogus", "model.nope", "apiKey.gone", "model.chat"})
    result = plan(manifest(), live, now=NOW, force_replace=asked)
    assert list(result.errors) == [
        "apiKey.gone: --replace names nothing the manifest declares",
        "--replace 'bogus' is not a resource address; write model.NAME, apiKey.NAME or provider.NAME",
        "model.nope: --replace names nothing the manifest declares",
    ]
    assert actions(result)["model.chat"] is Action.REPLACE


def test_plans_and_destroy_plans_carry_the_environment_and_the_digests_of_what_they_saw() -> None:
    live = LiveState("org", (live_model(),), (live_key(),))
    doc = manifest(environment="staging")
    for made in (plan(doc, live, now=NOW), plan_destroy(doc, live)):
        assert made.environment == "staging"
        assert made.live_digests == live.digests()
        assert made.live_fingerprint == live.fingerprint()


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


def test_the_key_whose_token_the_outputs_hold_is_kept_over_a_newer_one_nobody_holds() -> None:
    # A rotation killed after the API made the new key, before its token reached the outputs.
    old = live_key(id="k-old", created_at=NOW - timedelta(days=20))
    new = live_key(id="k-new", created_at=NOW - timedelta(days=1))
    live = LiveState("org", (live_model(),), (new, old))
    result = plan(manifest(), live, now=NOW, held_tokens=frozenset({"k-old"}))
    [orphan] = result.pending
    assert (orphan.address, orphan.action, orphan.cause) == (
        "apiKey.app[k-new]",
        Action.DELETE,
        "delete_because_orphan",
    )
    assert orphan.reason is not None and "k-old, whose token the outputs hold, is kept" in orphan.reason
    assert next(c for c in result.changes if c.address == "apiKey.app").live_id == "k-old"

    # Killed after the new key's token was on disk: the rotation completes instead.
    finished = plan(manifest(), live, now=NOW, held_tokens=frozenset({"k-new"}))
    [older] = finished.pending
    assert (older.address, older.action, older.cause) == (
        "apiKey.app[k-old]",
        Action.DELETE,
        "delete_because_duplicate",
    )
    assert older.reason == "superseded by k-new, whose token the outputs hold"
    assert finished.live_fingerprint != result.live_fingerprint, "a saved plan goes stale when the held keys change"


def test_a_keys_models_are_compared_by_id_not_by_the_name_the_api_reads_back() -> None:
    doc = manifest(apiKeys=[{"name": "app", "allowedCIDRs": ["10.0.0.0/16"], "allowedModels": ["chat"]}])
    spelled_otherwise = live_key(allowed_models=(("m-1", "Chat"),))
    assert not plan(doc, LiveState("org", (live_model(),), (spelled_otherwise,)), now=NOW).has_changes
    another_model = live_key(allowed_models=(("m-9", "chat"),))  # a model of that name, not the managed one
    change = plan(doc, LiveState("org", (live_model(),), (another_model,)), now=NOW).changes[-1]
    assert change.action is Action.REPLACE_CREATE_FIRST
    assert [(c.path, c.before, c.after) for c in change.attribute_changes] == [
        ("allowedModels", ["chat (m-9)"], ["chat"])
    ]


def test_key_expiry_read_back_as_days_remaining_or_a_float_is_no_change() -> None:
    created = NOW - timedelta(days=9, hours=18)
    audit = {"createdAt": created.isoformat().replace("+00:00", "Z")}
    base = {"keyId": "k-1", "name": "app", "region": "us-east-1", "allowedCIDRs": ["10.0.0.0/16"], "audit": audit}
    doc = manifest()  # expiryDays: 180
    for expiry in (180, 180.0, 170.25):  # as given, as a float, as the days remaining 9.75 days on
        key = parse_key({**base, "expiry": expiry}, NOW)
        assert not plan(doc, LiveState("org", (live_model(),), (key,)), now=NOW).has_changes, expiry
    changed = parse_key({**base, "expiry": 90.5}, NOW)
    change = plan(doc, LiveState("org", (live_model(),), (changed,)), now=NOW).changes[-1]
    assert change.action is Action.REPLACE_CREATE_FIRST
    assert [(c.path, c.before, c.after) for c in change.attribute_changes] == [("expiryDays", 90.5, 180)]


def caching(embedding: str) -> dict[str, Any]:
    return {"enableStandard": True, "defaultCache": "semantic", "semantic": {"embeddingModel": embedding}}


SEMANTIC = [
    {
        "name": "chat",
        "catalogModel": "mistralai/mistral-7b-instruct-v0.3",
        "gpuMemory": 48,
        "cache": {"type": "semantic", "semantic": {"embeddingModel": "embed"}},
    },
    {"name": "embed", "catalogModel": "nvidia/llama-3.2-nv-embedqa-1b-v2", "gpuMemory": 24},
]


def test_a_semantic_cache_naming_a_manifest_model_compares_by_that_models_id() -> None:
    doc = manifest(models=SEMANTIC)
    embed = live_model(id="m-embed", name="embed", catalog_model="nvidia/llama-3.2-nv-embedqa-1b-v2", gpu_memory=24)
    chat = live_model(caching=caching("m-embed"))
    result = plan(doc, LiveState("org", (chat, embed), (live_key(),)), now=NOW)
    assert not result.has_changes
    by_name = plan(doc, LiveState("org", (live_model(caching=caching("embed")), embed), (live_key(),)), now=NOW)
    [update] = by_name.pending
    assert update.action is Action.UPDATE and [str(a) for a in update.depends_on] == ["model.embed"]
    assert [(c.path, c.before, c.after) for c in update.attribute_changes] == [
        ("cache.semantic.embeddingModel", "embed", "m-embed")
    ]


def test_a_model_caching_with_one_that_gets_a_new_id_is_updated_after_it() -> None:
    doc = manifest(models=SEMANTIC)
    old_embed = live_model(id="m-embed", name="embed", catalog_model="nvidia/llama-3.2-nv-embedqa-1b-v2", gpu_memory=48)
    result = plan(doc, LiveState("org", (live_model(caching=caching("m-embed")), old_embed), (live_key(),)), now=NOW)
    assert actions(result) == {"model.chat": Action.UPDATE, "model.embed": Action.REPLACE, "apiKey.app": Action.NOOP}
    chat = next(c for c in result.changes if c.name == "chat")
    assert [str(a) for a in chat.depends_on] == ["model.embed"]
    assert chat.after is not None
    assert chat.after["cache"]["semantic"]["embeddingModel"] == "(known after apply: id of model.embed)"
    assert "(after model.embed is ready" in render_plan(result)
    assert plan_json(result)["resource_changes"][0]["depends_on"] == ["model.embed"]


def test_targeting_a_model_keeps_the_embedding_model_it_caches_with() -> None:
    doc = manifest(models=SEMANTIC)
    whole = plan(doc, LiveState("org"), now=NOW)
    assert {c.address for c in restrict(whole, doc, ["model.chat"]).changes} == {"model.chat", "model.embed"}
    assert {c.address for c in restrict(whole, doc, ["model.embed"]).changes} == {"model.embed"}
    live = LiveState("org", (live_model(caching=caching("m-embed")), live_model(id="m-embed", name="embed")))
    gone = plan_destroy(doc, live)
    assert {c.name for c in restrict(gone, doc, ["model.embed"], destroy=True).changes} == {"chat", "embed"}


def test_of_equally_healthy_models_sharing_a_name_the_plan_keeps_the_oldest_whatever_their_ids() -> None:
    older = live_model(id="m-z", created_at=NOW - timedelta(days=2))
    newer = live_model(id="m-a", created_at=NOW - timedelta(days=1))
    for listed in ((older, newer), (newer, older)):
        result = plan(manifest(), LiveState("org", listed, (live_key(),)), now=NOW)
        [gone] = [c for c in result.changes if c.action is Action.DELETE]
        assert gone.live_id == "m-a" and gone.cause == "delete_because_duplicate"
    failed_older = live_model(id="m-z", status="deployFailed", created_at=NOW - timedelta(days=2))
    result = plan(manifest(), LiveState("org", (failed_older, newer), (live_key(),)), now=NOW)
    assert [c.live_id for c in result.changes if c.action is Action.DELETE] == ["m-z"], "health comes first"
