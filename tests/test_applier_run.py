"""What the applier does with a plan, whatever the kinds: one result per change, in the plan's order, at most
``parallelism`` writes at once, a deadline per change, a failure that ends only its own change (and whoever
needs what it was to make), and live ids handed from the changes that make them to the changes that need them.

Each apply runs in-process against the sandbox on a clock that moves only when the run waits, so a five-minute
deployment takes no wall time and every elapsed time is exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.apply.applier import Applier, ApplyOptions, ApplyResult
from capella_deploy.clock import ManualClock
from capella_deploy.kinds.base import Action
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan as make_plan
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Faults, RouteFault, Sandbox
from capella_deploy.secrets import Secret

TOKEN = "applier-spec-token-61f0"
CHAT = {"name": "chat", "catalogModel": "mistralai/mistral-7b-instruct-v0.3", "gpuMemory": 48}
EMBED = {"name": "embed", "catalogModel": "nvidia/llama-3.2-nv-embedqa-1b-v2", "gpuMemory": 24}
MODELS_PATH = "/aiServices/models"


def manifest(models: list[dict[str, Any]] = (), keys: list[dict[str, Any]] = ()) -> Manifest:  # type: ignore[assignment]
    return Manifest.model_validate(
        {
            "apiVersion": "capella-deploy/v1",
            "defaults": {"provider": "aws", "region": "us-east-1"},
            "models": list(models),
            "apiKeys": list(keys),
        }
    )


def key(name: str, *models: str) -> dict[str, Any]:
    return {"name": name, "expiryDays": 30, "allowedCIDRs": ["10.0.0.0/16"], "allowedModels": list(models) or ["*"]}


class Wire(httpx.AsyncBaseTransport):
    """The sandbox's transport, noting every request and how many writes are under way at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[tuple[str, str]] = []
        self.writing = 0
        self.most_writing = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if request.method == "GET":
            return await self.inner.handle_async_request(request)
        self.writing += 1
        self.most_writing = max(self.most_writing, self.writing)
        try:
            for _ in range(5):  # time on the wire, for every other change to send what it can
                await asyncio.sleep(0)
            return await self.inner.handle_async_request(request)
        finally:
            self.writing -= 1

    def model_lists(self) -> int:
        return sum(method == "GET" and path.endswith(MODELS_PATH) for method, path in self.requests)


@dataclass
class Run:
    plan: Plan
    result: ApplyResult
    progress: list[tuple[str, str]] = field(default_factory=list)
    active_seen: dict[str, bool] = field(default_factory=dict)
    model_lists: int = 0
    left_at_end: float = -1.0


@dataclass
class World:
    tmp_path: Path
    clock: ManualClock = field(default_factory=ManualClock)
    faults: Faults | None = None

    def __post_init__(self) -> None:
        self.sandbox = Sandbox(self.tmp_path / "sandbox.json", token=TOKEN, clock=self.clock, faults=self.faults)
        self.wire = Wire(self.sandbox.transport())

    def client(self) -> CapellaClient:
        return CapellaClient(base_url=IN_PROCESS_BASE_URL, token=Secret(TOKEN), transport=self.wire, clock=self.clock)

    def plan(self, wanted: Manifest, **options: Any) -> Plan:
        async def planned() -> Plan:
            async with self.client() as client:
                live = await read_live(client, self.sandbox.org_id)
            now = datetime.fromtimestamp(self.clock.now(), tz=timezone.utc)
            return make_plan(wanted, live, now=now, **options)

        return asyncio.run(planned())

    def apply(self, wanted: Manifest, planned: Plan | None = None, **options: Any) -> Run:
        planned = planned or self.plan(wanted)
        assert not planned.errors, planned.errors
        progress: list[tuple[str, str]] = []
        active_seen: dict[str, bool] = {}

        async def applied() -> Run:
            async with self.client() as client:
                outputs = Outputs(self.tmp_path / "outputs.json", "json", org_id=planned.org_id)

                def note(address: str, message: str) -> None:
                    progress.append((address, message))
                    active_seen[address] = address in applier.active

                applier = Applier(
                    client, wanted, planned, outputs, clock=self.clock, options=ApplyOptions(**options), progress=note
                )
                lists_before = self.wire.model_lists()
                result = await applier.run()
                assert applier.active == {}, "nothing is under way once the run is over"
                run = Run(planned, result, progress, active_seen, self.wire.model_lists() - lists_before)
                run.left_at_end = applier.remaining()
                return run

        return asyncio.run(applied())

    def live_models(self) -> dict[str, Any]:
        return {m.name: m for m in self.sandbox.world().models.values()}

    def live_keys(self) -> dict[str, Any]:
        return {k.name: k for k in self.sandbox.world().api_keys.values()}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def by_address(run: Run) -> dict[str, Any]:
    return {r.address: r for r in run.result.results}


