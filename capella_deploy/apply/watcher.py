"""Waits for resources (models) to reach a status, sharing one list call among every waiting one.

Polling each model with its own GET costs a call per model per tick; a list call answers for a
hundred models at once. Each waiter keeps its own schedule and one list call serves every waiter
that is due, and resolves any other waiter whose model got there early.

Every list call counts as a look for every waiter it answers for, so waiters that arrive one after
another (creates going out under a rate limit) share the calls instead of each calling on its own
schedule. A waiter whose transition began when it started waiting (a create, a pause, a delete) also
has an expected completion: its start plus the transition's duration, learned from the models of this run
or assumed until one has finished. The schedule backs off while the completion is far, looks at the
moment it is due, and looks again soon after if the model is late: "healthy" is seen within moments
of happening, at the cost of a few extra list calls. List calls never come closer together than a
fixed share of the API's request rate allows, however many waiters are due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from capella_deploy.api.client import PER_PAGE
from capella_deploy.api.ratelimit import API_REQUESTS_PER_MINUTE
from capella_deploy.apply.eta import Durations
from capella_deploy.clock import Clock
from capella_deploy.errors import CapellaError, WaitFailed, WaitTimedOut
from capella_deploy.kinds.base import LiveStateError, Watched

log = logging.getLogger("capella_deploy.apply.watcher")


W = TypeVar("W", bound=Watched)


class Look(NamedTuple):
    """When to look at a model next, and the schedule's state after that look."""

    at: float
    delay: float  # the backoff delay in force
    past_due: bool  # whether a look at or after the expected completion has already found it unfinished


@dataclass(frozen=True)
class PollSchedule:
    """Seconds between looks at a waiting model.

    The first look comes ``initial`` seconds after the wait begins, then each delay is ``factor`` times the
    last, up to ``maximum``; a look falls due at the expected completion whatever the backoff says. A look
    at or after it that finds the model unfinished starts the backoff again from ``near``. List calls take
    at most ``share`` of the API's request rate.
    """

    initial: float = 20.0
    factor: float = 1.5
    maximum: float = 30.0
    near: float = 3.0
    share: float = 0.2

    def first(self, start: float, expected: float | None) -> Look:
        return Look(_capped(start + self.initial, start, expected), self.initial, False)

    def after(self, now: float, look: Look, expected: float | None) -> Look:
        """The next look after one at ``now`` that found the model unfinished."""
        if expected is not None and expected > now:
            delay = min(look.delay * self.factor, self.maximum)
            return Look(_capped(now + delay, now, expected), delay, False)
        if expected is not None and not look.past_due:
            return Look(now + self.near, self.near, True)
        delay = min(look.delay * self.factor, self.maximum)
        return Look(now + delay, delay, look.past_due)

    def seen_early(self, now: float, look: Look, expected: float | None) -> Look:
        """The next look after a list call made for other models found this one unfinished before it was due.

        That call served as a look: the next comes a delay after it (the delay grows only on planned looks), or
        at the expected completion if that comes first, which what the call taught may have brought forward.
        """
        at = max(look.at, now + look.delay)
        if expected is not None and now < expected < at:
            return Look(expected, look.delay, False)
        return Look(at, look.delay, look.past_due)

    def spacing(self, pages: int, requests_per_minute: float) -> float:
        """The least time between list calls of ``pages`` requests each, to stay within the share."""
        return pages * 60.0 / (self.share * requests_per_minute)


def _capped(at: float, now: float, expected: float | None) -> float:
    return expected if expected is not None and now < expected < at else at


@dataclass
class _Waiter(Generic[W]):
    model_id: str
    until: frozenset[str]
    ready: Callable[[W], bool] | None
    failing: frozenset[str]
    gone_ok: bool
    deadline: float
    started: float
    transition: str | None  # the status of the transition that began with the wait, if one did
    look: Look
    future: asyncio.Future[Any] = field(repr=False)
    seen: bool = False  # listed at least once: only then does its absence mean it is gone
    still_after: float = 0.0  # seconds into the wait it was last seen unfinished
    listing: bool = False  # waits for no model: for the whole listing of the next poll


