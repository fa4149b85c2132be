"""``sandbox serve`` and ``sandbox reset``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sandbox_support import Api

from capella_deploy.cli.sandbox import sandbox_group
from capella_deploy.sandbox import Sandbox

SECRET = "cli-test-token-4d1f"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """Starts ``sandbox serve --port 0`` in a child process; yields a function giving (base URL, printed text)."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[str, str]:
        command = [sys.executable, "-c", "from capella_deploy.cli.sandbox import sandbox_group; sandbox_group()"]
        env = {**os.environ, "CAPELLA_API_TOKEN": SECRET}
        proc = subprocess.Popen(
            [*command, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        started.append(proc)
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("export CAPELLA_API_URL="):
                break
        text = "".join(printed)
        assert "export CAPELLA_API_URL=" in text, text
        base = text.split("export CAPELLA_API_URL=")[1].split()[0]
        return base, text

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_prints_the_org_and_url_but_never_the_token(serve, tmp_path) -> None:
    state = tmp_path / "served.json"
    base, printed = serve("--state", str(state), "--speed", "5", "--rate-limit", "1")
    org_id = Sandbox(state).org_id
    assert f"organization {org_id}" in printed
    assert f"CAPELLA_ORG_ID={org_id}" in printed
    assert "from $CAPELLA_API_TOKEN" in printed
    assert SECRET not in printed
    headers = {"Authorization": f"Bearer {SECRET}"}
    assert httpx.get(f"{base}/v4/organizations", headers=headers).json()["data"][0]["id"] == org_id
    assert httpx.get(f"{base}/v4/organizations", headers={"Authorization": "Bearer sandbox-token"}).status_code == 401
    assert httpx.get(f"{base}/v4/organizations", headers=headers).status_code == 429
    assert Sandbox(state).clock.speed == 5  # type: ignore[attr-defined]


def test_serve_loads_a_fault_file(serve, tmp_path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("routes:\n  - match: GET /v4/organizations\n    error_rate: 1\n    error_status: 502\n")
    base, _ = serve("--state", str(tmp_path / "s.json"), "--faults", str(faults))
    response = httpx.get(f"{base}/v4/organizations", headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 502


def test_serve_rejects_a_bad_fault_file(tmp_path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text("deploy_fail_rate: 3\n")
    result = CliRunner().invoke(sandbox_group, ["serve", "--state", str(tmp_path / "s.json"), "--faults", str(faults)])
    assert result.exit_code == 2
    assert "deploy_fail_rate" in result.output


def test_reset_empties_the_world_and_keeps_the_org(tmp_path, clock) -> None:
    state = tmp_path / "s.json"
    api = Api(Sandbox(state, clock=clock))
    api.deploy("m")
    result = CliRunner().invoke(sandbox_group, ["reset", "--state", str(state)])
    assert result.exit_code == 0, result.output
    assert api.sandbox.org_id in result.output
    assert api.get(api.models_url).json()["data"] == []


def test_serve_takes_the_world_and_keeps_it_in_the_state(serve, tmp_path) -> None:
    state = tmp_path / "s.json"
    base, printed = serve("--state", str(state), "--world", "conflicts")
    assert "World            conflicts rules" in printed
    assert Sandbox(state).rules == "conflicts"
    keys = f"{base}/v4/organizations/{Sandbox(state).org_id}/aiServices/models/apiKeys"
    body = {"name": "k", "expiry": 1, "allowedCIDRs": ["10.0.0.0/8"], "region": "us-east-1"}
    headers = {"Authorization": f"Bearer {SECRET}"}
    assert [httpx.post(keys, json=body, headers=headers).status_code for _ in range(2)] == [201, 409]
    _, printed = serve("--state", str(tmp_path / "new.json"))
    assert "World            spec rules" in printed


def test_reset_takes_the_world_and_keeps_it(tmp_path) -> None:
    state = tmp_path / "s.json"
    Sandbox(state)  # reset empties a world; it never makes one
    result = CliRunner().invoke(sandbox_group, ["reset", "--state", str(state), "--world", "conflicts"])
    assert result.exit_code == 0, result.output
    assert "conflicts rules" in result.output
    assert Sandbox(state).rules == "conflicts"
    again = CliRunner().invoke(sandbox_group, ["reset", "--state", str(state)])
    assert "conflicts rules" in again.output, "a reset without --world keeps the world"
    wrong = CliRunner().invoke(sandbox_group, ["reset", "--state", str(state), "--world", "409"])
    assert wrong.exit_code == 2 and "'spec'" in wrong.output
