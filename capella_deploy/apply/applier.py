"""Executes a Plan: concurrently, in dependency order, each change by its kind's own steps.

The applier decides nothing about *what* changes, nor how a kind's change is made: it runs each change of the
plan in its own task under a parallelism bound, hands it to its kind's steps (kinds/), and keeps what every
kind shares: when each change must be done by (--timeout), the live ids found so far (a key waits for the id of
a model it names), which changes have finished, one watcher per kind, and the estimate of the time left. A
failure ends that change only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from capella_deploy.api.client import CapellaClient
from capella_deploy.api.ratelimit import API_REQUESTS_PER_MINUTE
from capella_deploy.apply.eta import Durations, remaining_seconds
from capella_deploy.apply.watcher import PollSchedule, StatusWatcher
from capella_deploy.clock import Clock
from capella_deploy.errors import CapellaError
from capella_deploy.kinds import kind_of
from capella_deploy.kinds.base import Action, Address, Kind, KindSteps, ResourceChange, Watch, Watched
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan

T = TypeVar("T")
W = TypeVar("W", bound=Watched)


@dataclass(frozen=True)
class ApplyOptions:
    parallelism: int = 10
    timeout: float = 3600.0  # per resource, in the clock's seconds
    schedule: PollSchedule = field(default_factory=PollSchedule)


@dataclass(frozen=True)
class ResourceResult:
    address: str
    action: Action
    ok: bool
    detail: str
    elapsed: float
    warning: str | None = None  # done, with something the user should know


@dataclass(frozen=True)
class ApplyResult:
    results: tuple[ResourceResult, ...]
    list_calls: int

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[ResourceResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"{r.address}: {r.warning}" for r in self.results if r.warning)


Progress = Callable[[str, str], None]


class Applier:
    """Carries out a plan; for every kind's steps it is the ``ApplyRun`` (kinds/base.py)."""

    def __init__(
        self,
        client: CapellaClient,
        manifest: Manifest,
        plan: Plan,
        outputs: Outputs,
        *,
        clock: Clock,
        options: ApplyOptions = ApplyOptions(),
        progress: Progress | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.org_id = plan.org_id
        self.clock = clock
        self.outputs = outputs
        self.manifest = manifest
        self.timeout = options.timeout
        self._plan = plan
        self._options = options
        self._progress = progress or (lambda address, message: None)
        self._semaphore = asyncio.Semaphore(max(1, options.parallelism))
        self._watchers: list[StatusWatcher[Any]] = []
        self._steps: dict[Kind, KindSteps] = {}
        # The changes under way, by address, with the clock time each started: for a live progress display.
        self.active: dict[str, float] = {}
        # The changes whose deciding write has not gone out yet, and the long transition each starts, if any:
        # what the estimate of the time left still has to send and wait for.
        self._unsent = {c.address: kind_of(c.kind).transition(c) for c in plan.pending}
        self._started = clock.now()
        self._writes_done = 0
        # The changes sent whose transition has begun, with when: expected to end after its learned duration, even
        # before their wait for it has begun.
        self._begun: dict[str, tuple[float, str]] = {}
        # What this run learns of transitions' durations, shared by its watchers; assumed until it learns.
        self._durations = Durations()
        # Live ids by address: those the plan keeps, and those this run's changes make, as they are made.
        self._ids: dict[Address, str] = {}
        self._id_known: dict[Address, asyncio.Event] = {}
        # Changes of this plan that keep a declared resource: set when each ends; ``_ready`` those that succeeded.
        self._finished: dict[Address, asyncio.Event] = {}
        self._ready: set[Address] = set()
        for change in plan.changes:
            if change.after is None:
                continue
            event = self._id_known.setdefault(change.ref, asyncio.Event())
            if not change.action.renews and change.live_id:
                self._ids[change.ref] = change.live_id
                event.set()
            if change.action is not Action.NOOP:
                self._finished[change.ref] = asyncio.Event()

    async def run(self) -> ApplyResult:
        try:
            results = await asyncio.gather(*(self._run_one(c) for c in self._plan.pending))
        finally:
            for watcher in self._watchers:
                await watcher.close()
        return ApplyResult(tuple(results), sum(w.list_calls for w in self._watchers))

    def remaining(self) -> float:
        """Seconds (of the clock) this run is expected to take still."""
        now = self.clock.now()
        writes_left = len(self._unsent)
        transitions = [t for t in self._unsent.values() if t is not None]
        # Writes so far went out at this pace; before the first, assume the API's (or the client's) rate.
        pace = (self.client.requests_per_minute or API_REQUESTS_PER_MINUTE) / 60
        elapsed = now - self._started
        if self._writes_done and writes_left and elapsed > 0:
            pace = self._writes_done / elapsed
        return remaining_seconds(
            now,
            completions=[
                *(c for w in self._watchers for c in w.completions()),
                *(start + self._durations.expected(t) for start, t in self._begun.values()),
            ],
            writes_left=writes_left,
            deploys_left=len(transitions),
            writes_per_second=pace,
            deploy_seconds=max((self._durations.expected(t) for t in transitions), default=0.0),
            notice_seconds=max((w.notice_seconds() for w in self._watchers), default=0.0),
        )

    # -- what every kind's steps share (ApplyRun) -------------------------------------------------------

    async def call(self, call: Awaitable[T]) -> T:
        async with self._semaphore:
            return await call

    def watch(self, list_all: Callable[[], Awaitable[list[dict[str, Any]]]], parse: Callable[[Any], W]) -> Watch[W]:
        watcher = StatusWatcher(
            list_all,
            parse,
            self.clock,
            self._options.schedule,
            durations=self._durations,
            requests_per_minute=self.client.requests_per_minute,
        )
        self._watchers.append(watcher)
        return watcher

    def known_ids(self, address: Address) -> set[str]:
        return {c.live_id for c in self._plan.changes if c.ref == address and c.live_id}

    def found(self, address: Address, live_id: str) -> None:
        self._ids[address] = live_id
        self._id_known[address].set()  # every change that declares a resource has its event from the start

    async def id_of(self, address: Address) -> str | None:
        event = self._id_known.get(address)
        if event is not None:
            await event.wait()
        return self._ids.get(address)

    def ids_of(self, kind: Kind) -> dict[str, str]:
        return {address.name: live_id for address, live_id in self._ids.items() if address.kind is kind}

    async def finished(self, address: Address) -> bool | None:
        event = self._finished.get(address)
        if event is None:
            return None
        await event.wait()
        return address in self._ready

    # -- one change -----------------------------------------------------------------------------------

    async def _run_one(self, change: ResourceChange) -> ResourceResult:
        step = _Step(self, change)
        self.active[change.address] = step.started
        try:
            return await self._run_one_tracked(step)
        finally:
            del self.active[change.address]
            self._sent(change.address)  # a change that ends unsent has nothing left to send either
            self._begun.pop(change.address, None)
            if change.after is not None and change.ref in self._finished:
                self._finished[change.ref].set()

    async def _run_one_tracked(self, step: _Step) -> ResourceResult:
        change = step.change
        try:
            detail = await self._steps_of(change.kind).apply(step)
        except (CapellaError, KeyError, OSError) as exc:
            message = str(exc) if not isinstance(exc, KeyError) else f"missing manifest entry {exc}"
            self._progress(change.address, f"failed: {message}")
            if change.after is not None and change.ref in self._id_known:
                self._id_known[change.ref].set()  # let dependants fail fast instead of waiting
            return ResourceResult(change.address, change.action, False, message, self.clock.now() - step.started)
        if change.after is not None:
            self._ready.add(change.ref)
        self._progress(change.address, detail)
        elapsed = self.clock.now() - step.started
        return ResourceResult(change.address, change.action, True, detail, elapsed, step.warning)

    def _steps_of(self, kind: Kind) -> KindSteps:
        if kind not in self._steps:
            self._steps[kind] = kind_of(kind).steps(self)
        return self._steps[kind]

    def _sent(self, address: str) -> None:
        if address in self._unsent:
            transition = self._unsent.pop(address)
            self._writes_done += 1
            if transition is not None:
                self._begun[address] = (self.clock.now(), transition)


class _Step:
    """One change under way (ApplyStep): its deadline, its progress lines, its warning."""

    def __init__(self, applier: Applier, change: ResourceChange) -> None:
        self.change = change
        self._applier = applier
        self.started = applier.clock.now()
        self._deadline = self.started + applier.timeout
        self.warning: str | None = None

    def progress(self, message: str) -> None:
        self._applier._progress(self.change.address, message)

    def warn(self, message: str) -> None:
        self.warning = message

    def left(self) -> float:
        return max(0.0, self._deadline - self._applier.clock.now())

    def sent(self) -> None:
        self._applier._sent(self.change.address)
