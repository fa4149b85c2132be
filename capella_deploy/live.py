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
from capella_deploy.kinds.base import Address, Kind, LiveResource
from capella_deploy.kinds.model import LiveModel
from capella_deploy.kinds.provider import LiveProvider
from capella_deploy.manifest import Scope

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient

log = logging.getLogger("capella_deploy.live")

# Hex digits of a resource's digest: 64 bits, for telling which of one organization's resources changed.
DIGEST_LENGTH = 16


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

    def within(self, scope: Scope | None) -> LiveState:
        """Only the resources whose names ``scope`` covers (all of them without one): the others are another
        manifest's, and no plan, drift report, prune, export or saved plan of this one may see them."""
        if scope is None:
            return self
        found = {kind.kind: [r for r in self.of(kind.kind) if scope.covers(r.name)] for kind in REGISTRY}
        return LiveState.of_kinds(self.org_id, found, self.warnings)

    def digests(
        self, held_tokens: frozenset[str] = frozenset(), credential_versions: Mapping[str, int] | None = None
    ) -> dict[str, str]:
        """A short digest of what the planner looks at in each live resource, by ``kind.name[id]``: a saved
        plan keeps them, to say which resources changed when it is stale.

        ``held_tokens`` (the live key ids whose token the outputs hold) is part of a key's: it decides which key
        of a name the plan keeps; the credentials version the outputs record for a resource is part of its own,
        as what a credentials roll is seen against.
        """
        versions = credential_versions or {}
        found: dict[str, str] = {}
        for kind in REGISTRY:
            for resource in self.of(kind.kind):
                if kind.in_play(resource):
                    looked_at = [kind.fingerprint(resource, held_tokens), versions.get(resource.id)]
                    text = json.dumps(looked_at, sort_keys=True)
                    address = f"{Address(kind.kind, resource.name)}[{resource.id}]"
                    found[address] = hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]
        return found

    def fingerprint(self, digests: Mapping[str, str] | None = None) -> str:
        """A digest of everything the planner looks at; a saved plan is stale when this changes. ``digests``:
        this state's ``digests(...)`` as the plan took them (default: with no tokens held, no versions recorded)."""
        resources = self.digests() if digests is None else digests
        # Sorted: the order a listing gives varies between reads and says nothing.
        doc = [self.org_id, sorted(resources.items())]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


async def read_live(client: CapellaClient, org_id: str, *, now: datetime | None = None) -> LiveState:
    """One snapshot of every kind of resource, read concurrently; ``now`` is the time of the reading."""
    answers = await asyncio.gather(*(kind.read(client, org_id, now) for kind in REGISTRY))
    warnings = [warning for _, found_warnings in answers for warning in found_warnings]
    for warning in warnings:
        log.warning(warning)
    found = {kind.kind: resources for kind, (resources, _) in zip(REGISTRY, answers, strict=True)}
    return LiveState.of_kinds(org_id, found, warnings)
