"""The model kind, function by function: which calls a model takes, which duplicate is managed, the bodies sent
to the Management API, the header profile, the plan rule, export entries and status facts."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.clock import ManualClock
from capella_deploy.kinds.base import (
    Action,
    Address,
    ExportNotes,
    ExportScope,
    Kind,
    LiveStateError,
    PlanContext,
    Settled,
)
from capella_deploy.kinds.model import (
    MODELS,
    allows,
    cache_block,
    cache_view,
    caching_body,
    connection_string,
    embedding_dependency,
    export_entry,
    header_profile,
    model_attributes,
    model_create_body,
    model_update_body,
    output_changes,
    parse_model,
)
from capella_deploy.live import LiveState
from capella_deploy.manifest import Cache, Defaults, Manifest, ModelSpec
from capella_deploy.outputs import Outputs
from capella_deploy.plan.planner import plan
from capella_deploy.run.settle import settle_outputs
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Sandbox, lifecycle
from capella_deploy.secrets import Secret
from tests.planning_support import CHAT, NOW, live_model, manifest

EMBED_ID = "0b5d1f7e-6a43-4c8e-9d2a-3f1e2b4c5d6e"


def models(*entries: dict[str, Any], **defaults: Any) -> Manifest:
    return manifest(models=list(entries), apiKeys=[], defaults={"provider": "aws", "region": "us-east-1", **defaults})


def spec_of(entry: dict[str, Any], **defaults: Any) -> tuple[ModelSpec, Defaults]:
    """One manifest entry and the defaults it is read with, as the manifest loader would validate them."""
    return ModelSpec.model_validate(entry), Defaults.model_validate({"region": "us-east-1", **defaults})


# -- which calls a model takes now ------------------------------------------------------------------------------


def test_a_model_listing_its_actions_takes_exactly_those_it_lists() -> None:
    listing = live_model(status="deploying", actions=frozenset({"pause", "delete"}))
    assert allows(listing, "pause")  # listed: taken whatever the status says
    assert not allows(listing, "resume")  # a list that leaves it out refuses it, even when the status would not
    assert not allows(live_model(status="paused", actions=frozenset({"pause"})), "resume")


def test_a_list_without_edit_leaves_edits_to_the_status() -> None:
    assert allows(live_model(status="healthy", actions=frozenset({"pause"})), "edit")
    assert allows(live_model(status="paused", actions=frozenset({"resume"})), "edit")
    assert not allows(live_model(status="deploying", actions=frozenset({"pause"})), "edit")


@pytest.mark.parametrize(
    ("status", "taken"),
    [
        ("healthy", {"edit", "pause"}),
        ("paused", {"edit", "resume"}),
        ("deploying", set()),
        ("pausing", set()),
        ("unhealthy", set()),
    ],
)
def test_a_model_listing_no_known_action_takes_what_its_status_allows(status: str, taken: set[str]) -> None:
    for actions in (frozenset(), frozenset({"scale", "restart"})):
        model = live_model(status=status, actions=actions)
        assert {a for a in ("edit", "pause", "resume") if allows(model, a)} == taken


def test_the_documented_action_words_read_in_one_vocabulary() -> None:
    raw = {"id": "m-1", "name": "chat", "status": "healthy", "actions": ["destroy", "edit", "resume", "scale"]}
    assert parse_model(raw).actions == {"delete", "edit", "resume", "scale"}


# -- which of several live models of one name is managed ---------------------------------------------------------


def test_the_healthiest_of_several_live_models_of_one_name_is_managed_and_the_rest_reported() -> None:
    ctx = PlanContext(models(CHAT), NOW)
    failed = live_model(id="m-1", status="deployFailed")
    unhealthy = live_model(id="m-2", status="unhealthy")
    healthy_late = live_model(id="m-4", status="healthy")
    healthy = live_model(id="m-3", status="deploying")
    kept, extras = MODELS.pick([failed, unhealthy, healthy_late, healthy], ctx)
    assert kept is healthy  # not failed; among equals, the smallest id
    assert [(e.resource.id, e.described, e.reason, e.cause) for e in extras] == [
        ("m-4", "another live model m-4", "duplicate of a managed name", "delete_because_duplicate"),
        ("m-2", "another live model m-2", "duplicate of a managed name", "delete_because_duplicate"),
        ("m-1", "another live model m-1", "duplicate of a managed name", "delete_because_duplicate"),
    ]
    assert MODELS.pick([], ctx) == (None, [])
    assert MODELS.pick([failed], ctx) == (failed, [])


def test_a_model_that_failed_to_be_destroyed_ranks_below_one_that_failed_to_deploy_only_by_id() -> None:
    ctx = PlanContext(models(CHAT), NOW)
    destroy_failed = live_model(id="m-1", status="destroyFailed")
    pause_failed = live_model(id="m-9", status="pauseFailed")
    assert MODELS.pick([destroy_failed, pause_failed], ctx)[0] is pause_failed


# -- request bodies -----------------------------------------------------------------------------------------------


FULL = {
    "name": "chat",
    "catalogModel": "mistralai/mistral-7b-instruct-v0.3",
    "provider": "gcp",
    "region": "us-east4",
    "gpuMemory": 192,
    "quantization": "fp8",
    "optimization": "latency",
    "dimensions": 1024,
    "enableBatching": True,
    "keywordFiltering": ["secret", "internal"],
    "guardrails": ["hate speech"],
    "jailbreak": {"scoreThreshold": 0.7},
    "cache": {"type": "standard", "expirySeconds": 60, "conversational": True},
}


def test_the_create_body_carries_every_declared_attribute_under_the_apis_names() -> None:
    spec, defaults = spec_of(FULL)
    assert model_create_body(spec, defaults, {}) == {
        "name": "chat",
        "catalogModelName": "mistralai/mistral-7b-instruct-v0.3",
        "cloudConfig": {"provider": "gcp", "region": "us-east4", "compute": {"cpu": 32, "gpuMemory": 192}},
        "quantization": "fp8",
        "optimization": "latency",
        "dimensions": 1024,
        "enableBatching": True,
        "keywordFiltering": ["secret", "internal"],
        "caching": {"enableStandard": True, "defaultCache": "standard", "enableConversational": True, "expiryTTL": 60},
        "guardrails": ["hate speech"],
        "jailbreak": {"scoreThreshold": 0.7},
    }


@pytest.mark.parametrize(("gpu", "cpu"), [(24, 4), (48, 4), (192, 32)])
def test_a_model_naming_no_cpu_gets_the_instance_that_carries_its_gpu_memory(gpu: int, cpu: int) -> None:
    spec, defaults = spec_of({**CHAT, "gpuMemory": gpu})
    assert model_create_body(spec, defaults, {})["cloudConfig"]["compute"] == {"cpu": cpu, "gpuMemory": gpu}
    spec, defaults = spec_of({**CHAT, "gpuMemory": gpu, "cpu": 32 if cpu == 4 else 4})
    assert model_create_body(spec, defaults, {})["cloudConfig"]["compute"]["cpu"] == (32 if cpu == 4 else 4)


def test_the_create_body_leaves_out_what_the_manifest_leaves_unset_and_takes_the_defaults_place() -> None:
    spec, defaults = spec_of(CHAT, provider="azure", region="eastus")
    assert model_create_body(spec, defaults, {}) == {
        "name": "chat",
        "catalogModelName": CHAT["catalogModel"],
        "cloudConfig": {"provider": "azure", "region": "eastus", "compute": {"cpu": 4, "gpuMemory": 48}},
    }


def test_the_update_body_names_every_managed_in_place_attribute_and_the_write_only_ones() -> None:
    spec, defaults = spec_of(FULL)
    assert model_update_body(spec, defaults, {}) == {
        "name": "chat",
        "enableBatching": True,
        "keywordFiltering": ["secret", "internal"],
        "caching": {"enableStandard": True, "defaultCache": "standard", "enableConversational": True, "expiryTTL": 60},
        "guardrails": ["hate speech"],
        "jailbreak": {"scoreThreshold": 0.7},
    }
    spec, defaults = spec_of({**CHAT, "unmanagedAttributes": ["cache", "keywordFiltering"]})
    assert model_update_body(spec, defaults, {}) == {"name": "chat", "enableBatching": False}


def test_the_update_body_names_a_semantic_caches_embedding_model_by_its_live_id() -> None:
    spec, defaults = spec_of({**CHAT, "cache": {"type": "semantic", "semantic": {"embeddingModel": "embed"}}})
    body = model_update_body(spec, defaults, {"embed": "m-7"})
    assert body["caching"] == {
        "enableStandard": True,
        "defaultCache": "semantic",
        "semantic": {"embeddingModel": "m-7"},
    }
    body = model_create_body(spec, defaults, {"embed": "m-7"})
    assert body["caching"]["semantic"] == {"embeddingModel": "m-7"}


def test_a_cache_of_type_none_turns_both_caches_off() -> None:
    assert caching_body(Cache(type="none", expirySeconds=60, conversational=True)) == {
        "enableStandard": False,
        "enableConversational": False,
    }


def test_a_semantic_cache_body_carries_its_threshold_and_settings() -> None:
    cache = Cache.model_validate(
        {
            "type": "semantic",
            "threshold": 0.8,
            "expirySeconds": 30,
            "conversational": False,
            "semantic": {"embeddingModel": EMBED_ID, "dimensions": 384, "distanceMetric": "cosine"},
        }
    )
    assert caching_body(cache) == {
        "enableStandard": True,
        "defaultCache": "semantic",
        "enableConversational": False,
        "expiryTTL": 30,
        "semantic": {"scoreThreshold": 0.8, "embeddingModel": EMBED_ID, "dimensions": 384, "distanceMetric": "cosine"},
    }
    assert caching_body(Cache(type="semantic")) == {"enableStandard": True, "defaultCache": "semantic"}
    # A threshold says nothing to a standard cache.
    assert caching_body(Cache(type="standard", threshold=0.5)) == {"enableStandard": True, "defaultCache": "standard"}


def test_a_semantic_cache_names_its_embedding_model_by_id() -> None:
    def body(reference: str, ids: dict[str, str] | None) -> Any:
        cache = Cache.model_validate({"type": "semantic", "semantic": {"embeddingModel": reference}})
        return caching_body(cache, ids)["semantic"]["embeddingModel"]

    assert body("embed", {"embed": "m-7"}) == "m-7"  # a model of the manifest: its live id
    assert body("embed", {}) == "(known after apply: id of model.embed)"
    assert body(EMBED_ID, {EMBED_ID: "m-7"}) == EMBED_ID  # an id is sent as it is
    assert body("embed", None) == "embed"  # nothing to resolve against: the manifest's words


def test_the_cache_view_speaks_the_manifests_words() -> None:
    assert cache_view({"enableStandard": False, "enableConversational": False}) == {
        "type": "none",
        "conversational": False,
    }
    assert cache_view(
        {
            "enableStandard": True,
            "defaultCache": "semantic",
            "expiryTTL": 9,
            "semantic": {"scoreThreshold": 0.4, "dimensions": 8, "distanceMetric": "l2_norm", "other": 1},
        }
    ) == {
        "type": "semantic",
        "expirySeconds": 9,
        "threshold": 0.4,
        "semantic": {"dimensions": 8, "distanceMetric": "l2_norm"},
    }
    assert cache_view({"enableStandard": True, "defaultCache": "semantic", "semantic": {"embeddingModel": "m-7"}}) == {
        "type": "semantic",
        "semantic": {"embeddingModel": "m-7"},
    }
    # An object that does not say whether the standard cache is on says no type.
    assert cache_view({"defaultCache": "standard", "semantic": {}}) == {}
    assert cache_view({"enableStandard": "yes", "defaultCache": "standard"}) == {}


# -- what the manifest declares ------------------------------------------------------------------------------------


def test_a_models_own_cache_fields_lie_over_the_defaults_field_by_field() -> None:
    default_cache = {
        "type": "semantic",
        "threshold": 0.9,
        "expirySeconds": 3600,
        "semantic": {"dimensions": 384, "distanceMetric": "cosine"},
    }
    spec, defaults = spec_of(
        {**CHAT, "cache": {"expirySeconds": 60, "semantic": {"distanceMetric": "l2_norm"}}}, cache=default_cache
    )
    assert model_attributes(spec, defaults)["cache"] == {
        "type": "semantic",
        "expirySeconds": 60,
        "threshold": 0.9,
        "semantic": {"dimensions": 384, "distanceMetric": "l2_norm"},
    }
    spec, defaults = spec_of(CHAT, cache=default_cache)
    assert model_attributes(spec, defaults)["cache"]["expirySeconds"] == 3600
    spec, defaults = spec_of({**CHAT, "cache": {"type": "none"}})
    assert model_attributes(spec, defaults)["cache"] == {"type": "none", "conversational": False}


def test_a_semantic_cache_depends_on_the_manifest_model_it_embeds_with() -> None:
    def dependency(cache: dict[str, Any], names: set[str]) -> str | None:
        spec, defaults = spec_of({**CHAT, "cache": cache})
        return embedding_dependency(spec, defaults, names)

    semantic = {"type": "semantic", "semantic": {"embeddingModel": "embed"}}
    assert dependency(semantic, {"embed", "chat"}) == "embed"
    assert dependency(semantic, {"chat"}) is None  # not the manifest's: an id, or someone else's model
    assert dependency({"type": "semantic", "semantic": {"dimensions": 8}}, {"embed"}) is None
    assert dependency({"type": "semantic"}, {"embed"}) is None
    assert dependency({"type": "standard", "semantic": {"embeddingModel": "embed"}}, {"embed"}) is None


# -- the header profile --------------------------------------------------------------------------------------------


def test_the_header_profile_says_the_routing_and_cache_the_manifest_declares() -> None:
    spec, defaults = spec_of(
        {**CHAT, "cache": {"type": "semantic", "threshold": 0.00001, "expirySeconds": 90}},
        routing={"strategy": "least-latency", "maxRetries": 0, "requestTimeoutSeconds": 15},
    )
    assert header_profile(spec, defaults) == {
        "X-cb-routing-strategy": "least-latency",
        "X-cb-max-retries": "0",
        "X-cb-request-duration": "15",
        "X-cb-cache": "semantic",
        "X-cb-cache-threshold": "0.00001",
        "X-cb-cache-expiry-duration": "90",
    }


def test_the_header_profile_leaves_out_what_is_not_declared_or_does_not_apply() -> None:
    assert header_profile(*spec_of(CHAT)) == {}
    spec, defaults = spec_of({**CHAT, "routing": {"maxRetries": 3}})
    assert header_profile(spec, defaults) == {"X-cb-max-retries": "3"}
    spec, defaults = spec_of({**CHAT, "cache": {"type": "standard", "threshold": 0.5, "expirySeconds": 9}})
    assert header_profile(spec, defaults) == {"X-cb-cache": "standard", "X-cb-cache-expiry-duration": "9"}
    spec, defaults = spec_of({**CHAT, "cache": {"type": "none", "expirySeconds": 9}})
    assert header_profile(spec, defaults) == {"X-cb-cache": "none"}
    spec, defaults = spec_of({**CHAT, "cache": {"type": "semantic", "threshold": 0.25}})
    assert header_profile(spec, defaults) == {"X-cb-cache": "semantic", "X-cb-cache-threshold": "0.25"}


# -- outputs a plan shows ----------------------------------------------------------------------------------------


def test_the_outputs_entry_of_a_model_changes_where_the_recorded_connection_string_or_headers_differ() -> None:
    spec, defaults = spec_of({**CHAT, "routing": {"strategy": "throughput"}})
    live = live_model(connection_string="https://new")
    document = {"models": {"chat": {"connectionString": "https://old", "headers": {"X-cb-cache": "standard"}}}}
    changes = output_changes(spec, defaults, live, False, document)
    assert [(c.path, c.before, c.after, c.known_after_apply) for c in changes] == [
        ("connectionString", "https://old", "https://new", False),
        ("headers.X-cb-cache", "standard", None, False),
        ("headers.X-cb-routing-strategy", None, "throughput", False),
    ]
    same = {"models": {"chat": {"connectionString": "https://new", "headers": {"X-cb-routing-strategy": "throughput"}}}}
    assert output_changes(spec, defaults, live, False, same) == ()
    # A live model that reports no connection string says nothing about the recorded one.
    assert output_changes(spec, defaults, live_model(connection_string=None), False, same) == ()
    assert output_changes(spec, defaults, None, False, same) == ()


def test_a_renamed_model_is_compared_with_the_entry_under_its_former_name() -> None:
    spec, defaults = spec_of({**CHAT, "name": "chat2", "renamedFrom": "chat"})
    document = {"models": {"chat": {"connectionString": "https://m-1", "headers": {}}}}
    assert output_changes(spec, defaults, live_model(connection_string="https://m-1"), False, document) == ()
    renamed_already = {"models": {"chat2": {"connectionString": "https://m-1"}, "chat": {"connectionString": "x"}}}
    live = live_model(name="chat", connection_string="https://m-1")
    assert output_changes(spec, defaults, live, False, renamed_already) == ()


def test_a_model_made_anew_has_its_connection_string_known_after_apply_even_without_an_outputs_file() -> None:
    spec, defaults = spec_of(CHAT)
    [change] = output_changes(spec, defaults, None, True, None)
    assert (change.path, change.before, change.after, change.known_after_apply) == (
        "connectionString",
        None,
        None,
        True,
    )
    assert output_changes(spec, defaults, live_model(), False, None) == ()


# -- status facts -----------------------------------------------------------------------------------------------------


def test_status_shows_a_models_status_creation_region_memory_and_connection_string() -> None:
    raw = {
        "id": "m-1",
        "name": "chat",
        "status": "pausing",
        "connectionString": "https://m-1.example",
        "cloudConfig": {"region": "eu-west-1", "compute": {"gpuMemory": 24}},
        "audit": {"createdAt": "2026-05-01T10:00:00Z", "version": 2},
    }
    facts = MODELS.status(parse_model(raw), NOW)
    assert facts.state == "pausing"
    assert facts.created_at is not None and facts.created_at.isoformat() == "2026-05-01T10:00:00+00:00"
    assert (facts.region, facts.gpu_memory, facts.connection_string) == ("eu-west-1", 24, "https://m-1.example")
    assert facts.expires_at is None


def test_a_model_whose_connection_string_is_empty_reads_as_having_none() -> None:
    assert parse_model({"id": "m-1", "name": "chat", "connectionString": ""}).connection_string is None


# -- export -----------------------------------------------------------------------------------------------------------


def test_export_writes_a_models_attributes_and_cache_as_the_manifest_spells_them() -> None:
    model = live_model(
        status="paused",
        quantization="fp16",
        optimization="throughput",
        dimensions=512,
        enable_batching=True,
        keyword_filtering=("a",),
        caching={"enableStandard": True, "defaultCache": "standard", "expiryTTL": 120},
    )
    notes = ExportNotes()
    assert export_entry(model, {}, notes) == {
        "name": "chat",
        "catalogModel": "mistralai/mistral-7b-instruct-v0.3",
        "provider": "aws",
        "region": "us-east-1",
        "gpuMemory": 48,
        "cpu": 4,
        "state": "paused",
        "quantization": "fp16",
        "optimization": "throughput",
        "dimensions": 512,
        "enableBatching": True,
        "keywordFiltering": ["a"],
        "cache": {"type": "standard", "expirySeconds": 120},
    }
    assert notes == ExportNotes()


def test_export_names_an_exported_embedding_model_by_its_name() -> None:
    caching = {"enableStandard": True, "defaultCache": "semantic", "semantic": {"embeddingModel": EMBED_ID}}
    notes = ExportNotes()
    entry = export_entry(live_model(caching=caching), {EMBED_ID: "embed"}, notes)
    assert entry is not None and entry["cache"] == {"type": "semantic", "semantic": {"embeddingModel": "embed"}}
    # An id of a model left out of the export stays an id.
    entry = export_entry(live_model(caching=caching), {}, notes)
    assert entry is not None and entry["cache"] == {"type": "semantic", "semantic": {"embeddingModel": EMBED_ID}}
    assert notes == ExportNotes()


def test_export_leaves_caching_it_cannot_spell_unmanaged_and_says_why() -> None:
    notes = ExportNotes()
    named = {"enableStandard": True, "defaultCache": "semantic", "semantic": {"embeddingModel": "embed-by-name"}}
    entry = export_entry(live_model(caching=named), {}, notes)
    assert entry is not None and entry["unmanagedAttributes"] == ["cache"] and "cache" not in entry
    odd = {"enableStandard": True, "defaultCache": "fancy"}
    entry = export_entry(live_model(name="other", caching=odd), {}, notes)
    assert entry is not None and entry["unmanagedAttributes"] == ["cache"] and "cache" not in entry
    assert notes.omitted == [
        "model 'chat': its semantic cache names the embedding model 'embed-by-name', which is neither an exported "
        "model nor a model id; the exported manifest leaves its caching as it is (unmanagedAttributes: [cache])",
        "model 'other': its caching settings have no exact manifest equivalent; the exported manifest leaves them "
        "as they are (unmanagedAttributes: [cache])",
    ]
    assert notes.warnings == []


def test_export_omits_a_model_no_manifest_entry_can_describe_and_warns_of_failed_ones() -> None:
    notes = ExportNotes()
    assert export_entry(live_model(gpu_memory=None), {}, notes) is None
    assert len(notes.omitted) == 1 and notes.omitted[0].startswith("model 'chat': ")
    entry = export_entry(live_model(status="unhealthy"), {}, notes)
    assert entry is not None and entry["state"] == "running"
    assert notes.warnings == ["model 'chat' is unhealthy: a plan of the export will replace or report it"]


@pytest.mark.parametrize(
    "caching",
    [
        {"defaultCache": "standard"},  # whether the standard cache is on is not said
        {"enableStandard": "yes", "defaultCache": "standard"},
        {"enableStandard": True, "defaultCache": "none"},
        {"enableStandard": True, "defaultCache": "fancy"},
        {"enableStandard": True, "defaultCache": ["standard"]},
    ],
)
def test_caching_no_cache_block_writes_has_no_cache_block(caching: dict[str, Any]) -> None:
    assert cache_block(caching) is None


def test_export_manages_the_healthiest_of_models_sharing_a_name_and_says_which_others_exist() -> None:
    live = [
        live_model(id="m-3", status="deployFailed"),
        live_model(id="m-2", status="healthy"),
        live_model(id="m-1", status="unhealthy"),
        live_model(id="m-5", name="gone", status="destroying"),
        live_model(id="m-6", name="far", region="eu-west-1"),
    ]
    notes = ExportNotes()
    exported: dict[str, str] = {}
    entries = MODELS.export(live, ExportScope(region="us-east-1"), exported, notes)
    assert [e["name"] for e in entries] == ["chat"] and exported == {"m-2": "chat"}
    assert notes.warnings == ["model 'chat': exported m-2; other live models share the name (m-3, m-1)"]


# -- the plan rule --------------------------------------------------------------------------------------------------


def change_for(entry: dict[str, Any], live: Any, **options: Any) -> Any:
    result = plan(models(entry), LiveState("org", (live,) if live is not None else ()), now=NOW, **options)
    [change] = [c for c in result.changes if c.kind is Kind.MODEL]
    return change


def test_a_model_paused_in_the_manifest_and_healthy_live_plans_a_pause_and_one_pausing_plans_nothing() -> None:
    paused = {**CHAT, "state": "paused"}
    change = change_for(paused, live_model(status="healthy"))
    assert (change.action, change.reason) == (Action.PAUSE, "state is running")
    assert change_for(paused, live_model(status="pausing")).action is Action.NOOP
    assert change_for(paused, live_model(status="paused")).action is Action.NOOP
    change = change_for(CHAT, live_model(status="paused"))
    assert (change.action, change.reason) == (Action.RESUME, "state is paused")


def test_a_model_whose_deployment_failed_is_replaced_not_edited() -> None:
    for status in ("deployFailed", "destroyFailed"):
        change = change_for({**CHAT, "enableBatching": True}, live_model(status=status))
        assert (change.action, change.reason, change.cause) == (
            Action.REPLACE,
            f"live status is {status}",
            "replace_because_failed",
        )
        assert change.live_id == "m-1"


def test_a_model_failing_otherwise_is_reported_and_left() -> None:
    change = change_for(CHAT, live_model(status="unhealthy"))
    assert (change.action, change.reason) == (Action.NOOP, "live status is unhealthy; nothing the manifest can change")
    assert change_for(CHAT, live_model(status="healthy")).reason is None


def test_an_attribute_the_api_cannot_change_in_place_replaces_the_model() -> None:
    change = change_for({**CHAT, "gpuMemory": 24, "quantization": "fp8"}, live_model())
    assert (change.action, change.cause) == (Action.REPLACE, "replace_because_cannot_update")
    assert change.reason == "gpuMemory, quantization cannot change in place"


def test_a_replacement_asked_for_is_planned_before_any_other_rule() -> None:
    change = change_for(CHAT, live_model(status="deployFailed"), force_replace=frozenset({"model.chat"}))
    assert (change.action, change.reason, change.cause) == (
        Action.REPLACE,
        "replacement requested",
        "replace_by_request",
    )


def test_an_in_place_change_with_a_state_change_is_one_update_then_the_pause() -> None:
    change = change_for({**CHAT, "state": "paused", "enableBatching": True}, live_model(keyword_filtering=("x",)))
    assert change.action is Action.UPDATE
    assert change.reason == (
        "in-place change of enableBatching; keywordFiltering unset in the manifest: reset to the API's default"
        ", then pause"
    )
    change = change_for({**CHAT, "enableBatching": True}, live_model(status="paused"))
    assert change.reason.endswith(", then resume")


def test_a_renamed_model_is_updated_in_place_with_its_new_name() -> None:
    entry = {
        **CHAT,
        "name": "chat2",
        "renamedFrom": "chat",
        "enableBatching": False,
        "keywordFiltering": [],
        "cache": {"type": "none"},
    }
    change = change_for(entry, live_model(enable_batching=False, keyword_filtering=(), caching=None))
    assert (change.action, change.reason, change.live_id) == (Action.UPDATE, "renamed from chat", "m-1")
    assert [(c.path, c.before, c.after) for c in change.attribute_changes] == [("name", "chat", "chat2")]
    assert change.before["name"] == "chat" and change.after["name"] == "chat2"


def test_a_new_model_is_created_with_its_declared_attributes() -> None:
    change = change_for({**CHAT, "cache": {"type": "standard"}}, None)
    assert change.action is Action.CREATE
    assert change.after == {
        "catalogModel": CHAT["catalogModel"],
        "provider": "aws",
        "region": "us-east-1",
        "gpuMemory": 48,
        "cache": {"type": "standard"},
        "state": "running",
    }


# -- after an apply ----------------------------------------------------------------------------------------------


def settled_after(
    tmp_path: Path, status: str | None, failed: frozenset[Address] = frozenset(), target: str | None = None
) -> tuple[Any, Any]:
    """Settle after an apply, on the run's clock, with the manifest's model just made (and put in ``status``):
    what settling found, the outputs' entry of the model, and how long it waited."""
    clock = ManualClock()
    sandbox = Sandbox(tmp_path / "sandbox.json", token="tok", clock=clock)

    async def run() -> tuple[Settled, Any]:
        client = CapellaClient(
            base_url=IN_PROCESS_BASE_URL, token=Secret("tok"), transport=sandbox.transport(), clock=clock
        )
        async with client:
            model_id = await client.create_model(sandbox.org_id, model_create_body(*spec_of(CHAT), {}))
            if status is not None:
                with sandbox.mutate() as state:
                    seconds = None if target is None else 60
                    lifecycle.begin(state.models[model_id], status, target, clock.now(), seconds)
            outputs = Outputs(tmp_path / "outputs.json", "json", org_id=sandbox.org_id)
            found = await settle_outputs(
                client, sandbox.org_id, models(CHAT), outputs, clock=clock, timeout=600, failed=failed
            )
            return found, json.loads((tmp_path / "outputs.json").read_text())["models"]["chat"]

    started = clock.now()
    found, recorded = asyncio.run(run())
    return found, (recorded, clock.now() - started)


