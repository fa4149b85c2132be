"""Waits for models to reach a status, sharing one list call among every waiting model.

Polling each model with its own GET costs a call per model per tick; a list call answers for a
hundred models at once. Each waiter keeps its own backoff schedule (first look after
``initial`` seconds, then ``factor`` times longer up to ``maximum``), and one list call serves every
waiter that is due, and resolves any other waiter whose model got there early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from capella_deploy.clock import Clock
from capella_deploy.errors import CapellaError
from capella_deploy.live import LiveModel, LiveStateError, parse_model

log = logging.getLogger("capella_deploy.apply.watcher")


class WaitFailed(CapellaError):
    def __init__(self, message: str, model: LiveModel | None = None) -> None:
        super().__init__(message)
        self.model = model


class WaitTimedOut(WaitFailed):
    pass


@dataclass(frozen=True)
class PollSchedule:
    initial: float = 20.0
    factor: float = 1.5
    maximum: float = 30.0


@dataclass
class _Waiter:
    model_id: str
    until: frozenset[str]
    failing: frozenset[str]
    gone_ok: bool
    deadline: float
    next_check: float
    delay: float
    future: asyncio.Future[LiveModel | None] = field(repr=False)
    seen: bool = False  # listed at least once: only then does its absence mean it is gone


class StatusWatcher:
    def __init__(
        self,
        list_models: Callable[[], Awaitable[list[dict[str, Any]]]],
        clock: Clock,
        schedule: PollSchedule,
    ) -> None:
        self._list_models = list_models
        self._clock = clock
        self._schedule = schedule
        self._waiters: list[_Waiter] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.list_calls = 0

    async def wait(
        self,
        model_id: str,
        *,
        until: Collection[str],
        failing: Collection[str] = (),
        gone_ok: bool = False,
        timeout: float,
    ) -> LiveModel | None:
        """Return the model once its status is in ``until`` (None once it is gone, with ``gone_ok``)."""
        now = self._clock.now()
        waiter = _Waiter(
            model_id=model_id,
            until=frozenset(until),
            failing=frozenset(failing),
            gone_ok=gone_ok,
            deadline=now + timeout,
            next_check=now + self._schedule.initial,
            delay=self._schedule.initial,
            future=asyncio.get_running_loop().create_future(),
        )
        self._waiters.append(waiter)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            return await waiter.future
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
            due_at = min(min(w.next_check, w.deadline) for w in self._waiters)
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
        try:
            raw: list[dict[str, Any]] | None = await self._list_models()
        except CapellaError as exc:
            log.warning("could not read model statuses, will try again: %s", exc)
            raw = None
        now = self._clock.now()
        seen: dict[str, LiveModel] = {}
        for item in raw or []:
            try:
                parsed = parse_model(item)
            except LiveStateError:
                continue
            seen[parsed.id] = parsed
        for waiter in asked:
            if waiter.future.done():
                continue
            model = seen.get(waiter.model_id)
            if model is not None:
                waiter.seen = True
            if raw is not None and model is None and waiter.gone_ok:
                waiter.future.set_result(None)
            elif raw is not None and model is None and waiter.seen:
                waiter.future.set_exception(WaitFailed(f"model {waiter.model_id} disappeared"))
            elif model is not None and model.status in waiter.until:
                waiter.future.set_result(model)
            elif model is not None and model.status in waiter.failing:
                waiter.future.set_exception(WaitFailed(f"status became {model.status}", model))
            elif now >= waiter.deadline:
                status = model.status if model else "unknown"
                waiter.future.set_exception(WaitTimedOut(f"still {status} when the timeout ran out", model))
            elif now >= waiter.next_check:
                waiter.delay = min(waiter.delay * self._schedule.factor, self._schedule.maximum)
                waiter.next_check = now + waiter.delay
        self._waiters = [w for w in self._waiters if not w.future.done()]
