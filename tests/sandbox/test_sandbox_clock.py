"""The wall-anchored ScaledClock the sandbox persists, and its jumps."""

from __future__ import annotations

import asyncio
import time

import pytest

from capella_deploy.clock import ScaledClock


def test_two_clocks_with_one_anchor_agree() -> None:
    wall = time.time() - 10
    one = ScaledClock(100, 1_000.0, wall_anchor=wall)
    two = ScaledClock(100, 1_000.0, wall_anchor=wall)
    assert abs(one.now() - two.now()) < 1
    assert 1_990 < one.now() < 2_100  # ten wall seconds at 100x


def test_advance_and_rebase() -> None:
    clock = ScaledClock(1, 0.0, wall_anchor=time.time())
    clock.advance(500)
    assert 500 <= clock.now() < 510
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.rebase(start=10.0, speed=2, wall_anchor=time.time())
    assert 10 <= clock.now() < 15 and clock.speed == 2
    with pytest.raises(ValueError):
        clock.rebase(start=0.0, speed=0)


def test_without_an_anchor_it_starts_now_and_sleeps_scaled() -> None:
    clock = ScaledClock(speed=10_000)
    before = clock.now()
    assert abs(before - time.time()) < 1
    start = time.monotonic()
    asyncio.run(clock.sleep(100))  # 10 ms of real time
    assert time.monotonic() - start < 1
    assert clock.now() - before >= 100
