"""plan(manifest, live) -> Plan: pure, deterministic, no I/O.

Identity is the resource name. Each kind's own rule (kinds/) decides what one declared resource needs; this
module keeps what holds for every kind: which live resource of a name is managed and what becomes of the others,
what renewing a resource means for those that refer to it by id, pruning, preventDestroy, and the order.
"""

from __future__ import annotations

import fnmatch
import functools
import gc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from capella_deploy.kinds import REGISTRY
from capella_deploy.kinds.base import (
    Address,
    Declared,
    Kind,
    LiveResource,
    PlanContext,
    ResourceChange,
    ResourceKind,
    by_name,
    deleted,
)
from capella_deploy.live import LiveState
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import recorded_credential_versions
from capella_deploy.plan import Plan, Unmanaged

R = TypeVar("R")
P = ParamSpec("P")


def _inputs_left_out_of_collections(func: Callable[P, Plan]) -> Callable[P, Plan]:
    """Planning allocates in proportion to the organization, and each full collection it sets off would scan the
    manifest and the snapshot again, though they outlive the plan: at 10,000 resources those scans made planning
    grow faster than linearly. What exists when planning starts is left out of collections until it ends."""

    @functools.wraps(func)
    def planned(*args: P.args, **kwargs: P.kwargs) -> Plan:
        gc.freeze()
        try:
            return func(*args, **kwargs)
        finally:
            gc.unfreeze()

    return planned


@_inputs_left_out_of_collections
def plan(
    manifest: Manifest,
    live: LiveState,
    *,
    now: datetime,
    manifest_digest: str = "",
    force_replace: frozenset[str] = frozenset(),
    held_tokens: frozenset[str] = frozenset(),
    outputs: Mapping[str, Any] | None = None,
) -> Plan:
    """Compare the manifest with the live snapshot, of which only the manifest's scope is looked at.

    ``force_replace`` holds addresses to renew anyway; ``held_tokens`` the live key ids whose token the outputs
    hold, which decides the key kept when several share a name; ``outputs`` the outputs document as its file holds
    it (None: no file), which the plan's changes to outputs are computed against, which tells a resource
    this manifest made from one it only shares a name with, and whose credential versions a roll is seen against.
    """
    live = live.within(manifest.scope)
    # Credentials cannot be read back: the version the outputs record for a live id is what a roll is seen against.
    versions = recorded_credential_versions(outputs)
    declared = {Address(kind.kind, spec.name): (kind, spec) for kind in REGISTRY for spec in kind.specs(manifest)}
    requested, errors = _requested(force_replace, declared)
    warnings: list[str] = list(live.warnings)
    changes: list[ResourceChange] = []

    leftovers = {kind.kind: by_name(r for r in live.of(kind.kind) if kind.in_play(r)) for kind in REGISTRY}
    names = {kind.kind: frozenset(spec.name for spec in kind.specs(manifest)) for kind in REGISTRY}
    first_look = PlanContext(
        manifest,
        now,
        force_replace=requested,
        held_tokens=held_tokens,
        credential_versions=versions,
        outputs=outputs,
        declared=names,
    )
    current: dict[Address, LiveResource | None] = {}
    for address, (kind, spec) in declared.items():
        candidates, problem, note = _candidates(address, spec.renamedFrom, leftovers[address.kind])
        errors.extend([problem] if problem else [])
        warnings.extend([note] if note else [])
        kept, extras = kind.pick(candidates, first_look)
        current[address] = kept
        for extra in extras:
            if spec.preventDestroy:
                warnings.append(
                    f"{address}: {extra.described} has the same name; left alone because preventDestroy is set"
                )
            else:
                changes.append(deleted(address.kind, extra.resource, extra.reason, extra.cause))

    # A resource that gets a new id is known by it only after apply: whoever refers to it by id (a key's
    # allowedModels, a semantic cache's embedding model) changes with it. A first look with every current id
    # finds the renewed ones; those referring to them are planned again, until nothing new is renewed.
    ids = {address: resource.id for address, resource in current.items() if resource is not None}
    managed = {live_id: address for address, live_id in ids.items()}
    ctx = replace(first_look, ids=ids, managed=managed)
    planned = {address: kind.plan(spec, current[address], ctx) for address, (kind, spec) in declared.items()}
    refers = {address: set(kind.refers_to(spec, ctx)) for address, (kind, spec) in declared.items()}
    followed: frozenset[Address] = frozenset()
    renewed = frozenset(a for a, change in planned.items() if change.action.renews)
    while renewed != followed:
        ctx = replace(ctx, ids={a: i for a, i in ids.items() if a not in renewed}, renewed=renewed)
        fresh = renewed - followed
        for address in [a for a, targets in refers.items() if not targets.isdisjoint(fresh)]:
            kind, spec = declared[address]
            planned[address] = kind.plan(spec, current[address], ctx)
        followed = renewed
        renewed = frozenset(a for a, change in planned.items() if change.action.renews)
    changes.extend(planned.values())
    if manifest.scope is None and outputs is not None:
        warnings.extend(_not_made_here(planned.values(), _recorded_ids(outputs)))

    unmanaged: list[Unmanaged] = []
    prune = manifest.prune.match if manifest.prune else None
    for kind_name, by_its_name in leftovers.items():
        for name, resources in by_its_name.items():
            for resource in resources:
                if prune is not None and fnmatch.fnmatchcase(name, prune):
                    changes.append(deleted(kind_name, resource, f"pruned: matches {prune!r}", "delete_because_pruned"))
                else:
                    unmanaged.append(Unmanaged(kind_name, name, resource.id))

    for change in changes:
        # A rotation deletes the old resource too, so a protected one is not rotated either.
        if change.prevent_destroy and "delete" in change.action.steps:
            errors.append(
                f"{change.address}: this plan would {change.action.value} it ({change.reason}), "
                "but it has preventDestroy: true; change the manifest or remove preventDestroy first"
            )

    digests = live.digests(held_tokens, versions)
    return Plan(
        org_id=live.org_id,
        changes=tuple(sorted(changes, key=_order)),
        unmanaged=tuple(sorted(unmanaged, key=lambda u: (u.kind.value, u.name, u.live_id))),
        errors=tuple(errors),
        warnings=tuple(warnings),
        live_fingerprint=live.fingerprint(digests),
        live_digests=digests,
        manifest_digest=manifest_digest,
        environment=manifest.environment,
    )


