"""Crash safety: ``kill -9`` at any moment never truncates the outputs or loses a token already written.

Two levels. The outputs store alone, written in a tight loop by a child process that acknowledges each write,
killed at seeded random moments (most of them land inside a write, where the loop spends its time). Then a
whole ``apply`` in a child process, killed before a create, after one, after a key's token came back and at
seeded random moments; the next run finds the dead run's lock, which binds no one on the machine it ran on, and
converges.
"""

from __future__ import annotations

import gc
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from reliability_support import sha256, worlds

from capella_deploy.cli import main
from capella_deploy.outputs import Outputs
from capella_deploy.sandbox import Rules, Sandbox

TOKEN = "cbrel-crash-token-8a1f"
SPEED = 2000.0  # a 5-minute deployment takes 150 ms: long enough to be killed during it
MANIFEST = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
  - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16], allowedModels: [chat]}
  - {name: ops, expiryDays: 30, allowedCIDRs: [10.0.0.0/16]}
"""
WRITER = """
import sys
from pathlib import Path
from capella_deploy.outputs import Outputs
from capella_deploy.secrets import Secret
store = Outputs(Path(sys.argv[1]), "json", org_id="org")
for i in range(100000):
    store.record_key(f"key-{i % 7}", key_id=f"id-{i}", token=Secret(f"tok-{i}-" + "x" * 200), region="us-east-1")
    store.record_model(f"model-{i % 5}", id=f"m-{i}", status="healthy")
    print(i, flush=True)
