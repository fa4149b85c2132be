"""Two applies of one manifest at once never make duplicates; the advisory lock serialises runs on one machine.

Without the lock (two machines, or two working directories) the conflicts world's refusal of a second resource
with the same name is what prevents duplicates: a model the other run made is adopted, a key the other run made
is reported (its token belongs to the other run). The spec world refuses nothing of the kind, so there the tool
must find and settle what the race made. With the lock, the second run waits (``--lock-timeout``) or
stops at once naming the holder. ``plan`` and ``drift`` take no lock.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from reliability_support import (
    CALM,
    ChaosProfile,
    apply_together,
    duplicates,
    live_keys,
    live_models,
    new_world,
    read_outputs,
    sha256,
    untruths,
    world_seeds,
    worlds,
)

from capella_deploy.cli import main
from capella_deploy.outputs import Outputs
from capella_deploy.run.lock import DEFAULT_LOCK_DIR, org_lock, read_lock
from capella_deploy.sandbox import Rules, Sandbox
from capella_deploy.secrets import Secret

TOKEN = "cbrel-concurrency-token-33"
MANIFEST = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
  - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16], allowedModels: [chat]}
"""
# The tool still counts on the API to refuse a second resource of a name (409); the spec world accepts it.
RACE_DUPLICATES = (
    "spec world: two runs without a lock each create what they did not find, the API accepts the second model "
    "and key of each name (no 409), and the tool neither notices nor removes the duplicate it made"
)
SHARED_OUTPUTS_TOKENS = (
    "spec world: both runs create each key, the API keeps both keys of a name (no 409), and the outputs keep "
    "one token per name, so the other key's token is in no outputs file"
)
OTHER_RUN = re.compile(r"a key named '[\w-]+' already exists that this plan did not know of \(made by another run\?\)")


@pytest.mark.parametrize(("rules", "seed"), world_seeds(range(10), dict.fromkeys(range(10), RACE_DUPLICATES)))
def test_two_applies_at_once_without_a_lock_never_duplicate(rules: Rules, seed: int, tmp_path: Path) -> None:
    profile = ChaosProfile() if seed % 2 else CALM
    first = new_world(seed, tmp_path, profile=profile, rules=rules)
    second = first.twin(tmp_path / "other-outputs.json")
    reports = apply_together([first, second])
    assert duplicates(first.sandbox) == []
    for world, report in zip((first, second), reports, strict=True):
        assert untruths(world, report, alone=False) == [], report.stdout
        for failed in report.result.failed if report.result else ():
            # A key the other run made is not this run's to claim: its token went to the other run.
            if failed.address.startswith("apiKey.") and "already exists" in failed.detail:
                assert OTHER_RUN.search(failed.detail), failed.detail
    # The tokens of every live key are in one of the two outputs files.
    tokens = {
        sha256(entry["token"])
        for world in (first, second)
        for entry in read_outputs(world.outputs_path)["apiKeys"].values()
        if entry.get("token")
    }
    lost = {**first.lost_tokens(), **second.lost_tokens()}
    for name, key_id, token_hash in live_keys(first.sandbox):
        assert token_hash in tokens or lost.get(name) == key_id, name
    # And one more (calm) run converges from whatever the race left.
    first.use(CALM)
    for _ in range(2):
        if first.apply().exit_code == 0:
            break
    # The organization converged (which run's outputs hold which token is the business of the race above).
    assert [(name, status) for name, _, status in live_models(first.sandbox)] == sorted(first.wanted_status().items())
    assert [name for name, _, _ in live_keys(first.sandbox)] == sorted(k.name for k in first.manifest.apiKeys)


@pytest.mark.parametrize("rules", worlds(spec_fails=SHARED_OUTPUTS_TOKENS))
def test_two_runs_sharing_one_outputs_file_keep_each_others_tokens(rules: Rules, tmp_path: Path) -> None:
    first = new_world(1, tmp_path, rules=rules)
    second = first.twin(first.outputs_path)
    apply_together([first, second])
    outputs = read_outputs(first.outputs_path)
    recorded = {sha256(e["token"]) for e in outputs["apiKeys"].values() if e.get("token")}
    assert {k[2] for k in live_keys(first.sandbox)} <= recorded


