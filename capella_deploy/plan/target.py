"""``--target``: a plan narrowed to some resources and what they need, as Terraform's -target does. Pure.

A resource depends on those it refers to by id (each kind's ``refers_to``: a key on the models its
``allowedModels`` names, a model on the embedding model its semantic cache names), so targeting one keeps the
changes of what it needs. Destroying works the other way round: a targeted model takes along the keys and
models that name it, which would otherwise point at a model that is gone.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from capella_deploy.errors import ConfigError
from capella_deploy.kinds import REGISTRY
from capella_deploy.kinds.base import Address, PlanContext
from capella_deploy.manifest import Manifest
from capella_deploy.plan import Plan

_NO_TIME = datetime.fromtimestamp(0, tz=timezone.utc)


def check_targets(addresses: Sequence[str], manifest: Manifest, plan: Plan) -> tuple[str, ...]:
    """The addresses, checked: ``KIND.NAME`` (model.NAME, apiKey.NAME...) of something declared or in the plan."""
    known = {str(Address(kind.kind, spec.name)) for kind in REGISTRY for spec in kind.specs(manifest)}
    known |= {str(change.ref) for change in plan.changes}
    checked: list[str] = []
    for address in addresses:
        try:
            Address.parse(address)
        except ValueError:
            raise ConfigError(
                f"--target {address!r}: an address is {Address.spellings()} (the manifest's names)"
            ) from None
        if address not in known:
            close = difflib.get_close_matches(address, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"--target {address}: the manifest declares no such resource{hint}")
        if address not in checked:
            checked.append(address)
    return tuple(checked)


def restrict(plan: Plan, manifest: Manifest, targets: Sequence[str], *, destroy: bool = False) -> Plan:
    """``plan`` with only the changes of ``targets`` and what they depend on, marked as partial."""
    if not targets:
        return plan
    wanted = _closure(manifest, targets, destroy=destroy)
    kept = tuple(c for c in plan.changes if str(c.ref) in wanted)
    dropped = {a for c in plan.changes if c not in kept for a in (c.address, str(c.ref))}
    warning = (
        f"Resource targeting is in effect: this plan covers only {', '.join(targets)} and what "
        f"{'it needs' if len(targets) == 1 else 'they need'}, so it may not show every change the manifest "
        "asks for. --target is for exceptional cases, such as recovering from a mistake, not for routine use."
    )
    return dataclasses.replace(
        plan,
        changes=kept,
        # Errors name the resource first ("model.x: ..."); those of resources left out no longer apply.
        errors=tuple(e for e in plan.errors if e.split(":", 1)[0] not in dropped),
        warnings=(*plan.warnings, warning),
        targets=tuple(targets),
    )


def _closure(manifest: Manifest, targets: Iterable[str], *, destroy: bool) -> set[str]:
    needs: dict[str, set[str]] = {}
    # What an entry refers to follows from the manifest alone: no live state, no time.
    names = {kind.kind: frozenset(spec.name for spec in kind.specs(manifest)) for kind in REGISTRY}
    ctx = PlanContext(manifest, _NO_TIME, declared=names)
    uses = [
        (str(Address(kind.kind, spec.name)), {str(a) for a in kind.refers_to(spec, ctx)})
        for kind in REGISTRY
        for spec in kind.specs(manifest)
    ]
    for address, used in uses:
        if destroy:
            for used_address in used:
                needs.setdefault(used_address, set()).add(address)
        else:
            needs.setdefault(address, set()).update(used)
    wanted: set[str] = set()
    pending = list(targets)
    while pending:
        address = pending.pop()
        if address not in wanted:
            wanted.add(address)
            pending.extend(needs.get(address, ()))
    return wanted