"""


class Child:
    """A child process whose stdout lines are collected as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, pattern: str, limit: float = 20.0) -> bool:
        """Block until a line matches (True) or the child ends first (False)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + limit
        with self._seen:
            while not any(regex.search(line) for line in self.lines):
                if self.process.poll() is not None and not self._reader.is_alive():
                    return False
                assert time.monotonic() < deadline, f"no line matching {pattern!r}: {self.lines}"
                self._seen.wait(0.05)
        return True

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(5)
        assert self.process.stderr is not None
        self.process.stderr.close()


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPELLA_")}
    return {**env, "PYTHONUNBUFFERED": "1", "CAPELLA_API_TOKEN": TOKEN, **extra}


def check_outputs_file(path: Path) -> dict[str, object]:
    """The outputs file parses and is private; leftover temporary files are private too."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        assert stat.S_IMODE(leftover.stat().st_mode) == 0o600
    if not path.exists():
        return {"models": {}, "apiKeys": {}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc: dict[str, object] = json.loads(path.read_text())  # a truncated or mixed file would not parse
    return doc


def test_the_outputs_store_survives_kill_9_mid_write(tmp_path: Path) -> None:
    mid_write = 0
    # At least 8 kills, and more (up to 40) until two have landed inside a write: on a loaded machine the
    # writer spends less of its time writing, and the point is to have killed it there.
    for seed in range(40):
        if seed >= 8 and mid_write >= 2:
            break
        path = tmp_path / str(seed) / "outputs.json"
        path.parent.mkdir()
        child = Child([sys.executable, "-c", WRITER, str(path)], tmp_path, child_env())
        try:
            assert child.wait_for(r"^\d+$")
            time.sleep(random.Random(seed).uniform(0.0, 0.15))  # the kill point, seeded
        finally:
            child.kill()
        mid_write += any(path.parent.glob(".outputs.json.*.tmp"))
        acknowledged = [int(line) for line in child.lines if line.isdigit()]
        doc = check_outputs_file(path)
        keys = doc["apiKeys"]
        assert isinstance(keys, dict)
        last = acknowledged[-1]
        # Every write acknowledged before the kill is on disk: the latest token of each key name.
        for i in range(max(0, last - 6), last + 1):
            entry = keys[f"key-{i % 7}"]
            assert int(entry["id"].removeprefix("id-")) >= i
            assert entry["token"] == f"tok-{entry['id'].removeprefix('id-')}-" + "x" * 200
        Outputs(path, "json")  # and the next run can load it
    assert mid_write >= 2, "the kills should often land inside a write (a temporary file left behind)"


# -- whole applies -------------------------------------------------------------------------------------------


@pytest.fixture
def crash_site(rules: Rules, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with the manifest and a sandbox in the world ``rules`` (each test's parameter)."""
    # The lock directory is relative to the working directory, as for a user running in a repository.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    Sandbox(tmp_path / "sandbox.json", token=TOKEN, rules=rules).set_speed(SPEED)
    yield tmp_path


def cli(site: Path, *args: str) -> Result:
    env = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": ""}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert TOKEN not in result.output
    return result


def apply_args(site: Path) -> list[str]:
    return ["apply", "-f", "capella.yaml", "--auto-approve", "--sandbox=sandbox.json", "--outputs", "outputs.json"]


def live_key_hashes(site: Path) -> dict[str, str]:
    state = json.loads((site / "sandbox.json").read_text())
    return {k["id"]: k["token_sha256"] for k in state["api_keys"].values()}


def live_names(site: Path) -> tuple[list[str], list[str]]:
    state = json.loads((site / "sandbox.json").read_text())
    sandbox = Sandbox(site / "sandbox.json", token=TOKEN)
    now = sandbox.now()
    models = sorted(
        m["name"]
        for m in state["models"].values()
        if m["status"] != "destroying" and not (m["target_status"] == "gone" and m["transition_ends_at"] <= now)
    )
    return models, sorted(k["name"] for k in state["api_keys"].values())


def recover(site: Path) -> Result:
    """What a user does after a crash: apply again. The dead run's lock is no obstacle on its own machine."""
    return cli(site, *apply_args(site))


KILL_POINTS = {
    "before any create": r"^Plan: ",
    "after a model create": r"^model\.chat: deploying",
    "after a key token came back": r"^apiKey\.\w+: created",
    "while models deploy": r"^apiKey\.ops: created",
}


@pytest.mark.parametrize("rules", worlds())
@pytest.mark.parametrize("point", [*KILL_POINTS, "random-1", "random-2"])
def test_apply_killed_at_any_point_leaves_sound_outputs_and_the_next_apply_converges(
    point: str, crash_site: Path
) -> None:
    site = crash_site
    args = [sys.executable, "-c", "from capella_deploy.cli import main; main()", *apply_args(site)]
    child = Child(args, site, child_env())
    try:
        if point in KILL_POINTS:
            child.wait_for(KILL_POINTS[point])
        else:
            child.wait_for(r"^Plan: ")
            time.sleep(random.Random(point).uniform(0.0, 0.25))
    finally:
        child.kill()

    doc = check_outputs_file(site / "outputs.json")
    keys = doc["apiKeys"]
    assert isinstance(keys, dict)
    hashes = live_key_hashes(site)
    # Every token the run announced (it announces a key only once its token is on disk) is in the file.
    for line in child.lines:
        created = re.match(r"^apiKey\.(\S+): created (\S+)", line)
        if created:
            name, key_id = created.groups()
            assert keys[name]["id"] == key_id
            assert sha256(keys[name]["token"]) == hashes[key_id]

    result = recover(site)
    assert result.exit_code == 0, result.output
    assert live_names(site) == (["chat", "embed"], ["app", "ops"]), "no duplicates after the crash"
    # What the outputs say is right; what a crash kept out of them is the next two tests' business.
    outputs = check_outputs_file(site / "outputs.json")
    hashes = live_key_hashes(site)
    keys = outputs["apiKeys"]
    assert isinstance(keys, dict)
    for name, entry in keys.items():
        assert entry["id"] in hashes, name
        if entry.get("token"):
            assert sha256(entry["token"]) == hashes[entry["id"]]
    assert cli(site, "plan", "-f", "capella.yaml", "--sandbox=sandbox.json", "--detailed-exitcode").exit_code == 0


@pytest.mark.parametrize("rules", worlds())
def test_after_a_crash_the_next_apply_records_every_model_in_the_outputs(crash_site: Path) -> None:
    site = crash_site
    args = [sys.executable, "-c", "from capella_deploy.cli import main; main()", *apply_args(site)]
    child = Child(args, site, child_env())
    try:
        child.wait_for(KILL_POINTS["while models deploy"])
    finally:
        child.kill()
    assert recover(site).exit_code == 0
    outputs = json.loads((site / "outputs.json").read_text())
    assert {name: entry["status"] for name, entry in outputs["models"].items()} == {
        "chat": "healthy",
        "embed": "healthy",
    }


@pytest.mark.parametrize("rules", worlds())
def test_the_lock_of_a_run_killed_on_this_machine_binds_no_one(crash_site: Path) -> None:
    site = crash_site
    args = [sys.executable, "-c", "from capella_deploy.cli import main; main()", *apply_args(site)]
    child = Child(args, site, child_env())
    try:
        child.wait_for(KILL_POINTS["before any create"])
    finally:
        child.kill()
    state = json.loads((site / "sandbox.json").read_text())
    [lease] = [k for k in state["api_keys"].values() if k["name"].startswith("capella-deploy-lock-")]
    assert json.loads(lease["description"])["pid"] == child.process.pid, "the killed run held the lock"
    result = cli(site, *apply_args(site))
    assert result.exit_code == 0, result.output
    assert live_names(site) == (["chat", "embed"], ["app", "ops"]), "the dead run's lease is gone with this one's"


@pytest.mark.parametrize("rules", worlds())
def test_a_key_whose_token_never_reached_the_outputs_is_reported_by_the_next_apply(crash_site: Path) -> None:
    # The narrowest crash window: the API created the key and answered, the run died before writing the token.
    site = crash_site
    record_key = Outputs.record_key

    def die_before_writing(self: Outputs, name: str, **fields: object) -> None:
        if name == "ops":
            raise KeyboardInterrupt
        record_key(self, name, **fields)  # type: ignore[arg-type]

    Outputs.record_key = die_before_writing  # type: ignore[method-assign]
    try:
        assert cli(site, *apply_args(site)).exit_code == 130
    finally:
        Outputs.record_key = record_key  # type: ignore[method-assign]
        # The interrupt, raised inside the apply task, leaves that task (its exception never retrieved) in a
        # reference cycle with the exception's traceback. Collect it here: its finalizer logs the exception with
        # a formatted traceback, which on Python 3.11.7 parses source (CPython gh-106905) and, run by the
        # collector in the middle of another test's ast.parse, breaks that parse with a SystemError.
        gc.collect()
    assert "ops" in live_names(site)[1], "the API made the key whose token never reached the outputs"
    again = cli(site, *apply_args(site))
    assert "apiKey.ops" in again.output and "--replace apiKey.ops" in again.output


# -- a rotation killed after the API made the new key, in the spec's world (two keys may share a name) ----------

KILL_IN_ROTATION = """
import json, os, signal, sys, tempfile
from pathlib import Path

state, point = Path(sys.argv[1]), sys.argv[2]
real_mkstemp, real_replace = tempfile.mkstemp, os.replace


def rotating() -> bool:  # the API made the new key of "app" beside the old one
    return [k["name"] for k in json.loads(state.read_text())["api_keys"].values()].count("app") > 1


def mkstemp(*args, **kwargs):
    if point == "before-write" and str(kwargs.get("prefix", "")).startswith(".outputs.json.") and rotating():
        os.kill(os.getpid(), signal.SIGKILL)  # its token never reaches the disk
    return real_mkstemp(*args, **kwargs)


def replace(src, dst, *args, **kwargs):
    if point == "before-rename" and Path(src).name.startswith(".outputs.json.") and rotating():
        os.kill(os.getpid(), signal.SIGKILL)  # its token is only in the fsynced temporary file
    return real_replace(src, dst, *args, **kwargs)


tempfile.mkstemp, os.replace = mkstemp, replace
from capella_deploy.cli import main

sys.argv = ["capella-deploy", *sys.argv[3:]]
main()
"""


def new_app_key(site: Path, before: dict[str, str]) -> str:
    state = json.loads((site / "sandbox.json").read_text())
    [new_id] = [k["id"] for k in state["api_keys"].values() if k["name"] == "app" and k["id"] != before["app"]]
    return new_id


def killed_rotation(site: Path, point: str) -> tuple[dict[str, str], str]:
    """Apply, then `apply --replace apiKey.app` killed after the API made the new key; the keys before it."""
    assert cli(site, *apply_args(site)).exit_code == 0
    before = json.loads((site / "outputs.json").read_text())["apiKeys"]
    args = [sys.executable, "-c", KILL_IN_ROTATION, str(site / "sandbox.json"), point, *apply_args(site)]
    child = Child([*args, "--replace", "apiKey.app"], site, child_env())
    child.process.wait(timeout=60)
    child.kill()
    assert child.process.returncode == -signal.SIGKILL, child.lines
    assert live_names(site)[1].count("app") == 2, "the new key was made beside the old one"
    return {name: entry["id"] for name, entry in before.items()}, before["app"]["token"]


@pytest.mark.parametrize("rules", ["spec"])
def test_a_rotation_killed_before_the_new_token_was_written_keeps_the_old_key_and_drops_the_new(
    crash_site: Path,
) -> None:
    site = crash_site
    before, old_token = killed_rotation(site, "before-write")
    new_id = new_app_key(site, before)
    result = recover(site)
    assert result.exit_code == 0, result.output
    hashes = live_key_hashes(site)
    assert set(hashes) == set(before.values()), "the old key is kept, the orphan deleted"
    outputs = json.loads((site / "outputs.json").read_text())["apiKeys"]
    assert outputs["app"]["id"] == before["app"] and outputs["app"]["token"] == old_token
    assert sha256(old_token) == hashes[before["app"]]
    # and the plan said which way it went
    assert f"apiKey.app[{new_id}] will be destroyed (a newer key whose token nobody holds" in result.stdout
    assert f"{before['app']}, whose token the outputs hold, is kept" in result.stdout
    assert "Warning" not in result.output


@pytest.mark.parametrize("rules", ["spec"])
def test_a_rotation_killed_between_fsync_and_rename_completes_with_the_new_token(crash_site: Path) -> None:
    site = crash_site
    before, _ = killed_rotation(site, "before-rename")
    assert list(site.glob(".outputs.json.*.tmp")), "the new token is only in the killed writer's temporary file"
    new_id = new_app_key(site, before)
    result = recover(site)
    assert result.exit_code == 0, result.output
    hashes = live_key_hashes(site)
    assert set(hashes) == {new_id, before["ops"]}
    outputs = json.loads((site / "outputs.json").read_text())["apiKeys"]
    assert outputs["app"]["id"] == new_id and sha256(outputs["app"]["token"] or "") == hashes[new_id]
    assert not list(site.glob(".outputs.json.*.tmp"))
    assert f"apiKey.app[{before['app']}] will be destroyed (superseded by {new_id}, whose token" in result.stdout
    assert "Warning" not in result.output