# -- the advisory lock, through the CLI in child processes ---------------------------------------------------


@pytest.fixture
def site(rules: Rules, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with the manifest and a sandbox in the world ``rules`` (each test's parameter)."""
    monkeypatch.chdir(tmp_path)  # the lock directory is relative to the working directory
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    Sandbox(tmp_path / "sandbox.json", token=TOKEN, rules=rules).set_speed(1000.0)  # a deployment takes 0.3 s
    yield tmp_path


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPELLA_")}
    return {**base, "CAPELLA_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}


def spawn(site: Path, *extra: str, slow: bool = False) -> subprocess.Popen[str]:
    """An apply in a child process; a ``slow`` one takes 1.2 s per read, so it holds the lock for several
    seconds, long enough for a second child to start and meet it even on a loaded machine."""
    args = ["apply", "-f", "capella.yaml", "--auto-approve", "--sandbox=sandbox.json", "--outputs", "outputs.json"]
    faults = site / "slow-reads.json"
    faults.write_text(json.dumps({"routes": [{"match": "GET /v4/**", "latency_ms": 1200}]}))
    return subprocess.Popen(
        [sys.executable, "-c", "from capella_deploy.cli import main; main()", *args, *extra],
        cwd=site,
        env={**env(), "CAPELLA_SANDBOX_FAULTS": str(faults) if slow else ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_locked(site: Path, org: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while read_lock(site / DEFAULT_LOCK_DIR, org) is None:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def org_of(site: Path) -> str:
    org: str = json.loads((site / "sandbox.json").read_text())["org_id"]
    return org


@pytest.mark.parametrize("rules", worlds())
def test_a_second_run_stops_at_once_naming_the_holder(site: Path) -> None:
    holder = spawn(site, slow=True)
    wait_until_locked(site, org_of(site), holder)
    loser = spawn(site)
    out, err = loser.communicate(timeout=30)
    holder_out, _ = holder.communicate(timeout=30)
    assert holder.returncode == 0, holder_out
    assert loser.returncode == 1
    assert f"organization {org_of(site)} is locked: lock " in err
    assert "for apply since 20" in err and f"pid {holder.pid} on {socket.gethostname()}" in err
    assert "--lock-timeout" in err and "force-unlock" in err
    assert "Traceback" not in err and TOKEN not in out + err
    state = json.loads((site / "sandbox.json").read_text())
    assert sorted(m["name"] for m in state["models"].values()) == ["chat", "embed"]
    assert [k["name"] for k in state["api_keys"].values()] == ["app"]


@pytest.mark.parametrize("rules", worlds())
def test_a_second_run_with_a_lock_timeout_waits_then_finds_nothing_to_do(site: Path) -> None:
    holder = spawn(site, slow=True)
    wait_until_locked(site, org_of(site), holder)
    waiter = spawn(site, "--lock-timeout", "60s")
    waiter_out, waiter_err = waiter.communicate(timeout=60)
    holder.communicate(timeout=30)
    assert holder.returncode == 0
    assert waiter.returncode == 0, waiter_err
    assert "No changes." in waiter_out, "the waiter planned only once the holder was done"
    state = json.loads((site / "sandbox.json").read_text())
    assert sorted(m["name"] for m in state["models"].values()) == ["chat", "embed"]
    outputs = json.loads((site / "outputs.json").read_text())
    [key] = state["api_keys"].values()
    assert sha256(outputs["apiKeys"]["app"]["token"]) == key["token_sha256"]


@pytest.mark.parametrize("rules", worlds(spec_fails=RACE_DUPLICATES))
def test_two_runs_started_together_in_different_directories_make_one_set(site: Path) -> None:
    # Different working directories mean different lock directories: only the API stands between them.
    (site / "a").mkdir()
    (site / "b").mkdir()
    for sub in ("a", "b"):
        (site / sub / "capella.yaml").write_text(MANIFEST)
    state = str(site / "sandbox.json")
    # Creates take 3 s to land, so each run reads the organization before the other's creates exist: the two
    # really race, however far apart a loaded machine starts them.
    faults = site / "slow-creates.json"
    faults.write_text(json.dumps({"routes": [{"match": "POST /v4/**", "latency_ms": 3000}]}))

    def start(sub: str) -> subprocess.Popen[str]:
        args = ["apply", "-f", "capella.yaml", "--auto-approve", f"--sandbox={state}", "--outputs", "out.json"]
        return subprocess.Popen(
            [sys.executable, "-c", "from capella_deploy.cli import main; main()", *args],
            cwd=site / sub,
            env={**env(), "CAPELLA_SANDBOX_FAULTS": str(faults)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    runs = [start("a"), start("b")]
    results = [run.communicate(timeout=60) for run in runs]
    world = json.loads((site / "sandbox.json").read_text())
    assert sorted(m["name"] for m in world["models"].values()) == ["chat", "embed"]
    assert [k["name"] for k in world["api_keys"].values()] == ["app"]
    for run, (out, err) in zip(runs, results, strict=True):
        assert "Traceback" not in out + err
        assert run.returncode == (0 if "Apply complete!" in out or "No changes." in out else 1), out + err


@pytest.mark.parametrize("rules", worlds())
def test_plan_and_drift_take_no_lock(site: Path) -> None:
    org = org_of(site)
    cli_env = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": ""}
    with org_lock(org, "apply", directory=site / DEFAULT_LOCK_DIR):
        plan = CliRunner().invoke(main, ["plan", "-f", "capella.yaml", "--sandbox=sandbox.json"], env=cli_env)
        drift = CliRunner().invoke(main, ["drift", "-f", "capella.yaml", "--sandbox=sandbox.json"], env=cli_env)
        apply = CliRunner().invoke(
            main, ["apply", "-f", "capella.yaml", "--auto-approve", "--sandbox=sandbox.json"], env=cli_env
        )
    assert plan.exit_code == 0, plan.output
    assert "locked" not in plan.output + drift.output
    assert drift.exit_code in (0, 2), drift.output
    assert apply.exit_code == 1 and "is locked" in apply.stderr


@pytest.mark.parametrize("rules", worlds())
def test_lock_timeout_waits_for_a_release(site: Path) -> None:
    org = org_of(site)
    released = threading.Event()

    def hold() -> None:
        with org_lock(org, "apply", directory=site / DEFAULT_LOCK_DIR):
            released.wait(0.6)

    holder = threading.Thread(target=hold)
    holder.start()
    while read_lock(site / DEFAULT_LOCK_DIR, org) is None:
        time.sleep(0.005)
    cli_env = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": ""}
    args = ["apply", "-f", "capella.yaml", "--auto-approve", "--sandbox=sandbox.json", "--outputs", "o.json"]
    result: Result = CliRunner().invoke(main, [*args, "--lock-timeout", "20s"], env=cli_env)
    holder.join()
    assert result.exit_code == 0, result.output
    assert read_lock(site / DEFAULT_LOCK_DIR, org) is None, "the lock is released after the run"


def test_a_lost_token_report_never_erases_the_token_another_run_wrote(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    mine, theirs = Outputs(path), Outputs(path)
    theirs.record_key("app", key_id="k1", token=Secret("tok-1"), region="us-east-1")
    mine.record_model("chat", id="m1", status="healthy")  # written over the file as it is now, not from memory
    mine.record_key("app", key_id="k1", token=None, region="us-east-1")  # took the other run's key for its own
    assert json.loads(path.read_text())["apiKeys"]["app"]["token"] == "tok-1"
    assert set(json.loads(path.read_text())["models"]) == {"chat"}
    mine.record_key("app", key_id="k2", token=None, region="us-east-1")  # a different key: recorded as it is
    assert json.loads(path.read_text())["apiKeys"]["app"] == {"id": "k2", "region": "us-east-1", "token": None}
