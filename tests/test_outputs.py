"""The outputs store: formats that round-trip, 0600 files, and no token left behind in temporary files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import capella_deploy
from capella_deploy.outputs import Outputs, OutputsError, atomic_write, render_dotenv, render_json
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


def test_a_dead_writers_token_is_saved_even_by_a_run_that_changes_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_model("chat", id="m-1")
    leftover = killed_between_fsync_and_rename(
        path, {"models": {"chat": {"id": "m-1"}}, "apiKeys": {"app": {"id": "k-1", "token": "tok-1"}}}
    )
    Outputs(path).forget_model("embed")  # nothing to forget
    assert not leftover.exists()
    assert json.loads(path.read_text())["apiKeys"] == {"app": {"id": "k-1", "token": "tok-1"}}


def test_a_leftover_with_no_token_to_give_is_removed_without_writing_the_outputs(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    leftover = killed_between_fsync_and_rename(path, {"models": {"chat": {"id": "m-1"}}, "apiKeys": {}})
    Outputs(path).forget_model("chat")
    assert not leftover.exists()
    assert not path.exists(), "the run changed nothing, so no outputs file was made"


@pytest.mark.parametrize("text", ["{}", '{"apiKeys": []}', "[1, 2]", "# capella-deploy outputs\nCAPELLA_ORG_ID='x\n"])
def test_a_leftover_that_holds_no_outputs_document_is_ignored_and_removed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    leftover = path.with_name(f".{path.name}.junk.tmp")
    leftover.write_text(text)
    store = Outputs(path)
    assert store.token("app") == Secret("tok-1")
    store.save()
    assert not leftover.exists() and Outputs(path).token("app") == Secret("tok-1")


def test_a_directory_named_like_a_leftover_neither_stops_a_write_nor_counts_as_a_change(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    stray = tmp_path / f".{path.name}.stray.tmp"
    stray.mkdir()
    Outputs(path).forget_model("chat")
    assert not path.exists(), "nothing was taken in from it, so nothing was written"
    Outputs(path).record_model("chat", id="m-1")
    assert json.loads(path.read_text())["models"] == {"chat": {"id": "m-1"}}
    assert stray.is_dir()


def test_of_two_dead_writers_the_later_ones_key_wins(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_key("app", key_id="k-1", token=Secret("tok-1"))
    earlier = path.with_name(f".{path.name}.zzz.tmp")  # named to sort after the later one
    later = path.with_name(f".{path.name}.aaa.tmp")
    earlier.write_text(render_json({"models": {}, "apiKeys": {"app": {"id": "k-2", "token": "tok-2"}}}))
    later.write_text(render_json({"models": {}, "apiKeys": {"app": {"id": "k-3", "token": "tok-3"}}}))
    os.utime(earlier, (1_000_000, 1_000_000))
    os.utime(later, (2_000_000, 2_000_000))
    assert Outputs(path).token("app") == Secret("tok-3")


def test_one_key_under_two_names_in_a_leftover_is_taken_in_once(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_model("chat", id="m-1")
    entry = {"id": "k-1", "token": "tok-1"}
    killed_between_fsync_and_rename(path, {"models": {}, "apiKeys": {"app": entry, "renamed": entry}})
    assert Outputs(path).api_keys == {"app": entry}


def test_a_dotenv_leftover_cut_in_the_line_after_a_token_keeps_that_token(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    doc = {"models": {}, "apiKeys": {"a": {"id": "k-a", "token": "tok-a"}, "b": {"id": "k-b", "token": "tok-b"}}}
    leftover = killed_between_fsync_and_rename(path, doc, "dotenv")
    text = leftover.read_text()
    leftover.write_text(text[: text.index("# apiKeys b") + 5])
    assert Outputs(path, "dotenv").token("a") == Secret("tok-a")


def test_a_dotenv_leftover_cut_inside_a_value_with_a_space_keeps_the_tokens_before_it(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    doc = {
        "models": {},
        "apiKeys": {"a": {"id": "k-a", "token": "tok-a"}},
        "providers": {"docs": {"id": "p-1", "type": "object store"}},
    }
    leftover = killed_between_fsync_and_rename(path, doc, "dotenv")
    text = leftover.read_text()
    leftover.write_text(text[: text.index("object store") + len("object st")])
    assert Outputs(path, "dotenv").token("a") == Secret("tok-a")


def test_a_json_leftover_cut_short_gives_tokens_only_from_its_key_section(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    doc = {
        "models": {"chat": {"id": "m-1", "token": "not-a-key-token"}},
        "apiKeys": {"app": {"id": "k-1", "token": "tok-1"}},
        "providers": {"docs": {"id": "p-1", "type": "awsS3"}},
    }
    leftover = killed_between_fsync_and_rename(path, doc)
    text = leftover.read_text()
    leftover.write_text(text[: text.index('"providers"')])
    assert Outputs(path).api_keys == {"app": {"id": "k-1", "token": "tok-1"}}


def test_a_json_leftover_cut_short_with_one_damaged_entry_gives_up_the_others(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    leftover = path.with_name(f".{path.name}.k1ll3d.tmp")
    leftover.write_text(
        '{\n  "apiKeys": {\n    "bad": {\n      "id": "k-0",\n      "token": "\\uZZZZ"\n    },\n'
        '    "good": {\n      "id": "k-1",\n      "token": "tok-1"\n    }\n  },\n  "mod'
    )
    assert Outputs(path).api_keys == {"good": {"id": "k-1", "token": "tok-1"}}


def test_atomic_write_makes_the_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "plan.json"
    atomic_write(path, "{}\n")
    assert path.read_text() == "{}\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_write_that_fails_leaves_the_previous_file_whole_and_no_temporary_file_behind(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    atomic_write(path, "before\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write(path, "after \ud800\n")  # a lone surrogate has no UTF-8 spelling
    assert path.read_text() == "before\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_text_is_written_as_utf_8(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    atomic_write(path, "région ✓\n")
    assert path.read_bytes() == "région ✓\n".encode()


def run_python(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter that imports the same package as this test."""
    root = Path(capella_deploy.__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), **env},
        capture_output=True,
        text=True,
        check=False,
    )


