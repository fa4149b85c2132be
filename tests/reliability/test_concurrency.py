"""Many runs on one organization: the organization lock serialises them, wherever they run.

Without the lock (the applier alone, as before the lock was taken) the API's refusal of a second resource with
the same name is what prevents duplicates: a model the other run made is adopted, a key the other run made is
reported (its token belongs to the other run). With the lock, kept in the organization as a lease key, runs in
separate directories and processes against one served sandbox take turns: never two holders at once, no
interleaved changes, no duplicates, even where the API accepts two resources of one name (the spec's world).
``plan`` and ``drift`` take no lock, and the lock's own key never shows in a plan, drift report or export.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
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

from capella_deploy.api.client import CapellaClient
from capella_deploy.cli import main
from capella_deploy.manifest import ManifestError, load_manifest
from capella_deploy.outputs import Outputs
from capella_deploy.run.lock import LEASE_SECONDS, LockHeld, LockLost, LockRequest, OrgLock, force_unlock, org_lock
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Faults, RouteFault, Rules, Sandbox
from capella_deploy.sandbox.server import running_server
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
OTHER_RUN = re.compile(r"a key named '[\w-]+' already exists that this plan did not know of \(made by another run\?\)")


@pytest.mark.parametrize(("rules", "seed"), world_seeds(range(10)))
def test_two_applies_at_once_without_a_lock_never_duplicate(rules: Rules, seed: int, tmp_path: Path) -> None:
    profile = ChaosProfile() if seed % 2 else CALM
    first = new_world(seed, tmp_path, profile=profile, rules=rules)
    second = first.twin(tmp_path / "other-outputs.json")
    reports = apply_together([first, second])
    # A key create whose answer was lost beside the other run's key of that name claims neither and deletes
    # neither (test_spec_world): that pair is left for the next apply, which keeps the key whose token is held.
    contested = {
        failed.address
        for report in reports
        for failed in (report.result.failed if report.result else ())
        if "another run is making this key too" in failed.detail
    }
    assert [d for d in duplicates(first.sandbox) if d not in contested] == []
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
        assert token_hash in tokens or lost.get(name) == key_id or f"apiKey.{name}" in contested, name
    # And one more (calm) run converges from whatever the race left.
    first.use(CALM)
    for _ in range(2):
        if first.apply().exit_code == 0:
            break
    # The organization converged (which run's outputs hold which token is the business of the race above).
    assert [(name, status) for name, _, status in live_models(first.sandbox)] == sorted(first.wanted_status().items())
    assert [name for name, _, _ in live_keys(first.sandbox)] == sorted(k.name for k in first.manifest.apiKeys)


@pytest.mark.parametrize("rules", worlds())
def test_two_runs_sharing_one_outputs_file_keep_each_others_tokens(rules: Rules, tmp_path: Path) -> None:
    first = new_world(1, tmp_path, rules=rules)
    second = first.twin(first.outputs_path)
    apply_together([first, second])
    outputs = read_outputs(first.outputs_path)
    recorded = {sha256(e["token"]) for e in outputs["apiKeys"].values() if e.get("token")}
    assert {k[2] for k in live_keys(first.sandbox)} <= recorded


# -- the organization lock ----------------------------------------------------------------------------------

LEASE = "capella-deploy-lock-"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPELLA_")}
    return {**base, "CAPELLA_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1", **extra}


def spec_world(sandbox: Sandbox) -> Sandbox:
    """The official API's world: two keys or models may share a name (no 409)."""
    with sandbox.mutate() as world:
        world.reject_duplicate_names = False
    return sandbox


def leases(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The lease keys in the organization, each with its description read."""
    return [
        {"id": k.id, "name": k.name, "cidrs": k.allowed_cidrs, "days": k.expiry_days, **json.loads(k.description)}
        for k in sandbox.world().api_keys.values()
        if k.name.startswith(LEASE)
    ]


def client_of(sandbox: Sandbox) -> CapellaClient:
    return CapellaClient(base_url=IN_PROCESS_BASE_URL, token=Secret(TOKEN), transport=sandbox.transport())


class SteppedClock:
    """Time that moves only when the test moves it; a sleeper wakes once the time it waits for has come."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        until = self._now + max(0.0, seconds)
        while self._now < until:
            await asyncio.sleep(0.001)


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.005)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return spec_world(Sandbox(tmp_path / "sandbox.json", token=TOKEN))


