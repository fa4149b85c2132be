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

from capella_deploy.kinds.api_key import LiveKey, key_age, key_attributes
from capella_deploy.kinds.base import Action, AttributeChange, Kind, ResourceChange, by_name
from capella_deploy.kinds.diff import attribute_changes
from capella_deploy.kinds.model import (
    FAILED_STATUSES,
    REPLACE_ATTRIBUTES,
    REPLACE_STATUSES,
    LiveModel,
    embedding_dependency,
    model_attributes,
    model_rank,
)
from capella_deploy.live import LiveState
from capella_deploy.manifest import ApiKeySpec, Manifest, ModelSpec
from capella_deploy.plan import Plan, Unmanaged

_GONE_STATUSES = frozenset({"destroying"})


def plan(
    manifest: Manifest,
    live: LiveState,
    *,
    now: datetime,
    manifest_digest: str = "",
    force_replace: frozenset[str] = frozenset(),
    held_tokens: frozenset[str] = frozenset(),
) -> Plan:
    """Compare the manifest with the live snapshot.

    ``force_replace`` holds addresses to renew anyway; ``held_tokens`` the live key ids whose token the outputs
    hold, which decides the key kept when several share a name.
    """
    unknown = sorted(
        force_replace - {f"model.{m.name}" for m in manifest.models} - {f"apiKey.{k.name}" for k in manifest.apiKeys}
    )
    changes: list[ResourceChange] = []
    errors: list[str] = [f"{address}: --replace names nothing the manifest declares" for address in unknown]
    warnings: list[str] = list(live.warnings)

    live_models = by_name(m for m in live.models if m.status not in _GONE_STATUSES)
    live_keys = by_name(live.keys)

    picked = {spec.name: _pick_model(live_models.pop(spec.name, [])) for spec in manifest.models}
    declared = frozenset(picked)
    # A model that gets a new id is known by it only after apply: who refers to it (a key's allowedModels, a
    # semantic cache's embedding model) changes with it. Whether a model is renewed never depends on such a
    # reference (a cache changes in place), so a first pass with every current id finds the renewed ones.
    current_ids = {name: current.id for name, (current, _) in picked.items() if current is not None}
    first = {
        spec.name: _plan_model(spec, manifest, declared, picked[spec.name][0], current_ids, force_replace)
        for spec in manifest.models
    }
    renewed_models = {name for name, change in first.items() if change.action in (Action.CREATE, Action.REPLACE)}
    model_ids = (
        {name: model_id for name, model_id in current_ids.items() if name not in renewed_models}
        if renewed_models
        else current_ids
    )
    for spec in manifest.models:
        current, extras = picked[spec.name]
        change = first[spec.name]
        if embedding_dependency(spec, manifest.defaults, declared) in renewed_models:
            change = _plan_model(spec, manifest, declared, current, model_ids, force_replace)
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

    names_by_id = {model_id: name for name, model_id in current_ids.items()}
    for key_spec in manifest.apiKeys:
        kept, others = _pick_key(live_keys.pop(key_spec.name, []), held_tokens)
        key_change = _plan_key(key_spec, manifest, kept, names_by_id, renewed_models, now)
        if f"apiKey.{key_spec.name}" in force_replace and key_change.action is Action.NOOP:
            key_change = replace(
                key_change, action=Action.ROTATE, reason="rotation requested", cause="replace_by_request"
            )
        changes.append(key_change)
        for other in others:
            if key_spec.preventDestroy:
                assert kept is not None
                age = "an older" if key_age(other) < key_age(kept) else "a newer"
                warnings.append(
                    f"apiKey.{key_spec.name}: {age} live key {other.id} has the same name; "
                    "left alone because preventDestroy is set"
                )
                continue
            assert kept is not None
            reason, cause = _why_key_goes(other, kept, held_tokens)
            changes.append(_delete(Kind.API_KEY, key_spec.name, other.id, other.attributes, reason, cause))

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
        live_fingerprint=live.fingerprint(held_tokens),
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