KILLED_WRITER = """
import resource, signal, sys
from pathlib import Path
from capella_deploy.outputs import Outputs
from capella_deploy.secrets import Secret

store = Outputs(Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # the kernel kills a writer that passes the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))
store.record_key("app", key_id="k-1", token=Secret("tok-1"))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_writer_killed_mid_write_leaves_its_token_beside_the_outputs_for_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    Outputs(path).record_model("chat", id="m-1", connectionString="https://chat.example.com/" + "x" * 2000)
    before = path.read_text()
    killed = run_python(KILLED_WRITER, str(path))
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr
    assert path.read_text() == before, "the outputs file is never partly written"
    [leftover] = [p for p in tmp_path.iterdir() if p != path]
    assert leftover.name.startswith(".outputs.json.") and leftover.name.endswith(".tmp")
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o600
    assert '"token": "tok-1"' in leftover.read_text()

    store = Outputs(path)
    assert store.token("app") == Secret("tok-1")
    store.save()
    assert [p.name for p in tmp_path.iterdir()] == ["outputs.json"]
    assert Outputs(path).token("app") == Secret("tok-1") and Outputs(path).models["chat"]["id"] == "m-1"


ASCII_LOCALE = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}  # the locale's encoding is ASCII
URL = "https://chat.exämple.com/v1"
LOCALE_WRITER = r"""
import sys
from pathlib import Path
from capella_deploy.outputs import Outputs

store = Outputs(Path(sys.argv[1]), "dotenv")
print(store.token("app").reveal(), store.models["chat"]["connectionString"].encode("unicode-escape").decode())
store.record_model("embed", id="m-2", connectionString="https://embed.ex\u00e4mple.com/v1")
"""


def test_outputs_are_read_and_written_as_utf_8_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    Outputs(path, "dotenv").record_model("chat", id="m-1", connectionString=URL)
    doc = {"models": {"chat": {"id": "m-1", "connectionString": URL}}, "apiKeys": {}}
    doc["apiKeys"]["app"] = {"id": "k-1", "token": "tok-1"}
    killed_between_fsync_and_rename(path, doc, "dotenv")
    here = Outputs(path, "dotenv")  # this process's locale reads it as the one below must
    assert here.token("app") == Secret("tok-1") and here.models["chat"]["connectionString"] == URL
    ran = run_python(LOCALE_WRITER, str(path), **ASCII_LOCALE)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["tok-1", URL.encode("unicode-escape").decode()]
    saved = path.read_bytes().decode("utf-8")
    assert "CAPELLA_MODEL_EMBED_URL='https://embed.exämple.com/v1'\n" in saved
    assert "CAPELLA_KEY_APP_TOKEN='tok-1'\n" in saved
