"""Status polling near the expected completion, learned deploy durations, and the estimate of the time left.

The schedule and the estimates are pure and tested as such. The end-to-end tests apply small fleets to the
in-process sandbox on a ``ScaledClock`` at 100x (a 5-minute deployment takes 3 s), and compare when the apply
saw each model healthy with when the sandbox made it so. Their bounds leave several sandbox seconds (tens of
real milliseconds) for a busy machine; the behaviour they rule out is tens of seconds late.
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
from capella_deploy.apply.eta import ASSUMED_SECONDS, Durations, remaining_seconds
from capella_deploy.apply.watcher import Look, PollSchedule
from capella_deploy.clock import ScaledClock
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import Outputs
from capella_deploy.plan.planner import plan
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Faults, RouteFault, Sandbox, Timings
from capella_deploy.secrets import Secret

TOKEN = "polling-test-token-4d1e"
MODELS = "/aiServices/models"

# -- the schedule, alone ------------------------------------------------------------------------------


def looks(schedule: PollSchedule, expected: float | None, until: float) -> list[float]:
    """The looks the schedule makes at a model that is never done, up to ``until`` (from a start at 0)."""
    look = schedule.first(0.0, expected)
    times = []
    while look.at <= until:
        times.append(look.at)
        look = schedule.after(look.at, look, expected)
    return times


def test_a_look_falls_due_at_the_expected_completion_and_comes_again_soon_after() -> None:
    times = looks(PollSchedule(), 300.0, 340.0)
    assert times[:3] == [20.0, 50.0, 80.0]  # the backoff, while the completion is far
    assert 300.0 in times
    after = [t for t in times if t > 300.0]
    # Late: looked at again within seconds, backing off from there.
    assert after[:3] == pytest.approx([303.0, 307.5, 314.25])


def test_without_an_expected_completion_the_schedule_is_the_plain_backoff() -> None:
    assert looks(PollSchedule(), None, 140.0) == [20.0, 50.0, 80.0, 110.0, 140.0]


def test_a_list_call_made_for_others_counts_as_a_look_without_growing_the_delay() -> None:
    schedule = PollSchedule()
    look = Look(at=50.0, delay=30.0, past_due=False)
    assert schedule.seen_early(45.0, look, None) == Look(75.0, 30.0, False)
    # ... but never moves past the expected completion.
    assert schedule.seen_early(45.0, look, 60.0) == Look(60.0, 30.0, False)


def test_list_calls_keep_to_their_share_of_the_rate() -> None:
    schedule = PollSchedule(share=0.2)
    assert schedule.spacing(1, 100.0) == pytest.approx(3.0)  # 20 calls a minute
    assert schedule.spacing(2, 100.0) == pytest.approx(6.0)  # a two-page listing costs two requests


# -- learned durations and the time left ---------------------------------------------------------------


def test_durations_are_assumed_until_a_transition_completes_then_learned() -> None:
    durations = Durations()
    assert durations.expected("deploying") == ASSUMED_SECONDS["deploying"]
    durations.still("deploying", 100.0)
    assert durations.expected("deploying") == ASSUMED_SECONDS["deploying"]
    # Several models of one run narrow the duration down from both sides.
    durations.done("deploying", 110.0, 140.0)
    durations.still("deploying", 125.0)
    durations.done("deploying", 125.0, 131.0)
    assert durations.expected("deploying") == pytest.approx(128.0)


def test_a_transition_that_outlasts_the_assumption_raises_the_expectation() -> None:
    durations = Durations()
    durations.still("pausing", 95.0)
    assert durations.expected("pausing") == 95.0 > ASSUMED_SECONDS["pausing"]


def test_durations_that_differ_from_model_to_model_give_the_typical_one() -> None:
    durations = Durations()
    for low, high in ((90.0, 100.0), (190.0, 200.0), (140.0, 150.0)):
        durations.done("deploying", low, high)
    assert durations.expected("deploying") == pytest.approx(145.0)


def test_the_time_left_is_bound_by_the_writes_to_send_and_the_deployments_to_wait_for() -> None:
    common: dict[str, Any] = {"writes_per_second": 1.0, "deploy_seconds": 300.0, "notice_seconds": 2.0}
    # 100 writes at one a second, no deployment: 100 s.
    assert remaining_seconds(0.0, completions=[], writes_left=100, deploys_left=0, **common) == 100.0
    # 10 model creates still to send, each deploying for 300 s: the last one ends 10 + 300 s from now.
    assert remaining_seconds(0.0, completions=[], writes_left=50, deploys_left=10, **common) == 312.0
    # A deployment under way, expected at 250: that, plus the time to notice it.
    assert remaining_seconds(100.0, completions=[250.0], writes_left=0, deploys_left=0, **common) == 152.0


# -- end to end against the sandbox ----------------------------------------------------------------------


@dataclass
class Applied:
    result: ApplyResult
    lags: dict[str, float]  # model name -> seconds between becoming healthy and being seen so
    list_times: list[float]  # sandbox times of the status list calls during the apply
    elapsed: float  # sandbox seconds of the apply
    estimates: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds expected left)


class ListTimes(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, clock: ScaledClock, into: list[float]) -> None:
        self._inner, self._clock, self._into = inner, clock, into

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith(MODELS):
            self._into.append(self._clock.now())
        return await self._inner.handle_async_request(request)


def fleet(models: int, keys: int = 0) -> Manifest:
    return Manifest.model_validate(
        {
            "apiVersion": "capella-deploy/v1",
            "defaults": {"provider": "aws", "region": "us-east-1"},
            "models": [
                {"name": f"m{i}", "catalogModel": "mistralai/mistral-7b-instruct-v0.3", "gpuMemory": 24}
                for i in range(models)
            ],
            "apiKeys": [{"name": f"k{i}", "expiryDays": 30, "allowedCIDRs": ["10.0.0.0/16"]} for i in range(keys)],
        }
    )


def apply_fleet(
    tmp_path: Path,
    manifest: Manifest,
    *,
    deploy_seconds: float,
    parallelism: int = 10,
    faults: Faults | None = None,
    requests_per_minute: float | None = None,
    estimate_every: float | None = None,
) -> Applied:
    clock = ScaledClock(speed=100.0)
    sandbox = Sandbox(token=TOKEN, clock=clock, faults=faults, timings=Timings(deploy_seconds=deploy_seconds))
    list_times: list[float] = []
    seen: dict[str, float] = {}
    estimates: list[tuple[float, float]] = []

    def progress(address: str, message: str) -> None:
        if message == "healthy":
            seen[address.removeprefix("model.")] = clock.now()

    async def main() -> tuple[ApplyResult, float]:
        client = CapellaClient(
            base_url=IN_PROCESS_BASE_URL,
            token=Secret(TOKEN),
            transport=ListTimes(sandbox.transport(), clock, list_times),
            clock=clock,
            requests_per_minute=requests_per_minute,
        )
        async with client:
            made = plan(manifest, await read_live(client, sandbox.org_id), now=datetime.now(timezone.utc))
            outputs = Outputs(tmp_path / "outputs.json", "json", org_id=made.org_id)
            options = ApplyOptions(parallelism=parallelism)
            applier = Applier(client, manifest, made, outputs, clock=clock, options=options, progress=progress)
            list_times.clear()
            started = clock.now()

            async def sample() -> None:
                while estimate_every:
                    await clock.sleep(estimate_every)
                    estimates.append((clock.now(), applier.remaining()))

            sampler = asyncio.ensure_future(sample())
            try:
                result = await applier.run()
            finally:
                sampler.cancel()
            return result, started

    result, started = asyncio.run(main())
    ended = max(seen.values(), default=clock.now())
    healthy_at = {m.name: m.audit.created_at + deploy_seconds for m in sandbox.world().models.values()}
    lags = {name: seen[name] - healthy_at[name] for name in seen}
    return Applied(result, lags, list_times, ended - started, [(t - started, left) for t, left in estimates])


def busiest_minute(times: list[float]) -> int:
    return max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)


def test_a_deployment_that_takes_the_expected_time_is_seen_healthy_at_once(tmp_path: Path) -> None:
    applied = apply_fleet(tmp_path, fleet(3), deploy_seconds=ASSUMED_SECONDS["deploying"])
    assert applied.result.ok
    assert set(applied.lags) == {"m0", "m1", "m2"}
    # The plain backoff (20 s, then every 30 s) would look at 290 s and next at 320 s: 20 s late.
    assert max(applied.lags.values()) < 8.0, applied.lags
    # A look at every 30 s or so while deploying, one at the expected moment: a dozen calls, not more.
    assert len(applied.list_times) <= 13, applied.list_times


def test_deployments_faster_than_assumed_teach_the_rest_of_the_run(tmp_path: Path) -> None:
    # One create at a time, 5 sandbox seconds each: the models finish one after another, 150 s after their create,
    # half the assumed time. The first is seen on the backoff; what it teaches brings the looks at the others
    # to their own completions.
    slow_creates = Faults(routes=[RouteFault(match=f"POST /v4/organizations/*{MODELS}", latency_ms=(50, 50))])
    applied = apply_fleet(tmp_path, fleet(8), deploy_seconds=150.0, parallelism=1, faults=slow_creates)
    assert applied.result.ok
    lags = [applied.lags[f"m{i}"] for i in range(8)]
    assert lags[0] <= 32.0, lags  # within one backoff delay of 30 s
    # Every model after the first few: seen within seconds, where the backoff alone is up to 30 s late.
    assert max(lags[-3:]) < 10.0, lags
    # However many models fall due, status lists keep to a fifth of the API's 100 requests a minute.
    assert busiest_minute(applied.list_times) <= 20, applied.list_times


def test_the_time_left_is_estimated_within_a_fifth_halfway_through_a_rate_limited_apply(tmp_path: Path) -> None:
    # 20 models and 20 keys at 20 requests a minute: the model creates take a minute, the keys another, and the
    # last deployment ends about 60 + 300 s in.
    applied = apply_fleet(
        tmp_path,
        fleet(20, keys=20),
        deploy_seconds=ASSUMED_SECONDS["deploying"],
        faults=Faults(rate_limit_per_minute=20),
        requests_per_minute=20.0,
        estimate_every=5.0,
    )
    assert applied.result.ok
    half = applied.elapsed / 2
    at, left = min(applied.estimates, key=lambda sample: abs(sample[0] - half))
    truth = applied.elapsed - at
    assert abs(left - truth) <= 0.2 * truth, (at, left, truth)
