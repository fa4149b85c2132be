"""What is deployed in an organization, resource by resource, for `capella-deploy status`."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone

from capella_deploy.errors import CapellaError
from capella_deploy.live import LiveKey, LiveModel, read_live
from capella_deploy.manifest import Manifest
from capella_deploy.run.session import Session

# Connection strings missing from the listing are asked for one model at a time, a few at once.
_CONNECTION_LOOKUPS = 4


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


async def read_status(session: Session, manifest: Manifest | None) -> StatusReport:
    live = await read_live(session.client, session.org_id)
    now = datetime.fromtimestamp(session.clock.now(), tz=timezone.utc)
    models = {m.name for m in manifest.models} if manifest is not None else None
    keys = {k.name for k in manifest.apiKeys} if manifest is not None else None
    connections = await _connection_strings(session, live.models)
    resources = [
        _model_status(m, None if models is None else m.name in models, connections.get(m.id)) for m in live.models
    ]
    resources += [_key_status(k, None if keys is None else k.name in keys, now) for k in live.keys]
    resources.sort(key=lambda r: (r.kind != "model", r.name, r.live_id))
    return StatusReport(session.org_id, now, tuple(resources), live.warnings)


async def _connection_strings(session: Session, models: tuple[LiveModel, ...]) -> dict[str, str]:
    """Each model's connection string: from the listing, else asked for when the model can answer."""
    found = {m.id: m.connection_string for m in models if m.connection_string}
    missing = [m for m in models if m.id not in found and m.status in ("healthy", "paused")]
    gate = asyncio.Semaphore(_CONNECTION_LOOKUPS)

    async def lookup(model: LiveModel) -> None:
        # Unknown is shown as unknown: status reports what it can.
        async with gate:
            with contextlib.suppress(CapellaError):
                found[model.id] = await session.client.get_connection_string(session.org_id, model.id)

    await asyncio.gather(*(lookup(m) for m in missing))
    return found


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
