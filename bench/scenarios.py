"""The seven benchmark scenarios. Each returns a ``Result``: figures for the JSON file, rows for the table.

Times called "sandbox seconds" are read from the sandbox's ScaledClock, which capella-deploy's client and
applier share, so a deployment of D sandbox seconds takes D / speed real seconds. Ratios are what matter:
both sides of each comparison run in the same process, against the same served sandbox, one after the other.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from bench import baseline
from bench.fixtures import Call, Served, faults, manifest_document, seed, served
from capella_deploy.api.client import PER_PAGE, CapellaClient, ClientStats
from capella_deploy.api.ratelimit import API_REQUESTS_PER_MINUTE
from capella_deploy.apply.applier import Applier, ApplyOptions, ApplyResult
from capella_deploy.apply.eta import Durations
from capella_deploy.apply.watcher import PollSchedule
from capella_deploy.clock import ScaledClock
from capella_deploy.errors import CapellaError
from capella_deploy.kinds.model import model_create_body
from capella_deploy.live import LiveState, read_live
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan
from capella_deploy.sandbox import Sandbox
from capella_deploy.sandbox import views as sandbox_views

MODELS_LIST = "/aiServices/models"
KEYS_LIST = "/aiServices/models/apiKeys"
PROVIDERS_LIST = "/aiServices/providers"
# Modules whose presence at start-up costs noticeable import time (asyncio alone ~35 ms); none is needed to
# print help, and validate needs only pydantic and yaml.
HEAVY_MODULES = (
    "asyncio",
    "httpx",
    "httpcore",
    "anyio",
    "starlette",
    "uvicorn",
    "deepdiff",
    "tenacity",
    "pydantic",
    "yaml",
)


# The outputs file of the applies lives in memory where the system offers it: the sandbox clock compresses waiting,
# not disk flushes, so the two fsyncs that keep each token safe (about 13 ms on this machine's disk) would count
# 20 times over in sandbox time; against Capella they are milliseconds of a minutes-long apply.
_MEMORY_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class BenchError(RuntimeError):
    """The benchmark would measure the wrong thing (e.g. a plan that is not all no-ops)."""


@dataclass(frozen=True)
class Settings:
    latency_ms: float = 50.0
    deploy_seconds: float = 300.0  # D, in sandbox seconds
    # Sandbox seconds per real second in the applies (scenarios 2 and 7): at 10x a round trip of 50 ms is half a
    # sandbox second, as a real round trip of 0.5 s against a 5-minute deployment. A faster clock magnifies every
    # round trip and every millisecond of CPU, and then they, not the apply's schedule, decide the figures.
    speed: float = 10.0
    # The single-model polling runs of scenario 4 measure calls and delays of tens of seconds: a faster clock will do.
    polling_speed: float = 20.0
    # The sequential baseline takes hours of sandbox time: it runs on this faster clock, its latency scaled so
    # that one round trip costs it about the sandbox time it costs capella-deploy.
    baseline_speed: float = 100.0
    plan_models: int = 1000
    plan_keys: int = 1000
    apply_models: int = 50
    baseline_poll_seconds: float = 10.0
    rate_limit_per_minute: int = 60
    rate_limit_models: int = 50
    rate_limit_keys: int = 50
    rate_limit_deploy_seconds: float = 60.0
    rate_limit_speed: float = 10.0
    schedules: tuple[PollSchedule, ...] = (
        PollSchedule(initial=5, factor=1, maximum=5, near=5),
        PollSchedule(initial=15, factor=1, maximum=15, near=15),
        PollSchedule(),
        PollSchedule(initial=60, factor=2, maximum=240, near=60),
    )
    # Deploy times the default schedule does not assume, to show what a wrong assumption costs.
    misjudged_deploy_seconds: tuple[float, ...] = (150.0, 450.0)
    scale_models: int = 200
    scale_keys: int = 200
    scale_rate_per_minute: int = 100
    eta_sample_seconds: float = 5.0
    scaling_sizes: tuple[int, ...] = (10, 100, 1_000, 10_000)
    cold_start_runs: int = 7
    repeats: int = 3


FULL = Settings()
# The CI smoke: tiny N, a faster clock, and a rate limit low enough that its few requests still hit it.
QUICK = Settings(
    latency_ms=5.0,
    speed=1000.0,
    polling_speed=1000.0,
    baseline_speed=1000.0,
    plan_models=150,
    plan_keys=120,
    apply_models=4,
    rate_limit_per_minute=6,
    rate_limit_models=4,
    rate_limit_keys=4,
    rate_limit_deploy_seconds=30.0,
    rate_limit_speed=100.0,
    schedules=(PollSchedule(),),
    misjudged_deploy_seconds=(),
    scale_models=6,
    scale_keys=6,
    scale_rate_per_minute=10,
    scaling_sizes=(10, 100, 1_000),
    cold_start_runs=1,
    repeats=1,
)


@dataclass(frozen=True)
class Row:
    measure: str
    value: str
    target: str = ""
    met: bool | None = None  # None: reported, no target


@dataclass
class Result:
    key: str
    title: str
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def row(self, measure: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.rows.append(Row(measure, value, target, met))

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "figures": self.figures,
            "checks": [
                {"measure": r.measure, "value": r.value, "target": r.target, "met": r.met}
                for r in self.rows
                if r.met is not None
            ],
        }


# -- 1. plan at scale ------------------------------------------------------------------------------


def plan_at_scale(s: Settings) -> Result:
    result = Result("plan_at_scale", f"Plan over {s.plan_models:,} models + {s.plan_keys:,} keys already live")
    with served(speed=s.speed, deploy_seconds=s.deploy_seconds, latency_ms=s.latency_ms) as world:
        seed(world.sandbox, models=s.plan_models, keys=s.plan_keys)
        started = time.perf_counter()
        manifest = Manifest.model_validate(manifest_document(models=s.plan_models, keys=s.plan_keys))
        manifest_seconds = time.perf_counter() - started

        started = time.perf_counter()
        live = asyncio.run(_read(world))
        read_seconds = time.perf_counter() - started
        model_lists = world.log.select("GET", MODELS_LIST)
        key_lists = world.log.select("GET", KEYS_LIST)
        provider_lists = world.log.select("GET", PROVIDERS_LIST)
        per_page = max(c.per_page or 0 for c in (*model_lists, *key_lists))
        other_calls = len(world.log.calls) - len(model_lists) - len(key_lists) - len(provider_lists)

        now = datetime.fromtimestamp(world.clock.now(), tz=timezone.utc)
        cpu: list[float] = []
        for _ in range(s.repeats):
            started_cpu = time.thread_time()
            made = plan(manifest, live, now=now)
            cpu.append(time.thread_time() - started_cpu)
        _require_no_changes(made, s.plan_models + s.plan_keys)

        # A second pass under tracemalloc, which slows everything down: kept out of the timings above.
        tracemalloc.start()
        plan(manifest, asyncio.run(_read(world)), now=now)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        # The baseline's calls are counted in-process with the latency switched off, so that 2,000 sequential
        # GETs do not eat the time budget; its wall time with latency is what those calls would add.
        world.sandbox.faults = faults(0)
        world.log.clear()
        started = time.perf_counter()
        with world.in_process_http() as http:
            baseline.read_everything(http, world.org_id)
        baseline_bare = time.perf_counter() - started
        baseline_calls = len(world.log.calls)
    baseline_estimate = baseline_bare + baseline_calls * s.latency_ms / 1000
    ours_calls = len(model_lists) + len(key_lists) + len(provider_lists) + other_calls
    planner_cpu = statistics.median(cpu)
    expected_models = math.ceil(s.plan_models / per_page)
    expected_keys = math.ceil(s.plan_keys / per_page)
    result.figures = {
        "models": s.plan_models,
        "keys": s.plan_keys,
        "perPage": per_page,
        "list_calls": {"models": len(model_lists), "apiKeys": len(key_lists), "providers": len(provider_lists)},
        "expected_list_calls": {"models": expected_models, "apiKeys": expected_keys, "providers": 1},
        "other_calls": other_calls,
        "http_calls": ours_calls,
        "manifest_validate_seconds": manifest_seconds,
        "read_seconds": read_seconds,
        "planner_cpu_seconds": planner_cpu,
        "planner_cpu_seconds_runs": cpu,
        "peak_traced_mb": peak_bytes / 2**20,
        "max_rss_mb": _max_rss_mb(),
        "baseline_http_calls": baseline_calls,
        "baseline_read_seconds_estimated": baseline_estimate,
        "calls_ratio": baseline_calls / ours_calls,
    }
    result.row(
        "list calls, models",
        f"{len(model_lists)}",
        f"= ceil({s.plan_models}/{per_page}) = {expected_models}",
        len(model_lists) == expected_models,
    )
    result.row(
        "list calls, API keys",
        f"{len(key_lists)}",
        f"= ceil({s.plan_keys}/{per_page}) = {expected_keys}",
        len(key_lists) == expected_keys,
    )
    result.row("per-resource GETs", f"{other_calls}", "0", other_calls == 0)
    result.row("live read, wall", f"{read_seconds:.2f} s")
    result.row("planner CPU (median)", f"{planner_cpu:.3f} s", "< 0.3 s", planner_cpu < 0.3)
    result.row("peak memory, read + plan", f"{peak_bytes / 2**20:.1f} MB (tracemalloc)")
    result.row(
        "baseline: list + GET each",
        f"{baseline_calls:,} calls, ~{baseline_estimate:.0f} s (est.)",
        f"calls ratio {baseline_calls / ours_calls:.0f}x",
    )
    return result


async def _read(world: Served) -> LiveState:
    async with world.client() as client:
        return await read_live(client, world.org_id)


def _require_no_changes(made: Plan, resources: int) -> None:
    if made.errors or made.has_changes or len(made.changes) != resources:
        raise BenchError(f"the plan over the seeded world is not {resources} no-ops: {made.counts()} {made.errors}")


# -- 2. apply of new models --------------------------------------------------------------------------


@dataclass
class ApplyRun:
    plan_seconds: float  # sandbox seconds: the live read and the plan
    apply_seconds: float  # sandbox seconds: the applier, until the last model is healthy
    real_seconds: float
    result: ApplyResult | None
    stats: ClientStats
    apply_from: int  # index in the call log where the apply began
    surfaced: list[str]  # errors the user would have seen
    started: float = 0.0  # sandbox time the run began
    # (sandbox time, seconds the applier expected still to take) every eta_every seconds of the apply
    estimates: list[tuple[float, float]] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return self.plan_seconds + self.apply_seconds

    @property
    def completed(self) -> bool:
        return self.result is not None and self.result.ok and not self.surfaced


async def plan_and_apply(
    world: Served,
    manifest: Manifest,
    *,
    schedule: PollSchedule | None = None,
    requests_per_minute: float | None = None,
    eta_every: float | None = None,
) -> ApplyRun:
    """What ``capella-deploy apply --auto-approve`` does: read, plan, apply; timed on the sandbox clock.

    With ``eta_every``, the applier's estimate of the time left is read every so many sandbox seconds, as the
    reminders on a terminal or in a CI log read it.
    """
    clock = world.clock
    real_start = time.perf_counter()
    start = clock.now()
    plan_end = start
    apply_from = len(world.log.calls)
    applied: ApplyResult | None = None
    surfaced: list[str] = []
    estimates: list[tuple[float, float]] = []
    async with world.client(requests_per_minute=requests_per_minute) as client:
        try:
            live = await read_live(client, world.org_id)
            made = plan(manifest, live, now=datetime.fromtimestamp(clock.now(), tz=timezone.utc))
            plan_end = clock.now()
            apply_from = len(world.log.calls)
            with tempfile.TemporaryDirectory(dir=_MEMORY_DIR) as tmp:
                outputs = Outputs(Path(tmp) / "outputs.json", "json", org_id=made.org_id)
                options = ApplyOptions(schedule=schedule or PollSchedule())
                applier = Applier(client, manifest, made, outputs, clock=clock, options=options)
                sampler = asyncio.ensure_future(_sample(applier, clock, eta_every, estimates)) if eta_every else None
                try:
                    applied = await applier.run()
                finally:
                    if sampler is not None:
                        sampler.cancel()
            surfaced = [f"{r.address}: {r.detail}" for r in applied.failed]
        except CapellaError as exc:
            surfaced.append(str(exc))
        stats = client.stats
    return ApplyRun(
        plan_seconds=plan_end - start,
        apply_seconds=clock.now() - plan_end,
        real_seconds=time.perf_counter() - real_start,
        result=applied,
        stats=stats,
        apply_from=apply_from,
        surfaced=surfaced,
        started=start,
        estimates=estimates,
    )


async def _sample(applier: Applier, clock: ScaledClock, every: float, into: list[tuple[float, float]]) -> None:
    while True:
        await clock.sleep(every)
        into.append((clock.now(), applier.remaining()))


def new_models_manifest(count: int) -> Manifest:
    return Manifest.model_validate(manifest_document(models=count, keys=0))


def apply_new_models(s: Settings) -> Result:
    """Our apply, ``repeats`` times on a fresh world (the median is reported), then the baseline once.

    A stall of the machine for 0.1 s costs ``speed / 10`` sandbox seconds: repeating the short apply keeps one
    unlucky run from deciding the figure. The baseline runs for an hour of sandbox time and averages such stalls
    out by itself.
    """
    d = s.deploy_seconds
    n = s.apply_models
    result = Result(
        "apply_new_models", f"Apply of {n} new models (deploy time D = {d:g} sandbox s, clock x{s.speed:g})"
    )
    manifest = new_models_manifest(n)
    runs: list[ApplyRun] = []
    polls: list[int] = []
    lags: list[float] = []
    shares: list[float] = []
    with served(speed=s.speed, deploy_seconds=d, latency_ms=s.latency_ms) as world:
        round_trip = asyncio.run(world.round_trip())
        for _ in range(max(1, s.repeats)):
            world.sandbox.reset()
            world.log.clear()
            run = asyncio.run(plan_and_apply(world, manifest))
            runs.append(run)
            status_lists = [
                c for c in world.log.calls[run.apply_from :] if c.method == "GET" and c.path.endswith(MODELS_LIST)
            ]
            polls.append(len(status_lists))
            shares.append(_busiest_minute(status_lists) / API_REQUESTS_PER_MINUTE)
            last_healthy = max(m.audit.created_at for m in world.sandbox.world().models.values()) + d
            lags.append(run.started + run.total_seconds - last_healthy)

    # The baseline's round trip costs it the same sandbox time as ours costs us, on its faster clock.
    baseline_latency = s.latency_ms * s.speed / s.baseline_speed
    with served(speed=s.baseline_speed, deploy_seconds=d, latency_ms=baseline_latency) as world:
        baseline_round_trip = asyncio.run(world.round_trip()) * s.baseline_speed
        bodies = [model_create_body(spec, manifest.defaults, {}) for spec in manifest.models]
        start = world.clock.now()
        with world.http() as http:
            baseline.deploy_sequentially(
                http, world.org_id, bodies, poll_every=s.baseline_poll_seconds, sleep=world.sleep
            )
        baseline_seconds = world.clock.now() - start
        baseline_calls = len(world.log.calls)
        baseline_gets = world.log.count("GET")
    middle = sorted(range(len(runs)), key=lambda i: runs[i].total_seconds)[len(runs) // 2]
    ours = runs[middle]
    failed = [r for r in runs if not r.completed]
    budget = 1.05 * d
    speedup = baseline_seconds / ours.total_seconds
    share = PollSchedule().share
    # One list serves every model: the least the schedule can do is what it does for one of them.
    schedule_minimum = min_polls(PollSchedule(), d, round_trip * s.speed)
    result.figures = {
        "models": n,
        "deploy_seconds": d,
        "speed": s.speed,
        "runs": len(runs),
        "completed_runs": len(runs) - len(failed),
        "surfaced_errors": [message for r in failed for message in r.surfaced],
        "request_round_trip_ms": round_trip * 1000,
        "request_round_trip_seconds": round_trip * s.speed,
        "plan_seconds": ours.plan_seconds,
        "apply_seconds": ours.apply_seconds,
        "total_seconds": ours.total_seconds,
        "total_seconds_runs": [r.total_seconds for r in runs],
        "total_over_d": ours.total_seconds / d,
        "budget_seconds": budget,
        "notice_lag_seconds": lags[middle],
        "notice_lag_seconds_runs": lags,
        "real_seconds": ours.real_seconds,
        "creates": n,
        "status_list_calls": polls[middle],
        "status_list_calls_runs": polls,
        "status_list_calls_minimum": schedule_minimum,
        "status_list_calls_over_minimum": max(polls) / schedule_minimum,
        "poll_share_busiest_minute": max(shares),
        "poll_share_allowed": share,
        "http_calls": ours.stats.requests,
        "baseline_speed": s.baseline_speed,
        "baseline_round_trip_seconds": baseline_round_trip,
        "baseline_seconds": baseline_seconds,
        "baseline_http_calls": baseline_calls,
        "baseline_gets_per_model": baseline_gets / n,
        "speedup": speedup,
    }
    result.row(
        "applies completed",
        f"{len(runs) - len(failed)} of {len(runs)}"
        + (f"; {_short(failed[0].surfaced[0], 80)}" if failed and failed[0].surfaced else ""),
        "all",
        not failed,
    )
    spread = ", ".join(f"{r.total_seconds:.0f}" for r in runs)
    result.row(
        "plan + apply, sandbox time (median)",
        f"{ours.total_seconds:.0f} s = {ours.total_seconds / d:.3f} D (runs: {spread})",
        f"<= 1.05 D = {budget:.0f} s",
        ours.total_seconds <= budget,
    )
    result.row(
        "  of which: plan's read / last healthy -> seen",
        f"{ours.plan_seconds:.1f} s / {lags[middle]:.1f} s (runs: {', '.join(f'{lag:.1f}' for lag in lags)})",
    )
    result.row("calls", f"{ours.stats.requests} ({n} creates, {polls[middle]} status lists)")
    result.row(
        "status lists against the schedule's minimum (most of the runs)",
        f"{max(polls)} / {schedule_minimum} = {max(polls) / schedule_minimum:.2f} (runs: {', '.join(map(str, polls))})",
        "<= 1.5",
        max(polls) / schedule_minimum <= 1.5,
    )
    result.row(
        "status lists, busiest minute",
        f"{max(shares) * 100:.0f}% of the API's {API_REQUESTS_PER_MINUTE:g}/min",
        f"<= {share * 100:.0f}%",
        max(shares) <= share + 1e-9,
    )
    result.row(
        "one request, round trip",
        f"{round_trip * 1000:.0f} ms = {round_trip * s.speed:.2f} sandbox s (latency set: {s.latency_ms:g} ms)",
    )
    result.row(
        f"baseline: sequential create-then-poll (clock x{s.baseline_speed:g})",
        f"{baseline_seconds:.0f} s, {baseline_calls} calls, round trip {baseline_round_trip:.2f} s",
        f"speed-up {speedup:.1f}x >= 20x",
        speedup >= 20,
    )
    return result


def _busiest_minute(calls: list[Call]) -> int:
    """The most calls that went out within any 60 sandbox seconds."""
    times = sorted(c.at for c in calls)
    busiest, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 60:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest


# -- 3. under a rate limit ---------------------------------------------------------------------------


def rate_limited(s: Settings) -> Result:
    """Creates in a burst against the sandbox's limit, on a clock slow enough that the limit binds.

    On a fast clock one sandbox minute lasts a fraction of a real second, and 60 requests a minute would be about
    as many as the requests' own latency allows anyway; at ``rate_limit_speed`` a burst of creates runs far over
    the limit, as it would against Capella.
    """
    limit = s.rate_limit_per_minute
    n, k, d = s.rate_limit_models, s.rate_limit_keys, s.rate_limit_deploy_seconds
    result = Result(
        "rate_limited_apply",
        f"Apply of {n} models + {k} keys under {limit} requests/minute (D = {d:g} s, clock x{s.rate_limit_speed:g})",
    )
    manifest = Manifest.model_validate(manifest_document(models=n, keys=k))
    runs: dict[str, Any] = {}
    for label, client_limit in (("retry_only", None), ("client_limiter", float(limit))):
        with served(
            speed=s.rate_limit_speed, deploy_seconds=d, latency_ms=s.latency_ms, rate_limit_per_minute=limit
        ) as world:
            run = asyncio.run(plan_and_apply(world, manifest, requests_per_minute=client_limit))
            received = world.log.count(status=429)
        runs[label] = {
            "client_requests_per_minute": client_limit,
            "requests_sent": run.stats.requests,
            "429_received": received,
            "retried": run.stats.retries,
            "surfaced_errors": run.surfaced,
            "completed": run.completed,
            "total_seconds": run.total_seconds,
            "total_over_d": run.total_seconds / d,
        }
        shown = "retry on 429 only" if client_limit is None else f"client limiter {limit}/min"
        result.row(
            f"{shown}: sent / 429s / retried",
            f"{run.stats.requests} / {received} / {run.stats.retries}, done in {run.total_seconds:.0f} s",
            "0 surfaced, completes",
            run.completed,
        )
        for message in run.surfaced[:3]:
            result.row(f"{shown}: surfaced", _short(message))
    result.figures = {"limit_per_minute": limit, "models": n, "keys": k, "deploy_seconds": d, "runs": runs}
    return result


# -- 4. polling cost ---------------------------------------------------------------------------------


def min_polls(schedule: PollSchedule, deploy_seconds: float, round_trip: float = 0.0) -> int:
    """Status checks the schedule makes for a lone model until the first one that finds it deployed.

    The schedule expects the deployment to take the assumed time (a lone model teaches nothing before it is
    done). Each wait starts when the previous check has returned, so a check costs ``round_trip`` on top of the
    schedule's delay, and checks are never closer than the schedule's share of the API's rate allows (all in
    sandbox seconds, from the moment the create returned). The sandbox's latency comes before it handles a
    request: a model is created a moment before its create returns, and a check reads the status about one round
    trip after it is sent.
    """
    expected = Durations().expected("deploying")
    spacing = schedule.spacing(1, API_REQUESTS_PER_MINUTE)
    look = schedule.first(0.0, expected)
    at, polls = look.at, 1
    while at + round_trip < deploy_seconds:
        look = schedule.after(at + round_trip, look, expected)
        at = max(look.at, at + spacing)
        polls += 1
    return polls


def polling_cost(s: Settings, together: Result) -> Result:
    d = s.deploy_seconds
    result = Result(
        "polling_cost", f"Status polling for a model deploying D = {d:g} sandbox s (clock x{s.polling_speed:g})"
    )
    default = PollSchedule()
    assumed = Durations().expected("deploying")
    cases = [(schedule, d) for schedule in s.schedules]
    cases += [(default, other) for other in s.misjudged_deploy_seconds]
    schedules: list[dict[str, Any]] = []
    for schedule, deploy in cases:
        with served(speed=s.polling_speed, deploy_seconds=deploy, latency_ms=s.latency_ms) as world:
            round_trip = asyncio.run(world.round_trip()) * s.polling_speed
            run = asyncio.run(plan_and_apply(world, new_models_manifest(1), schedule=schedule))
            applied = world.log.calls[run.apply_from :]
            model = next(iter(world.sandbox.world().models.values()))
            noticed_after = world.clock.now() - (model.audit.created_at + deploy)
        polls = sum(1 for c in applied if c.method == "GET" and c.path.endswith(MODELS_LIST))
        calls = len(applied)
        minimum = 1 + min_polls(schedule, deploy, round_trip)  # the create, then the checks
        label = _schedule_label(schedule)
        is_default = schedule == default and deploy == d
        schedules.append(
            {
                "schedule": label,
                "initial": schedule.initial,
                "factor": schedule.factor,
                "maximum": schedule.maximum,
                "near": schedule.near,
                "deploy_seconds": deploy,
                "assumed_deploy_seconds": assumed,
                "calls": calls,
                "status_polls": polls,
                "minimum_calls": minimum,
                "ratio": calls / minimum,
                "completed": run.completed,
                "notice_lag_seconds": noticed_after,
                "round_trip_seconds": round_trip,
                "is_default": is_default,
            }
        )
        met = run.completed and calls / minimum <= 1.5
        if deploy == d:
            measure = f"{label}{' (default)' if schedule == default else ''}"
        else:
            measure = f"default, D = {deploy:g} s (assumed {assumed:g} s)"
        result.row(
            measure,
            f"{calls} calls (min {minimum}), ratio {calls / minimum:.2f}, healthy noticed +{noticed_after:.0f} s"
            + ("" if run.completed else " (apply failed)"),
            "ratio <= 1.5" if is_default else "",
            met if is_default else None,
        )
    shared = together.figures["status_list_calls"] / together.figures["models"]
    baseline_gets = together.figures["baseline_gets_per_model"]
    result.row(
        f"{together.figures['models']} models at once (default)",
        f"{shared:.2f} status calls per model (one list serves all)",
    )
    result.row(f"baseline: GET every {s.baseline_poll_seconds:g} s", f"{baseline_gets:.1f} GETs per model")
    result.figures = {
        "deploy_seconds": d,
        "schedules": schedules,
        "together_status_calls_per_model": shared,
        "baseline_gets_per_model": baseline_gets,
    }
    return result


def _schedule_label(schedule: PollSchedule) -> str:
    if schedule.factor == 1 or schedule.initial == schedule.maximum:
        return f"every {schedule.initial:g} s"
    return f"{schedule.initial:g} s x{schedule.factor:g} up to {schedule.maximum:g} s, {schedule.near:g} s when due"


# -- 7. at the rate limit, at scale ----------------------------------------------------------------


def rate_limited_at_scale(s: Settings) -> Result:
    """A large apply against the API's request rate: creates and status polls share one client-side budget.

    Two bounds rule it: no apply sends its requests faster than the rate allows, and none finishes before a
    deployment takes D. ``bound_seconds`` adds them: (requests the apply must send) / rate + D. That sum is not
    a lower bound when key creates overlap the deployments; the deploy-aware bound is one: the plan's read and
    every model create must go out before the last deployment can begin, and one status list must follow it.
    """
    n, k, d, rate = s.scale_models, s.scale_keys, s.deploy_seconds, s.scale_rate_per_minute
    result = Result(
        "rate_limited_at_scale",
        f"Apply of {n} models + {k} keys at {rate} requests/minute (D = {d:g} s, clock x{s.speed:g})",
    )
    manifest = Manifest.model_validate(manifest_document(models=n, keys=k))
    with served(speed=s.speed, deploy_seconds=d, latency_ms=s.latency_ms, rate_limit_per_minute=rate) as world:
        run = asyncio.run(
            plan_and_apply(world, manifest, requests_per_minute=float(rate), eta_every=s.eta_sample_seconds)
        )
        sent = len(world.log.calls)
        received = world.log.count(status=429)
    per_second = rate / 60
    pages = math.ceil(n / PER_PAGE)
    # The plan reads one page of models and one of keys (the organization starts empty), every resource is
    # created once, and one status list of every model must follow the last deployment.
    minimum = 2 + n + k + pages
    bound = minimum / per_second + d
    deploy_aware = max(minimum / per_second, (2 + n) / per_second + d + pages / per_second)
    total = run.total_seconds
    eta = _eta_errors(run)
    result.figures = {
        "models": n,
        "keys": k,
        "deploy_seconds": d,
        "rate_per_minute": rate,
        "speed": s.speed,
        "requests_sent": sent,
        "429_received": received,
        "retried": run.stats.retries,
        "surfaced_errors": run.surfaced,
        "completed": run.completed,
        "minimum_requests": minimum,
        "bound_seconds": bound,
        "deploy_aware_bound_seconds": deploy_aware,
        "plan_seconds": run.plan_seconds,
        "total_seconds": total,
        "over_bound": total / bound,
        "over_deploy_aware_bound": total / deploy_aware,
        "eta_error_at_half": eta["half"],
        "eta_error_at_quarter": eta["quarter"],
        "eta_error_at_three_quarters": eta["three_quarters"],
        "eta_samples": [[round(at - run.started, 1), round(left, 1)] for at, left in run.estimates],
    }
    result.row(
        "requests sent / 429s received / retried",
        f"{sent} (minimum {minimum}) / {received} / {run.stats.retries}",
    )
    result.row(
        "errors surfaced",
        _short("; ".join(run.surfaced), 80) if run.surfaced else "none",
        "none, completes",
        run.completed,
    )
    result.row(
        "plan + apply, sandbox time",
        f"{total:.0f} s; bound {minimum}/{rate:g} min + D = {bound:.0f} s",
        "",
    )
    result.row("  over the bound", f"{total / bound:.2f}", "<= 1.10", total / bound <= 1.10)
    result.row(
        "  over the deploy-aware bound",
        f"{total / deploy_aware:.2f} ({2 + n} requests before the last deploy: {deploy_aware:.0f} s)",
    )
    result.row(
        "time left as estimated, halfway",
        f"off by {eta['half'] * 100:.0f}% (a quarter in: {eta['quarter'] * 100:.0f}%, "
        f"three quarters: {eta['three_quarters'] * 100:.0f}%)",
        "within 20%",
        eta["half"] <= 0.20,
    )
    return result


def _eta_errors(run: ApplyRun) -> dict[str, float]:
    """How far the applier's estimate of the time left was from the time it really took, at points of the apply."""
    start = run.started + run.plan_seconds
    end = run.started + run.total_seconds
    errors: dict[str, float] = {}
    for name, fraction in (("quarter", 0.25), ("half", 0.5), ("three_quarters", 0.75)):
        moment = start + fraction * (end - start)
        if not run.estimates:
            errors[name] = math.inf
            continue
        at, left = min(run.estimates, key=lambda sample: abs(sample[0] - moment))
        errors[name] = abs(left - (end - at)) / max(end - at, 1e-9)
    return errors


