"""The provider kind's plan rule, pure: what a read can show is compared, what it cannot is declared."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from capella_deploy.kinds.base import Action, AttributeChange, Kind
from capella_deploy.kinds.provider import LiveProvider, parse_provider
from capella_deploy.live import LiveState
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan, plan_destroy
from tests.planning_support import NOW, manifest

OPENAI = {"name": "openai", "type": "openAI", "credentials": {"apiKey": {"env": "OPENAI_API_KEY"}}}
DOCS = {
    "name": "docs",
    "type": "awsS3",
    "awsRegion": "us-east-1",
    "bucket": "team-docs",
    "credentials": {"accessKeyId": {"env": "AWS_ACCESS_KEY_ID"}, "secretAccessKey": {"file": "aws-secret"}},
}


def providers(*entries: dict[str, Any], **overrides: Any) -> Any:
    return manifest(models=[], apiKeys=[], providers=list(entries), **overrides)


def live_provider(**overrides: Any) -> LiveProvider:
    fields: dict[str, Any] = {
        "id": "p-1",
        "name": "openai",
        "type": "openAI",
        "aws_region": None,
        "bucket": None,
        "folder_path": None,
        "created_at": NOW - timedelta(days=3),
    }
    fields.update(overrides)
    return LiveProvider(**fields)


def live_docs(**overrides: Any) -> LiveProvider:
    fields = {"id": "p-2", "name": "docs", "type": "awsS3", "aws_region": "us-east-1", "bucket": "team-docs"}
    return live_provider(**{**fields, **overrides})


def recorded(versions: dict[str, int]) -> dict[str, Any]:
    """An outputs document recording the credentialsVersion last written for each live id."""
    entries = {
        f"entry-{n}": {"id": live_id, "credentialsVersion": v} for n, (live_id, v) in enumerate(versions.items())
    }
    return {"providers": entries}


def fingerprint(live: LiveState, versions: dict[str, int] | None = None) -> str:
    return live.fingerprint(live.digests(credential_versions=versions))


def org(*live: LiveProvider) -> LiveState:
    return LiveState("org", providers=live)


def the(result: Plan, name: str) -> Any:
    [change] = [c for c in result.changes if c.kind is Kind.PROVIDER and c.name == name and c.after is not None]
    return change


def test_a_provider_not_in_the_organization_is_created_with_its_declared_attributes() -> None:
    result = plan(providers(OPENAI, DOCS), org(), now=NOW)
    assert the(result, "openai").action is Action.CREATE
    assert the(result, "openai").after == {"type": "openAI", "credentialsVersion": 1}
    assert the(result, "docs").after == {
        "type": "awsS3",
        "awsRegion": "us-east-1",
        "bucket": "team-docs",
        "folderPath": "",
        "credentialsVersion": 1,
    }


def test_a_provider_as_declared_is_left_alone_whatever_its_opaque_id() -> None:
    live = org(live_provider(id="42"), live_docs(id="arn:capella:provider/7", folder_path=""))
    versions = {"42": 1, "arn:capella:provider/7": 1}
    result = plan(providers(OPENAI, DOCS), live, now=NOW, outputs=recorded(versions))
    assert not result.has_changes
    assert the(result, "docs").before["credentialsVersion"] == 1


def test_ids_of_any_shape_are_read_and_a_null_configuration_is_none() -> None:
    raw = {"id": 1234, "name": "openai", "type": "openAI", "configuration": None, "audit": {}}
    assert parse_provider(raw).id == "1234" and parse_provider(raw).attributes == {"type": "openAI"}
    s3 = {"id": "x", "name": "d", "type": "awsS3", "configuration": {"awsRegion": "eu-west-1", "bucket": "b"}}
    assert parse_provider(s3).attributes == {"type": "awsS3", "awsRegion": "eu-west-1", "bucket": "b", "folderPath": ""}


def test_a_changed_s3_setting_is_an_update_that_names_it() -> None:
    result = plan(providers({**DOCS, "bucket": "team-docs-2", "folderPath": "in"}), org(live_docs()), now=NOW)
    change = the(result, "docs")
    assert change.action is Action.UPDATE and change.cause is None
    assert change.attribute_changes == (
        AttributeChange("bucket", "team-docs", "team-docs-2"),
        AttributeChange("folderPath", "", "in"),
    )
    assert change.reason == "in-place change of bucket, folderPath"


def test_a_new_credentials_version_against_the_recorded_one_is_a_roll() -> None:
    result = plan(
        providers({**OPENAI, "credentialsVersion": 3}), org(live_provider()), now=NOW, outputs=recorded({"p-1": 2})
    )
    change = the(result, "openai")
    assert change.action is Action.UPDATE
    assert change.attribute_changes == (AttributeChange("credentialsVersion", 2, 3),)
    assert change.reason == "credentialsVersion 2 -> 3: the credentials are sent again"


def test_without_a_record_for_the_live_id_there_is_no_roll_and_no_change() -> None:
    declared = providers({**OPENAI, "credentialsVersion": 5})
    for versions in ({}, {"another-id": 1}):
        result = plan(declared, org(live_provider()), now=NOW, outputs=recorded(versions))
        assert not result.has_changes
        assert "credentialsVersion" not in the(result, "openai").before


def test_replace_by_request_rolls_the_credentials_in_place() -> None:
    result = plan(providers(OPENAI), org(live_provider()), now=NOW, force_replace=frozenset({"provider.openai"}))
    change = the(result, "openai")
    assert change.action is Action.UPDATE and change.cause == "replace_by_request"
    assert change.live_id == "p-1"


def test_a_type_change_replaces_the_provider_and_says_which_attribute_forced_it() -> None:
    bedrock = {
        "name": "openai",
        "type": "awsBedrock",
        "credentials": {"accessKeyId": {"env": "A"}, "secretAccessKey": {"env": "B"}},
    }
    change = the(plan(providers(bedrock), org(live_provider()), now=NOW), "openai")
    assert change.action is Action.REPLACE and change.action.steps == ("delete", "create")
    assert change.cause == "replace_because_cannot_update"
    assert [c for c in change.attribute_changes if c.forces_replace] == [
        AttributeChange("type", "openAI", "awsBedrock", forces_replace=True)
    ]


def test_prevent_destroy_refuses_a_replacement_and_a_destroy_but_not_a_roll() -> None:
    guarded = {**OPENAI, "type": "awsBedrock", "preventDestroy": True}
    guarded["credentials"] = {"accessKeyId": {"env": "A"}, "secretAccessKey": {"env": "B"}}
    assert any(
        "provider.openai" in e and "preventDestroy" in e
        for e in plan(providers(guarded), org(live_provider()), now=NOW).errors
    )
    kept = {**OPENAI, "preventDestroy": True, "credentialsVersion": 2}
    rolled = plan(providers(kept), org(live_provider()), now=NOW, outputs=recorded({"p-1": 1}))
    assert rolled.errors == () and the(rolled, "openai").action is Action.UPDATE
    assert plan_destroy(providers(kept), org(live_provider())).errors


def test_of_providers_sharing_a_name_the_one_the_outputs_record_is_kept_else_the_oldest() -> None:
    older = live_provider(id="p-old", created_at=NOW - timedelta(days=9))
    newer = live_provider(id="p-new", created_at=NOW - timedelta(days=1))
    for order in ((older, newer), (newer, older)):
        unrecorded = plan(providers(OPENAI), org(*order), now=NOW)
        assert the(unrecorded, "openai").live_id == "p-old"
        known = plan(providers(OPENAI), org(*order), now=NOW, outputs=recorded({"p-new": 1}))
        assert the(known, "openai").live_id == "p-new"
        [gone] = [c for c in known.changes if c.action is Action.DELETE]
        assert gone.live_id == "p-old" and gone.cause == "delete_because_duplicate"


def test_prune_deletes_unmanaged_providers_that_match_and_lists_the_rest() -> None:
    live = org(live_provider(id="p-a", name="team-a-openai"), live_provider(id="p-b", name="team-b-openai"))
    result = plan(providers(prune={"match": "team-a-*"}), live, now=NOW)
    [pruned] = result.pending
    assert pruned.address == "provider.team-a-openai[p-a]" and pruned.cause == "delete_because_pruned"
    assert [(u.kind, u.name) for u in result.unmanaged] == [(Kind.PROVIDER, "team-b-openai")]


def test_the_recorded_credential_versions_are_part_of_a_saved_plans_fingerprint() -> None:
    live = org(live_provider())
    assert fingerprint(live, {"p-1": 1}) != fingerprint(live, {"p-1": 2})
    # Versions of ids that are not live, or none at all, leave the fingerprint as it was before providers.
    assert fingerprint(live, {"gone": 4}) == live.fingerprint()
    made = plan(providers(OPENAI), live, now=NOW, outputs=recorded({"p-1": 1}))
    assert made.live_fingerprint == fingerprint(live, {"p-1": 1})
