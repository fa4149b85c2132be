"""The AI provider kind on its own and in apply: how a provider is read, shown and exported, and what apply does to
the organization and the outputs when it deletes, replaces, renames, updates or cannot create one.

Apply runs in-process against the sandbox on a clock that moves only when the run waits.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from capella_deploy.kinds.base import CREATE_ATTEMPTS, Action, ExportNotes, ExportScope, LiveStateError, PlanContext
from capella_deploy.kinds.provider import PROVIDERS, LiveProvider, export_entry, parse_provider
from capella_deploy.live import LiveState
from capella_deploy.manifest import Manifest
from capella_deploy.manifest.credentials import check_credentials
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan
from capella_deploy.plan.status import status_report
from capella_deploy.run.planning import credential_errors
from capella_deploy.run.settle import settle_outputs
from capella_deploy.sandbox import Faults, RouteFault
from capella_deploy.sandbox.state import Audit, ProviderRecord
from tests.planning_support import NOW
from tests.test_applier_run import World, by_address
from tests.test_planner_providers import live_docs, live_provider

PROVIDERS_PATH = "/aiServices/providers"
PROVIDER_POSTS = "POST /v4/organizations/*/aiServices/providers"
OPENAI = {"name": "openai", "type": "openAI", "credentials": {"apiKey": {"env": "OPENAI_API_KEY"}}}
DOCS = {
    "name": "docs",
    "type": "awsS3",
    "awsRegion": "us-east-1",
    "bucket": "team-docs",
    "credentials": {"accessKeyId": {"env": "AWS_ACCESS_KEY_ID"}, "secretAccessKey": {"env": "AWS_SECRET"}},
}


# -- reading -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [True, "", None])
def test_a_provider_entry_without_a_usable_id_is_unreadable(bad_id: Any) -> None:
    with pytest.raises(LiveStateError, match="a provider entry has no id or name"):
        parse_provider({"id": bad_id, "name": "openai", "type": "openAI"})


def test_a_provider_entry_without_a_type_is_unreadable_and_says_which() -> None:
    with pytest.raises(LiveStateError, match=r"^provider 'openai' has no type$"):
        parse_provider({"id": "p-1", "name": "openai"})


def test_a_providers_creation_time_is_read_from_its_audit() -> None:
    raw = {"id": "p-1", "name": "openai", "type": "openAI", "audit": {"createdAt": "2026-03-04T05:06:07Z"}}
    assert parse_provider(raw).created_at == datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


# -- status --------------------------------------------------------------------------------------------------------


def test_status_shows_a_provider_as_active_with_its_creation_time_and_aws_region() -> None:
    report = status_report(LiveState("org", providers=(live_docs(),)), None, now=NOW, connections={})
    [docs] = report.resources
    assert (docs.kind, docs.name, docs.state, docs.region) == ("provider", "docs", "active", "us-east-1")
    assert docs.created_at == NOW - timedelta(days=3)


# -- export --------------------------------------------------------------------------------------------------------


def test_export_leaves_out_a_provider_of_a_type_it_does_not_know() -> None:
    notes = ExportNotes()
    assert export_entry(live_provider(type="vertexAI"), notes) is None
    assert notes.omitted == ["provider 'openai': its type 'vertexAI' is not one this tool knows"]


def test_export_leaves_out_an_s3_provider_whose_bucket_or_region_the_api_did_not_report() -> None:
    # Without them the exported manifest would not load: an awsS3 provider requires both.
    notes = ExportNotes()
    assert export_entry(live_docs(bucket=None), notes) is None
    assert export_entry(live_docs(aws_region=None, bucket=""), notes) is None
    assert notes.omitted == [
        "provider 'docs': the API did not report its bucket",
        "provider 'docs': the API did not report its awsRegion or bucket",
    ]


def test_export_leaves_out_a_provider_the_manifest_could_not_declare_and_says_why() -> None:
    notes = ExportNotes()
    assert export_entry(live_docs(bucket="Not A Bucket"), notes) is None
    [why] = notes.omitted
    assert why.startswith("provider 'docs': bucket: ")


def test_export_names_every_variable_a_providers_credentials_are_read_from() -> None:
    notes = ExportNotes()
    entry = export_entry(live_docs(), notes)
    assert entry is not None and entry["credentials"] == {
        "accessKeyId": {"env": "DOCS_ACCESS_KEY_ID"},
        "secretAccessKey": {"env": "DOCS_SECRET_ACCESS_KEY"},
    }
    [note] = notes.omitted
    assert "reads them from DOCS_ACCESS_KEY_ID, DOCS_SECRET_ACCESS_KEY, which apply needs" in note


def test_export_takes_the_oldest_provider_of_a_name_and_names_the_others() -> None:
    providers = [
        live_provider(id="p-new", created_at=NOW - timedelta(days=1)),
        live_provider(id="p-undated", created_at=None),
        live_provider(id="p-old", created_at=NOW - timedelta(days=9)),
        live_docs(),
        live_docs(id="p-3", created_at=NOW - timedelta(days=1)),
        live_provider(id="p-solo", name="solo"),
    ]
    notes = ExportNotes()
    exported: dict[str, str] = {}
    entries = PROVIDERS.export(providers, ExportScope(region="eu-west-1"), exported, notes)
    assert [e["name"] for e in entries] == ["docs", "openai", "solo"]
    assert notes.warnings == [
        "provider 'docs': exported the oldest, p-2; other live providers share the name (p-3)",
        "provider 'openai': exported the oldest, p-old; other live providers share the name (p-new, p-undated)",
    ]
    # Later kinds find what was exported by id.
    assert exported == {"p-old": "openai", "p-2": "docs", "p-solo": "solo"}
    named = PROVIDERS.export(providers, ExportScope(match="d*"), {}, ExportNotes())
    assert [e["name"] for e in named] == ["docs"]


# -- apply ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-kind-test-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAKINDTEST")
    monkeypatch.setenv("AWS_SECRET", "kind/test/secret")
    return World(tmp_path)


def declared(*providers: dict[str, Any]) -> Manifest:
    return Manifest.model_validate({"apiVersion": "capella-deploy/v1", "providers": list(providers)})


def outputs(world: World) -> dict[str, Any]:
    path = world.tmp_path / "outputs.json"
    return dict(json.loads(path.read_text()).get("providers", {})) if path.exists() else {}


def live_ids(world: World) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in world.sandbox.world().providers.values():
        found.setdefault(record.name, []).append(record.id)
    return found


def provider_writes(world: World) -> list[str]:
    return [method for method, path in world.wire.requests if PROVIDERS_PATH in path and method != "GET"]


def test_a_renamed_provider_is_made_under_its_new_name_then_the_old_one_goes(world: World) -> None:
    world.apply(declared(OPENAI))
    [old] = live_ids(world)["openai"]
    run = world.apply(declared({**OPENAI, "name": "llm", "renamedFrom": "openai"}))
    [change] = run.plan.pending
    assert change.action is Action.REPLACE_CREATE_FIRST
    [new] = live_ids(world)["llm"]
    assert list(live_ids(world)) == ["llm"] and new != old
    assert by_address(run)["provider.llm"].detail == f"created {new}"
    assert list(outputs(world)) == ["llm"] and outputs(world)["llm"]["id"] == new


def test_deleting_a_duplicate_leaves_the_record_of_the_provider_that_stays(world: World) -> None:
    world.apply(declared(OPENAI))
    [kept] = live_ids(world)["openai"]
    with world.sandbox.mutate() as state:
        state.providers["p-dup"] = ProviderRecord(
            "p-dup", "openai", "openAI", {}, {"apiKey": "0" * 64}, Audit.new("someone", world.sandbox.now())
        )
    run = world.apply(declared(OPENAI))
    [delete] = run.plan.pending
    assert delete.action is Action.DELETE and delete.live_id == "p-dup"
    assert by_address(run)[delete.address].detail == "deleted"
    assert live_ids(world) == {"openai": [kept]}
    assert outputs(world)["openai"]["id"] == kept


def test_a_replacement_whose_create_fails_leaves_no_record_of_the_provider_it_deleted(
    tmp_path: Path, world: World
) -> None:
    world.apply(declared(OPENAI))
    [old] = live_ids(world)["openai"]
    world.sandbox.faults = Faults(routes=[RouteFault(match=PROVIDER_POSTS, error_rate=1.0, error_status=503)])
    run = world.apply(declared({**OPENAI, "type": "awsBedrock", "credentials": OPENAI_AS_BEDROCK}))
    [change] = run.plan.pending
    assert change.action is Action.REPLACE
    result = by_address(run)["provider.openai"]
    assert not result.ok and f"create did not go through after {CREATE_ATTEMPTS} attempts" in result.detail
    assert ("provider.openai", f"deleted {old} to replace it") in run.progress
    retries = [m for a, m in run.progress if m.startswith("create unclear")]
    assert retries == ["create unclear (AmbiguousCreate); nothing was made, retrying"] * (CREATE_ATTEMPTS - 1)
    assert provider_writes(world)[-CREATE_ATTEMPTS - 1 :] == ["DELETE"] + ["POST"] * CREATE_ATTEMPTS
    assert live_ids(world) == {} and outputs(world) == {}


OPENAI_AS_BEDROCK = {
    "accessKeyId": {"env": "AWS_ACCESS_KEY_ID"},
    "secretAccessKey": {"env": "AWS_SECRET"},
}


def test_an_update_says_whether_it_sent_the_credentials_and_records_the_version_only_then(world: World) -> None:
    world.apply(declared({**DOCS, "credentialsVersion": 1}))
    [docs] = live_ids(world)["docs"]
    moved = world.apply(declared({**DOCS, "credentialsVersion": 1, "bucket": "other-docs"}))
    assert by_address(moved)["provider.docs"].detail == "updated"
    assert outputs(world)["docs"] == {"id": docs, "type": "awsS3", "credentialsVersion": 1}

    # Made by hand: the outputs hold no version for it, and an update sending no credentials records none.
    (world.tmp_path / "outputs.json").unlink()
    again = world.apply(declared({**DOCS, "credentialsVersion": 1, "bucket": "third-docs"}))
    assert by_address(again)["provider.docs"].detail == "updated"
    assert outputs(world)["docs"] == {"id": docs, "type": "awsS3"}

    planned = world.plan(
        declared({**DOCS, "credentialsVersion": 1, "bucket": "third-docs"}), force_replace=frozenset({"provider.docs"})
    )
    rolled = world.apply(declared({**DOCS, "credentialsVersion": 1, "bucket": "third-docs"}), planned)
    assert by_address(rolled)["provider.docs"].detail == "updated; credentials sent"
    assert outputs(world)["docs"] == {"id": docs, "type": "awsS3", "credentialsVersion": 1}


class JunkInListings(httpx.AsyncBaseTransport):
    """Every provider listing starts with an entry no provider could be read from."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or not request.url.path.endswith(PROVIDERS_PATH):
            return response
        page = json.loads(await response.aread())
        page["data"] = [{"id": "p-junk", "name": 7}, *page["data"]]
        return httpx.Response(response.status_code, headers={"content-type": "application/json"}, json=page)


