"""The outputs store: which token wins, what a damaged file says, what masking hides, the file's exact shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capella_deploy.outputs import Outputs, OutputsError, render_json
from capella_deploy.outputs.github import publish_to_github
from capella_deploy.secrets import MASK, Secret


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
