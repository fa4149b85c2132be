"""What the applier does with a plan, whatever the kinds: one result per change, in the plan's order, at most
``parallelism`` writes at once, a deadline per change, a failure that ends only its own change (and whoever
needs what it was to make), and live ids handed from the changes that make them to the changes that need them.

Each apply runs in-process against the sandbox on a clock that moves only when the run waits, so a five-minute
deployment takes no wall time and every elapsed time is exact. The estimate of the time left is read each time the
run reports progress and each time it waits, as the reminders of a long apply read it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.api.ratelimit import API_REQUESTS_PER_MINUTE
from capella_deploy.apply.applier import Applier, ApplyOptions, ApplyResult
from capella_deploy.apply.eta import ASSUMED_SECONDS
from capella_deploy.apply.watcher import PollSchedule
from capella_deploy.clock import ManualClock
from capella_deploy.kinds.base import Action
from capella_deploy.kinds.model import model_create_body
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
API_WRITES_PER_SECOND = API_REQUESTS_PER_MINUTE / 60
DEPLOYING = ASSUMED_SECONDS["deploying"]
# Wall seconds an apply may take before it counts as hung: a run that waits for something that never comes
# fails its test instead of holding the suite.
HUNG_AFTER = 10.0


def manifest(
    models: list[dict[str, Any]] = (),  # type: ignore[assignment]
    keys: list[dict[str, Any]] = (),  # type: ignore[assignment]
    providers: list[dict[str, Any]] = (),  # type: ignore[assignment]
    *,
    prune: bool = False,
) -> Manifest:
    """A manifest; with ``prune``, what it does not declare is deleted."""
    return Manifest.model_validate(
        {
            "apiVersion": "capella-deploy/v1",
            "defaults": {"provider": "aws", "region": "us-east-1"},
            "models": list(models),
            "apiKeys": list(keys),
            "providers": list(providers),
            **({"prune": {"match": "*"}} if prune else {}),
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

        self.model_lists_at: list[float] = []  # when each list of the models went out, on the run's clock
        self.clock: ManualClock | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if request.method == "GET" and request.url.path.endswith(MODELS_PATH) and self.clock is not None:
            self.model_lists_at.append(self.clock.now())
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

    def writes(self) -> int:
        return sum(method != "GET" for method, _ in self.requests)


class SampledClock(ManualClock):
    """A manual clock that tells ``on_sleep`` each time the run is about to wait."""

    on_sleep: Callable[[], None] | None = None

    async def sleep(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep()
        await super().sleep(seconds)


@dataclass(frozen=True)
class Sample:
    """The run as seen at one moment: seconds since it began, the estimate of the time left, the writes sent."""

    at: float
    left: float
    writes: int
    note: tuple[str, str] | None = None  # the progress line reported then, if any
    since: float | None = None  # when, by the run's list of changes under way, that line's change started


@dataclass
class Run:
    plan: Plan
    result: ApplyResult
    progress: list[tuple[str, str]] = field(default_factory=list)
    active_seen: dict[str, bool] = field(default_factory=dict)
    model_lists: int = 0
    left_at_start: float = -1.0
    left_at_end: float = -1.0
    samples: list[Sample] = field(default_factory=list)


@dataclass
class World:
    tmp_path: Path
    clock: SampledClock = field(default_factory=SampledClock)
    faults: Faults | None = None

    def __post_init__(self) -> None:
        self.sandbox = Sandbox(self.tmp_path / "sandbox.json", token=TOKEN, clock=self.clock, faults=self.faults)
        self.wire = Wire(self.sandbox.transport())
        self.wire.clock = self.clock

    def client(self, **limits: Any) -> CapellaClient:
        return CapellaClient(
            base_url=IN_PROCESS_BASE_URL, token=Secret(TOKEN), transport=self.wire, clock=self.clock, **limits
        )

    def plan(self, wanted: Manifest, **options: Any) -> Plan:
        async def planned() -> Plan:
            async with self.client() as client:
                live = await read_live(client, self.sandbox.org_id)
            now = datetime.fromtimestamp(self.clock.now(), tz=timezone.utc)
            return make_plan(wanted, live, now=now, **options)

        return asyncio.run(planned())

    def apply(
        self,
        wanted: Manifest,
        planned: Plan | None = None,
        *,
        limits: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
        **options: Any,
    ) -> Run:
        """Apply ``planned`` (else a fresh plan of ``wanted``). ``limits``: the client's rate limit
        (requests_per_minute, burst); ``environ``: what the run reads credentials from (None: the process's)."""
        planned = planned or self.plan(wanted)
        assert not planned.errors, planned.errors
        progress: list[tuple[str, str]] = []
        active_seen: dict[str, bool] = {}
        samples: list[Sample] = []

        async def applied() -> Run:
            async with self.client(**(limits or {})) as client:
                outputs = Outputs(self.tmp_path / "outputs.json", "json", org_id=planned.org_id)
                started = self.clock.now()
                writes_before = self.wire.writes()

                def sample(note: tuple[str, str] | None = None, since: float | None = None) -> None:
                    at, writes = self.clock.now() - started, self.wire.writes() - writes_before
                    samples.append(Sample(at, applier.remaining(), writes, note, since))

                def note(address: str, message: str) -> None:
                    progress.append((address, message))
                    active_seen[address] = address in applier.active
                    since = applier.active.get(address)
                    sample((address, message), None if since is None else since - started)

                applier = Applier(
                    client,
                    wanted,
                    planned,
                    outputs,
                    clock=self.clock,
                    options=ApplyOptions(**options),
                    progress=note,
                    environ=environ,
                )
                left_at_start = applier.remaining()
                lists_before = self.wire.model_lists()
                self.clock.on_sleep = sample
                try:
                    result = await asyncio.wait_for(applier.run(), HUNG_AFTER)
                except TimeoutError:
                    pytest.fail(f"the apply was still going after {HUNG_AFTER} s of wall time: it waits for nothing")
                finally:
                    self.clock.on_sleep = None
                assert applier.active == {}, "nothing is under way once the run is over"
                run = Run(planned, result, progress, active_seen, self.wire.model_lists() - lists_before)
                run.left_at_start, run.left_at_end, run.samples = left_at_start, applier.remaining(), samples
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
    assert run.left_at_end == 0.0, "a change that ended without sending leaves nothing to send"


# -- ids handed on ------------------------------------------------------------------------------------------------


def test_a_key_gets_the_id_of_a_model_the_run_leaves_alone(world: World) -> None:
    world.apply(manifest([CHAT]))
    chat_id = world.live_models()["chat"].id
    run = world.apply(manifest([CHAT], [key("app", "chat")]))
    assert [(c.address, c.action) for c in run.plan.pending] == [("apiKey.app", Action.CREATE)]
    assert run.result.ok and world.live_keys()["app"].allowed_models == [chat_id]
    assert run.result.list_calls == 0, "nothing waited for a status"


def test_a_key_gets_the_id_of_a_model_kept_by_a_run_that_deletes_another(world: World) -> None:
    world.apply(manifest([CHAT, EMBED]))
    embed_id = world.live_models()["embed"].id
    run = world.apply(manifest([EMBED], [key("ops", "embed")], prune=True))
    assert [c.action for c in run.plan.changes] == [Action.DELETE, Action.NOOP, Action.CREATE]
    assert run.result.ok, run.result.failed
    assert world.live_keys()["ops"].allowed_models == [embed_id]


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
    assert models["chat"].options["caching"]["semantic"]["embeddingModel"] == models["embed"].id
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


# -- duplicates beside a change --------------------------------------------------------------------------------


def a_second_live_model_like(world: World, wanted: Manifest, name: str) -> str:
    """Deploys another model of ``name`` behind the tool's back (names may repeat); returns its id."""
    [spec] = [m for m in wanted.models if m.name == name]

    async def create() -> str:
        async with world.client() as client:
            return await client.create_model(world.sandbox.org_id, model_create_body(spec, wanted.defaults, {}))

    made = asyncio.run(create())
    world.clock.advance(DEPLOYING + 60.0)
    return made


SEMANTIC_CHAT = {**CHAT, "cache": {"type": "semantic", "semantic": {"embeddingModel": "embed", "dimensions": 2048}}}
EMBEDDINGS = {**EMBED, "dimensions": 2048, "cache": {"type": "none"}}


def test_a_model_waits_for_its_embedding_models_replacement_not_for_a_duplicates_delete(world: World) -> None:
    wanted = manifest([SEMANTIC_CHAT, EMBEDDINGS])
    world.apply(manifest([EMBEDDINGS]))
    # Of two healthy models of one name the plan keeps the older, as racing runs do.
    kept = world.live_models()["embed"].id
    duplicate = a_second_live_model_like(world, wanted, "embed")
    planned = world.plan(wanted, force_replace=frozenset({"model.embed"}))
    assert {(c.address, c.action, c.live_id) for c in planned.pending} == {
        ("model.embed", Action.REPLACE, kept),
        (f"model.embed[{duplicate}]", Action.DELETE, duplicate),
        ("model.chat", Action.CREATE, None),
    }
    run = world.apply(wanted, planned)
    assert run.result.ok, run.result.failed
    [embed] = [m for m in world.sandbox.world().models.values() if m.name == "embed"]
    assert embed.id not in (kept, duplicate)
    assert world.live_models()["chat"].options["caching"]["semantic"]["embeddingModel"] == embed.id


def test_a_key_waits_for_its_models_new_id_even_when_a_duplicates_delete_fails(world: World) -> None:
    wanted = manifest([EMBEDDINGS], [key("ops", "embed")])
    world.apply(manifest([EMBEDDINGS]))
    kept = world.live_models()["embed"].id
    duplicate = a_second_live_model_like(world, wanted, "embed")
    world.sandbox.faults = Faults(
        routes=[
            RouteFault(match=f"DELETE /v4/organizations/*{MODELS_PATH}/{duplicate}", error_rate=1.0, error_status=500)
        ]
    )
    run = world.apply(wanted, world.plan(wanted, force_replace=frozenset({"model.embed"})))
    results = by_address(run)
    assert not results[f"model.embed[{duplicate}]"].ok
    assert results["model.embed"].ok and results["apiKey.ops"].ok
    [new_id] = [m.id for m in world.sandbox.world().models.values() if m.id not in (kept, duplicate)]
    assert world.live_keys()["ops"].allowed_models == [new_id]


# -- warnings -------------------------------------------------------------------------------------------------


def test_a_change_done_with_a_warning_is_a_success_that_says_so(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(edit_delay_seconds=5000.0))
    world.apply(manifest([CHAT]))
    run = world.apply(manifest([{**CHAT, "keywordFiltering": ["internal-only"]}]), timeout=600.0)
    chat = by_address(run)["model.chat"]
    assert chat.ok and chat.action is Action.UPDATE and chat.warning is not None
    assert chat.warning.startswith("the update was accepted but is not yet visible after 600 s (--timeout)")
    assert run.result.ok and run.result.warnings == (f"model.chat: {chat.warning}",)


def test_a_failed_change_s_result_names_its_action_and_how_long_it_ran(tmp_path: Path) -> None:
    refused = RouteFault(match=f"DELETE /v4/organizations/*{MODELS_PATH}/*", error_rate=1.0, error_status=503)
    world = World(tmp_path, faults=Faults(routes=[refused]))
    world.apply(manifest([CHAT, EMBED]))
    started = world.clock.now()
    run = world.apply(manifest([CHAT], [key("ops")], prune=True))
    (gone,) = [r for r in run.result.results if r.address.startswith("model.embed")]
    assert gone.action is Action.DELETE and gone.ok is False and "503" in gone.detail
    # It ran from the start of the run until the client gave up repeating the DELETE.
    assert gone.elapsed == world.clock.now() - started > 0
    assert by_address(run)["apiKey.ops"].ok and "embed" in world.live_models()


# -- deadlines ------------------------------------------------------------------------------------------------


def test_a_change_s_time_left_counts_down_with_the_clock_to_its_timeout(world: World) -> None:
    world.apply(manifest([CHAT, EMBED]))
    # Destroying takes the sandbox a minute: a delete given 30 s fails when they have run out, at a look due then.
    run = world.apply(manifest([CHAT], prune=True), timeout=30.0)
    (gone,) = run.result.results
    assert gone.action is Action.DELETE and not gone.ok
    assert gone.detail.endswith("still destroying when the timeout ran out") and gone.elapsed == 30.0


def test_a_change_whose_time_is_up_when_it_must_wait_fails_at_its_first_look(world: World) -> None:
    world.apply(manifest([CHAT, EMBED]))
    # No time at all: nothing is left of it once the DELETE is answered, not a moment more.
    run = world.apply(manifest([CHAT], prune=True), timeout=0.0)
    (gone,) = run.result.results
    assert not gone.ok and gone.detail.endswith("still destroying when the timeout ran out")
    assert gone.elapsed == 0.0 and world.wire.model_lists() > 0


# -- what is under way ----------------------------------------------------------------------------------------


def test_the_changes_under_way_are_listed_with_the_time_each_started(world: World) -> None:
    world.clock.advance(50.0)
    run = world.apply(manifest([CHAT], [key("ops")]))
    for result in run.result.results:
        (last,) = [s for s in run.samples if s.note == (result.address, result.detail)]
        # What a reminder shows as "running for" is the time since the change started, as its result says.
        assert last.since is not None and last.at - last.since == result.elapsed


# -- the time left --------------------------------------------------------------------------------------------


def test_before_anything_is_sent_the_time_left_is_the_writes_at_the_apis_pace_then_the_deployments(
    world: World,
) -> None:
    run = world.apply(manifest([CHAT], [key("a"), key("b")]))
    # Three writes at the API's rate; the model's create goes first, then it deploys for the assumed time. How
    # late its end is seen is learned from the status polls: before any, nothing is added.
    assert run.left_at_start == pytest.approx(max(3 / API_WRITES_PER_SECOND, 1 / API_WRITES_PER_SECOND + DEPLOYING))
    assert run.left_at_end == 0.0


def test_with_a_client_rate_limit_the_time_left_counts_the_writes_at_that_rate(world: World) -> None:
    run = world.apply(manifest([], [key("a"), key("b"), key("c")]), limits={"requests_per_minute": 6})
    assert run.left_at_start == 3 * 10.0
    # The creates wait their turn, ten seconds apart, and none is answered before the last goes out: with nothing
    # done to measure a pace by, the estimate keeps to the client's rate however long the run has waited.
    assert [(s.at, s.left) for s in run.samples[:2]] == [(0.0, 3 * 10.0), (10.0, 3 * 10.0)]


def test_halfway_the_time_left_counts_the_writes_still_to_send_at_the_pace_so_far(world: World) -> None:
    # Two writes a second, one at a time: the second goes out half a second after the first.
    run = world.apply(
        manifest([], [key("a"), key("b"), key("c")]), limits={"requests_per_minute": 120, "burst": 1}, parallelism=1
    )
    first, second = (next(s for s in run.samples if s.writes == n) for n in (1, 2))
    # No time has passed at the first: the two left go at the client's rate.
    assert (first.at, first.left) == (0.0, 2 / 2.0)
    # Two sent in half a second: the one left goes at that pace.
    assert (second.at, second.left) == (0.5, 1 / (2 / 0.5))
    assert run.samples[-1].left == 0.0


def test_a_deployment_under_way_counts_from_when_its_create_went_out(world: World) -> None:
    run = world.apply(manifest([CHAT]))
    # From the answer to the create on, the time left is the rest of the deployment (and the look that sees it
    # end), at every moment until the end: also before the status polls for it have begun.
    sent = [s for s in run.samples if s.writes == 1 and s.note != ("model.chat", "healthy")]
    assert sent and all(DEPLOYING - s.at < s.left <= DEPLOYING - s.at + 5.0 for s in sent)
    assert run.left_at_end == 0.0


def test_a_deployment_still_to_start_counts_what_this_run_learned_of_deployments(world: World) -> None:
    chat = {**CHAT, "cache": {"type": "semantic", "semantic": {"embeddingModel": "embed", "dimensions": 2048}}}
    embed = {**EMBED, "dimensions": 2048, "cache": {"type": "none"}}
    run = world.apply(manifest([chat, embed]))
    # When embed is seen healthy, chat's create is still to send: one write at the pace so far (one in 300 s), then
    # its deployment, which embed's showed takes less than the assumed five minutes (it was done by 300 s).
    (seen,) = [s for s in run.samples if s.note == ("model.embed", "healthy")]
    assert seen.at == 300.0 and seen.writes == 1
    assert 300.0 + DEPLOYING / 2 < seen.left < 300.0 + DEPLOYING
    # Once chat's create is answered, its deployment is expected to take that learned time too.
    (deploying,) = [s for s in run.samples if s.note == ("model.chat", "deploying")]
    assert DEPLOYING / 2 < deploying.left < DEPLOYING - (deploying.at - seen.at)


def test_an_apply_with_a_client_rate_limit_polls_within_it(world: World) -> None:
    wanted = manifest([CHAT, EMBED])
    planned = world.plan(wanted)
    world.wire.model_lists_at.clear()
    run = world.apply(wanted, planned, limits={"requests_per_minute": 20})
    assert run.result.ok
    # List calls take at most their share of the client's rate: one every 60 / (share x 20) seconds at most.
    least = 60.0 / (PollSchedule().share * 20)
    times = world.wire.model_lists_at
    assert len(times) > 2 and min(b - a for a, b in itertools.pairwise(times)) >= least


# -- credentials --------------------------------------------------------------------------------------------------

OPENAI = {"name": "openai", "type": "openAI", "credentials": {"apiKey": {"env": "APPLIER_SPEC_OPENAI_KEY"}}}


def test_apply_steps_read_credentials_from_the_environment_they_are_given(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APPLIER_SPEC_OPENAI_KEY", raising=False)
    run = world.apply(manifest(providers=[OPENAI]), environ={"APPLIER_SPEC_OPENAI_KEY": "sk-given-1f2e"})
    assert run.result.ok, run.result.failed


def test_apply_steps_read_credentials_from_the_process_environment_when_given_none(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIER_SPEC_OPENAI_KEY", "sk-process-9a8b")
    run = world.apply(manifest(providers=[OPENAI]))
    assert run.result.ok, run.result.failed


def test_apply_steps_read_no_credentials_from_the_process_when_given_an_environment(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIER_SPEC_OPENAI_KEY", "sk-process-9a8b")
    run = world.apply(manifest(providers=[OPENAI]), environ={})
    (made,) = run.result.failed
    assert made.action is Action.CREATE and "APPLIER_SPEC_OPENAI_KEY" in made.detail
