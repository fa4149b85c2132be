"""What is deployed, resource by resource, and whether the manifest declares it: the value behind `status`. Pure.

Like drift, it reads live state against a manifest; unlike drift, it lists everything live, changes or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from capella_deploy.kinds import REGISTRY
from capella_deploy.live import LiveState
from capella_deploy.manifest import Manifest
from capella_deploy.plan import Where


@dataclass(frozen=True)
class ResourceStatus:
    kind: str  # the Kind's value: "model", "apiKey"...
    name: str
    live_id: str
    region: str | None
    gpu_memory: int | None
    state: str  # a model's status; for a key "active" or "expired" (each kind's status() says)
    created_at: datetime | None
    # True when the manifest declares this name, False when not, None when no manifest was given.
    declared: bool | None
    connection_string: str | None = None
    expires_at: datetime | None = None

    @property
    def address(self) -> str:
        return f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class StatusReport:
    org_id: str
    now: datetime
    resources: tuple[ResourceStatus, ...]
    warnings: tuple[str, ...] = ()
    # Where the status was read: the API or sandbox, and the organization's name and id.
    where: Where | None = None


def status_report(
    live: LiveState,
    manifest: Manifest | None,
    *,
    now: datetime,
    connections: Mapping[str, str],
    where: Where | None = None,
) -> StatusReport:
    """``connections``: model id -> connection string, for the models whose listing entry lacks one."""
    resources: list[tuple[int, ResourceStatus]] = []
    for rank, kind in enumerate(REGISTRY):
        names = {spec.name for spec in kind.specs(manifest)} if manifest is not None else None
        for resource in live.of(kind.kind):
            facts = kind.status(resource, now)
            status = ResourceStatus(
                kind=kind.kind.value,
                name=resource.name,
                live_id=resource.id,
                region=facts.region,
                gpu_memory=facts.gpu_memory,
                state=facts.state,
                created_at=facts.created_at,
                declared=None if names is None else resource.name in names,
                connection_string=facts.connection_string or connections.get(resource.id),
                expires_at=facts.expires_at,
            )
            resources.append((rank, status))
    resources.sort(key=lambda ranked: (ranked[0], ranked[1].name, ranked[1].live_id))
    return StatusReport(live.org_id, now, tuple(r for _, r in resources), live.warnings, where)
