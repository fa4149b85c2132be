"""A read-only snapshot of what exists in a Capella organization.

The snapshot is built from list calls only (one per page, no per-resource GET), and parsed
defensively: the documentation's examples and the OpenAPI spec disagree on a few names, so both are accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from capella_deploy.kinds.api_key import LiveKey, parse_key
from capella_deploy.kinds.base import LiveStateError
from capella_deploy.kinds.model import FAILED_STATUSES, KNOWN_STATUSES, LiveModel, parse_model
from capella_deploy.lease import is_lease_key

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient

log = logging.getLogger("capella_deploy.live")


@dataclass(frozen=True)
class LiveState:
    org_id: str
    models: tuple[LiveModel, ...] = ()
    keys: tuple[LiveKey, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def fingerprint(self, held_tokens: frozenset[str] = frozenset()) -> str:
        """A digest of everything the planner looks at; a saved plan is stale when this changes.

        ``held_tokens`` (the live key ids whose token the outputs hold) is part of it: it decides which key
        of a name the plan keeps.
        """
        doc = {
            "org": self.org_id,
            # A model already being destroyed is about to vanish and plays no part in any plan.
            "models": sorted(
                (
                    # Whether a model failed matters to the planner (it replaces failed deployments); the
                    # passing statuses of a healthy lifecycle do not, so a deploy finishing leaves a plan fresh.
                    {"id": m.id, "name": m.name, "failed": m.status in FAILED_STATUSES, **m.attributes}
                    for m in self.models
                    if m.status != "destroying"
                ),
                key=lambda d: d["id"],
            ),
            "keys": sorted(
                (
                    {
                        "id": k.id,
                        "name": k.name,
                        "expiresAt": _iso(k.expires_at),
                        "allowedModelIds": None
                        if k.allows_every_model
                        else sorted(model_id for model_id, _ in k.allowed_models),
                        "tokenHeld": k.id in held_tokens,
                        **k.attributes,
                    }
                    for k in self.keys
                ),
                key=lambda d: d["id"],
            ),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


async def read_live(client: CapellaClient, org_id: str, *, now: datetime | None = None) -> LiveState:
    """One snapshot of the organization's models and keys, read concurrently; ``now`` as for ``parse_key``."""
    raw_models, raw_keys = await asyncio.gather(client.list_models(org_id), client.list_api_keys(org_id))
    warnings: list[str] = []
    models: list[LiveModel] = []
    for raw in raw_models:
        try:
            model = parse_model(raw)
        except LiveStateError as exc:
            warnings.append(f"skipped an unreadable model entry: {exc}")
            continue
        if model.status not in KNOWN_STATUSES:
            warnings.append(f"model {model.name!r} has an unknown status {model.status!r}; treated as in progress")
        models.append(model)
    keys: list[LiveKey] = []
    # The organization lock's leases are keys too, but no manifest's: no plan, drift report or export sees them.
    for raw in (raw for raw in raw_keys if not is_lease_key(raw)):
        try:
            keys.append(parse_key(raw, now))
        except LiveStateError as exc:
            warnings.append(f"skipped an unreadable API key entry: {exc}")
    for warning in warnings:
        log.warning(warning)
    return LiveState(org_id=org_id, models=tuple(models), keys=tuple(keys), warnings=tuple(warnings))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
