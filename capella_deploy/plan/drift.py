"""Drift: how the live organization differs from the manifest, derived from a plan. Pure, no I/O.

A plan already holds every difference the tool can see; drift reads it from the other side. A change
with both a live and a declared side is *drifted* (attribute by attribute), a create is *missing*, and a
live resource the manifest does not declare is *unmanaged*. Changes the plan makes for reasons other than
a difference (a key rotated for age, a key renewed because its model is) are not drift.

Ignore rules are fnmatch patterns over ``address`` or ``address.attribute.path`` in the manifest's words
(``model.chat.cache.expirySeconds``); a pattern that matches an address or any dotted prefix of a path silences
it. A pattern in the API's words (``model.*.caching.expiryTTL``, as plans spoke before) is read in the manifest's
too, and ``respellings`` names the new spelling for a warning.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from capella_deploy.kinds import REGISTRY
from capella_deploy.kinds.base import Action, Address, AttributeChange, Kind, ResourceChange
from capella_deploy.plan import Plan, Where

REPORT_FORMAT_VERSION = "3.0"
# Causes that describe a difference between live and declared; other replaces follow from one of these.
# A rename not yet made is a difference too: the live resource still has its former name.
_DRIFT_CAUSES = frozenset({None, "replace_because_cannot_update", "replace_because_failed", "replace_because_renamed"})


@dataclass(frozen=True)
class IgnoreRules:
    patterns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        """Read an ignore file: one pattern a line; blank lines and ``#`` comments are skipped."""
        lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
        return cls(tuple(line for line in lines if line))

    def __add__(self, other: IgnoreRules) -> IgnoreRules:
        return IgnoreRules(self.patterns + other.patterns)

    @cached_property
    def respellings(self) -> dict[str, tuple[str, ...]]:
        """Each pattern naming an attribute in the API's words, with the same pattern in the manifest's."""
        found = {pattern: respelt(pattern) for pattern in self.patterns}
        return {pattern: spellings for pattern, spellings in found.items() if spellings}

    def spellings(self, pattern: str) -> tuple[str, ...]:
        """``pattern`` and its manifest spellings: what it matches."""
        return (pattern, *self.respellings.get(pattern, ()))

    @cached_property
    def _effective(self) -> tuple[str, ...]:
        return tuple(spelling for pattern in self.patterns for spelling in self.spellings(pattern))

    def ignores(self, address: str, path: str = "") -> bool:
        return any(fnmatch.fnmatchcase(candidate, p) for candidate in _prefixes(address, path) for p in self._effective)


def respelt(pattern: str) -> tuple[str, ...]:
    """``pattern`` with its attribute path in the manifest's words, if the path is in the API's
    (``model.*.caching.expiryTTL`` -> ``model.*.cache.expirySeconds``); empty when it is not.

    The path starts after the kind and at least one segment of the name (a name may itself be ``caching``); the
    longest former path found wins, and what follows it is kept.
    """
    segments = pattern.split(".")
    former: dict[str, tuple[str, ...]] = {}
    for kind in REGISTRY:
        if fnmatch.fnmatchcase(kind.kind.value, segments[0]):
            former.update(kind.former_paths)
    for start in range(2, len(segments)):
        for end in range(len(segments), start, -1):
            spellings = former.get(".".join(segments[start:end]))
            if spellings:
                head, tail = segments[:start], segments[end:]
                # A former path that splits in two (caching.semantic) keeps what follows only on its first heir.
                chosen = spellings if not tail else spellings[:1]
                return tuple(".".join([*head, spelling, *tail]) for spelling in chosen)
    return ()


@dataclass(frozen=True)
class DriftedAttribute:
    """One attribute: ``before`` is the live value, ``after`` the declared one (as in the JSON plan);
    ``to_default``: the manifest leaves it unset, and ``after`` is the API's default apply would reset it to."""

    path: str
    before: Any
    after: Any
    to_default: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after, "to_default": self.to_default}


@dataclass(frozen=True)
class Drifted:
    kind: Kind
    name: str
    live_id: str | None
    action: Action
    reason: str | None
    attributes: tuple[DriftedAttribute, ...]

    @property
    def address(self) -> str:
        return str(Address(self.kind, self.name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind.value,
            "name": self.name,
            "live_id": self.live_id,
            "action": self.action.value,
            "reason": self.reason,
            "attributes": [a.to_dict() for a in self.attributes],
        }


@dataclass(frozen=True)
class Missing:
    kind: Kind
    name: str

    @property
    def address(self) -> str:
        return str(Address(self.kind, self.name))

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "kind": self.kind.value, "name": self.name}


