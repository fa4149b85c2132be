"""Stepped sandbox time: it stands still between waits and moves by exactly the time each wait asks for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from capella_deploy.cli import main
from capella_deploy.sandbox import Sandbox


def test_stepped_time_moves_only_by_waits_and_every_process_sharing_the_state_sees_it(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "s.json")
    sandbox.step_clock()
    start = sandbox.now()
    assert [sandbox.now() for _ in range(3)] == [start] * 3, "the wall clock does not move it"

    asyncio.run(sandbox.clock.sleep(300))
    assert sandbox.now() == start + 300
    other = Sandbox(tmp_path / "s.json")  # another process reading the same state file
    assert other.now() == start + 300
    asyncio.run(other.clock.sleep(-5))
    other.advance_clock(60)
    assert sandbox.now() == start + 360

    sandbox.set_speed(1_000)
    assert Sandbox(tmp_path / "s.json").now() >= start + 360
    assert not getattr(Sandbox(tmp_path / "s.json").clock, "stepped", True)


def test_an_apply_against_stepped_time_waits_its_deployment_out_without_wall_time(tmp_path: Path) -> None:
    Sandbox(tmp_path / "s.json", token="tok").step_clock()
    (tmp_path / "m.yaml").write_text(
        "apiVersion: capella-deploy/v1\ndefaults: {provider: aws, region: us-east-1}\n"
        "models:\n  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}\n"
    )
    args = ["apply", "-f", str(tmp_path / "m.yaml"), "--auto-approve", f"--sandbox={tmp_path / 's.json'}"]
    result = CliRunner().invoke(
        main,
        [*args, "--outputs", str(tmp_path / "out.json")],
        env={"CAPELLA_API_TOKEN": "tok", "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": ""},
    )
    assert result.exit_code == 0, result.output
    assert "model.chat: healthy" in result.stdout
    sandbox = Sandbox(tmp_path / "s.json", token="tok")
    [model] = sandbox.world().models.values()
    assert sandbox.now() - model.audit.created_at >= sandbox.timings.deploy_seconds