def test_a_lost_create_answer_adopts_the_provider_made_past_an_unreadable_entry(world: World) -> None:
    world.sandbox.faults = Faults(routes=[RouteFault(match=PROVIDER_POSTS, drop_after=1.0)])
    world.wire.inner = JunkInListings(world.wire.inner)
    run = world.apply(declared(OPENAI))
    [made] = live_ids(world)["openai"]
    assert by_address(run)["provider.openai"].detail == f"created {made}"
    assert ("provider.openai", f"found {made} after an unclear create answer; adopting it") in run.progress
    assert provider_writes(world) == ["POST"]


# -- planning ------------------------------------------------------------------------------------------------------


def planned_for(*entries: dict[str, Any], live: tuple[LiveProvider, ...], **options: Any) -> Plan:
    return plan(declared(*entries), LiveState("org", providers=live), now=NOW, **options)


def the_change(result: Plan, name: str) -> Any:
    [change] = [c for c in result.changes if c.name == name and c.after is not None]
    return change


def test_a_renamed_provider_shows_both_names_first_and_is_replaced_new_one_first() -> None:
    docs = {**DOCS, "name": "papers", "renamedFrom": "docs", "bucket": "other-docs"}
    change = the_change(planned_for(docs, live=(live_docs(),)), "papers")
    assert change.action is Action.REPLACE_CREATE_FIRST and change.cause == "replace_because_renamed"
    assert change.reason == "renamed from docs; a provider cannot be renamed in place"
    assert change.before["name"] == "docs" and change.after["name"] == "papers"
    assert [(d.path, d.before, d.after, d.forces_replace) for d in change.attribute_changes] == [
        ("name", "docs", "papers", True),
        ("bucket", "team-docs", "other-docs", False),
    ]