def test_after_an_apply_a_deploying_model_is_waited_for_and_recorded_healthy(tmp_path: Path) -> None:
    found, (recorded, waited) = settled_after(tmp_path, None)
    assert found.unsettled == [] and recorded["status"] == "healthy" and waited >= 300


def test_a_model_whose_change_failed_is_not_waited_for_again_after_the_apply(tmp_path: Path) -> None:
    found, (recorded, waited) = settled_after(tmp_path, None, failed=frozenset({Address(Kind.MODEL, "chat")}))
    assert found.unsettled == [] and recorded["status"] == "deploying" and waited < 60


def test_a_managed_model_that_is_unhealthy_is_recorded_as_it_is_not_waited_for(tmp_path: Path) -> None:
    found, (recorded, waited) = settled_after(tmp_path, "unhealthy")
    assert found.unsettled == [] and found.warnings == []
    assert recorded["status"] == "unhealthy" and waited < 60


def test_after_an_apply_a_model_on_its_way_to_paused_is_waited_for_and_recorded_paused(tmp_path: Path) -> None:
    found, (recorded, waited) = settled_after(tmp_path, lifecycle.PAUSING, target=lifecycle.PAUSED)
    assert found.unsettled == [] and recorded["status"] == "paused" and 60 <= waited < 600