# -- the results ------------------------------------------------------------------------------------------------


def test_every_change_of_the_plan_has_one_result_in_the_plans_order(world: World) -> None:
    wanted = manifest([CHAT, EMBED], [key("app", "chat"), key("ops")])
    run = world.apply(wanted)
    assert [(r.address, r.action) for r in run.result.results] == [(c.address, c.action) for c in run.plan.pending]
    assert [r.address for r in run.result.results] == ["model.chat", "model.embed", "apiKey.app", "apiKey.ops"]
    assert run.result.ok and run.result.failed == () and run.result.warnings == ()
    for result in run.result.results:
        # Each result's detail is the last word of its change's progress.
        assert result.ok and result.warning is None
        assert [m for a, m in run.progress if a == result.address][-1] == result.detail
    assert by_address(run)["model.chat"].detail == "healthy"
    assert by_address(run)["apiKey.app"].detail == f"created {world.live_keys()['app'].id}"
    # Every change was listed as under way while it reported progress.
    assert run.active_seen == dict.fromkeys(by_address(run), True)
    # The status list calls the run made are the ones it counts.
    assert run.result.list_calls == run.model_lists > 0
    assert run.left_at_end == 0.0


def test_each_result_says_how_long_its_change_took_on_the_runs_clock(world: World) -> None:
    run = world.apply(manifest([CHAT], [key("ops")]))
    deployed = world.live_models()["chat"]
    chat, ops = by_address(run)["model.chat"], by_address(run)["apiKey.ops"]
    # The model took its deployment, and at most one status poll more; the key took moments.
    started = deployed.audit.created_at
    assert 300.0 <= chat.elapsed <= 300.0 + 35.0 and chat.elapsed == pytest.approx(world.clock.now() - started)
    assert ops.elapsed < 20.0


def test_a_plan_without_pending_changes_gives_no_results() -> None:
    result = ApplyResult((), 0)
    assert result.ok and result.failed == () and result.warnings == ()


# -- how much at once -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("parallelism", "most"), [(2, 2), (1, 1), (0, 1), (10, 6)])
def test_no_more_writes_are_under_way_at_once_than_the_parallelism_allows(
    parallelism: int, most: int, world: World
) -> None:
    run = world.apply(manifest([], [key(f"k{n}") for n in range(6)]), parallelism=parallelism)
    assert run.result.ok and len(world.live_keys()) == 6
    assert world.wire.most_writing == most


# -- failures -------------------------------------------------------------------------------------------------


def test_a_change_that_outlasts_its_timeout_fails_then_and_alone(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(deploy_hang_rate=1.0))
    run = world.apply(manifest([CHAT], [key("ops"), key("app", "chat")]), timeout=900.0)
    chat = by_address(run)["model.chat"]
    assert not chat.ok and "still deploying when the timeout ran out (900 s, --timeout)" in chat.detail
    assert 900.0 <= chat.elapsed <= 900.0 + 35.0
    assert ("model.chat", f"failed: {chat.detail}") in run.progress
    # The keys do not wait for the model to deploy: the one naming it needs only its id.
    assert by_address(run)["apiKey.ops"].ok and by_address(run)["apiKey.app"].ok
    assert world.live_keys()["app"].allowed_models == [world.live_models()["chat"].id]
    assert not run.result.ok and [r.address for r in run.result.failed] == ["model.chat"]


