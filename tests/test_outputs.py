"""The outputs store: formats that round-trip, 0600 files, and no token left behind in temporary files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from capella_deploy.outputs import Outputs, OutputsError
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
    leftover.write_text('{"apiKeys": {"app": {"token": "left-behind"}}}')
    unrelated = tmp_path / ".other.json.abc123.tmp"
    unrelated.write_text("{}")
    Outputs(path).record_model("chat", id="m-1", status="healthy")
    assert not leftover.exists()
    assert unrelated.exists()
    assert json.loads(path.read_text())["models"]["chat"]["id"] == "m-1"


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