@_inputs_left_out_of_collections
def plan_destroy(manifest: Manifest, live: LiveState) -> Plan:
    """Delete every live resource the manifest names; preventDestroy turns a delete into an error."""
    live = live.within(manifest.scope)
    changes: list[ResourceChange] = []
    for kind in REGISTRY:
        # A resource not yet renamed is the manifest's too, by its former name.
        protected = {spec.name: spec.preventDestroy for spec in kind.specs(manifest)}
        protected |= {spec.renamedFrom: spec.preventDestroy for spec in kind.specs(manifest) if spec.renamedFrom}
        for resource in live.of(kind.kind):
            if resource.name not in protected or not kind.in_play(resource):
                continue
            change = deleted(kind.kind, resource, "destroy requested", "delete_by_request")
            changes.append(replace(change, prevent_destroy=protected[resource.name]))
    errors = [
        f"{c.ref}: has preventDestroy: true and cannot be destroyed; remove the flag first"
        for c in changes
        if c.prevent_destroy
    ]
    digests = live.digests()
    return Plan(
        org_id=live.org_id,
        changes=tuple(sorted(changes, key=_order)),
        errors=tuple(errors),
        warnings=live.warnings,
        live_fingerprint=live.fingerprint(digests),
        live_digests=digests,
        environment=manifest.environment,
    )


def _candidates(
    address: Address, former: str | None, leftovers: dict[str, list[R]]
) -> tuple[list[R], str | None, str | None]:
    """The live resources an entry manages (taken out of ``leftovers``): those of its name, else those of the name
    it was renamed from. Also an error when both names exist, and a note when neither does."""
    own = leftovers.pop(address.name, [])
    if former is None:
        return own, None, None
    if own and leftovers.get(former):
        return (
            own,
            f"{address}: renamedFrom: {former}, but live resources of both names exist ({address.kind.value}s "
            f"{former} and {address.name}), so the rename cannot be planned: delete the one not wanted, or remove "
            "renamedFrom to manage the one of the new name as it is",
            None,
        )
    if own:
        return own, None, None
    old = leftovers.pop(former, [])
    if not old:
        note = (
            f"{address}: renamedFrom: {former} names nothing live here, so it is created; renamedFrom can go once "
            "every organization this manifest deploys to has the new name"
        )
        return [], None, note
    return old, None, None


def _not_made_here(changes: Iterable[ResourceChange], recorded_ids: frozenset[str]) -> list[str]:
    """A warning for each live resource a change would delete that the outputs do not record: a manifest
    without a scope may share a name with another team's resource, and would replace it."""
    return [
        f"{change.ref} exists live and was not made from this outputs file: is it another team's? "
        "set scope or renamedFrom"
        for change in changes
        if change.live_id is not None and "delete" in change.action.steps and change.live_id not in recorded_ids
    ]


def _recorded_ids(outputs: Mapping[str, Any]) -> frozenset[str]:
    """The live id of every resource the outputs document records, of whatever kind."""
    sections = (section for section in outputs.values() if isinstance(section, Mapping))
    entries = (entry for section in sections for entry in section.values() if isinstance(entry, Mapping))
    return frozenset(entry["id"] for entry in entries if isinstance(entry.get("id"), str))


def _requested(
    force_replace: frozenset[str], declared: dict[Address, tuple[ResourceKind[Any, Any], Declared]]
) -> tuple[frozenset[Address], list[str]]:
    """The addresses --replace names, and an error for each that names nothing the manifest declares."""
    found: set[Address] = set()
    errors: list[str] = []
    for text in sorted(force_replace):
        try:
            address = Address.parse(text)
        except ValueError as exc:
            errors.append(f"--replace {exc}")
            continue
        if address in declared:
            found.add(address)
        else:
            errors.append(f"{address}: --replace names nothing the manifest declares")
    return frozenset(found), errors


_RANK = {kind.kind: index for index, kind in enumerate(REGISTRY)}


def _rank(kind: Kind) -> int:
    return _RANK[kind]


def _order(change: ResourceChange) -> tuple[int, str, str]:
    return (_rank(change.kind), change.name, change.live_id or "")