def test_a_type_change_says_the_type_cannot_change_in_place() -> None:
    change = the_change(
        planned_for({**OPENAI, "type": "awsBedrock", "credentials": AWS_KEYS}, live=(live_provider(),)), "openai"
    )
    assert change.action is Action.REPLACE and change.reason == "type cannot change in place"


def test_a_requested_roll_with_a_setting_change_names_both() -> None:
    docs = {**DOCS, "bucket": "other-docs"}
    change = the_change(planned_for(docs, live=(live_docs(),), force_replace=frozenset({"provider.docs"})), "docs")
    assert change.action is Action.UPDATE and change.cause == "replace_by_request"
    assert change.reason == "in-place change of bucket; credentials roll requested: they are sent again"


def test_a_new_credentials_version_with_a_setting_change_names_both() -> None:
    docs = {**DOCS, "bucket": "other-docs", "credentialsVersion": 2}
    recorded = {"providers": {"docs": {"id": "p-2", "credentialsVersion": 1}}}
    change = the_change(planned_for(docs, live=(live_docs(),), outputs=recorded), "docs")
    assert change.reason == "in-place change of bucket; credentialsVersion 1 -> 2: the credentials are sent again"


def test_a_duplicate_provider_is_described_by_its_id_and_deleted_as_a_duplicate() -> None:
    older, newer = live_provider(id="p-old"), live_provider(id="p-new", created_at=NOW - timedelta(days=1))
    kept, extras = PROVIDERS.pick([newer, older], PlanContext(declared(OPENAI), NOW))
    assert kept is older
    assert [(e.described, e.reason, e.cause) for e in extras] == [
        ("another live provider p-new", "duplicate of a managed name", "delete_because_duplicate")
    ]