# Several processes, each in its own directory, take the lock again and again against one served sandbox. Inside,
# each counts itself in and out of a shared counter (under flock): the counter's maximum is the number of holders
# ever seen at once.
CONTENDER = r"""
import asyncio, fcntl, json, os, sys, time
from capella_deploy.api.client import CapellaClient
from capella_deploy.run.lock import LockRequest, org_lock
from capella_deploy.secrets import Secret

url, token, org, counter, rounds, go = sys.argv[1:7]


def count(delta):
    with open(counter, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        doc = json.loads(f.read())
        doc["inside"] += delta
        doc["most"] = max(doc["most"], doc["inside"])
        doc["entries"] += delta > 0
        f.seek(0)
        f.truncate()
        f.write(json.dumps(doc))


async def main():
    waited = []
    while not os.path.exists(go):  # every contender starts at once
        time.sleep(0.005)
    async with CapellaClient(base_url=url, token=Secret(token)) as client:
        for _ in range(int(rounds)):
            request = LockRequest("apply", timeout=120, poll_seconds=(0.02, 0.2))
            async with org_lock(client, org, request) as lock:
                waited.append(lock.waited)
                count(+1)
                await asyncio.sleep(0.02)
                count(-1)
    print(json.dumps(waited))


asyncio.run(main())
"""


def test_processes_in_separate_directories_never_hold_the_lock_together(sandbox: Sandbox, tmp_path: Path) -> None:
    processes, rounds = 6, 4
    counter = tmp_path / "counter.json"
    counter.write_text(json.dumps({"inside": 0, "most": 0, "entries": 0}))
    script = tmp_path / "contender.py"
    script.write_text(CONTENDER)
    go = tmp_path / "go"
    with running_server(sandbox) as url:
        children = []
        for n in range(processes):
            home = tmp_path / f"runner-{n}"
            home.mkdir()
            args = [sys.executable, str(script), url, TOKEN, sandbox.org_id, str(counter), str(rounds), str(go)]
            children.append(subprocess.Popen(args, cwd=home, env=env(), stdout=subprocess.PIPE, text=True))
        go.touch()
        waits = [json.loads(child.communicate(timeout=120)[0]) for child in children]
    assert [child.returncode for child in children] == [0] * processes
    seen = json.loads(counter.read_text())
    assert seen == {"inside": 0, "most": 1, "entries": processes * rounds}, "never two holders at once"
    assert leases(sandbox) == [], "every lease was given back"
    assert [k.name for k in sandbox.world().api_keys.values()] == []
    flat = sorted(w for run in waits for w in run)
    waited = sum(w > 0.05 for w in flat)
    median, longest = flat[len(flat) // 2], flat[-1]
    print(f"lock taken {len(flat)} times, {waited} after waiting; median {median:.3f} s, longest {longest:.3f} s")


MANY = 4
# Against a served sandbox the CLI waits in wall time (20 s before the first look at a deployment): keys only.
KEYS_ONLY = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}
  - {name: ops, expiryDays: 30, allowedCIDRs: [10.0.0.0/16]}
