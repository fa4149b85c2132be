"""Fixtures shared by the end-to-end tests: a sandbox world on disk and a CLI runner bound to it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capella_deploy.cli import main
from capella_deploy.sandbox import Sandbox

# Sandbox time runs this many times faster than the wall clock: a 5-minute deploy takes 15 ms.
FAST = 20_000.0


@dataclass
class World:
    """One sandbox world and the CLI pointed at it."""

    root: Path
    state: Path
    token: str
    sandbox: Sandbox
    env: dict[str, str]

    @property
    def outputs(self) -> Path:
        return self.root / "outputs.json"

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def run(self, *args: str, input: str | None = None) -> Result:
        """Run the CLI against this world; every byte it prints is checked for the API token."""
        result = CliRunner().invoke(main, list(args), env=self.env, input=input, catch_exceptions=False)
        printed = result.stdout + result.stderr
        assert self.token not in printed
        return result

    def cli(self, command: str, *args: str, input: str | None = None) -> Result:
        """A command that talks to Capella: the sandbox state and the outputs path are added."""
        extra = [f"--sandbox={self.state}"]
        if command in ("apply", "destroy"):
            extra += ["--outputs", str(self.outputs)]
        return self.run(command, *args, *extra, input=input)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    token = "cbtest-" + secrets.token_urlsafe(24)
    state = tmp_path / "sandbox.json"
    sandbox = Sandbox(state, token=token)
    sandbox.set_speed(FAST)
    env = {"CAPELLA_API_TOKEN": token, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": ""}
    yield World(tmp_path, state, token, sandbox, env)
