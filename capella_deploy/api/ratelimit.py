"""Client-side pacing of API calls: a token bucket, and a gate that a Retry-After closes for everyone.

Both read time from a ``Clock`` so tests can drive them without waiting, and both are shared by all
the concurrent calls of one client: they are the only places where those calls coordinate.
"""

from __future__ import annotations

import asyncio

from capella_deploy.clock import Clock

# Float arithmetic can leave a bucket a hair short of a whole token after waiting exactly long enough.
_EPSILON = 1e-9


class TokenBucket:
    """At most ``per_minute`` requests a minute on average, with bursts of up to ``burst``.

    Waiters queue on a lock, so they are served in arrival order and a burst of callers is spread
    out instead of all waking at the same instant.
    """

    def __init__(self, *, per_minute: float, burst: int, clock: Clock) -> None:
        if per_minute <= 0:
            raise ValueError("requests per minute must be positive")
        if burst < 1:
            raise ValueError("the burst must allow at least one request")
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.now()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            while self._tokens < 1.0 - _EPSILON:
                await self._clock.sleep((1.0 - self._tokens) / self._rate)
                self._refill()
            self._tokens -= 1.0

    def _refill(self) -> None:
        now = self._clock.now()
        # A clock that steps backwards refills nothing rather than draining the bucket.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now


class RetryGate:
    """A moment before which no request of this client goes out.

    When the API answers one call with 429 and Retry-After, every other call is bound by the same
    limit; waiting them all out together keeps a burst from hammering the API with more 429s.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until = float("-inf")
        self._span = 0.0

    def close_for(self, seconds: float) -> float:
        """Close the gate for ``seconds`` from now; return how much later that makes it open (0 if no later)."""
        now = self._clock.now()
        later = now + seconds - max(self._until, now)
        if later > 0:
            self._until = now + seconds
            self._span = seconds
        return max(0.0, later)

    async def wait(self) -> None:
        # A loop, because another call may push the gate further while this one waits.
        while (remaining := self._until - self._clock.now()) > 0:
            if remaining > self._span:
                # The wall clock stepped back: never wait longer than the server asked for.
                self._until = self._clock.now() + self._span
                remaining = self._span
            await self._clock.sleep(remaining)
