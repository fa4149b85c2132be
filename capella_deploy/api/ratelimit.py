"""Client-side pacing of API calls: a token bucket, and a gate that a Retry-After closes for everyone.

Both read time from a ``Clock`` so tests can drive them without waiting, and both are shared by all
the concurrent calls of one client: they are the only places where those calls coordinate.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from capella_deploy.clock import Clock

# What the Management API allows one key, about: 100 requests a minute (it answers 429 with Retry-After past that).
# Used to size what status polls may spend when no limit is configured.
API_REQUESTS_PER_MINUTE = 100.0
# Float arithmetic can leave a bucket a hair short of a whole token after waiting exactly long enough.
_EPSILON = 1e-9
_MINUTE = 60.0


@dataclass
class Ticket:
    """One request's place in the last minute."""

    at: float


class TokenBucket:
    """At most ``per_minute`` requests a minute on average, with bursts of up to ``burst``, and never more than
    ``per_minute`` within any sixty seconds.

    A bucket alone lets a full burst plus a minute's refill through in one minute, ``burst`` requests more than the
    limit it was given, which an API counting requests per minute answers with 429s. The API counts a request when
    it arrives, some time between its sending and its answer, so a request counts here until a minute after its
    answer. Waiters queue on a lock, so they are served in arrival order and a burst of callers is spread out
    instead of all waking at the same instant.
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
        self._per_window = max(1, math.floor(per_minute))
        # For each request of the last minute: when it was answered (while in flight: when it went out).
        self._recent: list[Ticket] = []

    async def acquire(self) -> Ticket:
        """Wait for the request's turn; hand the ticket back to ``answered`` once the answer (or failure) is in."""
        async with self._lock:
            self._refill()
            while self._tokens < 1.0 - _EPSILON:
                await self._clock.sleep((1.0 - self._tokens) / self._rate)
                self._refill()
            while (wait := self._window_wait()) > 0:
                await self._clock.sleep(wait)
            self._tokens -= 1.0
            ticket = Ticket(self._clock.now())
            self._recent.append(ticket)
            return ticket

    def answered(self, ticket: Ticket) -> None:
        ticket.at = max(ticket.at, self._clock.now())

    def _window_wait(self) -> float:
        """Seconds until the last minute holds fewer than ``per_minute`` requests."""
        now = self._clock.now()
        # Times after now mean the clock stepped back: those requests no longer count, rather than block for long.
        self._recent = [t for t in self._recent if now - _MINUTE < t.at <= now]
        if len(self._recent) < self._per_window:
            return 0.0
        return min(t.at for t in self._recent) + _MINUTE - now

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