def test_only_a_change_that_sends_credentials_needs_them_readable() -> None:
    docs = {**DOCS, "bucket": "other-docs"}
    nothing_readable = check_credentials(declared(docs), {})
    moved = planned_for(docs, live=(live_docs(),))
    assert the_change(moved, "docs").action is Action.UPDATE
    assert credential_errors(moved, nothing_readable) == []
    rolled = planned_for(docs, live=(live_docs(),), force_replace=frozenset({"provider.docs"}))
    assert credential_errors(rolled, nothing_readable)[:2] == [f.text for f in nothing_readable]


AWS_KEYS = {"accessKeyId": {"env": "AWS_ACCESS_KEY_ID"}, "secretAccessKey": {"env": "AWS_SECRET"}}


# -- settling after apply ------------------------------------------------------------------------------------------


def test_settling_records_the_manifests_version_for_each_live_provider_the_outputs_know_nothing_of(
    world: World,
) -> None:
    world.apply(declared(OPENAI, {**DOCS, "credentialsVersion": 3}))
    ids = {name: found[0] for name, found in live_ids(world).items()}
    path = world.tmp_path / "outputs.json"
    document = json.loads(path.read_text())
    del document["providers"]["openai"]
    path.write_text(json.dumps(document))
    wanted = declared(
        {**OPENAI, "name": "absent"}, {**DOCS, "credentialsVersion": 3}, {**OPENAI, "credentialsVersion": 2}
    )

    async def settled() -> list[str]:
        async with world.client() as client:
            store = Outputs(path, "json", org_id=world.sandbox.org_id)
            found = await settle_outputs(client, world.sandbox.org_id, wanted, store, clock=world.clock, timeout=60.0)
            return found.warnings

    [warning] = asyncio.run(settled())
    assert warning.startswith(
        f"provider.openai: the outputs held no record of which credentials version live provider {ids['openai']} "
    )
    assert outputs(world)["openai"] == {"id": ids["openai"], "type": "openAI", "credentialsVersion": 2}
    assert outputs(world)["docs"] == {"id": ids["docs"], "type": "awsS3", "credentialsVersion": 3}


