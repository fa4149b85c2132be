"""After apply: settle what is still moving and make the outputs describe every managed resource.

A plan with nothing to change can still find managed models mid-transition (an earlier run was killed
while they deployed) and an outputs file that lacks them (a fresh CI checkout, a killed run). So every
apply ends by reading the organization once and handing each kind its live resources: it waits for what is
still moving, records what the outputs should hold, and names what they lack and cannot get back (a key's
token is shown once, to the run that created the key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from capella_deploy.api.client import CapellaClient
from capella_deploy.apply.watcher import PollSchedule, StatusWatcher
from capella_deploy.clock import Clock
from capella_deploy.kinds import REGISTRY
from capella_deploy.kinds.base import Address, Settled, Watch, Watched
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import Outputs

W = TypeVar("W", bound=Watched)


class _SettleRun:
    """What every kind's settling shares (kinds/base.py's SettleRun), and the watchers to close after."""

    def __init__(
        self,
        client: CapellaClient,
        org_id: str,
        manifest: Manifest,
        outputs: Outputs,
        *,
        clock: Clock,
        timeout: float,
        schedule: PollSchedule,
        failed: frozenset[Address],
    ) -> None:
        self.client = client
        self.org_id = org_id
        self.manifest = manifest
        self.outputs = outputs
        self.timeout = timeout
        self.failed = failed
        self._clock = clock
        self._schedule = schedule
        self.watchers: list[StatusWatcher[Any]] = []

    def watch(self, list_all: Callable[[], Awaitable[list[dict[str, Any]]]], parse: Callable[[Any], W]) -> Watch[W]:
        watcher = StatusWatcher(list_all, parse, self._clock, self._schedule)
        self.watchers.append(watcher)
        return watcher


async def settle_outputs(
    client: CapellaClient,
    org_id: str,
    manifest: Manifest,
    outputs: Outputs,
    *,
    clock: Clock,
    timeout: float,
    schedule: PollSchedule | None = None,
    failed: frozenset[Address] = frozenset(),
) -> Settled:
    """Let every kind settle its managed resources and record them in the outputs.

    ``failed`` names the resources whose change this run already reported as failed.
    """
    live = await read_live(client, org_id, now=datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    run = _SettleRun(
        client,
        org_id,
        manifest,
        outputs,
        clock=clock,
        timeout=timeout,
        schedule=schedule or PollSchedule(),
        failed=failed,
    )
    found = Settled()
    try:
        for kind in REGISTRY:
            found.add(await kind.settle(run, live.of(kind.kind)))
    finally:
        for watcher in run.watchers:
            await watcher.close()
    return found