def test_a_change_whose_manifest_entry_is_gone_fails_with_a_message_not_a_crash(world: World) -> None:
    planned = world.plan(manifest([CHAT], [key("ops")]))
    run = world.apply(manifest([], [key("ops")]), planned)
    chat = by_address(run)["model.chat"]
    assert not chat.ok and chat.detail == "missing manifest entry 'chat'"
    assert ("model.chat", "failed: missing manifest entry 'chat'") in run.progress
    assert by_address(run)["apiKey.ops"].ok


def test_a_key_naming_a_model_that_could_not_be_made_fails_with_it_and_the_rest_goes_on(tmp_path: Path) -> None:
    refused = RouteFault(match=f"POST /v4/organizations/*{MODELS_PATH}", error_rate=1.0, error_status=500)
    world = World(tmp_path, faults=Faults(routes=[refused]))
    run = world.apply(manifest([CHAT], [key("app", "chat"), key("ops")]))
    chat, app = by_address(run)["model.chat"], by_address(run)["apiKey.app"]
    assert not chat.ok and world.live_models() == {}
    assert not app.ok and app.detail == "allowedModels names model 'chat', which could not be created"
    assert app.elapsed <= chat.elapsed, "it waited for the model's fate, not longer"
    assert by_address(run)["apiKey.ops"].ok and list(world.live_keys()) == ["ops"]


# -- ids handed on ------------------------------------------------------------------------------------------------


def test_a_key_gets_the_id_of_a_model_the_run_leaves_alone(world: World) -> None:
    world.apply(manifest([CHAT]))
    chat_id = world.live_models()["chat"].id
    run = world.apply(manifest([CHAT], [key("app", "chat")]))
    assert [(c.address, c.action) for c in run.plan.pending] == [("apiKey.app", Action.CREATE)]
    assert run.result.ok and world.live_keys()["app"].allowed_models == [chat_id]
    assert run.result.list_calls == 0, "nothing waited for a status"


def test_a_key_follows_a_model_the_run_replaces_to_its_new_id(world: World) -> None:
    world.apply(manifest([CHAT], [key("app", "chat")]))
    old_id = world.live_models()["chat"].id
    wanted = manifest([CHAT], [key("app", "chat")])
    planned = world.plan(wanted, force_replace=frozenset({"model.chat"}))
    run = world.apply(wanted, planned)
    assert run.result.ok, run.result.failed
    new_id = world.live_models()["chat"].id
    assert new_id != old_id
    assert world.live_keys()["app"].allowed_models == [new_id]


def test_a_model_whose_semantic_cache_embeds_with_another_waits_until_that_one_is_ready(world: World) -> None:
    chat = {**CHAT, "cache": {"type": "semantic", "semantic": {"embeddingModel": "embed", "dimensions": 2048}}}
    embed = {**EMBED, "dimensions": 2048, "cache": {"type": "none"}}
    run = world.apply(manifest([chat, embed]))
    assert run.result.ok, run.result.failed
    models = world.live_models()
    # chat was created once embed had deployed, and caches with embed's id.
    assert models["chat"].audit.created_at >= models["embed"].audit.created_at + 300.0
    assert ("model.chat", "waiting for model.embed, its embedding model") in run.progress


def test_a_model_whose_embedding_model_could_not_be_made_fails_without_being_created(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(deploy_fail_rate=1.0))
    chat = {**CHAT, "cache": {"type": "semantic", "semantic": {"embeddingModel": "embed", "dimensions": 2048}}}
    embed = {**EMBED, "dimensions": 2048, "cache": {"type": "none"}}
    run = world.apply(manifest([chat, embed]))
    result = by_address(run)["model.chat"]
    assert not result.ok
    assert result.detail == "its semantic cache embeds with model.embed, which could not be made ready"
    assert "chat" not in world.live_models()


# -- warnings -------------------------------------------------------------------------------------------------


def test_a_change_done_with_a_warning_is_a_success_that_says_so(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(edit_delay_seconds=5000.0))
    world.apply(manifest([CHAT]))
    run = world.apply(manifest([{**CHAT, "keywordFiltering": ["internal-only"]}]), timeout=600.0)
    chat = by_address(run)["model.chat"]
    assert chat.ok and chat.action is Action.UPDATE and chat.warning is not None
    assert chat.warning.startswith("the update was accepted but is not yet visible after 600 s (--timeout)")
    assert run.result.ok and run.result.warnings == (f"model.chat: {chat.warning}",)
