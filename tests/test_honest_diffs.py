"""Honest diffs: in-place attributes the manifest leaves unset go back to the API's default, plans speak the
manifest's words, and a plan shows what apply would change in the outputs file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capella_deploy.kinds.base import Action
from capella_deploy.kinds.diff import attribute_changes
from capella_deploy.kinds.model import cache_view, caching_body, model_create_body, model_update_body
from capella_deploy.live import LiveState
from capella_deploy.manifest import Cache
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan
from capella_deploy.schemas import schema_text
from capella_deploy.views.plan import plan_json, render_markdown, render_plan
from tests.conftest import World
from tests.planning_support import CHAT, NOW, live_model, manifest

STANDARD = {"enableStandard": True, "defaultCache": "standard", "expiryTTL": 300}
URL = "https://m-1.ai.couchbase.com"


def model_change(result: Plan) -> Any:
    return next(c for c in result.changes if c.address == "model.chat")


def planned(models: list[dict[str, Any]], live: Any, **options: Any) -> Plan:
    return plan(manifest(models=models, apiKeys=[]), LiveState("org", (live,)), now=NOW, **options)


# -- 1. what the manifest leaves unset goes back to the API's default ---------------------------------------------


def test_in_place_attributes_removed_from_the_manifest_are_reset_to_the_apis_default() -> None:
    live = live_model(enable_batching=True, keyword_filtering=("secret",), caching=STANDARD)
    change = model_change(planned([CHAT], live))
    assert change.action is Action.UPDATE
    assert [(c.path, c.before, c.after, c.to_default) for c in change.attribute_changes] == [
        ("cache.conversational", None, False, True),  # what the PUT sends: no caching of either kind
        ("cache.type", "standard", "none", True),
        ("enableBatching", True, False, True),
        ("keywordFiltering", ["secret"], [], True),
    ]
    assert change.reason == "cache, enableBatching, keywordFiltering unset in the manifest: reset to the API's default"
    shown = click.unstyle(render_plan(planned([CHAT], live)))
    assert '~ keywordFiltering = ["secret"] -> (default: [])' in shown
    assert "~ enableBatching = true -> (default: false)" in shown
    assert "+ keywordFiltering = (default: [])" in render_markdown(planned([CHAT], live))
    attributes = plan_json(planned([CHAT], live))["resource_changes"][0]["change"]["attributes"]
    assert {a["path"]: a["to_default"] for a in attributes} == {
        "cache.conversational": True,
        "cache.type": True,
        "enableBatching": True,
        "keywordFiltering": True,
    }


def test_the_put_that_resets_names_the_apis_defaults_and_leaves_what_is_unmanaged() -> None:
    doc = manifest(models=[{**CHAT, "enableBatching": True}], apiKeys=[])
    assert model_update_body(doc.models[0], doc.defaults, {}) == {
        "name": "chat",
        "enableBatching": True,
        "keywordFiltering": [],
        "caching": {"enableStandard": False, "enableConversational": False},
    }
    by_hand = manifest(models=[{**CHAT, "keywordFiltering": ["x"], "unmanagedAttributes": ["keywordFiltering"]}])
    spec = by_hand.models[0]
    assert "keywordFiltering" not in model_update_body(spec, by_hand.defaults, {})
    # Unmanaged is Terraform's ignore_changes: what the manifest sets is sent once, when the model is made.
    assert model_create_body(spec, by_hand.defaults, {})["keywordFiltering"] == ["x"]


def test_a_model_made_without_them_matches_a_manifest_that_leaves_them_unset_or_writes_the_defaults() -> None:
    assert not planned([CHAT], live_model()).has_changes
    explicit = {**CHAT, "enableBatching": False, "keywordFiltering": [], "cache": {"type": "none"}}
    assert not planned([explicit], live_model()).has_changes
    # What a reset PUT leaves behind reads as the default too.
    reset = live_model(enable_batching=False, keyword_filtering=(), caching=caching_body(Cache(type="none")))
    assert not planned([CHAT], reset).has_changes


def test_unmanaged_attributes_are_left_as_they_are_per_model_or_by_default() -> None:
    live = live_model(enable_batching=True, keyword_filtering=("secret",), caching=STANDARD)
    every = ["enableBatching", "keywordFiltering", "cache"]
    assert not planned([{**CHAT, "unmanagedAttributes": every}], live).has_changes
    # A declared value is not compared either: the attribute is managed by hand once the model exists.
    declared = {**CHAT, "keywordFiltering": ["other"], "unmanagedAttributes": every}
    assert not planned([declared], live).has_changes

    by_default = manifest(models=[CHAT], apiKeys=[], defaults={"region": "us-east-1", "unmanagedAttributes": every})
    assert not plan(by_default, LiveState("org", (live,)), now=NOW).has_changes
    # A model's own list replaces the defaults' list.
    own = manifest(
        models=[{**CHAT, "unmanagedAttributes": ["cache"]}],
        apiKeys=[],
        defaults={"region": "us-east-1", "unmanagedAttributes": every},
    )
    change = model_change(plan(own, LiveState("org", (live,)), now=NOW))
    assert [c.path for c in change.attribute_changes] == ["enableBatching", "keywordFiltering"]


def test_unmanaged_attributes_name_only_in_place_attributes(tmp_path: Path) -> None:
    from capella_deploy.manifest import ManifestError, load_manifest

    path = tmp_path / "m.yaml"
    path.write_text(
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\nmodels:\n"
        "  - {name: chat, catalogModel: x/y, gpuMemory: 48, unmanagedAttributes: [caching]}\n"
    )
    with pytest.raises(ManifestError) as raised:
        load_manifest([path], environ={})
    assert "m.yaml:4: models[0].unmanagedAttributes[0]: 'caching' is not allowed" in str(raised.value)
    assert "'enableBatching', 'keywordFiltering' or 'cache'" in str(raised.value)


# -- 2. the manifest's words ------------------------------------------------------------------------------------------

caches = st.builds(
    Cache,
    type=st.sampled_from(["standard", "semantic", "none"]),
    threshold=st.none() | st.sampled_from([0.5, 0.85]),
    expirySeconds=st.none() | st.sampled_from([60, 600]),
    conversational=st.none() | st.booleans(),
    semantic=st.none() | st.fixed_dictionaries({}, optional={"dimensions": st.sampled_from([512, 1024])}),
)
live_caching = st.fixed_dictionaries(
    {},
    optional={
        "enableStandard": st.booleans(),
        "enableConversational": st.booleans(),
        "defaultCache": st.sampled_from(["standard", "semantic"]),
        "expiryTTL": st.sampled_from([60, 600]),
        "semantic": st.fixed_dictionaries(
            {}, optional={"scoreThreshold": st.sampled_from([0.5, 0.85]), "dimensions": st.sampled_from([512, 1024])}
        ),
    },
)


@given(caches, live_caching)
def test_a_cache_compared_in_the_manifests_words_differs_exactly_when_its_request_body_does(
    cache: Cache, live: dict[str, Any]
) -> None:
    body = caching_body(cache)
    in_api_words = attribute_changes({"caching": live}, {"caching": body})
    in_manifest_words = attribute_changes({"cache": cache_view(live)}, {"cache": cache_view(body)})
    assert bool(in_api_words) == bool(in_manifest_words)
    assert all(c.path.startswith("cache.") for c in in_manifest_words)


def test_plans_name_cache_attributes_as_the_manifest_writes_them() -> None:
    semantic = {"type": "semantic", "threshold": 0.9, "expirySeconds": 600, "conversational": True}
    live = live_model(caching={**STANDARD, "semantic": {"scoreThreshold": 0.7}, "enableConversational": False})
    result = planned([{**CHAT, "cache": semantic}], live)
    change = model_change(result)
    assert [(c.path, c.before, c.after) for c in change.attribute_changes] == [
        ("cache.conversational", False, True),
        ("cache.expirySeconds", 300, 600),
        ("cache.threshold", 0.7, 0.9),
        ("cache.type", "standard", "semantic"),
    ]
    assert change.reason == "in-place change of cache"
    doc = plan_json(result)
    assert doc["format_version"] == "3.0"
    assert doc["resource_changes"][0]["change"]["after"]["cache"] == semantic
    assert "caching" not in json.dumps(doc)


# -- 3. changes to outputs --------------------------------------------------------------------------------------------


def recorded(**entry: Any) -> dict[str, Any]:
    return {"version": 1, "organizationId": "org", "models": {"chat": entry}, "apiKeys": {}}


def test_a_routing_change_alone_is_a_change_to_outputs() -> None:
    routed = {**CHAT, "routing": {"strategy": "least-latency", "maxRetries": 2}}
    outputs = recorded(connectionString=URL, headers={"X-cb-routing-strategy": "round-robin"})
    result = planned([routed], live_model(), outputs=outputs)
    assert result.pending == () and result.has_changes
    assert [(o.path, o.before, o.after) for _, o in result.output_changes] == [
        ("headers.X-cb-max-retries", None, "2"),
        ("headers.X-cb-routing-strategy", "round-robin", "least-latency"),
    ]
    shown = click.unstyle(render_plan(result))
    assert "No changes to resources" in shown and "Changes to outputs" in shown
    assert '~ headers.X-cb-routing-strategy = "round-robin" -> "least-latency"' in shown
    assert '+ headers.X-cb-max-retries = "2"' in shown
    assert "Plan: 2 output value(s) to change" in shown
    markdown = render_markdown(result)
    assert (
        "#### Changes to outputs" in markdown and "| `model.chat` | `headers.X-cb-max-retries` | (none) |" in markdown
    )
    doc = plan_json(result)
    assert doc["output_changes"][1] == {
        "address": "model.chat",
        "path": "headers.X-cb-routing-strategy",
        "before": "round-robin",
        "after": "least-latency",
        "known_after_apply": False,
    }
    # The same outputs, already written: nothing to do.
    written = recorded(
        connectionString=URL, headers={"X-cb-routing-strategy": "least-latency", "X-cb-max-retries": "2"}
    )
    assert not planned([routed], live_model(), outputs=written).has_changes


def test_a_model_made_anew_gets_a_connection_string_known_after_apply() -> None:
    outputs = recorded(connectionString=URL, headers={})
    replaced = planned([{**CHAT, "gpuMemory": 24}], live_model(), outputs=outputs)
    assert model_change(replaced).action is Action.REPLACE
    [(_, url)] = replaced.output_changes
    assert (url.path, url.before, url.after, url.known_after_apply) == ("connectionString", URL, None, True)
    assert f'~ connectionString = "{URL}" -> (known after apply)' in click.unstyle(render_plan(replaced))
    # Without an outputs file, a new model still gets one.
    created = plan(manifest(models=[CHAT], apiKeys=[]), LiveState("org"), now=NOW)
    assert [(o.path, o.known_after_apply) for _, o in created.output_changes] == [("connectionString", True)]
    assert "+ connectionString = (known after apply)" in click.unstyle(render_plan(created))


def test_outputs_are_compared_only_with_an_outputs_file_that_exists() -> None:
    routed = {**CHAT, "routing": {"strategy": "least-latency"}}
    assert not planned([routed], live_model(), outputs=None).has_changes
    # A file that lacks the model gets its entry; one that holds another connection string gets the live one.
    missing = planned([routed], live_model(), outputs={"models": {}, "apiKeys": {}})
    assert [(o.path, o.after) for _, o in missing.output_changes] == [
        ("connectionString", URL),
        ("headers.X-cb-routing-strategy", "least-latency"),
    ]
    moved = planned([CHAT], live_model(), outputs=recorded(connectionString="https://old.example", headers={}))
    assert [(o.path, o.before, o.after) for _, o in moved.output_changes] == [
        ("connectionString", "https://old.example", URL)
    ]


# -- end to end, against the in-process sandbox -------------------------------------------------------------------

MANIFEST = """\
apiVersion: capella-deploy/v1
defaults:
  region: us-east-1
  routing: {{strategy: {strategy}}}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
{extra}"""
EXTRA = "    enableBatching: true\n    keywordFiltering: [secret]\n    cache: {type: standard, expirySeconds: 300}\n"


def write(world: World, strategy: str = "round-robin", extra: str = EXTRA) -> str:
    return str(world.write("capella.yaml", MANIFEST.format(strategy=strategy, extra=extra)))


def options(world: World) -> dict[str, Any]:
    return next(iter(world.sandbox.world().models.values())).options


def test_removing_attributes_from_the_manifest_resets_them_in_the_organization(world: World) -> None:
    assert world.cli("apply", "-f", write(world), "--auto-approve").exit_code == 0
    assert options(world)["keywordFiltering"] == ["secret"]
    bare = write(world, extra="")

    planned = world.cli("plan", "-f", bare, "--detailed-exitcode", "--no-color")
    assert planned.exit_code == 2, planned.output
    assert '~ keywordFiltering = ["secret"] -> (default: [])' in planned.stdout
    assert "~ enableBatching = true -> (default: false)" in planned.stdout
    assert '~ cache.type = "standard" -> (default: "none")' in planned.stdout
    drift = world.cli("drift", "-f", bare, "--no-color")
    assert drift.exit_code == 2 and 'keywordFiltering: live ["secret"], manifest unset (API default [])' in drift.stdout

    assert world.cli("apply", "-f", bare, "--auto-approve").exit_code == 0
    assert options(world)["keywordFiltering"] == [] and options(world)["enableBatching"] is False
    assert options(world)["caching"] == {"enableStandard": False, "enableConversational": False}
    assert world.cli("plan", "-f", bare, "--detailed-exitcode").exit_code == 0
    assert world.cli("drift", "-f", bare).exit_code == 0


def test_a_routing_change_is_planned_and_applied_to_the_outputs(world: World) -> None:
    assert world.cli("apply", "-f", write(world), "--auto-approve").exit_code == 0
    headers = json.loads(world.outputs.read_text())["models"]["chat"]["headers"]
    assert headers["X-cb-routing-strategy"] == "round-robin"
    routed = write(world, strategy="least-latency")
    outputs = ("--outputs", str(world.outputs))

    planned = world.cli("plan", "-f", routed, *outputs, "--detailed-exitcode", "--no-color")
    assert planned.exit_code == 2, planned.output
    assert "No changes to resources" in planned.stdout
    assert '~ headers.X-cb-routing-strategy = "round-robin" -> "least-latency"' in planned.stdout
    saved = world.root / "routing.plan"
    assert world.cli("plan", "-f", routed, *outputs, "-out", str(saved)).exit_code == 0
    shown = json.loads(world.run("show", str(saved), "--json").stdout)
    jsonschema.validate(shown, json.loads(schema_text("plan")))
    jsonschema.validate(json.loads(saved.read_text()), json.loads(schema_text("planfile")))
    assert [o["path"] for o in shown["output_changes"]] == ["headers.X-cb-routing-strategy"]

    applied = world.cli("apply", str(saved))
    assert applied.exit_code == 0, applied.output
    headers = json.loads(world.outputs.read_text())["models"]["chat"]["headers"]
    assert headers["X-cb-routing-strategy"] == "least-latency"
    again = world.cli("plan", "-f", routed, *outputs, "--detailed-exitcode", "--no-color")
    assert again.exit_code == 0 and "No changes." in again.stdout


def test_drift_reads_ignore_patterns_in_the_apis_words_with_a_warning(world: World) -> None:
    assert world.cli("apply", "-f", write(world), "--auto-approve").exit_code == 0
    longer = write(world, extra=EXTRA.replace("300", "600"))
    assert world.cli("drift", "-f", longer).exit_code == 2
    result = world.cli("drift", "-f", longer, "--ignore", "model.*.caching.expiryTTL")
    assert result.exit_code == 0, result.output
    assert "write 'model.*.cache.expirySeconds'" in result.stderr
    assert "matches no resource" not in result.stderr
    assert world.cli("drift", "-f", longer, "--ignore", "model.*.cache.expirySeconds").stderr == ""
