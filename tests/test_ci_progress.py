"""Off a terminal (a CI log) an apply says every 30 s what is still under way, and for how long."""

from __future__ import annotations

import itertools
import re

from tests.conftest import World
from tests.test_cli_e2e import manifest

TIME_LEFT = re.compile(r"^\d+ changes? under way; expected to finish in (under a minute|about (?P<minutes>\d+) min)")
REMINDER = re.compile(r"^(?P<address>\S+): still (?P<doing>.+)\.\.\. \[(?P<minutes>\d+)m(?P<seconds>\d\d)s elapsed\]$")


def test_a_ci_log_gets_a_line_per_resource_in_progress_every_30_seconds(world: World) -> None:
    # The CLI runner's output is no terminal. Reminders count sandbox seconds, as the elapsed times do:
    # at 500x a five-minute deployment takes 0.6 s, time enough for the event loop to remind between
    # the in-process sandbox's answers.
    world.sandbox.set_speed(500)
    result = world.cli("apply", "-f", manifest(world), "--auto-approve")
    assert result.exit_code == 0, result.output
    reminders: dict[str, list[int]] = {}
    for line in result.stdout.splitlines():
        match = REMINDER.match(line)
        if match:
            elapsed = int(match["minutes"]) * 60 + int(match["seconds"])
            reminders.setdefault(match["address"], []).append(elapsed)
            assert match["doing"] in ("deploying", "waiting to start"), line
    # Both models deploy for five sandbox minutes: several reminders each, 30 s or more apart.
    assert {"model.chat", "model.embed"} <= set(reminders), result.stdout
    for address in ("model.chat", "model.embed"):
        times = reminders[address]
        assert len(times) >= 2, (address, times)
        assert all(later - earlier >= 29 for earlier, later in itertools.pairwise(times)), times
    # Each round of reminders ends with how long the rest should take: minutes at first, less as they deploy.
    left = [
        0 if match["minutes"] is None else int(match["minutes"])
        for match in map(TIME_LEFT.match, result.stdout.splitlines())
        if match
    ]
    assert len(left) >= 2 and left[0] >= 3, result.stdout
    assert left == sorted(left, reverse=True), left
    assert "\x1b[" not in result.stdout  # plain lines for a log
