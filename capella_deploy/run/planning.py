"""One plan against the organization as it is now: read the live state, then run the pure planner."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capella_deploy.manifest import Manifest
    from capella_deploy.plan import Plan
    from capella_deploy.run.session import Session


async def make_plan(
    session: Session,
    manifest: Manifest,
    replace: Sequence[str],
    *,
    destroy: bool = False,
    targets: Sequence[str] = (),
    held_tokens: frozenset[str] = frozenset(),
) -> Plan:
    """The plan; with ``targets`` (--target), narrowed to them and what they need. ``held_tokens``: the live
    key ids whose token the outputs hold."""
    from capella_deploy.live import read_live
    from capella_deploy.plan.planfile import manifest_digest
    from capella_deploy.plan.planner import plan as make_plan
    from capella_deploy.plan.planner import plan_destroy
    from capella_deploy.plan.target import check_targets, restrict

    now = session_now(session)
    live = await read_live(session.client, session.org_id, now=now)
    if destroy:
        whole = plan_destroy(manifest, live)
    else:
        whole = make_plan(
            manifest,
            live,
            now=now,
            manifest_digest=manifest_digest(manifest),
            force_replace=frozenset(replace),
            held_tokens=held_tokens,
        )
    if not targets:
        return whole
    return restrict(whole, manifest, check_targets(targets, manifest, whole), destroy=destroy)


def session_now(session: Session) -> datetime:
    """The session's clock (the sandbox's time in a sandbox), as the planner and the live reading take it."""
    return datetime.fromtimestamp(session.clock.now(), tz=timezone.utc)
