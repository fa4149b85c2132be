"""The words the generic machinery and every resource kind share.

The planner, the applier, the live reading and export know a resource through these alone: its ``Kind``, its
typed ``Address``, the ``Action`` a change takes (with its replace order), and the ``ResourceChange`` a plan
holds. Each kind module (model.py, api_key.py, provider.py) holds everything else about its kind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError


class Action(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"
    ROTATE = "rotate"
    NOOP = "no-op"


class Kind(str, Enum):
    MODEL = "model"
    API_KEY = "apiKey"


@dataclass(frozen=True)
class AttributeChange:
    path: str
    before: Any
    after: Any
    forces_replace: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "forces_replace": self.forces_replace,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributeChange:
        return cls(data["path"], data.get("before"), data.get("after"), bool(data.get("forces_replace")))


@dataclass(frozen=True)
class ResourceChange:
    kind: Kind
    name: str
    action: Action
    live_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    attribute_changes: tuple[AttributeChange, ...] = ()
    reason: str | None = None
    prevent_destroy: bool = False
    # Machine-readable cause, in the style of Terraform's action_reason (see docs/plan-json.md).
    cause: str | None = None
    # Addresses of the resources that must be ready before this change runs (a semantic cache's embedding model).
    depends_on: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        suffix = f"[{self.live_id}]" if self.live_id and self.after is None else ""
        return f"{self.kind.value}.{self.name}{suffix}"

    @property
    def destroys(self) -> bool:
        """True when the change deletes something that exists now (rotation keeps the key's service)."""
        return self.action in (Action.DELETE, Action.REPLACE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind.value,
            "name": self.name,
            "action": self.action.value,
            "live_id": self.live_id,
            "before": self.before,
            "after": self.after,
            "attribute_changes": [c.to_dict() for c in self.attribute_changes],
            "reason": self.reason,
            "prevent_destroy": self.prevent_destroy,
            "cause": self.cause,
            "depends_on": list(self.depends_on),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceChange:
        return cls(
            kind=Kind(data["kind"]),
            name=data["name"],
            action=Action(data["action"]),
            live_id=data.get("live_id"),
            before=data.get("before"),
            after=data.get("after"),
            attribute_changes=tuple(AttributeChange.from_dict(c) for c in data.get("attribute_changes", [])),
            reason=data.get("reason"),
            prevent_destroy=bool(data.get("prevent_destroy")),
            cause=data.get("cause"),
            depends_on=tuple(data.get("depends_on", ())),
        )


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)


class LiveStateError(ValueError):
    """An API answer that cannot be read as a model or key."""


def by_name(resources: Iterable[R]) -> dict[str, list[R]]:
    """Live resources grouped by name: a name is the identity, but the API may hold several of one name."""
    grouped: dict[str, list[R]] = defaultdict(list)
    for resource in resources:
        grouped[resource.name].append(resource)
    return grouped


@dataclass
class ExportNotes:
    """What an export leaves out, and why, and what else a reader should know."""

    omitted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']} (got {error.get('input')!r})"
