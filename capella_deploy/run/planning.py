"""One plan against the organization as it is now: read the live state, then run the pure planner."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capella_deploy.manifest import Manifest
    from capella_deploy.plan import Plan
    from capella_deploy.run.session import Session


async def make_plan(session: Session, manifest: Manifest, replace: Sequence[str], *, destroy: bool = False) -> Plan:
    from capella_deploy.live import read_live
    from capella_deploy.plan.planfile import manifest_digest
    from capella_deploy.plan.planner import plan as make_plan
    from capella_deploy.plan.planner import plan_destroy

    live = await read_live(session.client, session.org_id)
    if destroy:
        return plan_destroy(manifest, live)
    now = datetime.fromtimestamp(session.clock.now(), tz=timezone.utc)
    return make_plan(
        manifest, live, now=now, manifest_digest=manifest_digest(manifest), force_replace=frozenset(replace)
    )
