"""The rules behind scope and renamedFrom, pure: name patterns, manifest checks, the planner, clone and the
explanation of a stale plan."""

from __future__ import annotations

import fnmatch
import itertools
import random
from dataclasses import replace
from pathlib import Path

import pytest

from capella_deploy.gitops.clone import clone_manifest
from capella_deploy.kinds.base import Action, Kind
from capella_deploy.live import LiveState
from capella_deploy.manifest import Manifest, ManifestError, load_manifest
from capella_deploy.manifest.patterns import example_outside, matches_some_name
from capella_deploy.plan.planfile import what_changed
from capella_deploy.plan.planner import plan, plan_destroy
from tests.planning_support import APP, CHAT, NOW, live_key, live_model, manifest

# -- patterns -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "within", "outside"),
    [
        ("team-a-tmp-*", ["team-a-*"], None),
        ("team-a-*", ["team-a-*"], None),
        ("[ab]-*", ["a-*", "b-*"], None),
        ("*", ["*x"], "a"),
        ("team-*", ["team-a-*"], "team-"),
        ("team-a-*", ["team-a-?"], "team-a-"),
        ("*-tmp", ["team-a-*"], "a-tmp"),
        ("x", ["[!a]"], None),
        ("chat", [], "chat"),
    ],
)
def test_a_pattern_inside_others_or_the_shortest_name_outside(pattern: str, within: list[str], outside: str) -> None:
    assert example_outside(pattern, within) == outside


def test_pattern_containment_agrees_with_fnmatch_on_every_short_name() -> None:
    """Random small globs: a name given as outside is matched by the one and none of the others, and when none is
    given, no name of up to four characters over their alphabet is outside."""
    pieces = ["a", "b", "-", "*", "?", "[ab]", "[!a]"]
    rng = random.Random(13)
    names = ["".join(chars) for size in range(1, 5) for chars in itertools.product("ab-c", repeat=size)]
    names = [n for n in names if n[0].isalnum()]
    for _ in range(300):
        pattern = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))
        within = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 2))]
        found = example_outside(pattern, within)
        if found is not None:
            assert fnmatch.fnmatchcase(found, pattern), (pattern, within, found)
            assert not any(fnmatch.fnmatchcase(found, p) for p in within), (pattern, within, found)
        else:
            stray = [
                n
                for n in names
                if fnmatch.fnmatchcase(n, pattern) and not any(fnmatch.fnmatchcase(n, p) for p in within)
            ]
            assert not stray, (pattern, within, stray)


def test_a_pattern_no_declarable_name_matches_is_told_apart() -> None:
    assert matches_some_name("team-*") and matches_some_name("[a-c]?")
    assert not matches_some_name("-team") and not matches_some_name("a b*")


# -- manifest checks ------------------------------------------------------------------------------------------


