"""Time sources shared by the applier and the sandbox.

The applier measures timeouts and sleeps between polls through a ``Clock`` so that, against the
embedded sandbox, a ten-minute deployment can be waited out in milliseconds without any test
sleeping for real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch, in this clock's time."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Wall-clock time; what the tool uses against the real Capella."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Time that runs ``speed`` times faster than the wall clock, from ``start``.

    Without ``wall_anchor`` the clock reads ``start`` now and then follows the monotonic clock, immune to
    wall-clock jumps. With ``wall_anchor`` (a ``time.time()`` reading) it reads
    ``start + (time.time() - wall_anchor) * speed``: two processes given the same three numbers agree on the
    time, which is how the sandbox keeps one timeline across separate CLI runs sharing a state file.
    """

    def __init__(self, speed: float = 1.0, start: float | None = None, *, wall_anchor: float | None = None) -> None:
        self.rebase(start=time.time() if start is None else start, speed=speed, wall_anchor=wall_anchor)

    def rebase(self, *, start: float, speed: float, wall_anchor: float | None = None) -> None:
        """Restart the timeline: it reads ``start`` at ``wall_anchor`` (or now), running at ``speed``."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._origin = start
        self._real = time.monotonic if wall_anchor is None else time.time
        self._origin_real = time.monotonic() if wall_anchor is None else wall_anchor

    def now(self) -> float:
        return self._origin + (self._real() - self._origin_real) * self.speed

    def advance(self, seconds: float) -> None:
        """Jump ahead without waiting, as if ``seconds`` of this clock's time had passed."""
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._origin += seconds

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """Time that moves only when told to; ``sleep`` moves it forward by the amount slept."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
