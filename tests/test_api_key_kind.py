"""The Model API key kind on its own: how a key is read, compared, planned, shown, exported and settled.

Pure functions and the kind's rules, fed live keys as the API reports them (``planning_support``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from capella_deploy.kinds.api_key import API_KEYS, LiveKey, export_entry, key_create_body, parse_key
from capella_deploy.kinds.base import Action, ExportNotes, ExportScope, Kind, PlanContext
from capella_deploy.live import LiveState
from capella_deploy.plan.planner import plan
from capella_deploy.plan.status import status_report
from tests.planning_support import NOW, live_key, live_model, manifest

CREATED = "2026-01-01T00:00:00Z"
CREATED_AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def raw_key(**fields: Any) -> dict[str, Any]:
    return {"keyId": "k-1", "name": "app", "region": "us-east-1", "audit": {"createdAt": CREATED}, **fields}


# -- reading a key -----------------------------------------------------------------------------------------------


def test_an_allowed_model_entry_missing_its_name_or_id_reads_as_what_it_has() -> None:
    key = parse_key(raw_key(allowedModels=[{"id": "m-1"}, {"name": "chat"}, {}]))
    assert key.allowed_models == (("m-1", "m-1"), ("", "chat"), ("", ""))


def test_a_key_without_an_expiry_has_no_lifetime_and_no_end_however_old() -> None:
    key = parse_key(raw_key(), now=CREATED_AT + timedelta(days=40))
    assert key.expiry_days is None and key.expires_at is None


def test_a_year_long_key_read_near_its_end_still_reads_as_the_year_it_was_given() -> None:
    # 365 days given, 360.5 gone: the API says 4.5 days remain.
    now = CREATED_AT + timedelta(days=360, hours=12)
    key = parse_key(raw_key(expiry=4.5), now=now)
    assert key.expiry_days == 365.0
    assert key.expires_at == CREATED_AT + timedelta(days=365)


def test_a_lifetime_in_whole_days_reads_as_an_integer_in_what_the_planner_compares() -> None:
    key = parse_key(raw_key(expiry=90.0))
    assert key.attributes["expiryDays"] == 90 and type(key.attributes["expiryDays"]) is int


# -- the create body ---------------------------------------------------------------------------------------------


def test_the_create_body_carries_a_description_only_when_the_manifest_gives_one() -> None:
    described = manifest(
        apiKeys=[{"name": "app", "expiryDays": 30, "allowedCIDRs": ["10.0.0.0/8"], "description": "for the web app"}]
    )
    bare = manifest(apiKeys=[{"name": "app", "expiryDays": 30, "allowedCIDRs": ["10.0.0.0/8"]}])
    assert key_create_body(described.apiKeys[0], described.defaults, {})["description"] == "for the web app"
    assert "description" not in key_create_body(bare.apiKeys[0], bare.defaults, {})


# -- which key of a name is kept, and why the others go --------------------------------------------------------


def test_a_newer_key_nobody_holds_the_token_of_is_described_as_newer_and_goes_as_an_orphan() -> None:
    held = live_key(id="k-held", created_at=NOW - timedelta(days=9))
    orphan = live_key(id="k-orphan", created_at=NOW - timedelta(days=1))
    result = plan(
        manifest(), LiveState("org", (live_model(),), (orphan, held)), now=NOW, held_tokens=frozenset({"k-held"})
    )
    [gone] = [c for c in result.pending if c.action is Action.DELETE]
    assert gone.live_id == "k-orphan" and gone.cause == "delete_because_orphan"
    kept, extras = API_KEYS.pick([orphan, held], _ctx(frozenset({"k-held"})))
    assert kept is held and [e.described for e in extras] == ["a newer live key k-orphan"]


def test_an_older_key_is_described_as_older_and_superseded_by_the_newest() -> None:
    old = live_key(id="k-old", created_at=NOW - timedelta(days=9))
    new = live_key(id="k-new", created_at=NOW - timedelta(days=1))
    kept, extras = API_KEYS.pick([new, old], _ctx(frozenset()))
    assert kept is new
    assert [(e.described, e.reason, e.cause) for e in extras] == [
        ("an older live key k-old", "superseded by a newer key", "delete_because_duplicate")
    ]


def _ctx(held: frozenset[str]) -> PlanContext:
    return PlanContext(manifest(), NOW, held_tokens=held)


# -- planning ----------------------------------------------------------------------------------------------------


def test_a_key_allowing_a_model_of_no_name_shows_it_by_id() -> None:
    doc = manifest(
        apiKeys=[{"name": "app", "expiryDays": 180, "allowedCIDRs": ["10.0.0.0/16"], "allowedModels": ["chat"]}]
    )
    key = live_key(allowed_models=(("m-gone", ""),))
    [change] = [
        c for c in plan(doc, LiveState("org", (live_model(),), (key,)), now=NOW).changes if c.kind is Kind.API_KEY
    ]
    assert change.action is Action.REPLACE_CREATE_FIRST
    assert change.before is not None and change.before["allowedModels"] == ["(unnamed) (m-gone)"]


def test_a_renamed_key_shows_both_names_and_replaces_its_key() -> None:
    doc = manifest(apiKeys=[{"name": "web", "renamedFrom": "app", "expiryDays": 180, "allowedCIDRs": ["10.0.0.0/16"]}])
    [change] = [
        c
        for c in plan(doc, LiveState("org", (live_model(),), (live_key(),)), now=NOW).changes
        if c.kind is Kind.API_KEY
    ]
    assert change.action is Action.REPLACE_CREATE_FIRST and change.cause == "replace_because_renamed"
    assert change.reason == "renamed from app; API keys cannot be edited"
    assert change.before is not None and change.after is not None
    assert change.before["name"] == "app" and change.after["name"] == "web"
    [name] = [d for d in change.attribute_changes if d.path == "name"]
    assert (name.before, name.after, name.forces_replace) == ("app", "web", True)
    assert change.renamed_from == "app"


def test_a_renamed_key_that_also_changes_names_what_else_changes() -> None:
    doc = manifest(apiKeys=[{"name": "web", "renamedFrom": "app", "expiryDays": 90, "allowedCIDRs": ["10.1.0.0/16"]}])
    [change] = [
        c
        for c in plan(doc, LiveState("org", (live_model(),), (live_key(),)), now=NOW).changes
        if c.kind is Kind.API_KEY
    ]
    assert change.reason == "renamed from app, with allowedCIDRs, expiryDays; API keys cannot be edited"


def test_a_changed_key_names_each_attribute_that_cannot_change_in_place() -> None:
    doc = manifest(apiKeys=[{"name": "app", "expiryDays": 90, "allowedCIDRs": ["10.1.0.0/16"]}])
    [change] = [
        c
        for c in plan(doc, LiveState("org", (live_model(),), (live_key(),)), now=NOW).changes
        if c.kind is Kind.API_KEY
    ]
    assert change.reason == "allowedCIDRs, expiryDays cannot change in place (API keys are immutable)"


# -- what a saved plan looks at ------------------------------------------------------------------------------------


def _digest(key: LiveKey, held: frozenset[str] = frozenset()) -> str:
    return LiveState("org", (), (key,)).digests(held)[f"apiKey.app[{key.id}]"]


def test_a_saved_plan_sees_a_key_now_allowing_another_model_of_the_same_name() -> None:
    before = live_key(allowed_models=(("m-1", "chat"),))
    after = live_key(allowed_models=(("m-2", "chat"),))
    assert _digest(before) != _digest(after)
    # A key for every model is one thing, whatever the listing calls it.
    assert _digest(live_key(allowed_models=(("*", "*"),))) != _digest(live_key(allowed_models=(("m-1", "*"),)))


def test_a_saved_plan_sees_whether_the_outputs_hold_a_keys_token() -> None:
    assert _digest(live_key(), frozenset()) != _digest(live_key(), frozenset({"k-1"}))


# -- status ---------------------------------------------------------------------------------------------------------


def test_status_shows_a_keys_region_creation_expiry_and_whether_the_manifest_declares_it() -> None:
    key = live_key(region="eu-west-1")
    stray = live_key(id="k-9", name="stray", expiry_days=None)
    report = status_report(LiveState("org", (), (key, stray)), manifest(), now=NOW, connections={})
    app, other = report.resources
    assert (app.name, app.live_id, app.region, app.state, app.declared) == ("app", "k-1", "eu-west-1", "active", True)
    assert app.created_at == NOW - timedelta(days=10) and app.expires_at == NOW + timedelta(days=170)
    assert (other.name, other.state, other.expires_at, other.declared) == ("stray", "active", None, False)


@pytest.mark.parametrize(("age", "state"), [(179, "active"), (180, "expired"), (181, "expired")])
def test_a_key_is_expired_from_the_moment_its_lifetime_is_over(age: int, state: str) -> None:
    key = live_key(created_at=NOW - timedelta(days=age))
    assert API_KEYS.status(key, NOW).state == state


# -- export ---------------------------------------------------------------------------------------------------------


def test_export_writes_a_keys_lifetime_cidrs_and_models_as_the_manifest_spells_them() -> None:
    key = live_key(
        description="web app",
        expiry_days=90.0,
        allowed_cidrs=("10.0.0.0/16", "192.168.0.0/24"),
        allowed_models=(("m-2", "embed"), ("m-1", "chat")),
    )
    notes = ExportNotes()
    entry = export_entry(key, {"m-1": "chat", "m-2": "embed"}, notes)
    assert entry == {
        "name": "app",
        "description": "web app",
        "region": "us-east-1",
        "expiryDays": 90,
        "allowedCIDRs": ["10.0.0.0/16", "192.168.0.0/24"],
        "allowedModels": ["chat", "embed"],
    }
    assert type(entry["expiryDays"]) is int and notes == ExportNotes()


def test_export_writes_a_key_for_every_model_as_a_star_and_leaves_out_what_is_unset() -> None:
    entry = export_entry(live_key(), {}, ExportNotes())
    assert entry == {
        "name": "app",
        "region": "us-east-1",
        "expiryDays": 180,
        "allowedCIDRs": ["10.0.0.0/16"],
        "allowedModels": ["*"],
    }


def test_export_leaves_out_a_key_allowing_a_model_outside_the_export_and_names_the_model() -> None:
    notes = ExportNotes()
    key = live_key(allowed_models=(("m-1", "chat"), ("m-2", "embed"), ("m-3", "")))
    assert export_entry(key, {"m-1": "chat"}, notes) is None
    assert notes.omitted == ["apiKey 'app': it allows models outside this export (embed, m-3)"]


def test_export_leaves_out_a_key_of_no_known_region() -> None:
    notes = ExportNotes()
    assert export_entry(live_key(region=None), {}, notes) is None
    assert notes.omitted == ["apiKey 'app': the API did not report its region"]


def test_export_leaves_out_a_key_the_manifest_could_not_declare_and_says_why() -> None:
    notes = ExportNotes()
    assert export_entry(live_key(allowed_cidrs=()), {}, notes) is None
    [why] = notes.omitted
    assert why.startswith("apiKey 'app': allowedCIDRs: ")


def test_export_takes_the_newest_key_of_a_name_in_scope_and_says_older_ones_share_it() -> None:
    keys = [
        live_key(id="k-old", created_at=NOW - timedelta(days=20), expiry_days=30),
        live_key(id="k-new", created_at=NOW - timedelta(days=2), expiry_days=60),
        live_key(id="k-eu", name="eu", region="eu-west-1"),
        live_key(id="k-ops", name="ops", region=None),
        live_key(id="k-z", name="zeta"),
    ]
    notes = ExportNotes()
    entries = API_KEYS.export(keys, ExportScope(region="us-east-1"), {}, notes)
    assert [(e["name"], e["expiryDays"]) for e in entries] == [("app", 60), ("zeta", 180)]
    assert notes.warnings == ["apiKey 'app': exported the newest key k-new; older keys share the name"]
    assert notes.omitted == []
    named = API_KEYS.export(keys, ExportScope(match="e*"), {}, ExportNotes())
    assert [(e["name"], e["region"]) for e in named] == [("eu", "eu-west-1")]