@dataclass(frozen=True)
class UnmanagedResource:
    kind: Kind
    name: str
    live_id: str
    # Set when the plan would delete it (pruned, or a duplicate of a managed name); None when left alone.
    planned: str | None = None

    @property
    def address(self) -> str:
        return str(Address(self.kind, self.name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind.value,
            "name": self.name,
            "live_id": self.live_id,
            "planned": self.planned,
        }


@dataclass(frozen=True)
class DriftReport:
    org_id: str
    drifted: tuple[Drifted, ...] = ()
    missing: tuple[Missing, ...] = ()
    unmanaged: tuple[UnmanagedResource, ...] = ()
    ignored: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    # Where the organization was read: the API or sandbox, and the organization's name and id.
    where: Where | None = None

    @property
    def in_sync(self) -> bool:
        return not (self.drifted or self.missing or self.unmanaged)

    def summary(self) -> dict[str, int]:
        return {"drifted": len(self.drifted), "missing": len(self.missing), "unmanaged": len(self.unmanaged)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": REPORT_FORMAT_VERSION,
            "organization_id": self.org_id,
            "target": self.where.to_dict() if self.where is not None else None,
            "in_sync": self.in_sync,
            "summary": self.summary(),
            "drifted": [d.to_dict() for d in self.drifted],
            "missing": [m.to_dict() for m in self.missing],
            "unmanaged": [u.to_dict() for u in self.unmanaged],
            "ignored": list(self.ignored),
            "warnings": list(self.warnings),
        }


def drift_report(plan: Plan, rules: IgnoreRules | None = None) -> DriftReport:
    rules = rules or IgnoreRules()
    drifted: list[Drifted] = []
    missing: list[Missing] = []
    unmanaged: list[UnmanagedResource] = []
    ignored: list[str] = []
    for change in plan.changes:
        address = str(change.ref)
        if change.action is Action.CREATE:
            if rules.ignores(address):
                ignored.append(address)
            else:
                missing.append(Missing(change.kind, change.name))
        elif change.action is Action.DELETE and change.live_id is not None:
            if rules.ignores(address):
                ignored.append(f"{address}[{change.live_id}]")
            else:
                unmanaged.append(UnmanagedResource(change.kind, change.name, change.live_id, change.reason))
        elif _is_drift(change):
            kept, dropped = _split_ignored(address, change.attribute_changes, rules)
            ignored.extend(dropped)
            # A failed deployment differs from the manifest even when no attribute does.
            if kept or (change.cause == "replace_because_failed" and not rules.ignores(address)):
                drifted.append(Drifted(change.kind, change.name, change.live_id, change.action, change.reason, kept))
    for item in plan.unmanaged:
        address = str(Address(item.kind, item.name))
        if rules.ignores(address):
            ignored.append(f"{address}[{item.live_id}]")
        else:
            unmanaged.append(UnmanagedResource(item.kind, item.name, item.live_id))
    return DriftReport(
        org_id=plan.org_id,
        drifted=tuple(drifted),
        missing=tuple(missing),
        unmanaged=tuple(sorted(unmanaged, key=lambda u: (u.kind.value, u.name, u.live_id))),
        ignored=tuple(ignored),
        warnings=plan.warnings,
        where=plan.where,
    )


def _is_drift(change: ResourceChange) -> bool:
    if change.action in (Action.NOOP, Action.ROTATE, Action.CREATE, Action.DELETE):
        return False
    return change.before is not None and change.after is not None and change.cause in _DRIFT_CAUSES


def _split_ignored(
    address: str, changes: Iterable[AttributeChange], rules: IgnoreRules
) -> tuple[tuple[DriftedAttribute, ...], list[str]]:
    kept: list[DriftedAttribute] = []
    dropped: list[str] = []
    for change in changes:
        for leaf in _leaves(change.path, change.before, change.after):
            if rules.ignores(address, leaf.path):
                dropped.append(f"{address}.{leaf.path}")
            else:
                kept.append(replace(leaf, to_default=change.to_default))
    return tuple(kept), dropped


def _leaves(path: str, before: Any, after: Any) -> Iterator[DriftedAttribute]:
    """Split a mapping that is absent on one side into its leaves, so rules can name one of them."""
    if isinstance(after, Mapping) and before is None:
        for key in sorted(after):
            yield from _leaves(f"{path}.{key}", None, after[key])
    elif isinstance(before, Mapping) and after is None:
        for key in sorted(before):
            yield from _leaves(f"{path}.{key}", before[key], None)
    else:
        yield DriftedAttribute(path, before, after)


def unmatched_patterns(rules: IgnoreRules, plan: Plan) -> list[str]:
    """The patterns that match no resource and no attribute of the plan: most likely misspelt."""
    candidates: set[str] = set()
    for change in plan.changes:
        address = str(change.ref)
        candidates |= {address, change.address}
        for attributes in (change.before, change.after):
            candidates |= {f"{address}.{path}" for path in _attribute_paths(attributes or {})}
        candidates |= {f"{address}.{c.path}" for c in change.attribute_changes}
    for item in plan.unmanaged:
        address = str(Address(item.kind, item.name))
        candidates |= {address, f"{address}[{item.live_id}]"}
    return [
        p for p in rules.patterns if not any(fnmatch.fnmatchcase(c, s) for c in candidates for s in rules.spellings(p))
    ]


def _attribute_paths(attributes: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in attributes.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, Mapping):
            yield from _attribute_paths(value, f"{path}.")


def _prefixes(address: str, path: str) -> Iterator[str]:
    yield address
    current = address
    for part in path.split(".") if path else ():
        current = f"{current}.{part}"
        yield current


# -- renderings --------------------------------------------------------------------------------------
