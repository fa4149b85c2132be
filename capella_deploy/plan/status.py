"""What is deployed, resource by resource, and whether the manifest declares it: the value behind `status`. Pure.

Like drift, it reads live state against a manifest; unlike drift, it lists everything live, changes or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from capella_deploy.kinds.api_key import LiveKey
from capella_deploy.kinds.model import LiveModel
from capella_deploy.live import LiveState
from capella_deploy.manifest import Manifest
from capella_deploy.plan import Where


@dataclass(frozen=True)
class ResourceStatus:
    kind: str  # "model" | "apiKey"
    name: str
    live_id: str
    region: str | None
    gpu_memory: int | None
    state: str  # the model's status; for a key "active" or "expired"
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
    models = {m.name for m in manifest.models} if manifest is not None else None
    keys = {k.name for k in manifest.apiKeys} if manifest is not None else None
    resources = [
        _model_status(m, None if models is None else m.name in models, m.connection_string or connections.get(m.id))
        for m in live.models
    ]
    resources += [_key_status(k, None if keys is None else k.name in keys, now) for k in live.keys]
    resources.sort(key=lambda r: (r.kind != "model", r.name, r.live_id))
    return StatusReport(live.org_id, now, tuple(resources), live.warnings, where)


def _model_status(model: LiveModel, declared: bool | None, connection: str | None) -> ResourceStatus:
    return ResourceStatus(
        kind="model",
        name=model.name,
        live_id=model.id,
        region=model.region,
        gpu_memory=model.gpu_memory,
        state=model.status,
        created_at=model.created_at,
        declared=declared,
        connection_string=connection,
    )


def _key_status(key: LiveKey, declared: bool | None, now: datetime) -> ResourceStatus:
    expires = key.expires_at
    return ResourceStatus(
        kind="apiKey",
        name=key.name,
        live_id=key.id,
        region=key.region,
        gpu_memory=None,
        state="expired" if expires is not None and expires <= now else "active",
        created_at=key.created_at,
        declared=declared,
        expires_at=expires,
    )
