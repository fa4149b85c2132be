"""The outputs store: which token wins, what a damaged file says, what masking hides, the file's exact shape."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from capella_deploy.outputs import Outputs, OutputsError, recorded_credential_versions, render_json
from capella_deploy.outputs.github import publish_to_github
from capella_deploy.secrets import MASK, Secret, redact


def test_a_lost_token_never_erases_the_token_another_run_wrote_for_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"), region="us-east-1")
    Outputs(path).record_key("app", key_id="k-1", token=None, region="eu-west-1")
    assert Outputs(path).token("app") == Secret("tok-1")
    assert Outputs(path).api_keys["app"]["region"] == "us-east-1", "the entry is left exactly as it was"


def test_a_lost_token_for_a_new_key_is_recorded_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    Outputs(path).record_key("app", key_id="k-2", token=None)
    entry = json.loads(path.read_text())["apiKeys"]["app"]
    assert entry == {"id": "k-2", "token": None}
    Outputs(path).record_key("other", key_id="k-3", token=None)
    assert json.loads(path.read_text())["apiKeys"]["other"] == {"id": "k-3", "token": None}


def test_a_new_token_for_the_same_key_replaces_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=None)
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    assert Outputs(path).token("app") == Secret("tok-1")


def test_forgetting_what_is_not_there_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    store = Outputs(path)
    store.forget_key("app")
    store.forget_model("chat")
    assert not path.exists(), "nothing changed, so nothing was written"


def test_masked_hides_every_token_and_nothing_else(tmp_path: Path) -> None:
    store = Outputs(tmp_path / "outputs.json", org_id="org")
    store.record_key("app", key_id="k-1", token=Secret("tok-1"), region="us-east-1")
    store.record_key("lost", key_id="k-2", token=None)
    masked = store.masked()
    assert masked["apiKeys"] == {
        "app": {"id": "k-1", "token": MASK, "region": "us-east-1"},
        "lost": {"id": "k-2", "token": None},
    }
    assert store.token("app") == Secret("tok-1"), "masking a copy leaves the store as it was"


def test_the_json_file_is_indented_with_sorted_keys_and_ends_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path, org_id="org").record_model("chat", status="healthy", id="m-1")
    assert path.read_text() == render_json(json.loads(path.read_text()))
    assert path.read_text() == (
        '{\n  "apiKeys": {},\n  "models": {\n    "chat": {\n      "id": "m-1",\n      "status": "healthy"\n'
        '    }\n  },\n  "organizationId": "org",\n  "version": 1\n}\n'
    )


def test_a_file_without_an_organization_takes_the_one_of_the_run(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_model("chat", id="m-1")
    assert json.loads(path.read_text())["organizationId"] is None
    Outputs(path, org_id="org-a").record_model("embed", id="m-2")
    assert json.loads(path.read_text())["organizationId"] == "org-a"
    with pytest.raises(OutputsError) as refused:
        Outputs(path, org_id="org-b")
    assert str(refused.value) == (
        f"{path} holds the outputs of organization org-a, not org-b; pass another --outputs path for this organization"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "JSONDecodeError"),
        ("KEY=value\n", "ValueError"),
        ("\n\n  {", "JSONDecodeError"),
    ],
)
def test_an_unreadable_file_is_named_with_what_went_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(text)
    with pytest.raises(OutputsError) as refused:
        Outputs(path)
    assert str(refused.value) == (
        f"{path}: cannot read the outputs file ({problem}); it holds key tokens that cannot be fetched again, "
        "so it is left untouched: repair or move it"
    )


@pytest.mark.parametrize(
    "doc", [{"models": {}}, {"apiKeys": {}}, {"models": [], "apiKeys": {}}, {"models": {}, "apiKeys": []}]
)
def test_json_that_is_not_an_outputs_document_is_refused(tmp_path: Path, doc: object) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(OutputsError) as refused:
        Outputs(path)
    assert str(refused.value) == (
        f"{path}: not a capella-deploy outputs file; move it away or pick another --outputs path"
    )


def test_a_json_file_with_leading_blank_lines_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text('\n  {"models": {"chat": {"id": "m-1"}}, "apiKeys": {}}')
    assert Outputs(path).models["chat"]["id"] == "m-1"


def test_github_outputs_need_the_file_github_names(tmp_path: Path) -> None:
    with pytest.raises(OutputsError) as refused:
        publish_to_github(Outputs(tmp_path / "o.json").document(), {})
    assert str(refused.value) == "--outputs github needs $GITHUB_OUTPUT, which GitHub Actions sets for each step"


def test_a_new_outputs_directory_is_made_with_its_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "outputs.json"
    Outputs(path).record_model("chat", id="m-1")
    assert json.loads(path.read_text())["models"]["chat"]["id"] == "m-1"
    assert [p.name for p in path.parent.iterdir()] == ["outputs.json"], "no temporary file is left beside it"


def test_forgetting_a_model_drops_its_entry_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_model("chat", id="m-1", status="healthy")
    Outputs(path).record_model("embed", id="m-2", status="healthy")
    Outputs(path).forget_model("chat", "m-1")
    assert json.loads(path.read_text())["models"] == {"embed": {"id": "m-2", "status": "healthy"}}
    Outputs(path).forget_model("embed")
    assert json.loads(path.read_text())["models"] == {}, "without an id, whatever entry the name has goes"


def test_forgetting_a_replaced_model_by_its_old_id_keeps_the_successors_entry(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_model("chat", id="m-new", connectionString="https://new")
    Outputs(path).forget_model("chat", "m-old")
    assert json.loads(path.read_text())["models"] == {"chat": {"id": "m-new", "connectionString": "https://new"}}


def test_forgetting_in_a_section_the_file_does_not_have_yet_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_model("chat", id="m-1")
    before = path.read_text()
    Outputs(path).forget("providers", "docs-bucket", "p-1")
    assert path.read_text() == before
    Outputs(path).record("providers", "docs-bucket", id="p-1", type="awsS3")
    Outputs(path).forget("providers", "docs-bucket", "p-1")
    assert json.loads(path.read_text())["providers"] == {}


def test_forgetting_a_key_drops_its_entry_and_token_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    Outputs(path).record_key("ops", key_id="k-2", token=Secret("tok-2"))
    Outputs(path).forget_key("app", "k-1")
    assert json.loads(path.read_text())["apiKeys"] == {"ops": {"id": "k-2", "token": "tok-2"}}
    Outputs(path).forget_key("ops")
    assert json.loads(path.read_text())["apiKeys"] == {}, "without an id, whatever entry the name has goes"


def test_forgetting_an_older_duplicate_key_keeps_the_kept_keys_token(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-kept", token=Secret("tok-kept"), region="us-east-1")
    Outputs(path).forget_key("app", "k-older")
    assert json.loads(path.read_text())["apiKeys"] == {
        "app": {"id": "k-kept", "token": "tok-kept", "region": "us-east-1"}
    }


def test_a_run_giving_up_its_key_brings_back_the_token_of_the_key_another_run_made(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-first", token=Secret("tok-first"), region="us-east-1")
    second = Outputs(path)  # another run, which made a key of the same name
    second.record_key("app", key_id="k-second", token=Secret("tok-second"), region="us-east-1")
    assert Outputs(path).token("app") == Secret("tok-second")
    second.forget_key("app", "k-second")  # it found the first run's key and deleted its own
    assert json.loads(path.read_text())["apiKeys"] == {
        "app": {"id": "k-first", "token": "tok-first", "region": "us-east-1"}
    }


def test_a_key_recorded_twice_still_gives_back_the_other_runs_key_when_given_up(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-first", token=Secret("tok-first"))
    second = Outputs(path)
    second.record_key("app", key_id="k-second", token=Secret("tok-second"))
    second.record_key("app", key_id="k-second", token=Secret("tok-second"), expiresAt="2026-09-01")
    second.forget_key("app", "k-second")
    assert json.loads(path.read_text())["apiKeys"] == {"app": {"id": "k-first", "token": "tok-first"}}


def test_only_an_entry_with_a_token_is_put_aside_for_a_run_that_gives_its_key_up(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-lost", token=None)  # nothing there is worth keeping
    second = Outputs(path)
    second.record_key("app", key_id="k-second", token=Secret("tok-second"))
    second.forget_key("app", "k-second")
    assert json.loads(path.read_text())["apiKeys"] == {}


def test_a_key_put_aside_and_then_given_up_itself_is_not_brought_back(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    second = Outputs(path)
    second.record_key("app", key_id="k-2", token=Secret("tok-2"))  # puts k-1 aside
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))  # the first run records k-1 again
    second.forget_key("app", "k-1")  # and this run deletes k-1
    assert json.loads(path.read_text())["apiKeys"] == {}


def test_a_lost_token_for_a_key_whose_token_is_held_does_not_rewrite_the_file(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    before = path.stat().st_ino, path.read_text()
    Outputs(path).record_key("app", key_id="k-1", token=None)
    assert (path.stat().st_ino, path.read_text()) == before, "the file was not replaced"


def test_the_held_key_ids_are_those_with_a_token(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    store = Outputs(path)
    store.record_key("app", key_id="k-1", token=Secret("tok-1"))
    store.record_key("lost", key_id="k-2", token=None)
    assert Outputs(path).held_key_ids() == {"k-1"}


def test_an_empty_or_non_text_token_is_no_token(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    keys = {"empty": {"id": "k-1", "token": ""}, "number": {"id": "k-2", "token": 12345678}}
    path.write_text(json.dumps({"models": {}, "apiKeys": keys}))
    store = Outputs(path)
    assert store.token("empty") is None and store.token("number") is None and store.token("absent") is None


def test_recorded_is_none_until_the_file_exists_then_the_masked_document(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    assert Outputs(path, org_id="org").recorded() is None
    Outputs(path, org_id="org").record_key("app", key_id="k-1", token=Secret("tok-1"))
    assert Outputs(path, org_id="org").recorded() == {
        "version": 1,
        "organizationId": "org",
        "models": {},
        "apiKeys": {"app": {"id": "k-1", "token": MASK}},
    }


def test_tokens_read_from_the_file_are_masked_in_everything_the_process_writes(tmp_path: Path) -> None:
    token = "tok-" + secrets.token_urlsafe(16)  # a value this process has never seen before
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"models": {}, "apiKeys": {"app": {"id": "k-1", "token": token}}}))
    assert redact(f"got {token}") == f"got {token}"
    Outputs(path)
    assert redact(f"got {token}") == f"got {MASK}"


def test_a_section_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"models": {}, "apiKeys": {}, "providers": ["p-1"]}))
    with pytest.raises(OutputsError) as refused:
        Outputs(path)
    assert str(refused.value) == f"{path}: its 'providers' is not a mapping; move the file away or repair it"


def test_credential_versions_skip_entries_that_are_not_mappings(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    providers = {"a-junk": "p-0", "b-bucket": {"id": "p-1", "credentialsVersion": 2}}
    path.write_text(json.dumps({"models": {}, "apiKeys": {}, "providers": providers}))
    assert Outputs(path).credential_versions() == {"p-1": 2}


def test_a_document_whose_sections_are_not_mappings_records_no_credential_versions() -> None:
    assert recorded_credential_versions({"providers": [{"id": "p-1", "credentialsVersion": 2}]}) == {}
    assert recorded_credential_versions(None) == {}
