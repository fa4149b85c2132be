"""The outputs store: formats that round-trip, 0600 files, and no token left behind in temporary files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from capella_deploy.outputs import Outputs, OutputsError, render_dotenv, render_json
from capella_deploy.secrets import Secret


def test_json_and_dotenv_round_trip(tmp_path: Path) -> None:
    for fmt, name in (("json", "out.json"), ("dotenv", "out.env")):
        path = tmp_path / name
        store = Outputs(path, fmt, org_id="org-1")  # type: ignore[arg-type]
        store.record_model(
            "chat-prod",
            id="m-1",
            status="healthy",
            region="us-east-1",
            connectionString="https://x",
            headers={"X-cb-cache": "semantic", "X-cb-cache-threshold": "0.85"},
        )
        store.record_key("app key", key_id="k-1", token=Secret("tok'en-1"), region="us-east-1")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        again = Outputs(path, fmt)  # type: ignore[arg-type]
        assert again.models["chat-prod"]["connectionString"] == "https://x"
        assert again.models["chat-prod"]["headers"] == {"X-cb-cache": "semantic", "X-cb-cache-threshold": "0.85"}
        assert again.token("app key") == Secret("tok'en-1")
        assert again.document()["organizationId"] == "org-1"


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    leftover = tmp_path / ".outputs.json.abc123.tmp"
    leftover.write_text('{"apiKeys": {"app": {"token": "left-behind"}}}')  # no key id: nothing to take in
    unrelated = tmp_path / ".other.json.abc123.tmp"
    unrelated.write_text("{}")
    Outputs(path).record_model("chat", id="m-1", status="healthy")
    assert not leftover.exists()
    assert unrelated.exists()
    assert json.loads(path.read_text())["models"]["chat"]["id"] == "m-1"
    assert json.loads(path.read_text())["apiKeys"] == {}


def killed_between_fsync_and_rename(path: Path, doc: dict[str, object], fmt: str = "json") -> Path:
    """The temporary file a writer leaves when it dies after its fsync and before its rename."""
    leftover = path.with_name(f".{path.name}.k1ll3d.tmp")
    leftover.write_text(render_json(doc) if fmt == "json" else render_dotenv(doc))
    leftover.chmod(0o600)
    return leftover


def test_a_token_only_a_leftover_holds_is_taken_in_before_the_leftover_goes(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    store = Outputs(path, org_id="org")
    store.record_key("app", key_id="k-old", token=Secret("tok-old"), region="us-east-1")
    store.record_key("ops", key_id="k-ops", token=None, region="us-east-1")  # its token was lost in transit
    doc = store.document()
    # The dead writer was recording a rotated key, and another run had given it the token of "ops".
    doc["apiKeys"]["app"] = {"id": "k-new", "token": "tok-new", "region": "us-east-1"}
    doc["apiKeys"]["ops"] = {"id": "k-ops", "token": "tok-ops", "region": "us-east-1"}
    leftover = killed_between_fsync_and_rename(path, doc)

    # A reader (plan) sees the tokens without touching the files.
    reader = Outputs(path, org_id="org")
    assert reader.token("app") == Secret("tok-new") and reader.token("ops") == Secret("tok-ops")
    assert reader.held_key_ids() == {"k-new", "k-ops"}
    assert leftover.exists() and json.loads(path.read_text())["apiKeys"]["app"]["token"] == "tok-old"

    # The next write saves them, then removes the leftover.
    Outputs(path, org_id="org").record_model("chat", id="m-1", status="healthy")
    assert not leftover.exists()
    saved = json.loads(path.read_text())["apiKeys"]
    assert saved["app"] == {"id": "k-new", "token": "tok-new", "region": "us-east-1"}
    assert saved["ops"]["token"] == "tok-ops"


def test_a_leftover_never_replaces_a_token_the_outputs_hold(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    killed_between_fsync_and_rename(path, {"apiKeys": {"app": {"id": "k-1", "token": "other"}}, "models": {}})
    Outputs(path).save()
    assert json.loads(path.read_text())["apiKeys"]["app"]["token"] == "tok-1"


def test_a_leftover_cut_short_still_gives_up_its_complete_tokens(tmp_path: Path) -> None:
    for name, fmt in (("outputs.json", "json"), ("outputs.env", "dotenv")):
        path = tmp_path / name
        doc = {
            "version": 1,
            "organizationId": "org",
            "apiKeys": {"a": {"id": "k-a", "token": "tok-a"}, "b": {"id": "k-b", "token": "tok-b-complete"}},
            "models": {"chat": {"id": "m-1", "headers": {"X-cb-cache": "semantic"}}},
        }
        leftover = killed_between_fsync_and_rename(path, doc, fmt)
        text = leftover.read_text()
        leftover.write_text(text[: text.index("tok-b-complete") + 5])  # the writer died mid-token
        store = Outputs(path, fmt)  # type: ignore[arg-type]
        assert store.token("a") == Secret("tok-a"), fmt
        assert store.token("b") is None, fmt
        store.save()
        assert not leftover.exists() and Outputs(path, fmt).token("a") == Secret("tok-a")  # type: ignore[arg-type]


def test_a_damaged_outputs_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    path.write_text("{not json")
    with pytest.raises(OutputsError, match="left untouched"):
        Outputs(path)
    assert path.read_text() == "{not json"


def test_switching_the_format_converts_the_file_and_keeps_every_token(tmp_path: Path) -> None:
    path = tmp_path / "outputs"
    Outputs(path, "json").record_key("app", key_id="k-1", token=Secret("tok-1"))
    as_dotenv = Outputs(path, "dotenv")
    assert as_dotenv.token("app") == Secret("tok-1")
    as_dotenv.record_model("chat", id="m-1", status="healthy")
    assert path.read_text().startswith("# capella-deploy outputs")
    back = Outputs(path, "json")
    assert back.token("app") == Secret("tok-1") and back.models["chat"]["id"] == "m-1"


def test_a_file_that_is_not_an_outputs_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("KEY=value\n")
    with pytest.raises(OutputsError, match="left untouched"):
        Outputs(path, "dotenv")
    assert path.read_text() == "KEY=value\n"


def test_one_outputs_file_serves_one_organization(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path, org_id="org-a").record_key("app", key_id="k-1", token=Secret("tok-a"))
    with pytest.raises(OutputsError, match="holds the outputs of organization org-a, not org-b"):
        Outputs(path, org_id="org-b")
    assert Outputs(path, org_id="org-a").token("app") == Secret("tok-a")