# -- 5. cold start -----------------------------------------------------------------------------------

_PROBE = """
import json, sys
sys.argv = ["capella-deploy", *sys.argv[1:]]
from capella_deploy.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(HEAVY)))
heavy += ["capella_deploy.sandbox"] if "capella_deploy.sandbox" in sys.modules else []
print("\\nLOADED " + json.dumps(heavy))
"""

SMALL_MANIFEST = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
  - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16], allowedModels: [chat]}
"""


def cold_start(s: Settings) -> Result:
    result = Result("cold_start", "Cold start of the CLI (fresh process each run)")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "small.yaml"
        manifest.write_text(SMALL_MANIFEST)
        cli = _cli_command()
        commands: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "capella-deploy --help": [*cli, "--help"],
            "capella-deploy validate": [*cli, "validate", "-f", str(manifest)],
        }
        medians = {name: _median_run(command, s.cold_start_runs) for name, command in commands.items()}
        loaded = {
            "--help": _loaded_modules(["--help"]),
            "validate": _loaded_modules(["validate", "-f", str(manifest)]),
        }
    base = medians["python -c pass"]
    result.figures = {
        "runs": s.cold_start_runs,
        "median_seconds": medians,
        "ratio_to_python": {name: value / base for name, value in medians.items()},
        "heavy_modules_loaded": loaded,
    }
    for name, value in medians.items():
        result.row(name, f"{value * 1000:.0f} ms" + ("" if name.startswith("python") else f" = {value / base:.1f}x"))
    help_lean = not loaded["--help"]
    result.row("heavy imports for --help", ", ".join(loaded["--help"]) or "none", "none", help_lean)
    network = [m for m in loaded["validate"] if m not in ("pydantic", "yaml")]
    result.row(
        "heavy imports for validate",
        ", ".join(loaded["validate"]) or "none",
        "only pydantic, yaml",
        not network,
    )
    return result


def _cli_command() -> list[str]:
    script = Path(sys.executable).parent / "capella-deploy"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from capella_deploy.cli import main; sys.exit(main())"]


def _median_run(command: list[str], runs: int) -> float:
    subprocess.run(command, capture_output=True, check=True)  # warm the bytecode cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _loaded_modules(args: list[str]) -> list[str]:
    probe = _PROBE.replace("HEAVY", repr(json.dumps(HEAVY_MODULES)))
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True, env=_clean_env()
    )
    line = done.stdout.rsplit("LOADED ", 1)[1]
    loaded: list[str] = json.loads(line)
    return loaded


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CAPELLA_")}


# -- 6. scaling --------------------------------------------------------------------------------------


class _Lists:
    """Stands in for the client: the listings as the sandbox would send them, with no HTTP in between."""

    def __init__(self, models: list[dict[str, Any]], keys: list[dict[str, Any]]) -> None:
        self._models, self._keys = models, keys

    async def list_models(self, org_id: str) -> list[dict[str, Any]]:
        return self._models

    async def list_api_keys(self, org_id: str) -> list[dict[str, Any]]:
        return self._keys

    async def list_providers(self, org_id: str) -> list[dict[str, Any]]:
        return []


def plan_scaling(s: Settings) -> Result:
    result = Result("plan_scaling", "Plan CPU time against the number of live, declared resources")
    points = [_scaling_point(n, s.repeats) for n in s.scaling_sizes]
    for previous, point in itertools.pairwise(points):
        # log-log slope between neighbours: 1.0 is linear, 2.0 quadratic.
        point["slope"] = math.log(point["planner_cpu_seconds"] / previous["planner_cpu_seconds"]) / math.log(
            point["resources"] / previous["resources"]
        )
    for point in points:
        slope = point.get("slope")
        result.row(
            f"N = {point['resources']:,}",
            f"plan {point['planner_cpu_seconds'] * 1000:.1f} ms ({point['planner_us_per_resource']:.0f} us each), "
            f"snapshot {point['snapshot_cpu_seconds'] * 1000:.1f} ms, plan peak {point['plan_peak_mb']:.1f} MB"
            + ("" if slope is None else f", slope {slope:.2f}"),
        )
    last = points[-1]
    result.row(
        "growth, last decade",
        f"slope {last['slope']:.2f}",
        "linear: slope <= 1.1",
        last["slope"] <= 1.1,
    )
    result.row(
        f"planner CPU at {last['resources']:,} live + {last['resources']:,} declared (median of {s.repeats})",
        f"{last['planner_cpu_seconds']:.3f} s",
        "< 0.5 s",
        last["planner_cpu_seconds"] < 0.5,
    )
    result.figures = {"points": points, "repeats": s.repeats}
    return result


def _scaling_point(n: int, repeats: int) -> dict[str, Any]:
    """Snapshot and plan CPU for ``n`` live resources that ``n`` declared ones match, each the median of ``repeats``.

    The sandbox and its rendered listings are dropped before the planner is timed and a collection runs before each
    timed call: a planning CLI holds the manifest and the snapshot, not a sandbox world, and the collector's full
    passes cost in proportion to everything held, so keeping the bench's own fixtures alive would time its heap.
    """
    models, keys = n // 2, n - n // 2
    raw_models, raw_keys, org_id, now = _listings(models, keys)
    manifest = Manifest.model_validate(manifest_document(models=models, keys=keys))
    live, snapshot = _timed_snapshot(raw_models, raw_keys, org_id, repeats)
    del raw_models, raw_keys
    when = datetime.fromtimestamp(now, tz=timezone.utc)
    planning = _median_cpu(repeats, lambda: _require_no_changes(plan(manifest, live, now=when), n))
    gc.collect()
    tracemalloc.start()
    plan(manifest, live, now=when)
    peak_bytes = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "resources": n,
        "snapshot_cpu_seconds": snapshot,
        "planner_cpu_seconds": planning,
        "planner_us_per_resource": planning / n * 1e6,
        "plan_peak_mb": peak_bytes / 2**20,
    }


def _listings(models: int, keys: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, float]:
    """The listings a seeded sandbox would send, its organization and its time; the sandbox itself is let go."""
    sandbox = Sandbox(None, clock=ScaledClock(speed=1.0))
    seed(sandbox, models=models, keys=keys)
    world, now = sandbox.world(), sandbox.now()
    raw_models = [sandbox_views.model_view(m, now, "http://sandbox") for m in world.models.values()]
    raw_keys = [sandbox_views.key_view(k, world) for k in world.api_keys.values()]
    return raw_models, raw_keys, sandbox.org_id, now


def _timed_snapshot(
    raw_models: list[dict[str, Any]], raw_keys: list[dict[str, Any]], org_id: str, repeats: int
) -> tuple[LiveState, float]:
    lists = cast(CapellaClient, _Lists(raw_models, raw_keys))
    cpu = _median_cpu(repeats, lambda: asyncio.run(read_live(lists, org_id)))
    return asyncio.run(read_live(lists, org_id)), cpu


def _median_cpu(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(max(1, repeats)):
        gc.collect()
        started = time.thread_time()
        work()
        times.append(time.thread_time() - started)
    return statistics.median(times)


def _short(text: str, width: int = 100) -> str:
    """Long error texts keep their start (what failed) and their end (why)."""
    return text if len(text) <= width else f"{text[: width // 3]}...{text[-(width - width // 3 - 3) :]}"


def _max_rss_mb() -> float:
    # Linux reports kilobytes, macOS bytes.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
