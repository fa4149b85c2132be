"""Shared machinery of the reliability tests: a seeded chaos world, one apply run, and the checks of truth.

Every scenario runs in both of the sandbox's worlds: the official spec's (names may repeat, so the API stops
no duplicate) and the conflicts world (a taken name answers 409). ``worlds`` and ``world_seeds`` give the
parameters; a spec-world case the tool still fails carries a strict xfail naming what fails, to be removed
with the tool's fix.

A chaos world is an in-memory sandbox on a ``ManualClock`` shared with the client: every wait (backoff,
Retry-After, polling, slow answers) moves sandbox time forward instead of taking wall time, and no real sleep
decides an ordering, so one seed always replays the same run. An apply run does what ``capella-deploy apply
--auto-approve`` does after taking the lock: read the organization, plan, apply, write outputs, and exit
0 or 1; the checks then compare what the run claimed with what the sandbox holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from _pytest.mark import ParameterSet

from capella_deploy.api.client import CapellaClient
from capella_deploy.apply.applier import Applier, ApplyOptions, ApplyResult
from capella_deploy.clock import ManualClock
from capella_deploy.errors import CapellaError
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest, load_manifest
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan as make_plan
from capella_deploy.run.settle import settle_outputs
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Faults, RouteFault, Rules, Sandbox, lifecycle
from capella_deploy.secrets import Secret
from capella_deploy.views.apply import render_apply_result
from capella_deploy.views.plan import render_plan

API_TOKEN = "cbrel-api-token-5d0c1e9a7b"

MANIFEST = """\
apiVersion: capella-deploy/v1
defaults:
  provider: aws
  region: us-east-1
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
  - name: embed
    catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
    gpuMemory: 24
    dimensions: 2048
  - name: guard
    catalogModel: nvidia/llama-3.1-nemoguard-8b-content-safety
    gpuMemory: 24
    state: paused
apiKeys:
  - name: app-key
    expiryDays: 90
    allowedCIDRs: [10.0.0.0/16]
    allowedModels: [chat, embed]
  - name: ops-key
    expiryDays: 30
    allowedCIDRs: [192.168.10.0/24, 203.0.113.7]
