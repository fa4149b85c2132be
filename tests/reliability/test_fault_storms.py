"""The sandbox's 429 storms (``error_status: 429`` with ``storm_seconds``), which the chaos runs rely on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.clock import ManualClock
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Faults, RouteFault, Sandbox
from capella_deploy.sandbox.faults import FaultInjector
from capella_deploy.secrets import Secret


def test_a_storm_answers_every_matching_call_until_it_ends_and_says_when() -> None:
    storm = RouteFault(match="GET /v4/**", error_rate=1.0, error_status=429, storm_seconds=30)
    injector = FaultInjector(Faults(routes=[storm]), 0)
    answers = [injector.decide("GET", "/v4/organizations", "me", at) for at in (100.0, 110.0, 129.5)]
    assert [(a.error_status, a.error_retry_after) for a in answers] == [(429, 30), (429, 20), (429, 1)]
    assert injector.decide("POST", "/v4/organizations", "me", 110.0).error_status is None  # another route


def test_a_storm_with_its_own_retry_after_sends_that() -> None:
    storm = RouteFault(error_rate=1.0, error_status=429, retry_after=2, storm_seconds=30)
    assert FaultInjector(Faults(routes=[storm]), 0).decide("GET", "/x", "me", 0.0).error_retry_after == 2


def test_the_fault_file_accepts_storms_and_still_refuses_other_statuses(tmp_path: Path) -> None:
    good = tmp_path / "storm.yaml"
    good.write_text("routes:\n  - {match: '**', error_rate: 0.1, error_status: 429, storm_seconds: 45}\n")
    assert Faults.load(good).routes[0].storm_seconds == 45
    for bad, message in (("error_status: 404", "5xx status or 429"), ("storm_seconds: -1", "must not be negative")):
        path = tmp_path / "bad.yaml"
        path.write_text(f"routes:\n  - {{match: '**', error_rate: 0.1, {bad}}}\n")
        with pytest.raises(ValueError, match=message):
            Faults.load(path)


def test_the_client_waits_a_storm_out_and_then_succeeds() -> None:
    clock = ManualClock()
    # Seed 1 rolls a hit (a storm starts), then misses once the storm is over.
    storm = RouteFault(match="GET /v4/**", error_rate=0.5, error_status=429, storm_seconds=40)
    sandbox = Sandbox(token="t", clock=clock, faults=Faults(seed=1, routes=[storm]))

    async def list_models() -> list[dict[str, object]]:
        transport = sandbox.transport()
        async with CapellaClient(
            base_url=IN_PROCESS_BASE_URL, token=Secret("t"), transport=transport, clock=clock
        ) as c:
            return await c.list_models(sandbox.org_id)

    started = clock.now()
    assert asyncio.run(list_models()) == []
    assert 40 <= clock.now() - started < 45, "the client waited exactly as long as the storm's Retry-After said"
