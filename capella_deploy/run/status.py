"""`status`: read the organization, and ask for the connection strings the listing leaves out."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone

from capella_deploy.errors import CapellaError
from capella_deploy.kinds.model import LiveModel
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest
from capella_deploy.plan.status import StatusReport, status_report
from capella_deploy.run.session import Session

# Connection strings missing from the listing are asked for one model at a time, a few at once.
_CONNECTION_LOOKUPS = 4


async def read_status(session: Session, manifest: Manifest | None) -> StatusReport:
    live = await read_live(session.client, session.org_id)
    now = datetime.fromtimestamp(session.clock.now(), tz=timezone.utc)
    connections = await _missing_connection_strings(session, live.models)
    where = session.where(manifest.environment if manifest is not None else None)
    return status_report(live, manifest, now=now, connections=connections, where=where)


async def _missing_connection_strings(session: Session, models: tuple[LiveModel, ...]) -> dict[str, str]:
    """The connection strings of the models that can answer and whose listing entry lacks one."""
    missing = [m for m in models if not m.connection_string and m.status in ("healthy", "paused")]
    found: dict[str, str] = {}
    gate = asyncio.Semaphore(_CONNECTION_LOOKUPS)

    async def lookup(model: LiveModel) -> None:
        async with gate:
            # Unknown is shown as unknown: status reports what it can.
            with contextlib.suppress(CapellaError):
                found[model.id] = await session.client.get_connection_string(session.org_id, model.id)

    await asyncio.gather(*(lookup(m) for m in missing))
    return found
