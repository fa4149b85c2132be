"""plan(manifest, live) -> Plan: pure, deterministic, no I/O.

Identity is the resource name. A model whose replace-only attribute differs is replaced; one whose
in-place attributes differ is updated; a state difference is a pause or resume. API keys cannot be
edited, so any difference replaces them, and a key close to expiry is rotated (new key first).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from deepdiff import DeepDiff

from capella_deploy.kinds.desired import REPLACE_ATTRIBUTES, key_attributes, model_attributes
from capella_deploy.live import (
    FAILED_STATUSES,
    REPLACE_STATUSES,
    LiveKey,
    LiveModel,
    LiveState,
    by_name,
    key_age,
    model_rank,
)
from capella_deploy.manifest import ApiKeySpec, Manifest, ModelSpec
from capella_deploy.plan import Action, AttributeChange, Kind, Plan, ResourceChange, Unmanaged

_GONE_STATUSES = frozenset({"destroying"})


def plan(
    manifest: Manifest,
    live: LiveState,
    *,
    now: datetime,
    manifest_digest: str = "",
    force_replace: frozenset[str] = frozenset(),
) -> Plan:
    """Compare the manifest with the live snapshot; ``force_replace`` holds addresses to renew anyway."""
    unknown = sorted(
        force_replace - {f"model.{m.name}" for m in manifest.models} - {f"apiKey.{k.name}" for k in manifest.apiKeys}
    )
    changes: list[ResourceChange] = []
    errors: list[str] = [f"{address}: --replace names nothing the manifest declares" for address in unknown]
    warnings: list[str] = list(live.warnings)

    live_models = by_name(m for m in live.models if m.status not in _GONE_STATUSES)
    live_keys = by_name(live.keys)

    model_changes: dict[str, ResourceChange] = {}
    for spec in manifest.models:
        candidates = live_models.pop(spec.name, [])
        current, extras = _pick_model(candidates)
        change = _plan_model(spec, manifest, current)
        if f"model.{spec.name}" in force_replace and current is not None:
            change = replace(change, action=Action.REPLACE, reason="replacement requested", cause="replace_by_request")
        model_changes[spec.name] = change
        changes.append(change)
        for extra in extras:
            if spec.preventDestroy:
                warnings.append(
                    f"model.{spec.name}: another live model {extra.id} has the same name; "
                    "left alone because preventDestroy is set"
                )
                continue
            changes.append(
                _delete(
                    Kind.MODEL,
                    spec.name,
                    extra.id,
                    extra.attributes,
                    "duplicate of a managed name",
                    "delete_because_duplicate",
                )
            )

    # A key naming a model that gets a new id would keep pointing at the old one.
    renewed_models = {
        name for name, change in model_changes.items() if change.action in (Action.CREATE, Action.REPLACE)
    }
    for key_spec in manifest.apiKeys:
        keys_of_name = sorted(live_keys.pop(key_spec.name, []), key=key_age)
        current_key = keys_of_name[-1] if keys_of_name else None
        key_change = _plan_key(key_spec, manifest, current_key, renewed_models, now)
        if f"apiKey.{key_spec.name}" in force_replace and key_change.action is Action.NOOP:
            key_change = replace(
                key_change, action=Action.ROTATE, reason="rotation requested", cause="replace_by_request"
            )
        changes.append(key_change)
        for older in keys_of_name[:-1]:
            if key_spec.preventDestroy:
                warnings.append(
                    f"apiKey.{key_spec.name}: an older live key {older.id} has the same name; "
                    "left alone because preventDestroy is set"
                )
                continue
            changes.append(
                _delete(
                    Kind.API_KEY,
                    key_spec.name,
                    older.id,
                    older.attributes,
                    "superseded by a newer key",
                    "delete_because_duplicate",
                )
            )

    unmanaged: list[Unmanaged] = []
    prune = manifest.prune.match if manifest.prune else None
    for kind, leftovers in ((Kind.MODEL, live_models), (Kind.API_KEY, live_keys)):
        for name, resources in leftovers.items():
            for resource in resources:
                if prune is not None and fnmatch.fnmatchcase(name, prune):
                    changes.append(
                        _delete(
                            kind,
                            name,
                            resource.id,
                            resource.attributes,
                            f"pruned: matches {prune!r}",
                            "delete_because_pruned",
                        )
                    )
                else:
                    unmanaged.append(Unmanaged(kind, name, resource.id))

    for change in changes:
        # A rotation deletes the old key too, so a protected key is not rotated either.
        if change.prevent_destroy and (change.destroys or change.action is Action.ROTATE):
            errors.append(
                f"{change.address}: this plan would {change.action.value} it ({change.reason}), "
                "but it has preventDestroy: true; change the manifest or remove preventDestroy first"
            )

    return Plan(
        org_id=live.org_id,
        changes=tuple(sorted(changes, key=_order)),
        unmanaged=tuple(sorted(unmanaged, key=lambda u: (u.kind.value, u.name, u.live_id))),
        errors=tuple(errors),
        warnings=tuple(warnings),
        live_fingerprint=live.fingerprint(),
        manifest_digest=manifest_digest,
        environment=manifest.environment,
    )


def plan_destroy(manifest: Manifest, live: LiveState) -> Plan:
    """Delete every live resource the manifest names; preventDestroy turns a delete into an error."""
    protected = {f"model.{m.name}" for m in manifest.models if m.preventDestroy}
    protected |= {f"apiKey.{k.name}" for k in manifest.apiKeys if k.preventDestroy}
    wanted = {(Kind.MODEL, m.name) for m in manifest.models} | {(Kind.API_KEY, k.name) for k in manifest.apiKeys}
    changes: list[ResourceChange] = []
    for kind, resources in ((Kind.MODEL, live.models), (Kind.API_KEY, live.keys)):
        for resource in resources:
            if (kind, resource.name) not in wanted or getattr(resource, "status", "") in _GONE_STATUSES:
                continue
            change = _delete(
                kind,
                resource.name,
                resource.id,
                resource.attributes,
                "destroy requested",
                "delete_by_request",
            )
            changes.append(replace(change, prevent_destroy=f"{kind.value}.{resource.name}" in protected))
    errors = [
        f"{c.kind.value}.{c.name}: has preventDestroy: true and cannot be destroyed; remove the flag first"
        for c in changes
        if c.prevent_destroy
    ]
    return Plan(
        org_id=live.org_id,
        changes=tuple(sorted(changes, key=_order)),
        errors=tuple(errors),
        warnings=live.warnings,
        live_fingerprint=live.fingerprint(),
        environment=manifest.environment,
    )


def _plan_model(spec: ModelSpec, manifest: Manifest, current: LiveModel | None) -> ResourceChange:
    after = model_attributes(spec, manifest.defaults)
    if current is None:
        return _create(Kind.MODEL, spec.name, after, spec.preventDestroy)
    before = current.attributes
    diffs = tuple(_attribute_changes(before, after))
    base = _unchanged(Kind.MODEL, spec, current.id, before, after, diffs)
    forcing = [d.path for d in diffs if d.forces_replace]
    if current.status in REPLACE_STATUSES:
        return replace(
            base, action=Action.REPLACE, reason=f"live status is {current.status}", cause="replace_because_failed"
        )
    if forcing:
        return replace(
            base,
            action=Action.REPLACE,
            reason=f"{', '.join(forcing)} cannot change in place",
            cause="replace_because_cannot_update",
        )
    in_place = sorted({d.path.split(".")[0] for d in diffs if d.path != "state"})
    state_change = next((d for d in diffs if d.path == "state"), None)
    if in_place:
        reason = "in-place change of " + ", ".join(in_place)
        if state_change is not None:
            reason += f", then {'pause' if spec.state == 'paused' else 'resume'}"
        return replace(base, action=Action.UPDATE, reason=reason)
    if state_change is not None:
        action = Action.PAUSE if spec.state == "paused" else Action.RESUME
        return replace(base, action=action, reason=f"state is {before['state']}")
    if current.status in FAILED_STATUSES:
        return replace(base, reason=f"live status is {current.status}; nothing the manifest can change")
    return base


def _plan_key(
    spec: ApiKeySpec,
    manifest: Manifest,
    current: LiveKey | None,
    renewed_models: set[str],
    now: datetime,
) -> ResourceChange:
    after = key_attributes(spec, manifest.defaults)
    if current is None:
        return _create(Kind.API_KEY, spec.name, after, spec.preventDestroy)
    before = current.attributes
    # The description is optional on both sides; an unset one in the manifest means "don't care".
    if "description" not in after:
        before = {k: v for k, v in before.items() if k != "description"}
    diffs = tuple(
        AttributeChange(d.path, d.before, d.after, forces_replace=True) for d in _attribute_changes(before, after)
    )
    base = _unchanged(Kind.API_KEY, spec, current.id, before, after, diffs)
    if diffs:
        attrs = ", ".join(sorted({d.path.split(".")[0] for d in diffs}))
        return replace(
            base,
            action=Action.REPLACE,
            reason=f"{attrs} cannot change in place (API keys are immutable)",
            cause="replace_because_cannot_update",
        )
    stale = sorted(renewed_models.intersection(spec.allowedModels))
    if stale:
        return replace(
            base,
            action=Action.REPLACE,
            reason=f"allowedModels: {', '.join(stale)} will get a new id",
            cause="replace_because_dependency_renewed",
        )
    expires = current.expires_at
    if expires is not None and expires - now <= timedelta(days=spec.rotateBeforeDays):
        when = "expired" if expires <= now else f"expires {expires.date().isoformat()}"
        return replace(
            base,
            action=Action.ROTATE,
            reason=f"{when}, within rotateBeforeDays={spec.rotateBeforeDays}",
            cause="rotate_because_expiring",
        )
    return base


def _create(kind: Kind, name: str, after: dict[str, Any], prevent_destroy: bool) -> ResourceChange:
    return ResourceChange(
        kind, name, Action.CREATE, after=after, reason="not in the organization", prevent_destroy=prevent_destroy
    )


def _unchanged(
    kind: Kind,
    spec: ModelSpec | ApiKeySpec,
    live_id: str,
    before: dict[str, Any],
    after: dict[str, Any],
    diffs: tuple[AttributeChange, ...],
) -> ResourceChange:
    """The no-op change of an existing resource, which the callers turn into the action its diffs need."""
    return ResourceChange(
        kind,
        spec.name,
        Action.NOOP,
        live_id=live_id,
        before=before,
        after=after,
        attribute_changes=diffs,
        prevent_destroy=spec.preventDestroy,
    )


def _attribute_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[AttributeChange]:
    """Differences in the attributes the manifest sets; a declared mapping is compared as a subset."""
    changes: list[AttributeChange] = []
    for name in sorted(after):
        wanted, have = after[name], before.get(name)
        if isinstance(wanted, dict) and isinstance(have, Mapping):
            changes.extend(_mapping_changes(name, have, wanted))
        elif _differs(have, wanted):
            changes.append(AttributeChange(name, have, wanted, forces_replace=name in REPLACE_ATTRIBUTES))
    return changes


def _mapping_changes(prefix: str, have: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[AttributeChange]:
    changes: list[AttributeChange] = []
    for key in sorted(wanted):
        path = f"{prefix}.{key}"
        if isinstance(wanted[key], dict) and isinstance(have.get(key), Mapping):
            changes.extend(_mapping_changes(path, have[key], wanted[key]))
        elif _differs(have.get(key), wanted[key]):
            changes.append(
                AttributeChange(path, have.get(key), wanted[key], forces_replace=prefix in REPLACE_ATTRIBUTES)
            )
    return changes


def _differs(have: Any, wanted: Any) -> bool:
    # Equal values of one type are the common case and cheap to see; deepdiff is for the rest, so that
    # 0.85 vs 0.8500000001 from a JSON round trip, or 48 vs 48.0, is not a change.
    if type(have) is type(wanted) and have == wanted:
        return False
    return bool(DeepDiff(have, wanted, significant_digits=9, ignore_numeric_type_changes=True))


def _pick_model(candidates: list[LiveModel]) -> tuple[LiveModel | None, list[LiveModel]]:
    """Among live models sharing a name, manage the healthiest one and report the rest."""
    if not candidates:
        return None, []
    ranked = sorted(candidates, key=model_rank)
    return ranked[0], ranked[1:]


def _delete(kind: Kind, name: str, live_id: str, before: dict[str, Any], reason: str, cause: str) -> ResourceChange:
    return ResourceChange(kind, name, Action.DELETE, live_id=live_id, before=before, reason=reason, cause=cause)


_KIND_ORDER = {Kind.MODEL: 0, Kind.API_KEY: 1}


def _order(change: ResourceChange) -> tuple[int, str, str]:
    return (_KIND_ORDER[change.kind], change.name, change.live_id or "")
