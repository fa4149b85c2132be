"""A read-only snapshot of what exists in a Capella organization.

The snapshot is built from list calls only (one per page, no per-resource GET), each kind reading and parsing
its own listing defensively: the documentation's examples and the OpenAPI spec disagree on a few names, so both
are accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from typing_extensions import assert_never

from capella_deploy.kinds import REGISTRY
from capella_deploy.kinds.api_key import LiveKey
from capella_deploy.kinds.base import Kind, LiveResource
from capella_deploy.kinds.model import LiveModel
from capella_deploy.kinds.provider import LiveProvider

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient

log = logging.getLogger("capella_deploy.live")


@dataclass(frozen=True)
class LiveState:
    org_id: str
    models: tuple[LiveModel, ...] = ()
    keys: tuple[LiveKey, ...] = ()
    providers: tuple[LiveProvider, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def of(self, kind: Kind) -> Sequence[LiveResource]:
        """The live resources of ``kind``."""
        match kind:
            case Kind.MODEL:
                return self.models
            case Kind.API_KEY:
                return self.keys
            case Kind.PROVIDER:
                return self.providers
            case _:
                assert_never(kind)

    @classmethod
    def of_kinds(cls, org_id: str, found: Mapping[Kind, Sequence[Any]], warnings: Sequence[str] = ()) -> LiveState:
        return cls(
            org_id,
            tuple(found[Kind.MODEL]),
            tuple(found[Kind.API_KEY]),
            tuple(found[Kind.PROVIDER]),
            warnings=tuple(warnings),
        )

    def fingerprint(
        self, held_tokens: frozenset[str] = frozenset(), credential_versions: Mapping[str, int] | None = None
    ) -> str:
        """A digest of everything the planner looks at; a saved plan is stale when this changes.

        ``held_tokens`` (the live key ids whose token the outputs hold) is part of it: it decides which key
        of a name the plan keeps; so are the credential versions the outputs record for live ids, against
        which the plan saw a credentials roll, or none.
        """
        doc: dict[str, Any] = {"org": self.org_id}
        live_ids: set[str] = set()
        for kind in REGISTRY:
            in_play = [r for r in self.of(kind.kind) if kind.in_play(r)]
            live_ids.update(r.id for r in in_play)
            entries = (kind.fingerprint(r, held_tokens) for r in in_play)
            doc[kind.kind.value] = sorted(entries, key=lambda d: str(d["id"]))
        recorded = {i: v for i, v in (credential_versions or {}).items() if i in live_ids}
        if recorded:
            doc["credentialVersions"] = recorded
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


async def read_live(client: CapellaClient, org_id: str, *, now: datetime | None = None) -> LiveState:
    """One snapshot of every kind of resource, read concurrently; ``now`` is the time of the reading."""
    answers = await asyncio.gather(*(kind.read(client, org_id, now) for kind in REGISTRY))
    warnings = [warning for _, found_warnings in answers for warning in found_warnings]
    for warning in warnings:
        log.warning(warning)
    found = {kind.kind: resources for kind, (resources, _) in zip(REGISTRY, answers, strict=True)}
    return LiveState.of_kinds(org_id, found, warnings)