def issues(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "m.yaml"
    path.write_text("apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\n" + text)
    with pytest.raises(ManifestError) as caught:
        load_manifest([path], environ={})
    return [f"{i.line}: {i.path}: {i.message}" for i in caught.value.issues]


MODEL = "catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 24"


def test_renamed_from_must_name_a_name_the_manifest_no_longer_declares_once(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        "models:\n"
        f"  - {{name: a, renamedFrom: a, {MODEL}}}\n"
        f"  - {{name: b, renamedFrom: a, {MODEL}}}\n"
        f"  - {{name: c, renamedFrom: old, {MODEL}}}\n"
        f"  - {{name: d, renamedFrom: old, {MODEL}}}\n"
        "apiKeys:\n"
        "  - {name: k, allowedCIDRs: [10.0.0.0/8], allowedModels: [old]}\n",
    )
    assert found == [
        "4: models[0].renamedFrom: 'a' is this entry's own name; remove renamedFrom",
        "5: models[1].renamedFrom: 'a' is the name of models[0], which the manifest still declares; a resource is "
        "renamed from a name the manifest no longer uses",
        "7: models[3].renamedFrom: 'old' is already the renamedFrom of models[2]",
        "9: apiKeys[0].allowedModels[0]: model 'old' is renamed to 'c' (renamedFrom); name 'c'",
    ]


def test_scope_takes_one_pattern_or_several_and_refuses_a_pattern_no_name_matches(tmp_path: Path) -> None:
    path = tmp_path / "one.yaml"
    path.write_text(
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\nscope: {match: 'team-a-*'}\n"
        f"models:\n  - {{name: team-a-chat, {MODEL}}}\n"
    )
    loaded = load_manifest([path], environ={})
    assert loaded.scope is not None and loaded.scope.patterns == ("team-a-*",)
    assert loaded.scope.covers("team-a-x") and not loaded.scope.covers("team-b-x")
    assert issues(tmp_path, "scope: {match: [team-a-*, '-x']}\n") == [
        "3: scope.match[1]: '-x' matches no name a manifest can declare (a letter or digit, then letters, digits, "
        "'.', '_' and '-')",
    ]
    assert issues(tmp_path, "scope: {match: 'a b'}\n") == [
        "3: scope.match[0]: 'a b' is not valid: an fnmatch pattern over names: letters, digits, '.', '_', '-' and "
        "* ? [...], e.g. team-a-*",
    ]


def test_renamed_from_outside_the_scope_is_an_error(tmp_path: Path) -> None:
    found = issues(
        tmp_path, f"scope: {{match: [team-a-*]}}\nmodels:\n  - {{name: team-a-new, renamedFrom: old, {MODEL}}}\n"
    )
    assert found == [
        "5: models[0].renamedFrom: 'old' is outside the manifest's scope (team-a-*), so no plan of this manifest "
        "sees the resource to rename; widen scope.match"
    ]


# -- the planner ----------------------------------------------------------------------------------------------


def renamed_chat(**fields: object) -> dict[str, object]:
    return {**CHAT, "name": "assistant", "renamedFrom": "chat", **fields}


def test_a_rename_with_a_change_that_cannot_be_made_in_place_replaces_under_the_new_name() -> None:
    result = plan(
        manifest(models=[renamed_chat(gpuMemory=192)]), LiveState("org", (live_model(),), (live_key(),)), now=NOW
    )
    change = next(c for c in result.changes if c.kind is Kind.MODEL)
    assert (change.name, change.action, change.live_id, change.renamed_from) == (
        "assistant",
        Action.REPLACE,
        "m-1",
        "chat",
    )
    assert [(d.path, d.before, d.after) for d in change.attribute_changes] == [
        ("name", "chat", "assistant"),
        ("gpuMemory", 48, 192),
    ]
    assert result.unmanaged == ()


def test_a_rename_rides_with_a_pause_and_an_in_place_change() -> None:
    doc = manifest(models=[renamed_chat(state="paused", enableBatching=True)])
    change = next(
        c for c in plan(doc, LiveState("org", (live_model(),), (live_key(),)), now=NOW).changes if c.kind is Kind.MODEL
    )
    assert change.action is Action.UPDATE
    assert change.reason == "renamed from chat; in-place change of enableBatching, then pause"


def test_a_key_renamed_with_other_changes_is_one_create_first_replacement() -> None:
    doc = manifest(apiKeys=[{**APP, "name": "app-2", "renamedFrom": "app", "allowedCIDRs": ["10.1.0.0/16"]}])
    result = plan(doc, LiveState("org", (live_model(),), (live_key(),)), now=NOW)
    change = next(c for c in result.changes if c.kind is Kind.API_KEY)
    assert (change.action, change.live_id, change.cause) == (
        Action.REPLACE_CREATE_FIRST,
        "k-1",
        "replace_because_renamed",
    )
    assert change.reason == "renamed from app, with allowedCIDRs; API keys cannot be edited"
    assert [d.path for d in change.attribute_changes] == ["name", "allowedCIDRs"]


def test_a_rename_with_both_names_live_is_refused_and_says_what_to_do() -> None:
    both = LiveState("org", (live_model(), live_model(id="m-2", name="assistant")), (live_key(),))
    result = plan(manifest(models=[renamed_chat()]), both, now=NOW)
    assert result.errors == (
        "model.assistant: renamedFrom: chat, but live resources of both names exist (models chat and assistant), "
        "so the rename cannot be planned: delete the one not wanted, or remove renamedFrom to manage the one of "
        "the new name as it is",
    )


def test_a_rename_from_a_name_nothing_live_has_creates_and_says_when_renamed_from_can_go() -> None:
    result = plan(manifest(models=[renamed_chat()]), LiveState("org", (), (live_key(),)), now=NOW)
    assert [(c.name, c.action) for c in result.pending] == [("assistant", Action.CREATE)]
    assert result.errors == ()
    assert (
        "model.assistant: renamedFrom: chat names nothing live here, so it is created; renamedFrom can go once "
        "every organization this manifest deploys to has the new name"
    ) in result.warnings


def test_destroy_takes_a_resource_not_yet_renamed_by_its_former_name() -> None:
    result = plan_destroy(manifest(models=[renamed_chat()]), LiveState("org", (live_model(),), (live_key(),)))
    assert sorted((c.kind.value, c.name, c.live_id) for c in result.changes) == [
        ("apiKey", "app", "k-1"),
        ("model", "chat", "m-1"),
    ]


def test_scope_leaves_the_rest_of_the_organization_out_of_the_plan_and_its_fingerprint() -> None:
    doc = manifest(scope={"match": ["chat", "app", "tmp-*"]}, prune={"match": "tmp-*"})
    models = (live_model(), live_model(id="m-9", name="team-b"), live_model(id="m-7", name="tmp-1"))
    whole = LiveState("org", models, (live_key(),))
    result = plan(doc, whole, now=NOW)
    assert [(c.name, c.action) for c in result.pending] == [("tmp-1", Action.DELETE)] and result.unmanaged == ()
    assert set(result.live_digests) == {"model.chat[m-1]", "model.tmp-1[m-7]", "apiKey.app[k-1]"}
    more = replace(
        whole, models=(*models, live_model(id="m-8", name="x")), keys=(live_key(), live_key(id="k-9", name="y"))
    )
    assert plan(doc, more, now=NOW).live_fingerprint == result.live_fingerprint
    unscoped = doc.model_copy(update={"scope": None, "prune": None})
    assert plan(unscoped, more, now=NOW).live_fingerprint != plan(unscoped, whole, now=NOW).live_fingerprint
    assert plan_destroy(doc, more).live_fingerprint == plan_destroy(doc, whole).live_fingerprint


def test_a_stale_plan_names_what_appeared_what_went_and_what_changed() -> None:
    live = LiveState("org", (live_model(), live_model(id="m-2", name="other")), (live_key(),))
    saved = plan(manifest(), live, now=NOW)
    now = LiveState("org", (live_model(gpu_memory=192),), (live_key(), live_key(id="k-2", name="new-key")))
    fresh = plan(manifest(), now, now=NOW)
    assert what_changed(saved, fresh) == [
        "apiKey.new-key[k-2] appeared",
        "model.other[m-2] is gone",
        "model.chat[m-1] changed: gpuMemory 48 -> 192; the plan would now replace it (gpuMemory cannot change in "
        "place), not no-op it",
    ]


# -- clone --------------------------------------------------------------------------------------------------


def test_a_clone_owns_its_own_names_and_renames_from_its_own_former_names() -> None:
    source = {
        "apiVersion": "capella-deploy/v1",
        "defaults": {"region": "us-east-1"},
        "scope": {"match": ["team-a-*"]},
        "models": [{**CHAT, "name": "team-a-chat", "renamedFrom": "team-a-old"}],
    }
    result = clone_manifest(source, region="eu-west-1", name_suffix="-eu")
    cloned = Manifest.model_validate(result.document)
    assert cloned.scope is not None and cloned.scope.patterns == ("team-a-*-eu",)
    assert [(m.name, m.renamedFrom) for m in cloned.models] == [("team-a-chat-eu", "team-a-old-eu")]
