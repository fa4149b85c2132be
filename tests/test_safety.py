"""Guards for pipelines: the mass-change threshold and the destroy confirmation."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest

from tests.conftest import World


def fleet(world: World, big: int) -> str:
    """Ten models; the first ``big`` of them on 192 GB GPUs."""
    lines = ["apiVersion: capella-deploy/v1", "defaults: {region: us-east-1}", "models:"]
    for i in range(10):
        gpu = 192 if i < big else 24
        lines.append(f"  - {{name: m{i}, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: {gpu}}}")
    return str(world.write("fleet.yaml", "\n".join(lines) + "\n"))


def test_replacing_more_than_30_percent_needs_allow_mass_change(world: World) -> None:
    assert world.cli("apply", "-f", fleet(world, 0), "--auto-approve").exit_code == 0
    before = {m.id for m in world.sandbox.world().models.values()}

    three = world.cli("plan", "-f", fleet(world, 3))  # 3 of 10: at the limit, allowed
    assert three.exit_code == 0, three.output

    four = world.cli("apply", "-f", fleet(world, 4), "--auto-approve")
    assert four.exit_code == 1
    assert "4 of 10" in four.stderr and "--allow-mass-change" in four.stderr
    assert {m.id for m in world.sandbox.world().models.values()} == before
    assert world.cli("plan", "-f", fleet(world, 4)).exit_code == 1

    allowed = world.cli("apply", "-f", fleet(world, 4), "--auto-approve", "--allow-mass-change")
    assert allowed.exit_code == 0, allowed.output
    gpus = sorted(m.gpu_memory for m in world.sandbox.world().models.values() if m.status != "destroying")
    assert gpus == [24] * 6 + [192] * 4


def run_in_terminal(world: World, args: list[str], answer: str) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, type ``answer`` at its prompt, return its exit code and screen."""
    leader, follower = pty.openpty()
    env = {**os.environ, **world.env, "NO_COLOR": "1"}
    code = "from capella_deploy.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    screen = b""
    answered = False
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            proc.kill()
            raise AssertionError(f"no output for 30 s:\n{screen.decode(errors='replace')}")
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
        if not answered and b"Enter a value" in screen:
            os.write(leader, answer.encode() + b"\n")
            answered = True
    os.close(leader)
    return proc.wait(timeout=30), screen.decode(errors="replace")


def test_destroy_asks_for_the_organization_id(world: World) -> None:
    path = fleet(world, 0)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    args = ["destroy", "-f", path, f"--sandbox={world.state}", "--outputs", str(world.outputs)]

    code, screen = run_in_terminal(world, args, "yes")
    assert code == 1 and "Nothing was changed." in screen
    assert world.sandbox.org_id in screen  # the prompt names what to type
    assert all(m.status != "destroying" for m in world.sandbox.world().models.values())
    assert world.token not in screen

    code, screen = run_in_terminal(world, args, world.sandbox.org_id)
    assert code == 0, screen
    assert all(m.status == "destroying" for m in world.sandbox.world().models.values())


def test_a_terminal_is_reminded_of_what_is_still_under_way(capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from capella_deploy.cli.main import _Progress
    from capella_deploy.clock import ManualClock

    clock = ManualClock()
    progress = _Progress(clock, live=True)
    progress.TICK_SECONDS = 0.01
    active = {"model.chat": clock.now()}

    async def apply() -> None:
        progress.report("model.chat", "deploying")
        with progress.ticking(active):
            clock.advance(125)
            await asyncio.sleep(0.05)
        active.clear()

    asyncio.run(apply())
    printed = capsys.readouterr().out
    assert "model.chat: deploying [0m00s]" in printed
    assert "model.chat: still deploying... [2m05s elapsed]" in printed

    quiet = _Progress(clock, live=False)
    quiet.TICK_SECONDS = 0.01

    async def apply_quietly() -> None:
        with quiet.ticking({"model.chat": clock.now()}):
            await asyncio.sleep(0.05)

    asyncio.run(apply_quietly())
    assert "still" not in capsys.readouterr().out
