"""The plan: a value describing every change, what forced it, and what it was computed against.

A plan renders itself several ways (see views/plan.py), can be saved and loaded, and the applier
executes exactly the changes it holds. It never carries a secret: key tokens exist only in outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from capella_deploy.kinds.base import Action, Kind, OutputChange, ResourceChange


def display(value: Any) -> str:
    """An attribute value as people read it in a plan or a drift report."""
    return "(unset)" if value is None else json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Unmanaged:
    kind: Kind
    name: str
    live_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "name": self.name, "live_id": self.live_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Unmanaged:
        return cls(Kind(data["kind"]), data["name"], data["live_id"])


class OrgSource(str, Enum):
    """Where the id of the organization a run acts on came from."""

    MANIFEST = "manifest"
    ENVIRONMENT = "CAPELLA_ORG_ID"
    ONLY_ORGANIZATION = "only_organization"
    SANDBOX = "sandbox"
    OPTION = "--org"
    SAVED_PLAN = "saved_plan"

    @property
    def phrase(self) -> str:
        """How people read it after the id: "(6af0..., from CAPELLA_ORG_ID)"."""
        return _SOURCE_PHRASES[self]


_SOURCE_PHRASES = {
    OrgSource.MANIFEST: "from the manifest's organizationId",
    OrgSource.ENVIRONMENT: "from CAPELLA_ORG_ID",
    OrgSource.ONLY_ORGANIZATION: "the token's only organization",
    OrgSource.SANDBOX: "the sandbox's own organization",
    OrgSource.OPTION: "from --org",
    OrgSource.SAVED_PLAN: "from the saved plan",
}


@dataclass(frozen=True)
class Where:
    """Where a run acts: the API at ``url``, or the embedded sandbox kept in ``sandbox_state``, and the
    organization there, with its name as the API gave it and where its id came from."""

    organization_id: str
    organization_name: str | None
    organization_id_source: OrgSource
    url: str | None = None
    sandbox_state: str | None = None
    environment: str | None = None
    # The name patterns the manifest owns (its scope): nothing outside them was looked at.
    scope: tuple[str, ...] = ()

    @property
    def place(self) -> str:
        return self.url if self.url is not None else f"embedded sandbox {self.sandbox_state}"

    @property
    def organization(self) -> str:
        """``organization "Acme Prod" (6af0..., from CAPELLA_ORG_ID)``: the name first, as people know it."""
        source = self.organization_id_source.phrase
        if self.organization_name is None:
            return f"organization {self.organization_id} (no name given, {source})"
        return f'organization "{self.organization_name}" ({self.organization_id}, {source})'

    def describe(self) -> str:
        environment = f", environment {self.environment}" if self.environment else ""
        scope = f", scope {', '.join(self.scope)}" if self.scope else ""
        return f"{self.place}, {self.organization}{environment}{scope}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "sandbox_state": self.sandbox_state,
            "organization_id": self.organization_id,
            "organization_name": self.organization_name,
            "organization_id_source": self.organization_id_source.value,
            "environment": self.environment,
            "scope": list(self.scope) or None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Where:
        return cls(
            organization_id=data["organization_id"],
            organization_name=data.get("organization_name"),
            organization_id_source=OrgSource(data["organization_id_source"]),
            url=data.get("url"),
            sandbox_state=data.get("sandbox_state"),
            environment=data.get("environment"),
            scope=tuple(data.get("scope") or ()),
        )


@dataclass(frozen=True)
class Plan:
    org_id: str
    changes: tuple[ResourceChange, ...]
    unmanaged: tuple[Unmanaged, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    live_fingerprint: str = ""
    # A digest of each live resource the plan was made against, by ``kind.name[id]``: what a stale saved plan
    # names as changed.
    live_digests: Mapping[str, str] = field(default_factory=dict)
    manifest_digest: str = ""
    # The --target addresses this plan was narrowed to; empty for a whole plan.
    targets: tuple[str, ...] = ()
    # The manifest's environment (staging, production...): names the plan comment of a pipeline.
    environment: str | None = None
    # Where the plan was made (set after planning: the planner sees no API); a saved plan applies only there.
    where: Where | None = None

    @property
    def pending(self) -> tuple[ResourceChange, ...]:
        """The changes that do something."""
        return tuple(c for c in self.changes if c.action is not Action.NOOP)

    @property
    def output_changes(self) -> tuple[tuple[ResourceChange, OutputChange], ...]:
        """What apply would change in the outputs file, by the resource whose entry it is."""
        return tuple((change, output) for change in self.changes for output in change.outputs)

    @property
    def has_changes(self) -> bool:
        """Whether applying would change anything: a resource, or the outputs applications read (a header
        profile, a connection string) even when no resource changes."""
        return bool(self.pending) or bool(self.output_changes)

    def counts(self) -> dict[str, int]:
        """Changes by what they do; replacements count together, whichever goes first (each change's steps say)."""
        counts = {action.value: 0 for action in Action if action is not Action.REPLACE_CREATE_FIRST}
        for change in self.changes:
            action = Action.REPLACE if change.action is Action.REPLACE_CREATE_FIRST else change.action
            counts[action.value] += 1
        return counts

    def destructive_share(self) -> tuple[int, int]:
        """(resources deleted or replaced, resources managed): the input of the mass-change guard."""
        destructive = sum(1 for c in self.changes if c.destroys)
        managed = sum(1 for c in self.changes if c.after is not None or c.destroys)
        return destructive, managed

    def mass_change(self, *, share: float = 0.3, minimum: int = 10) -> str | None:
        """Why this plan is refused without --allow-mass-change, or None when it is not."""
        destructive, managed = self.destructive_share()
        if managed >= minimum and destructive > share * managed:
            return (
                f"this plan would delete or replace {destructive} of {managed} managed resources "
                f"(more than {share:.0%}); review it and pass --allow-mass-change if that is intended"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "organization_id": self.org_id,
            "changes": [c.to_dict() for c in self.changes],
            "unmanaged": [u.to_dict() for u in self.unmanaged],
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "live_fingerprint": self.live_fingerprint,
            "live_digests": dict(self.live_digests),
            "manifest_digest": self.manifest_digest,
            "targets": list(self.targets),
            "environment": self.environment,
            "target": self.where.to_dict() if self.where is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            org_id=data["organization_id"],
            changes=tuple(ResourceChange.from_dict(c) for c in data.get("changes", [])),
            unmanaged=tuple(Unmanaged.from_dict(u) for u in data.get("unmanaged", [])),
            errors=tuple(data.get("errors", [])),
            warnings=tuple(data.get("warnings", [])),
            live_fingerprint=data.get("live_fingerprint", ""),
            live_digests=dict(data.get("live_digests", {})),
            manifest_digest=data.get("manifest_digest", ""),
            targets=tuple(data.get("targets", [])),
            environment=data.get("environment"),
            where=Where.from_dict(data["target"]) if data.get("target") is not None else None,
        )

    def checksum(self) -> str:
        """SHA-256 of the canonical plan: what a reviewer approved, to compare with what will run."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()
