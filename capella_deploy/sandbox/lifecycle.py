"""Model lifecycles in sandbox time, computed on every read from the stored transition (no background tasks).

Capella documents the status names but not which calls each status allows, nor how long anything takes; the
sandbox ASSUMES the following, and the durations come from ``Timings``::

    create   ->  deploying --deploy_seconds-->  healthy
                 (faults: deployFailed at the deadline, or deploying forever)
    pause    healthy only            ->  pausing    --pause_seconds-->   paused
    resume   paused only             ->  resuming   --resume_seconds-->  healthy
    delete   any status but destroying ->  destroying --destroy_seconds--> gone (404)
    edit     healthy or paused (PUT)

A call the model's status does not allow is refused; ``operations`` decides with which status (the spec lists
409 for pause, resume and delete, and only 422 for an edit).

A model's ``actions`` list uses the documented examples' vocabulary: ``pause``/``resume``, ``destroy``, ``edit``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from capella_deploy.sandbox.state import ModelRecord, World

DEPLOYING = "deploying"
DEPLOY_FAILED = "deployFailed"
HEALTHY = "healthy"
PAUSING = "pausing"
PAUSED = "paused"
RESUMING = "resuming"
DESTROYING = "destroying"
GONE = "gone"  # never shown: a destroyed model answers 404

# Every status the Management API names; the sandbox produces only some of them, but accepts all in filters.
STATUSES = (
    "pending",
    DEPLOYING,
    DEPLOY_FAILED,
    HEALTHY,
    "unhealthy",
    PAUSING,
    PAUSED,
    RESUMING,
    "pauseFailed",
    "resumeFailed",
    DESTROYING,
    "destroyFailed",
)

EDITABLE_STATUSES = (HEALTHY, PAUSED)

_ACTIONS = {
    HEALTHY: ["pause", "destroy", "edit"],
    PAUSED: ["resume", "destroy", "edit"],
    DESTROYING: [],
}


@dataclass
class Timings:
    """How long each transition takes, in sandbox seconds."""

    deploy_seconds: float = 300
    pause_seconds: float = 60
    resume_seconds: float = 120
    destroy_seconds: float = 60


def status_at(model: ModelRecord, now: float) -> str:
    if model.target_status is not None and model.transition_ends_at is not None and now >= model.transition_ends_at:
        return model.target_status
    return model.status


def actions_for(status: str) -> list[str]:
    return list(_ACTIONS.get(status, ["destroy"]))


def settle(model: ModelRecord, now: float) -> None:
    """Fold a finished transition and a landed edit into the stored model, before a write decides from it."""
    status = status_at(model, now)
    if status != model.status:
        model.status = status
        model.target_status = None
        model.transition_ends_at = None
    if edit_landed(model, now):
        _apply(model, model.pending_edit)
        model.pending_edit = {}
        model.edit_lands_at = None


def edit(model: ModelRecord, changes: dict[str, Any], now: float, delay: float) -> None:
    """Accept an edit; it shows at once, or ``delay`` seconds from now together with any edit still pending."""
    if delay <= 0 and model.edit_lands_at is None:
        _apply(model, changes)
        return
    model.pending_edit.update(changes)
    model.edit_lands_at = now + delay
    settle(model, now)


def edit_landed(model: ModelRecord, now: float) -> bool:
    return model.edit_lands_at is not None and now >= model.edit_lands_at


def with_landed_edits(world: World, now: float) -> World:
    """``world`` as reads see it at ``now``: edits whose time has come are shown, the stored world untouched."""
    landed = [model_id for model_id, model in world.models.items() if edit_landed(model, now)]
    if not landed:
        return world
    models = dict(world.models)
    for model_id in landed:
        models[model_id] = copy.deepcopy(models[model_id])
        settle(models[model_id], now)
    return replace(world, models=models)


def _apply(model: ModelRecord, changes: dict[str, Any]) -> None:
    options = dict(changes)
    model.name = options.pop("name", model.name)
    model.options.update(options)


def begin(model: ModelRecord, status: str, target: str | None, now: float, seconds: float | None) -> None:
    """Start a transition; ``seconds=None`` means it never ends."""
    model.status = status
    model.target_status = target
    model.transition_ends_at = None if seconds is None else now + seconds


def settle_world(world: World, now: float) -> None:
    """Settle every model and forget those whose destruction has finished."""
    for model_id, model in list(world.models.items()):
        settle(model, now)
        if model.status == GONE:
            del world.models[model_id]


def visible(model: ModelRecord, now: float) -> bool:
    return status_at(model, now) != GONE
