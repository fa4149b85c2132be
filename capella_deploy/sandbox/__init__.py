"""A local Capella AI Services: the Management API and the Model Service API, in one ASGI app.

Used three ways: in-process through ``Sandbox.transport()`` (no port; base URL ``IN_PROCESS_BASE_URL``), as a
real HTTP server (``capella-deploy sandbox serve``, see ``server.py``), and by the tests. Importing this module
is cheap: Starlette, uvicorn and httpx load only when the app or a transport is first asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from capella_deploy.clock import Clock, ManualClock, ScaledClock
from capella_deploy.sandbox import lifecycle
from capella_deploy.sandbox.faults import FaultInjector, Faults, RouteFault
from capella_deploy.sandbox.lifecycle import Timings
from capella_deploy.sandbox.operations import CONFLICTS, RULES, SPEC, Rules
from capella_deploy.sandbox.state import ClockAnchor, StateStore, World
from capella_deploy.secrets import Secret

if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette

__all__ = ["CONFLICTS", "IN_PROCESS_BASE_URL", "RULES", "SPEC", "Faults", "RouteFault", "Rules", "Sandbox", "Timings"]

IN_PROCESS_BASE_URL = "http://capella.sandbox"
DEFAULT_TOKEN = "sandbox-token"


class Sandbox:
    """One sandbox world: its state, its clock, its faults, and the app that serves them.

    The world follows the official spec's rules unless its state says ``world: conflicts`` (see
    ``operations``); a fault file's ``world`` takes over from the state's for the sandbox that loads it.
    ``rules`` given here is saved in the state, as ``set_rules`` does.
    """

    def __init__(
        self,
        state_path: Path | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        clock: Clock | None = None,
        faults: Faults | None = None,
        timings: Timings | None = None,
        seed: int = 0,
        client_address: str = "127.0.0.1",
        rules: Rules | None = None,
    ) -> None:
        self._store = StateStore(state_path)
        self._token = Secret(token)
        world = self._store.read()
        # Without an injected clock, time is the state's shared timeline, so every process using the same
        # state file sees the same sandbox time (and a model deploying in one is healthy in the other).
        self._anchor: ClockAnchor | None = None
        self._own_clock: _Timeline | None = None
        if clock is None:
            self._own_clock = _Timeline(self, world.clock)
            self._anchor = copy.copy(world.clock)
            clock = self._own_clock
        self.clock: Clock = clock
        self.timings = timings or Timings()
        self.seed = seed
        self.client_address = client_address
        self.faults = faults or Faults()
        self._app: Starlette | None = None
        if rules is not None and rules != world.rules:
            self.set_rules(rules)

    def __repr__(self) -> str:
        return f"Sandbox(state_path={self._store.path!s}, org_id={self.org_id})"

    @property
    def org_id(self) -> str:
        return self.world().org_id

    @property
    def org_name(self) -> str:
        return self.world().org_name

    @property
    def state_path(self) -> Path | None:
        return self._store.path

    @property
    def rules(self) -> Rules:
        """The rules the world follows now: the fault file's, else the state's."""
        return self.faults.world or self.world().rules

    def set_rules(self, rules: Rules) -> None:
        """Make the state's world follow ``rules`` from now on (what exists stays as it is)."""
        if rules not in RULES:
            raise ValueError(f"world must be one of {', '.join(RULES)}; got {rules!r}")
        with self.mutate() as world:
            world.rules = rules

    @property
    def faults(self) -> Faults:
        return self.injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.injector = FaultInjector(faults, self.seed)

    @property
    def app(self) -> Starlette:
        if self._app is None:
            from capella_deploy.sandbox.app import build_app

            self._app = build_app(self)
        return self._app

    def transport(self, client_address: str | None = None) -> httpx.AsyncBaseTransport:
        """An in-process transport to the app; requests appear to come from ``client_address``."""
        from capella_deploy.sandbox.transport import InProcessTransport

        return InProcessTransport(self.app, client_address or self.client_address)

    def reset(self) -> None:
        """Empty the world; the organization, the timeline and the world's rules stay."""
        with self.mutate() as world:
            world.models.clear()
            world.api_keys.clear()
            world.providers.clear()
            world.files.clear()
            world.batches.clear()

    def now(self) -> float:
        """Sandbox time, after catching up with any change another process made to the shared timeline."""
        self.world()
        return self.clock.now()

    def world(self) -> World:
        """The current world, for reading only, as reads see it now (an edit shows once it has landed)."""
        world = self._store.read()
        self._follow_timeline(world)
        return lifecycle.with_landed_edits(world, self.clock.now())

    @contextlib.contextmanager
    def mutate(self) -> Iterator[World]:
        """The current world to change; saved (and seen by other processes) when the block ends cleanly."""
        with self._store.write() as world:
            self._follow_timeline(world)
            yield world
        self._follow_timeline(self._store.read())

    def token_matches(self, presented: str) -> bool:
        return hmac.compare_digest(
            hashlib.sha256(presented.encode()).digest(), hashlib.sha256(self._token.reveal().encode()).digest()
        )

    def set_speed(self, speed: float) -> None:
        """Make the shared timeline run ``speed`` times faster than the wall clock from now on."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        if self._own_clock is None:
            raise ValueError("the sandbox was given its own clock; set that clock's speed instead")
        with self.mutate() as world:
            wall = time.time()
            world.clock = ClockAnchor(start=world.clock.at(wall), wall=wall, speed=speed)

    def step_clock(self) -> None:
        """Detach the shared timeline from the wall clock: from now on sandbox time moves only when a client of this
        sandbox waits on its clock (each wait moves it by the time waited) or ``advance_clock`` moves it.

        A run through the in-process transport then takes the same course however fast or loaded the machine is;
        ``set_speed`` makes the timeline follow the wall clock again.
        """
        if self._own_clock is None:
            raise ValueError("the sandbox was given its own clock; use a ManualClock for stepped time")
        with self.mutate() as world:
            wall = time.time()
            world.clock = ClockAnchor(start=world.clock.at(wall), wall=wall, speed=world.clock.speed, stepped=True)

    def advance_clock(self, seconds: float) -> None:
        """Move sandbox time forward at once (transitions due in that span complete)."""
        if seconds < 0:
            raise ValueError("time does not run backwards")
        if self._own_clock is not None:
            with self.mutate() as world:
                world.clock.start += seconds
        elif isinstance(self.clock, (ManualClock, ScaledClock)):
            self.clock.advance(seconds)
        else:
            raise ValueError(f"a {type(self.clock).__name__} cannot be advanced")

    def _follow_timeline(self, world: World) -> None:
        if self._own_clock is None or world.clock == self._anchor:
            return
        self._own_clock.follow(world.clock)
        self._anchor = copy.copy(world.clock)


class _Timeline(ScaledClock):
    """The state file's shared timeline as this process sees it: scaled wall time, or stepped by waits."""

    def __init__(self, sandbox: Sandbox, anchor: ClockAnchor) -> None:
        self._sandbox = sandbox
        self.stepped = anchor.stepped
        super().__init__(anchor.speed, anchor.start, wall_anchor=anchor.wall)

    def follow(self, anchor: ClockAnchor) -> None:
        self.stepped = anchor.stepped
        self.rebase(start=anchor.start, speed=anchor.speed, wall_anchor=anchor.wall)

    def now(self) -> float:
        return self._origin if self.stepped else super().now()

    async def sleep(self, seconds: float) -> None:
        if not self.stepped:
            await super().sleep(seconds)
            return
        # The wait is what moves stepped time, for every process sharing the state; then let others run.
        self._sandbox.advance_clock(max(0.0, seconds))
        await asyncio.sleep(0)