def _plan_model(
    spec: ModelSpec,
    manifest: Manifest,
    declared: frozenset[str],
    current: LiveModel | None,
    model_ids: Mapping[str, str],
    force_replace: frozenset[str],
) -> ResourceChange:
    after = model_attributes(spec, manifest.defaults, model_ids)
    dependency = embedding_dependency(spec, manifest.defaults, declared)
    depends_on = (f"model.{dependency}",) if dependency is not None else ()
    if current is None:
        return _create(Kind.MODEL, spec.name, after, spec.preventDestroy, depends_on)
    before = current.attributes
    diffs = tuple(attribute_changes(before, after, replace_only=REPLACE_ATTRIBUTES))
    base = _unchanged(Kind.MODEL, spec, current.id, before, after, diffs, depends_on)
    forcing = [d.path for d in diffs if d.forces_replace]
    if f"model.{spec.name}" in force_replace:
        return replace(base, action=Action.REPLACE, reason="replacement requested", cause="replace_by_request")
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


def _pick_key(keys: list[LiveKey], held_tokens: frozenset[str]) -> tuple[LiveKey | None, list[LiveKey]]:
    """Among live keys sharing a name, the one to keep and the rest.

    The newest key whose token the outputs hold, else the newest: a key nobody holds the token of is of no use
    to anyone, so it never wins over one that applications can use (a rotation or a create cut short between
    the API's answer and the outputs leaves such a key behind).
    """
    if len(keys) < 2:
        return (keys[0] if keys else None), []
    ordered = sorted(keys, key=key_age)
    held = [k for k in ordered if k.id in held_tokens]
    kept = held[-1] if held else ordered[-1]
    return kept, [k for k in ordered if k is not kept]


def _why_key_goes(other: LiveKey, kept: LiveKey, held_tokens: frozenset[str]) -> tuple[str, str]:
    if kept.id not in held_tokens:
        return "superseded by a newer key", "delete_because_duplicate"
    if key_age(other) > key_age(kept) and other.id not in held_tokens:
        return (
            f"a newer key whose token nobody holds (a rotation or create cut short); {kept.id}, whose token "
            "the outputs hold, is kept",
            "delete_because_orphan",
        )
    return f"superseded by {kept.id}, whose token the outputs hold", "delete_because_duplicate"


def _plan_key(
    spec: ApiKeySpec,
    manifest: Manifest,
    current: LiveKey | None,
    names_by_id: Mapping[str, str],
    renewed_models: set[str],
    now: datetime,
) -> ResourceChange:
    after = key_attributes(spec, manifest.defaults)
    if current is None:
        return _create(Kind.API_KEY, spec.name, after, spec.preventDestroy)
    before = current.attributes
    # A key's models are compared by id: the API may spell a name differently, and a model of the same name
    # with another id is another model. Shown by manifest name where the id is one of the manifest's models
    # (``names_by_id``: the live model each manifest name manages, renewed or not). An id of no live model,
    # named like a model this plan renews, is that model's former self: the renewal replaces the key anyway.
    if not current.allows_every_model:
        before["allowedModels"] = sorted(
            names_by_id.get(model_id)
            or (
                name
                if name in renewed_models and model_id not in names_by_id
                else f"{name or '(unnamed)'} ({model_id})"
            )
            for model_id, name in current.allowed_models
        )
    # The description is optional on both sides; an unset one in the manifest means "don't care".
    if "description" not in after:
        before = {k: v for k, v in before.items() if k != "description"}
    diffs = tuple(
        AttributeChange(d.path, d.before, d.after, forces_replace=True) for d in attribute_changes(before, after)
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


def _create(
    kind: Kind, name: str, after: dict[str, Any], prevent_destroy: bool, depends_on: tuple[str, ...] = ()
) -> ResourceChange:
    return ResourceChange(
        kind,
        name,
        Action.CREATE,
        after=after,
        reason="not in the organization",
        prevent_destroy=prevent_destroy,
        depends_on=depends_on,
    )


def _unchanged(
    kind: Kind,
    spec: ModelSpec | ApiKeySpec,
    live_id: str,
    before: dict[str, Any],
    after: dict[str, Any],
    diffs: tuple[AttributeChange, ...],
    depends_on: tuple[str, ...] = (),
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
        depends_on=depends_on,
    )


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