def test_after_an_apply_a_deployment_that_fails_is_reported_when_it_fails(tmp_path: Path) -> None:
    found, (recorded, waited) = settled_after(tmp_path, lifecycle.DEPLOYING, target=lifecycle.DEPLOY_FAILED)
    assert found.unsettled == ["model.chat: status became deployFailed"]
    assert recorded["status"] == "deploying" and waited < 600


def test_a_connection_string_that_cannot_be_read_is_left_out_and_the_reason_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": "no such model"})

    async def read() -> str | None:
        client = CapellaClient(
            base_url="https://api.example", token=Secret("tok"), transport=httpx.MockTransport(handler), max_attempts=1
        )
        async with client:
            return await connection_string(client, "org", live_model(id="m-9", connection_string=None))

    caplog.set_level(logging.WARNING, logger="capella_deploy.kinds.model")
    assert asyncio.run(read()) is None
    [record] = [r for r in caplog.records if r.name == "capella_deploy.kinds.model"]
    assert record.getMessage().startswith("could not read the connection string of model m-9: ")
    assert "404" in record.getMessage()


def test_an_entry_that_is_not_an_object_is_unreadable_and_says_so() -> None:
    with pytest.raises(LiveStateError, match=r"^a model entry is not an object$"):
        parse_model({"model": "m-1"})


def test_a_model_that_sets_a_cache_field_to_null_drops_the_defaults_value_of_it() -> None:
    spec, defaults = spec_of(
        {**CHAT, "cache": {"type": "semantic", "semantic": None}},
        cache={"type": "semantic", "semantic": {"dimensions": 384}},
    )
    assert model_attributes(spec, defaults)["cache"] == {"type": "semantic"}
