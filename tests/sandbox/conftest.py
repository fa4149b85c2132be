"""Fixtures for the sandbox tests: a sandbox on a manual clock, a synchronous client for it, ready models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import CHAT_MODEL, EMBED_MODEL, Api, Ready

from capella_deploy.clock import ManualClock
from capella_deploy.sandbox import Sandbox
from capella_deploy.sandbox.server import running_server

SEEDS = Path(__file__).parent / "seed_examples.json"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(tmp_path: Path, clock: ManualClock) -> Sandbox:
    return Sandbox(tmp_path / "state.json", clock=clock)


@pytest.fixture
def api(sandbox: Sandbox) -> Api:
    return Api(sandbox)


@pytest.fixture
def ready(api: Api, clock: ManualClock) -> Ready:
    chat = api.deploy("chat", CHAT_MODEL)
    embed = api.deploy("embed", EMBED_MODEL, gpu_memory=24)
    moderation = api.deploy("guard", "nvidia/llama-3.1-nemoguard-8b-content-safety")
    clock.advance(api.sandbox.timings.deploy_seconds)
    _, key = api.create_key()
    return Ready(chat, embed, moderation, key)


@pytest.fixture
def served(sandbox: Sandbox) -> Iterator[str]:
    with running_server(sandbox) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def seeds() -> dict[str, Any]:
    """Response examples copied from the documentation seeds, placeholders and all."""
    loaded: dict[str, Any] = json.loads(SEEDS.read_text())
    return loaded
