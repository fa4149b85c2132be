"""After apply: settle what is still moving and make the outputs describe every managed resource.

A plan with nothing to change can still find managed models mid-transition (an earlier run was killed
while they deployed) and an outputs file that lacks them (a fresh CI checkout, a killed run). So every
apply ends by reading the organization once, waiting for managed models still in transition to
settle, recording every managed model in the outputs, and naming each managed key whose token the
outputs lack (a token is shown once, to the run that created the key, and cannot be fetched again).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone

from capella_deploy.api.client import CapellaClient
from capella_deploy.apply.watcher import PollSchedule, StatusWatcher
from capella_deploy.clock import Clock
from capella_deploy.errors import CapellaError
from capella_deploy.kinds.api_key import key_age
from capella_deploy.kinds.base import by_name
from capella_deploy.kinds.model import (
    FAILED_STATUSES,
    TRANSITIONAL_STATUSES,
    LiveModel,
    connection_string,
    header_profile,
    model_rank,
    parse_model,
)
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import Outputs


@dataclass
class Settled:
    """What settling found: notes for people, and the managed models still not where they should be."""

    warnings: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)


async def settle_outputs(
    client: CapellaClient,
    org_id: str,
    manifest: Manifest,
    outputs: Outputs,
    *,
    clock: Clock,
    timeout: float,
    schedule: PollSchedule | None = None,
    failed: frozenset[str] = frozenset(),
) -> Settled:
    """Wait for managed models in transition and record all managed models in the outputs.

    ``failed`` names the models whose change this run already reported as failed.
    """
    live = await read_live(client, org_id, now=datetime.fromtimestamp(clock.now(), tz=timezone.utc))
    wanted = {spec.name: spec for spec in manifest.models}
    present = by_name(m for m in live.models if m.name in wanted and m.status != "destroying")
    models = {name: min(group, key=model_rank) for name, group in present.items()}
    watcher = StatusWatcher(lambda: client.list_models(org_id), parse_model, clock, schedule or PollSchedule())
    found = Settled()

    async def settle(model: LiveModel) -> LiveModel:
        # A model whose change already failed (a timeout included) is not waited for a second time.
        if model.status not in TRANSITIONAL_STATUSES or model.name in failed:
            return model
        try:
            settled = await watcher.wait(
                model.id, until={"healthy", "paused"}, failing=FAILED_STATUSES, timeout=timeout
            )
        except CapellaError as exc:
            found.unsettled.append(f"model.{model.name}: {exc}")
            return model
        return settled or model

    try:
        settled = await asyncio.gather(*(settle(m) for m in models.values()))
    finally:
        await watcher.close()
    for model in settled:
        outputs.record_model(
            model.name,
            id=model.id,
            status=model.status,
            region=model.region,
            connectionString=await connection_string(client, org_id, model),
            headers=header_profile(wanted[model.name], manifest.defaults),
        )
    held = outputs.held_key_ids()
    live_keys = by_name(live.keys)
    for spec in manifest.apiKeys:
        keys = live_keys.get(spec.name)
        if not keys:
            continue
        if any(k.id in held for k in keys):
            continue
        key = max(keys, key=key_age)
        found.warnings.append(
            f"apiKey.{spec.name}: the outputs hold no token for live key {key.id}; a token is shown only to "
            f"the run that created the key. Rotate it with `capella-deploy apply --replace apiKey.{spec.name}`"
        )
    return found
