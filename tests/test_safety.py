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


class Recorder:
    """Apply hooks that remember what the operation told them (and approve nothing: runs use --auto-approve)."""

    def __init__(self, reminder_seconds: float) -> None:
        self.reminder_seconds = reminder_seconds
        self.reminders: list[list[tuple[str, float]]] = []
        self.remaining: list[float] = []
        self.events: list[tuple[str, str]] = []

    def plan_ready(self, plan: object) -> None: ...

    def blocked(self, reasons: object) -> None: ...

    def confirm(self, verb: str, org_id: str | None) -> bool:
        raise AssertionError("an auto-approved run asked for confirmation")

    def declined(self) -> None: ...

    def progress(self, address: str, message: str, elapsed: float) -> None:
        self.events.append((address, message))

    def still_working(self, items: list[tuple[str, float]], remaining: float) -> None:
        self.reminders.append(list(items))
        self.remaining.append(remaining)

    def applied(self, result: object, outputs_path: object) -> None: ...

    def checks(self, report: object) -> None: ...

    def note(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


def test_a_long_apply_is_reminded_of_what_is_still_under_way(world: World) -> None:
    import asyncio
    from pathlib import Path

    from capella_deploy.manifest import load_manifest
    from capella_deploy.run.apply import ApplyRequest, run_apply
    from capella_deploy.run.session import Target

    world.sandbox.set_speed(300)  # a five-minute deployment takes a second of wall time
    manifest = load_manifest([fleet(world, 0)], environ={})
    hooks = Recorder(reminder_seconds=0.05)
    target = Target(sandbox_state=world.state, token_file=None, environ=world.env)
    request = ApplyRequest(target, True, 10, 3600.0, str(world.outputs), None, False)
    assert asyncio.run(run_apply(manifest, request, hooks))
    assert len(hooks.reminders) >= 2, hooks.reminders
    planned = {f"model.m{i}" for i in range(10)}
    assert all(items and {address for address, _ in items} <= planned for items in hooks.reminders)
    # Each reminder tells how long every change has been under way, in sandbox seconds.
    first, later = dict(hooks.reminders[0]), dict(hooks.reminders[-1])
    assert later.keys() & first.keys()
    assert all(later[a] > first[a] for a in later.keys() & first.keys())
    # And how long the rest should take: the deployments' time left, which shrinks as they go on.
    assert 0 < hooks.remaining[-1] < hooks.remaining[0] <= 400
    assert Path(world.outputs).exists()


@pytest.mark.parametrize("interactive", [True, False])
def test_the_terminal_view_names_what_is_under_way_and_for_how_long(
    interactive: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from capella_deploy.cli.terminal import CI_REMINDER_SECONDS, TerminalApplyView

    view = TerminalApplyView(interactive=interactive)
    # A CI log is read later: fewer reminders than on a terminal, but never silence for a whole deployment.
    assert view.reminder_seconds == (10.0 if interactive else CI_REMINDER_SECONDS)
    view.progress("model.chat", "deploying", 0.0)
    view.still_working([("model.chat", 125.0)], 170.0)
    printed = capsys.readouterr().out
    assert "model.chat: deploying [0m00s]" in printed
    assert "model.chat: still deploying... [2m05s elapsed]" in printed
    assert "1 change under way; expected to finish in about 3 minutes" in printed
