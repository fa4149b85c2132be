"""What the organization-lock tests share: a sandbox on a clock the test drives, leases as the API lists them,
and other runs' lease keys written the way any version of the tool writes them (lease.py)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from capella_deploy.api.client import CapellaClient
from capella_deploy.clock import ManualClock
from capella_deploy.lease import KEY_EXPIRY_DAYS, NAME_PREFIX, UNREACHABLE_CIDR, LeaseTerms
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Sandbox
from capella_deploy.secrets import Secret

TOKEN = "lock-spec-token-8c41"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KEYS_PATH = "/aiServices/models/apiKeys"


class ScriptedClock(ManualClock):
    """Time that moves only when someone sleeps, by the time slept; what the script says happens at a moment
    (another run letting go, a key appearing) happens when a sleep reaches that moment, before the sleeper wakes."""

    # More looks than any test's wait takes: a lock still waiting after these waits forever.
    MOST_SLEEPS = 300

    def __init__(self, start: float = START) -> None:
        super().__init__(start)
        self.sleeps: list[float] = []
        self._script: list[tuple[float, int, Callable[[], Awaitable[None]]]] = []
        self._order = itertools.count()

    def at(self, when: float, action: Callable[[], Awaitable[None]]) -> None:
        heapq.heappush(self._script, (when, next(self._order), action))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) > self.MOST_SLEEPS:
            raise AssertionError(f"still waiting after {self.MOST_SLEEPS} waits: it would wait forever")
        await super().sleep(seconds)
        while self._script and self._script[0][0] <= self.now():
            _, _, action = heapq.heappop(self._script)
            await action()


class GatedClock:
    """Time that moves only when the test moves it; a sleeper wakes once the time it waits for has come."""

    def __init__(self, start: float = START) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._order), future))
        try:
            await future
        finally:
            self._sleepers = [s for s in self._sleepers if s[2] is not future]
            heapq.heapify(self._sleepers)

    def pass_time(self, seconds: float) -> None:
        """Time passes while something is under way (a slow answer); no sleeper is woken before the next step."""
        self._now += seconds

    def next_wake(self) -> float | None:
        due = [when for when, _, future in self._sleepers if not future.done()]
        return min(due) if due else None

    def sleeping(self) -> int:
        return sum(not future.done() for _, _, future in self._sleepers)

    async def advance(self, seconds: float, *, then_sleeping: int = 1) -> None:
        """Move time on, wake whoever is due, and return once ``then_sleeping`` sleepers wait again: all the work
        the wake-up set off is done (a block that work stops is cancelled while it waits here)."""
        self._now += seconds
        for when, _, future in self._sleepers:
            if when <= self._now and not future.done():
                future.set_result(None)
        await settle(lambda: self.sleeping() >= then_sleeping)


async def settle(condition: Callable[[], bool], *, turns: int = 20_000) -> None:
    """Let the other tasks run until ``condition`` holds; no wall time involved."""
    for _ in range(turns):
        await asyncio.sleep(0)
        if condition():
            return
    raise AssertionError("the tasks never got there")


def sandbox_on(clock: Any, tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path / "sandbox.json", token=TOKEN, clock=clock)


def client_of(sandbox: Sandbox, transport: httpx.AsyncBaseTransport | None = None) -> CapellaClient:
    # Its own clock: a retry's backoff must not move the time the lock is tested on.
    return CapellaClient(
        base_url=IN_PROCESS_BASE_URL,
        token=Secret(TOKEN),
        transport=transport or sandbox.transport(),
        clock=ManualClock(),
    )


def lease_keys(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The lease keys in the organization, oldest first, each with its description read where it can be."""
    found = []
    for key in sorted(sandbox.world().api_keys.values(), key=lambda k: (k.audit.created_at, k.id)):
        if not key.name.startswith(NAME_PREFIX):
            continue
        try:
            terms = json.loads(key.description)
        except ValueError:
            terms = {}
        found.append({"id": key.id, "created": key.audit.created_at, "region": key.region, **terms})
    return found


def lease_body(terms: LeaseTerms | str, name: str = "other") -> dict[str, Any]:
    description = terms if isinstance(terms, str) else terms.description()
    return {
        "name": NAME_PREFIX + name,
        "description": description,
        "expiry": KEY_EXPIRY_DAYS,
        "allowedCIDRs": [UNREACHABLE_CIDR],
        "region": "us-east-1",
    }


def other_run(
    lock_id: str = "other-run",
    *,
    expires: float,
    since: float | None = None,
    pid: int | None = None,
    node: str | None = None,
    environment: str | None = None,
) -> LeaseTerms:
    return LeaseTerms(
        lock_id=lock_id,
        expires=at(expires),
        operation="apply",
        holder="ci@runner-7 pid 4242",
        environment=environment,
        pid=pid,
        node=node,
        since=None if since is None else at(since),
    )


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def iso(seconds: float) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


class Network(httpx.AsyncBaseTransport):
    """The sandbox's transport, with hooks that let another run's request reach the API just before or after one of
    ours (the other run's own requests, made while a hook runs, pass straight through)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.before_create: Callable[[], Awaitable[None]] | None = None
        self.after_create: Callable[[], Awaitable[None]] | None = None
        self.before_delete: Callable[[str], Awaitable[None]] | None = None
        self.requests: list[tuple[str, str]] = []
        # Lists keys without their ``audit`` (so without a creation time), as an API might that keeps to less.
        self.without_audit = False
        self._busy = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        creates = request.method == "POST" and path.endswith(KEYS_PATH)
        deletes = request.method == "DELETE" and KEYS_PATH + "/" in path
        if creates and self.before_create:
            await self._hook(self.before_create)
        if deletes and self.before_delete:
            on_delete = self.before_delete
            await self._hook(lambda: on_delete(path.rsplit("/", 1)[-1]))
        self.requests.append((request.method, path))
        response = await self.inner.handle_async_request(request)
        if creates and self.after_create:
            await response.aread()
            await self._hook(self.after_create)
        if request.method == "GET" and path.endswith(KEYS_PATH) and self.without_audit:
            page = json.loads(await response.aread())
            for entry in page.get("data", []):
                entry.pop("audit", None)
            return httpx.Response(response.status_code, json=page, request=request)
        return response

    async def _hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        if self._busy:  # the other run's own requests
            return
        self._busy = True
        try:
            await hook()
        finally:
            self._busy = False

    def count(self, method: str) -> int:
        """Requests of ``method`` on the key routes (a list, a create or a delete)."""
        return sum(m == method and KEYS_PATH in p for m, p in self.requests)