"""

WORLDS: tuple[Rules, ...] = ("spec", "conflicts")


def _known_failure(reason: str | None) -> list[pytest.MarkDecorator]:
    return [] if reason is None else [pytest.mark.xfail(strict=True, reason=reason)]


def worlds(spec_fails: str | None = None) -> list[ParameterSet]:
    """Both worlds as the parameter ``rules``; ``spec_fails`` says why the tool still fails the spec world."""
    return [
        pytest.param(rules, id=rules, marks=_known_failure(spec_fails if rules == "spec" else None)) for rules in WORLDS
    ]


def world_seeds(seeds: range, spec_fails: dict[int, str] | None = None) -> list[ParameterSet]:
    """(rules, seed) for every seed in both worlds; ``spec_fails`` maps a seed to why the spec world fails it."""
    known = spec_fails or {}
    return [
        pytest.param(
            rules, seed, id=f"{rules}-{seed}", marks=_known_failure(known.get(seed) if rules == "spec" else None)
        )
        for rules in WORLDS
        for seed in seeds
    ]


CREATES = ("POST /v4/organizations/*/aiServices/models", "POST /v4/organizations/*/aiServices/models/apiKeys")


@dataclass(frozen=True)
class ChaosProfile:
    """The weather of one chaos run; every rate is per request (or per deployment) and seeded."""

    server_errors: float = 0.20  # 502/503/504 answers on any call, the call not carried out
    storm_rate: float = 0.02  # a 429 that starts a storm: every call answers 429 with Retry-After for a while
    storm_seconds: float = 45.0
    rate_limit_per_minute: int | None = 20  # the per-token limit, in sandbox minutes: more 429s
    drop_after_create: float = 0.15  # the create is carried out, then the connection dies
    drop_before: float = 0.03  # the connection dies before anything happens
    slow_rate: float = 0.10  # answers that take long; past the client timeout they time out
    timeout_rate: float = 0.03  # answers that never come in time (the call may or may not be carried out)
    deploy_fail_rate: float = 0.15
    deploy_hang_rate: float = 0.0

    def faults(self, seed: int) -> Faults:
        share = self.server_errors / 3
        routes = [
            # Storms first: the first rule that fires decides the answer.
            RouteFault(match="**", error_rate=self.storm_rate, error_status=429, storm_seconds=self.storm_seconds),
            *(RouteFault(match=m, drop_after=self.drop_after_create) for m in CREATES),
            RouteFault(match="**", error_rate=share, error_status=502),
            RouteFault(match="**", error_rate=share / (1 - share), error_status=503, retry_after=3),
            RouteFault(match="**", error_rate=share / (1 - 2 * share), error_status=504, drop_before=self.drop_before),
        ]
        return Faults(
            seed=seed,
            routes=routes,
            rate_limit_per_minute=self.rate_limit_per_minute,
            deploy_fail_rate=self.deploy_fail_rate,
            deploy_hang_rate=self.deploy_hang_rate,
        )

    def describe(self) -> str:
        return (
            f"{self.server_errors:.0%} 5xx, 429 storms ({self.storm_rate:.0%} of calls start {self.storm_seconds:g}s"
            f", plus {self.rate_limit_per_minute}/min limit), {self.drop_after_create:.0%} creates dropped after "
            f"acting, {self.drop_before:.0%} dropped before, {self.slow_rate:.0%} slow and {self.timeout_rate:.0%}"
            f" timed-out answers, {self.deploy_fail_rate:.0%} deployments failing, "
            f"{self.deploy_hang_rate:.0%} hanging"
        )


CALM = ChaosProfile(
    server_errors=0.0,
    storm_rate=0.0,
    rate_limit_per_minute=None,
    drop_after_create=0.0,
    drop_before=0.0,
    slow_rate=0.0,
    timeout_rate=0.0,
    deploy_fail_rate=0.0,
)


class RequestLog:
    """Every request and how it ended, with ids replaced by their order of appearance (ids are random)."""

    _ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.times: list[float] = []
        self.clock: ManualClock | None = None
        self._ids: dict[str, str] = {}

    def path(self, path: str) -> str:
        return self._ID.sub(lambda m: self._ids.setdefault(m[0], f"#{len(self._ids)}"), path)

    def add(self, what: str, outcome: str) -> None:
        self.entries.append(f"{what} -> {outcome}")
        self.times.append(self.clock.now() if self.clock else 0.0)

    def index(self, entry: str, start: int = 0) -> int:
        return next(i for i in range(start, len(self.entries)) if self.entries[i] == entry)


@dataclass
class Step:
    """A scripted fault: the next ``times`` requests matching ``pattern`` (a regex on "METHOD /path") get
    ``action``: "drop-before", "drop-after", a status to answer instead ("503"), or after carrying the call
    out ("after:502"), "skip" (answer normally), or "rewrite" (``rewrite_body`` changes the real answer).
    ``meanwhile`` is what someone else does to the organization just before the request arrives."""

    pattern: str
    action: str
    times: int = 1
    rewrite_body: Any = None
    meanwhile: Callable[[], None] | None = None

    def matches(self, what: str) -> bool:
        return re.fullmatch(self.pattern, what) is not None

    def rewrite(self, response: httpx.Response, request: httpx.Request) -> httpx.Response:
        body = self.rewrite_body(response.json()) if callable(self.rewrite_body) else self.rewrite_body
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(response.status_code, content=content, request=request)


class SlowNetwork(httpx.AsyncBaseTransport):
    """Seeded slow answers in sandbox time; an answer slower than the client's timeout becomes a ReadTimeout.

    A timed-out request is carried out by the server half the time before the client gives up, which is what
    makes a timeout ambiguous for a create.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        clock: ManualClock,
        rng: random.Random,
        profile: ChaosProfile,
        log: RequestLog,
        script: list[Step],
    ) -> None:
        self._script = script
        self._inner = inner
        self._clock = clock
        self._rng = rng
        self._profile = profile
        self.log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        roll = self._rng.random()
        what = f"{request.method} {self.log.path(request.url.path)}"
        for step in self._script:
            if step.times > 0 and step.matches(what):
                step.times -= 1
                return await self._scripted(step, request, what)
        if roll < self._profile.timeout_rate:
            if self._rng.random() < 0.5:
                await self._answer(request, what + " (carried out)")
            await self._clock.sleep(CLIENT_TIMEOUT)
            self.log.add(what, "timeout")
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
        if roll < self._profile.timeout_rate + self._profile.slow_rate:
            await self._clock.sleep(self._rng.uniform(2.0, CLIENT_TIMEOUT * 0.9))
        return await self._answer(request, what)

    async def _scripted(self, step: Step, request: httpx.Request, what: str) -> httpx.Response:
        if step.meanwhile is not None:
            step.meanwhile()
        if step.action == "drop-before":
            self.log.add(what, "dropped before")
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if step.action == "drop-after":
            await self._answer(request, what + " (carried out)")
            self.log.add(what, "dropped after")
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if step.action == "skip":
            return await self._answer(request, what)
        if step.action.startswith("after:"):
            await self._answer(request, what + " (carried out)")
            step = Step(step.pattern, step.action.removeprefix("after:"))
        if step.action.isdigit():
            status = int(step.action)
            self.log.add(what, f"{status} (scripted)")
            body = {"code": 1007, "hint": "scripted", "httpStatusCode": status, "message": "Service Unavailable"}
            return httpx.Response(status, json=body, request=request)
        response = await self._answer(request, what)
        await response.aread()
        return step.rewrite(response, request)

    async def _answer(self, request: httpx.Request, what: str) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self.log.add(what, type(exc).__name__)
            raise
        self.log.add(what, str(response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


CLIENT_TIMEOUT = 30.0
LOST_TOKEN = re.compile(r"key (?P<id>[0-9a-f-]{36}) was created but its token was lost")


@dataclass
class RunReport:
    """What one apply run told its user, and what it had in hand to say it."""

    exit_code: int
    stdout: str
    error: str | None = None
    plan: Plan | None = None
    result: ApplyResult | None = None
    warnings: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)


@dataclass
class ChaosWorld:
    seed: int
    sandbox: Sandbox
    clock: ManualClock
    manifest: Manifest
    outputs_path: Path
    network_rng: random.Random
    profile: ChaosProfile = CALM
    runs: list[RunReport] = field(default_factory=list)
    requests: RequestLog = field(default_factory=RequestLog)
    script: list[Step] = field(default_factory=list)

    def use(self, profile: ChaosProfile) -> None:
        self.sandbox.faults = profile.faults(self.seed)
        self.profile = profile

    def wanted_status(self) -> dict[str, str]:
        return {m.name: "paused" if m.state == "paused" else "healthy" for m in self.manifest.models}

    def set_manifest(self, text: str) -> None:
        path = self.outputs_path.with_name(f"manifest-{self.seed}-{len(self.runs)}.yaml")
        path.write_text(text)
        self.manifest = load_manifest([path], environ={})

    def apply(self, *, timeout: float = 3600.0, replace: frozenset[str] = frozenset()) -> RunReport:
        report = asyncio.run(apply_run(self, timeout=timeout, replace=replace))
        self.runs.append(report)
        return report

    def twin(self, outputs_path: Path) -> ChaosWorld:
        """Another run of the same manifest against the same sandbox, with its own outputs and network dice."""
        twin = dataclasses.replace(
            self, outputs_path=outputs_path, network_rng=random.Random(self.seed * 31 + 7), runs=[], script=[]
        )
        twin.requests = RequestLog()
        twin.requests.clock = self.clock
        return twin

    def lost_tokens(self) -> dict[str, str]:
        """Keys whose token some run reported lost in transit: name -> key id."""
        lost: dict[str, str] = {}
        for report in self.runs:
            for item in report.result.failed if report.result else ():
                match = LOST_TOKEN.search(item.detail)
                if match:
                    lost[item.address.removeprefix("apiKey.")] = match["id"]
        return lost


def new_world(
    seed: int, root: Path, *, manifest_text: str = MANIFEST, profile: ChaosProfile = CALM, rules: Rules = "spec"
) -> ChaosWorld:
    clock = ManualClock()
    sandbox = Sandbox(token=API_TOKEN, clock=clock, seed=seed, rules=rules)
    path = root / f"manifest-{seed}.yaml"
    path.write_text(manifest_text)
    world = ChaosWorld(
        seed,
        sandbox,
        clock,
        load_manifest([path], environ={}),
        root / f"outputs-{seed}.json",
        random.Random(seed * 7919 + 1),
    )
    world.use(profile)
    world.requests.clock = clock
    return world


async def apply_run(world: ChaosWorld, *, timeout: float, replace: frozenset[str]) -> RunReport:
    """One ``apply --auto-approve``, as the CLI runs it once it holds the lock."""
    # The client's backoff jitter draws from the global generator; seeded, the run replays exactly.
    random.seed(world.seed * 104_729 + len(world.runs))
    transport = SlowNetwork(
        world.sandbox.transport(),
        world.clock,
        world.network_rng,
        world.profile,
        world.requests,
        world.script,
    )
    client = CapellaClient(
        base_url=IN_PROCESS_BASE_URL,
        token=Secret(API_TOKEN),
        transport=transport,
        clock=world.clock,
        timeout=CLIENT_TIMEOUT,
    )
    lines: list[str] = []
    async with client:
        try:
            live = await read_live(
                client, world.sandbox.org_id, now=datetime.fromtimestamp(world.clock.now(), tz=timezone.utc)
            )
        except CapellaError as exc:
            return RunReport(1, "", error=str(exc))
        store = Outputs(world.outputs_path, "json", org_id=world.sandbox.org_id)
        now = datetime.fromtimestamp(world.clock.now(), tz=timezone.utc)
        plan = make_plan(world.manifest, live, now=now, force_replace=replace, held_tokens=store.held_key_ids())
        lines.append(render_plan(plan))
        if plan.errors:
            return RunReport(1, "".join(lines), error="; ".join(plan.errors), plan=plan)
        result = None
        if plan.has_changes:
            applier = Applier(
                client,
                world.manifest,
                plan,
                store,
                clock=world.clock,
                options=ApplyOptions(timeout=timeout),
                progress=lambda address, message: lines.append(f"{address}: {message}\n"),
            )
            result = await applier.run()
            lines.append(render_apply_result(result, outputs_path=world.outputs_path))
        # As the CLI does after every apply: settle what still moves, record every model, name tokenless keys.
        try:
            settled = await settle_outputs(
                client, world.sandbox.org_id, world.manifest, store, clock=world.clock, timeout=timeout
            )
        except CapellaError as exc:
            return RunReport(1, "".join(lines), error=str(exc), plan=plan, result=result)
        lines += [f"Warning: {w}\n" for w in settled.warnings] + [f"Error: {p}\n" for p in settled.unsettled]
        code = 0 if (result is None or result.ok) and not settled.unsettled else 1
        return RunReport(
            code, "".join(lines), plan=plan, result=result, warnings=settled.warnings, unsettled=settled.unsettled
        )


def apply_together(worlds: list[ChaosWorld]) -> list[RunReport]:
    """Several applies at once on one event loop, as two runs that do not share a lock would."""

    async def together() -> list[RunReport]:
        return list(await asyncio.gather(*(apply_run(w, timeout=3600.0, replace=frozenset()) for w in worlds)))

    reports = asyncio.run(together())
    for world, report in zip(worlds, reports, strict=True):
        world.runs.append(report)
    return reports


# -- what the sandbox holds ------------------------------------------------------------------------------


def live_models(sandbox: Sandbox) -> list[tuple[str, str, str]]:
    """(name, id, status) of every model that exists and is not on its way out."""
    now = sandbox.now()
    found = []
    for model in sandbox.world().models.values():
        status = lifecycle.status_at(model, now)
        if status not in (lifecycle.DESTROYING, lifecycle.GONE):
            found.append((model.name, model.id, status))
    return sorted(found)


def live_keys(sandbox: Sandbox) -> list[tuple[str, str, str]]:
    """(name, id, token sha256) of every key."""
    return sorted((k.name, k.id, k.token_sha256) for k in sandbox.world().api_keys.values())


def duplicates(sandbox: Sandbox) -> list[str]:
    """Names held by more than one live model, or more than one key."""
    found: list[str] = []
    for kind, names in (
        ("model", [m[0] for m in live_models(sandbox)]),
        ("apiKey", [k[0] for k in live_keys(sandbox)]),
    ):
        found += sorted({f"{kind}.{n}" for n in names if names.count(n) > 1})
    return found


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_outputs(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"models": {}, "apiKeys": {}}
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def converged(world: ChaosWorld) -> list[str]:
    """Every way the sandbox and the outputs differ from what the manifest asks; empty when converged."""
    problems: list[str] = []
    models = live_models(world.sandbox)
    keys = live_keys(world.sandbox)
    outputs = read_outputs(world.outputs_path)
    wanted = world.wanted_status()
    for name in wanted:
        mine = [m for m in models if m[0] == name]
        if len(mine) != 1:
            problems.append(f"model {name}: {len(mine)} live")
            continue
        _, model_id, status = mine[0]
        if status != wanted[name]:
            problems.append(f"model {name}: {status}, wanted {wanted[name]}")
        recorded = outputs["models"].get(name, {})
        if recorded.get("id") != model_id:
            problems.append(f"model {name}: outputs name {recorded.get('id')}, live is {model_id}")
    for name in (k.name for k in world.manifest.apiKeys):
        mine = [k for k in keys if k[0] == name]
        if len(mine) != 1:
            problems.append(f"apiKey {name}: {len(mine)} live")
            continue
        _, key_id, token_hash = mine[0]
        recorded = outputs["apiKeys"].get(name, {})
        if recorded.get("id") != key_id:
            problems.append(f"apiKey {name}: outputs name {recorded.get('id')}, live is {key_id}")
        elif not recorded.get("token") or sha256(recorded["token"]) != token_hash:
            problems.append(f"apiKey {name}: the outputs do not hold its token")
    return problems


def untruths(world: ChaosWorld, report: RunReport, *, alone: bool = True) -> list[str]:
    """Every claim of ``report`` that the sandbox or the outputs contradict; empty when the run told the truth.

    A run that was ``alone`` is held to every claim; one that ran beside another only to the consistency of
    its exit code and summary, since the other run may have changed the organization since.
    """
    problems: list[str] = []
    result = report.result
    says_ok = report.error is None and (result is None or result.ok) and not report.unsettled
    if (report.exit_code == 0) != says_ok:
        problems.append(f"exit code {report.exit_code} but the run {'succeeded' if says_ok else 'failed'}")
    if "Traceback" in report.stdout or (report.error and "Traceback" in report.error):
        problems.append("a traceback was shown")
    if result is not None and result.ok != ("Apply complete!" in report.stdout):
        problems.append("the summary line does not match the outcome")
    if not alone:
        return problems
    if report.exit_code == 0:
        # A run that ends well leaves the organization and the outputs as the manifest says, except for keys
        # whose token the outputs lack, which that very run must name.
        warned = " ".join(report.warnings)
        for problem in converged(world):
            name = problem.split(":")[0].removeprefix("apiKey ")
            if not (problem.startswith("apiKey ") and f"apiKey.{name}:" in warned):
                problems.append(f"exit 0 but {problem}")
    if result is None:
        return problems
    models = {m[1]: m for m in live_models(world.sandbox)}
    keys = {k[1]: k for k in live_keys(world.sandbox)}
    outputs = read_outputs(world.outputs_path)
    wanted = world.wanted_status()
    for item in result.results:
        kind, _, name = item.address.partition(".")
        name = name.split("[")[0]
        if not item.ok:
            if item.address not in report.stdout or not item.detail:
                problems.append(f"{item.address}: failed without saying why in the summary")
            mine = [m for m in models.values() if m[0] == name]
            if kind == "model" and len(mine) == 1 and mine[0][2] == wanted.get(name):
                problems.append(f"{item.address}: reported failed ({item.detail}) but it is {mine[0][2]} as asked")
            continue
        if item.action.value == "delete":
            gone_id = item.address.split("[")[-1].rstrip("]")
            if gone_id in models or gone_id in keys:
                problems.append(f"{item.address}: reported deleted but still live")
            continue
        if kind == "model":
            mine = [m for m in models.values() if m[0] == name]
            recorded = outputs["models"].get(name, {})
            if len(mine) != 1 or mine[0][2] != item.detail or mine[0][2] != wanted[name]:
                problems.append(f"{item.address}: reported {item.detail}, live {mine}")
            elif recorded.get("id") != mine[0][1]:
                problems.append(f"{item.address}: outputs name {recorded.get('id')}, live is {mine[0][1]}")
        else:
            key_id = item.detail.removeprefix("created ")
            recorded = outputs["apiKeys"].get(name, {})
            if key_id not in keys:
                problems.append(f"{item.address}: reported {item.detail} but that key is not live")
            elif recorded.get("id") != key_id or sha256(recorded.get("token") or "") != keys[key_id][2]:
                problems.append(f"{item.address}: reported {item.detail} but its token is not in the outputs")
    return problems