"""


@pytest.mark.parametrize("served", [True, False], ids=["served sandbox, keys", "shared state file, models and key"])
def test_applies_in_separate_directories_take_turns_in_the_spec_world(
    served: bool, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.set_speed(1000.0)  # a deployment takes 0.3 s
    manifest = KEYS_ONLY if served else MANIFEST
    with contextlib.ExitStack() as stack:
        if served:
            url = stack.enter_context(running_server(sandbox))
            where = {"CAPELLA_API_URL": url, "CAPELLA_ORG_ID": sandbox.org_id}
            target = []
        else:
            where = {}
            target = [f"--sandbox={sandbox.state_path}"]
        runs = []
        for n in range(MANY):
            home = tmp_path / f"checkout-{n}"
            home.mkdir()
            (home / "capella.yaml").write_text(manifest)
            args = ["apply", "-f", "capella.yaml", "--auto-approve", "--lock-timeout", "120s", *target]
            runs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "from capella_deploy.cli import main; main()", *args],
                    cwd=home,
                    env=env(**where),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        results = [run.communicate(timeout=150) for run in runs]
    for run, (out, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, out + err
        assert "Traceback" not in out + err and TOKEN not in out + err
    changed = [out for out, _ in results if "Apply complete!" in out]
    # The runs after the first planned against what it had made: nothing left to do, nothing made twice.
    assert len(changed) == 1 and sum("No changes." in out for out, _ in results) == MANY - 1
    assert duplicates(sandbox) == []
    assert [name for name, _, _ in live_models(sandbox)] == ([] if served else ["chat", "embed"])
    assert [name for name, _, _ in live_keys(sandbox)] == (["app", "ops"] if served else ["app"])
    taken = [float(m[1]) for out, _ in results for m in re.finditer(r"taken in ([\d.]+) s\)", out)]
    assert len(taken) == MANY
    print(f"{MANY} applies; lock waits {sorted(taken)} s; runs that changed something: {len(changed)}")


def test_a_held_lock_names_its_holder_and_the_command_that_frees_it_from_anywhere(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    state = tmp_path / "sandbox.json"
    cli_env = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": ""}
    monkeypatch.chdir(tmp_path)

    async def hold() -> str:
        # A holder that is alive (this very process) and so binds everyone until its lease runs out.
        async with client_of(sandbox) as client:
            holder = OrgLock(client, sandbox.org_id, LockRequest("destroy", environment="staging"))
            await holder.acquire()
            return holder.id

    lock_id = asyncio.run(hold())
    [lease] = leases(sandbox)
    assert lease["lock"] == lock_id and lease["op"] == "destroy" and lease["env"] == "staging"
    assert lease["pid"] == os.getpid() and f"pid {os.getpid()}" in lease["by"]
    # A key that admits no one, lives a day at most, and whose token was never kept.
    assert lease["cidrs"] == ["192.0.2.1/32"] and lease["days"] == 1
    assert len(sandbox.world().api_keys[lease["id"]].description) <= 250

    apply = ["apply", "-f", "capella.yaml", "--auto-approve", f"--sandbox={state}"]
    blocked = CliRunner().invoke(main, apply, env=cli_env)
    assert blocked.exit_code == 1
    assert f"organization {sandbox.org_id} is locked: lock {lock_id} held by " in blocked.stderr
    assert "for destroy of environment staging since 20" in blocked.stderr and "--lock-timeout" in blocked.stderr
    command = re.search(r"free it now with: (capella-deploy force-unlock .*)$", blocked.stderr.strip())
    assert command, blocked.stderr
    assert command[1] == f"capella-deploy force-unlock {lock_id} --org {sandbox.org_id} --sandbox={state}"
    (tmp_path / "token").write_text(TOKEN)
    with_file = CliRunner().invoke(main, [*apply, "--token-file", str(tmp_path / "token")], env=cli_env)
    assert with_file.exit_code == 1 and f"--sandbox={state} --token-file {tmp_path / 'token'}" in with_file.stderr
    assert [k.name for k in sandbox.world().api_keys.values() if not k.name.startswith(LEASE)] == []

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # another checkout, another machine: the lock is in the organization
    wrong = CliRunner().invoke(main, ["force-unlock", "no-such-lock", f"--sandbox={state}"], env=cli_env)
    assert wrong.exit_code == 1 and f"has no lock no-such-lock; its lock ids now: {lock_id}" in wrong.stderr
    freed = CliRunner().invoke(main, shlex.split(command[1])[1:], env=cli_env)
    assert freed.exit_code == 0, freed.output
    assert f"Removed the lock {lock_id} from organization {sandbox.org_id}" in freed.stdout
    assert leases(sandbox) == []
    monkeypatch.chdir(tmp_path)
    applied = CliRunner().invoke(main, apply, env=cli_env)
    assert applied.exit_code == 0, applied.output
    assert leases(sandbox) == []


def test_a_lease_is_renewed_keeps_its_place_and_a_force_unlock_stops_its_holder(sandbox: Sandbox) -> None:
    clock = SteppedClock()

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            with pytest.raises(LockLost, match=r"removed while this run held it \(force-unlock\?\)"):
                async with org_lock(client, sandbox.org_id, LockRequest("apply"), clock=clock) as lock:
                    [first] = leases(sandbox)
                    await asyncio.sleep(0.05)  # the keeper starts its wait for the next renewal
                    clock.advance(LEASE_SECONDS / 3)
                    await until(lambda: [lease["id"] for lease in leases(sandbox)] not in ([], [first["id"]]))
                    [renewed] = leases(sandbox)
                    assert renewed["lock"] == lock.id and renewed["since"] is not None
                    assert renewed["expires"] > first["expires"]
                    # Renewed, it is still the first in line: a run that asks now waits its turn.
                    rival = OrgLock(client, sandbox.org_id, LockRequest("apply"), clock=clock)
                    with pytest.raises(LockHeld):
                        await rival.acquire()
                    assert [lease["lock"] for lease in leases(sandbox)] == [lock.id]
                    await force_unlock(client, sandbox.org_id, lock.id)
                    await asyncio.sleep(0.05)
                    clock.advance(LEASE_SECONDS / 3)
                    await asyncio.sleep(30)  # the next renewal finds the lock gone and stops this block
            assert leases(sandbox) == []

    asyncio.run(scenario())


def test_a_holder_that_stops_renewing_frees_the_lock_when_its_lease_runs_out(sandbox: Sandbox) -> None:
    clock = SteppedClock()

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            stuck = OrgLock(client, sandbox.org_id, LockRequest("apply", environment="prod"), clock=clock)
            await stuck.acquire()  # and then never renews, as a frozen or partitioned run would not
            rival = OrgLock(client, sandbox.org_id, LockRequest("apply"), clock=clock)
            with pytest.raises(LockHeld, match=r"is locked: lock .* of environment prod"):
                await rival.acquire()
            clock.advance(LEASE_SECONDS + 1)
            await rival.acquire()
            assert [lease["lock"] for lease in leases(sandbox)] == [rival.id], "the expired lease was swept"
            with pytest.raises(LockLost, match="ran out before it could be renewed"):
                await stuck._renew()
            await rival.release()
            assert leases(sandbox) == []

    asyncio.run(scenario())


def spawn(site: Path, *extra: str, slow: bool = False) -> subprocess.Popen[str]:
    """An apply in a child process; a ``slow`` one takes 1.2 s per read, so it holds the lock for several
    seconds, long enough for a second child to start and meet it even on a loaded machine."""
    args = ["apply", "-f", "capella.yaml", "--auto-approve", "--sandbox=sandbox.json", "--outputs", "outputs.json"]
    faults = site / "slow-reads.json"
    faults.write_text(json.dumps({"routes": [{"match": "GET /v4/**", "latency_ms": 1200}]}))
    return subprocess.Popen(
        [sys.executable, "-c", "from capella_deploy.cli import main; main()", *args, *extra],
        cwd=site,
        env=env(CAPELLA_SANDBOX_FAULTS=str(faults) if slow else ""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_locked(sandbox: Sandbox, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not leases(sandbox):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def site(tmp_path: Path, sandbox: Sandbox) -> Path:
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    sandbox.set_speed(1000.0)  # a deployment takes 0.3 s
    return tmp_path


def test_sigterm_releases_the_lock_like_ctrl_c(site: Path, sandbox: Sandbox) -> None:
    holder = spawn(site, slow=True)
    wait_until_locked(sandbox, holder)
    holder.send_signal(signal.SIGTERM)
    out, err = holder.communicate(timeout=30)
    assert holder.returncode == 130, out + err
    assert "Interrupted." in err and "Traceback" not in out + err
    assert leases(sandbox) == [], "the lease was deleted on the way out"
    follow = spawn(site)
    follow_out, follow_err = follow.communicate(timeout=60)
    assert follow.returncode == 0, follow_out + follow_err


def test_a_second_run_with_a_lock_timeout_waits_then_finds_nothing_to_do(site: Path, sandbox: Sandbox) -> None:
    holder = spawn(site, slow=True)
    wait_until_locked(sandbox, holder)
    waiter = spawn(site, "--lock-timeout", "60s")
    waiter_out, waiter_err = waiter.communicate(timeout=60)
    holder.communicate(timeout=30)
    assert holder.returncode == 0
    assert waiter.returncode == 0, waiter_err
    assert re.search(r"Organization \S+ is locked: lock \S+ held by .* for apply since", waiter_out), waiter_out
    assert "No changes." in waiter_out, "the waiter planned only once the holder was done"
    state = json.loads((site / "sandbox.json").read_text())
    assert sorted(m["name"] for m in state["models"].values()) == ["chat", "embed"]
    outputs = json.loads((site / "outputs.json").read_text())
    [key] = state["api_keys"].values()
    assert sha256(outputs["apiKeys"]["app"]["token"]) == key["token_sha256"]
    assert set(outputs["apiKeys"]) == {"app"}, "the lease is no output"


def test_plan_drift_and_export_take_no_lock_and_never_show_it(site: Path, sandbox: Sandbox) -> None:
    (site / "prune.yaml").write_text(MANIFEST + 'prune: {match: "*"}\n')
    cli_env = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": ""}
    state = f"--sandbox={site / 'sandbox.json'}"
    outputs = f"--outputs={site / 'outputs.json'}"

    def cli(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=cli_env)

    assert cli("apply", "-f", str(site / "capella.yaml"), "--auto-approve", state, outputs).exit_code == 0

    async def hold() -> None:
        async with client_of(sandbox) as client:
            await OrgLock(client, sandbox.org_id, LockRequest("apply")).acquire()

    asyncio.run(hold())
    assert len(leases(sandbox)) == 1
    plan = cli("plan", "-f", str(site / "prune.yaml"), state, "--detailed-exitcode")
    drift = cli("drift", "-f", str(site / "capella.yaml"), state)
    export = cli("export", state)
    apply = cli("apply", "-f", str(site / "capella.yaml"), "--auto-approve", state, outputs)
    assert plan.exit_code == 0 and "No changes." in plan.stdout, plan.output  # prune "*" spares the lease
    assert drift.exit_code == 0, drift.output
    assert export.exit_code == 0 and LEASE not in export.output
    for result in (plan, drift, export):
        assert "locked" not in result.output and LEASE not in result.output
    assert apply.exit_code == 1 and "is locked" in apply.stderr
    assert len(leases(sandbox)) == 1 and [k[0] for k in live_keys(sandbox)] == ["app", leases(sandbox)[0]["name"]]


def test_an_environment_is_named_in_the_lease(site: Path, sandbox: Sandbox) -> None:
    holder = spawn(site, "--environment", "canary", slow=True)
    wait_until_locked(sandbox, holder)
    [lease] = leases(sandbox)
    holder.communicate(timeout=60)
    assert lease["env"] == "canary" and lease["op"] == "apply" and lease["pid"] == holder.pid
    assert holder.returncode == 0


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


def test_a_manifest_may_not_declare_a_key_named_like_a_lease(tmp_path: Path) -> None:
    path = tmp_path / "capella.yaml"
    path.write_text(MANIFEST.replace("name: app,", "name: capella-deploy-lock-app,"))
    expected = r"capella\.yaml:7: apiKeys\[0\]\.name: names starting with capella-deploy-lock- are the organization"
    with pytest.raises(ManifestError, match=expected):
        load_manifest([path])


class CountingDrops(httpx.AsyncBaseTransport):
    """The sandbox's transport, counting the creates whose answer never came back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.lost_creates = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.inner.handle_async_request(request)
        except httpx.TransportError:
            self.lost_creates += request.method == "POST"
            raise


def test_lease_keys_whose_answers_were_lost_are_found_and_given_back(tmp_path: Path) -> None:
    # Half the lease creates are carried out but their answer dropped: the lock finds such a key by its lock id.
    route = RouteFault(match="POST /v4/organizations/*/aiServices/models/apiKeys", drop_after=0.5)
    sandbox = spec_world(Sandbox(tmp_path / "sandbox.json", token=TOKEN, faults=Faults(seed=5, routes=[route])))
    network = CountingDrops(sandbox.transport())

    async def rounds() -> None:
        async with CapellaClient(base_url=IN_PROCESS_BASE_URL, token=Secret(TOKEN), transport=network) as client:
            for _ in range(12):
                async with org_lock(client, sandbox.org_id, LockRequest("apply", timeout=30)) as lock:
                    assert {lease["lock"] for lease in leases(sandbox)} == {lock.id}
                assert leases(sandbox) == [], "every key of the lock is given back, answered or not"

    asyncio.run(rounds())
    assert network.lost_creates >= 3, "the faults hit lease creates"