# -- a lost answer with two providers of the name --------------------------------------------------------------------


class AnotherRunMakesOneToo(httpx.AsyncBaseTransport):
    """While this run's create is under way, another run makes a provider of the same name."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.inner = world.wire.inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            with self.world.sandbox.mutate() as state:
                state.providers["p-theirs"] = ProviderRecord(
                    "p-theirs",
                    "openai",
                    "openAI",
                    {},
                    {"apiKey": "0" * 64},
                    Audit.new("someone", self.world.sandbox.now()),
                )
        return await self.inner.handle_async_request(request)


def test_a_lost_answer_with_two_new_providers_of_the_name_claims_neither(world: World) -> None:
    world.sandbox.faults = Faults(routes=[RouteFault(match=PROVIDER_POSTS, drop_after=1.0)])
    world.wire.inner = AnotherRunMakesOneToo(world)
    run = world.apply(declared(OPENAI))
    result = by_address(run)["provider.openai"]
    both = live_ids(world)["openai"]
    assert not result.ok and len(both) == 2 and "p-theirs" in both
    assert result.detail == (
        f"the answer to the create was lost, and providers {', '.join(both)} of this name were made since the plan "
        "(another run is making it too); this run claims none of them: plan again, which keeps one and deletes "
        "the others"
    )
    assert "openai" not in outputs(world)


class SlowDelete(httpx.AsyncBaseTransport):
    """The delete of one provider is answered only once a provider listing has come back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, slow_id: str) -> None:
        self.inner = inner
        self.slow_id = slow_id
        self.listed = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE" and request.url.path.endswith(f"/{self.slow_id}"):
            await self.listed.wait()
        response = await self.inner.handle_async_request(request)
        if request.method == "GET" and request.url.path.endswith(PROVIDERS_PATH):
            self.listed.set()
        return response


def test_a_lost_answer_to_a_replacements_create_is_not_confused_with_a_duplicate_still_being_deleted(
    world: World,
) -> None:
    world.apply(declared(OPENAI))
    [old] = live_ids(world)["openai"]
    with world.sandbox.mutate() as state:
        state.providers["p-zzz"] = ProviderRecord(
            "p-zzz", "openai", "openAI", {}, {"apiKey": "0" * 64}, Audit.new("someone", world.sandbox.now())
        )
    wanted = declared({**OPENAI, "type": "awsBedrock", "credentials": AWS_KEYS})
    planned = world.plan(wanted)
    assert [(c.action, c.live_id) for c in planned.pending] == [(Action.REPLACE, old), (Action.DELETE, "p-zzz")]
    world.sandbox.faults = Faults(routes=[RouteFault(match=PROVIDER_POSTS, drop_after=1.0)])
    world.wire.inner = SlowDelete(world.wire.inner, "p-zzz")
    run = world.apply(wanted, planned)
    [made] = live_ids(world)["openai"]
    assert run.result.ok, run.result.failed
    assert ("provider.openai", f"found {made} after an unclear create answer; adopting it") in run.progress
    assert made not in (old, "p-zzz") and outputs(world)["openai"]["id"] == made