class StatusWatcher(Generic[W]):
    """Waits for resources of one kind, read with ``list_all`` and ``parse``."""

    def __init__(
        self,
        list_all: Callable[[], Awaitable[list[dict[str, Any]]]],
        parse: Callable[[dict[str, Any]], W],
        clock: Clock,
        schedule: PollSchedule,
        *,
        durations: Durations | None = None,
        requests_per_minute: float | None = None,
    ) -> None:
        self._list_all = list_all
        self._parse = parse
        self._clock = clock
        self._schedule = schedule
        self.durations = durations or Durations()
        self._rate = requests_per_minute or API_REQUESTS_PER_MINUTE
        self._waiters: list[_Waiter[W]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pages = 1  # requests one list call took last time
        self._last_call = -math.inf
        self.round_trip = 0.0  # seconds the last list call took
        self.list_calls = 0

    async def wait(
        self,
        model_id: str,
        *,
        until: Collection[str] = (),
        ready: Callable[[W], bool] | None = None,
        failing: Collection[str] = (),
        gone_ok: bool = False,
        timeout: float,
        transition: str | None = None,
        since: float | None = None,
    ) -> W | None:
        """Return the model once its status is in ``until`` or ``ready`` says so of it (None once it is gone,
        with ``gone_ok``).

        ``transition``: the status the model shows during a transition that began just now, or at ``since``
        (``deploying`` after a create): the wait then expects it done after that transition's duration, and
        teaches it. The schedule counts from ``since`` too.
        """
        now = self._clock.now()
        started = now if since is None else min(since, now)
        expected = None if transition is None else started + self.durations.expected(transition)
        waiter: _Waiter[W] = _Waiter(
            model_id=model_id,
            until=frozenset(until),
            ready=ready,
            failing=frozenset(failing),
            gone_ok=gone_ok,
            deadline=now + timeout,
            started=started,
            transition=transition,
            look=self._schedule.first(started, expected),
            future=asyncio.get_running_loop().create_future(),
        )
        model: W | None = await self._join(waiter)
        return model

    async def listing(self, *, within: float, timeout: float) -> list[W]:
        """Every model, in the listing's order, as read by a poll made from now on, at the latest ``within``
        seconds from now: callers asking within that time, and waiters then due, share one list call."""
        now = self._clock.now()
        waiter: _Waiter[W] = _Waiter(
            model_id="",
            until=frozenset(),
            ready=None,
            failing=frozenset(),
            gone_ok=False,
            deadline=now + timeout,
            started=now,
            transition=None,
            look=Look(now + within, self._schedule.initial, False),
            future=asyncio.get_running_loop().create_future(),
            listing=True,
        )
        models: list[W] = await self._join(waiter)
        return models

    async def _join(self, waiter: _Waiter[W]) -> Any:
        self._waiters.append(waiter)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            return await waiter.future
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def completions(self) -> list[float]:
        """When each transition still waited for is expected to end; a wait of unknown length ends now."""
        now = self._clock.now()
        return [self._expected(w) or now for w in self._waiters if not w.future.done() and not w.listing]

    def notice_seconds(self) -> float:
        """About how long after a transition ends this watcher sees it."""
        return self.round_trip + self._spacing() / 2

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _expected(self, waiter: _Waiter[W]) -> float | None:
        if waiter.transition is None:
            return None
        return waiter.started + self.durations.expected(waiter.transition)

    def _spacing(self) -> float:
        return self._schedule.spacing(self._pages, self._rate)

    async def _run(self) -> None:
        try:
            await self._watch()
        except Exception as exc:
            # Nothing else would ever resolve the waiters: hand them the failure rather than hang the run.
            for waiter in self._waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(WaitFailed(f"status polling stopped: {type(exc).__name__}: {exc}"))

    async def _watch(self) -> None:
        while self._waiters:
            now = self._clock.now()
            due_at = min(min(w.look.at, w.deadline) for w in self._waiters)
            due_at = max(due_at, self._last_call + self._spacing())
            if due_at > now:
                self._wakeup.clear()
                sleeper = asyncio.ensure_future(self._clock.sleep(due_at - now))
                woken = asyncio.ensure_future(self._wakeup.wait())
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
                for pending in (sleeper, woken):
                    pending.cancel()
                continue
            await self._poll()

    async def _poll(self) -> None:
        self.list_calls += 1
        # A model created while this list call is in flight cannot be in its answer; judge only the waiters
        # that were there when the call went out.
        asked = list(self._waiters)
        sent = self._last_call = self._clock.now()
        try:
            raw: list[dict[str, Any]] | None = await self._list_all()
        except CapellaError as exc:
            log.warning("could not read model statuses, will try again: %s", exc)
            raw = None
        now = self._clock.now()
        self.round_trip = now - sent
        seen: dict[str, W] = {}
        for item in raw or []:
            try:
                parsed = self._parse(item)
            except LiveStateError:
                continue
            seen[parsed.id] = parsed
        if raw is not None:
            self._pages = max(1, math.ceil(len(raw) / PER_PAGE))
        for waiter in asked:
            if waiter.future.done():
                continue
            if waiter.listing:
                if raw is not None:
                    waiter.future.set_result(list(seen.values()))
                elif now >= waiter.deadline:
                    waiter.future.set_exception(WaitTimedOut("no listing of the models before the timeout ran out"))
                else:
                    waiter.look = self._schedule.after(now, waiter.look, None)
                continue
            model = seen.get(waiter.model_id)
            if model is not None:
                waiter.seen = True
            if raw is not None and model is None and waiter.gone_ok:
                self._learn_done(waiter, now)
                waiter.future.set_result(None)
            elif raw is not None and model is None and waiter.seen:
                waiter.future.set_exception(WaitFailed(f"model {waiter.model_id} disappeared"))
            elif model is not None and (model.status in waiter.until or (waiter.ready and waiter.ready(model))):
                self._learn_done(waiter, now)
                waiter.future.set_result(model)
            elif model is not None and model.status in waiter.failing:
                waiter.future.set_exception(WaitFailed(f"status became {model.status}", model))
            elif now >= waiter.deadline:
                status = model.status if model else "unknown"
                waiter.future.set_exception(WaitTimedOut(f"still {status} when the timeout ran out", model))
            else:
                if model is not None and waiter.transition is not None:
                    # Still under way when the call went out: the transition takes longer than that.
                    waiter.still_after = sent - waiter.started
                    self.durations.still(waiter.transition, waiter.still_after)
                expected = self._expected(waiter)
                if now >= waiter.look.at:
                    waiter.look = self._schedule.after(now, waiter.look, expected)
                else:
                    waiter.look = self._schedule.seen_early(now, waiter.look, expected)
        self._waiters = [w for w in self._waiters if not w.future.done()]

    def _learn_done(self, waiter: _Waiter[W], now: float) -> None:
        if waiter.transition is not None:
            self.durations.done(waiter.transition, waiter.still_after, now - waiter.started)
