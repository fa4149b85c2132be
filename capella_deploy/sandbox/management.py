"""The Management API v4: organizations, AI models and Model API keys.

In the spec world two models, or two keys, may share a name, as the official spec has it (it lists no 409 for
creating either). The conflicts world refuses a name already taken by a model that is not being destroyed, or
by a key, with 409. Statuses of refusals come from ``operations``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from capella_deploy.sandbox import bodies, catalog, lifecycle, operations, views
from capella_deploy.sandbox.errors import DUPLICATE, STATE, ManagementError, Refusal, invalid
from capella_deploy.sandbox.faults import DEPLOY_FAIL, DEPLOY_HANG
from capella_deploy.sandbox.http import base_url, management_json, management_sandbox, org_sandbox
from capella_deploy.sandbox.state import ApiKeyRecord, Audit, ModelRecord, World

KEY_SORTS = {
    "name": lambda k: k.name,
    "createdAt": lambda k: k.audit.created_at,
    "expiry": lambda k: k.expires_at,
}
_FILTER = re.compile(r"^region:eq:(?P<region>[^:]+)$")
# What If-Match may carry: the audit version, bare, quoted, weak, or as the ETag spells it ("Version: 3").
_IF_MATCH = re.compile(r'^(?:W/)?"?(?:Version:\s*)?(?P<version>\d+)"?$')


def not_found(what: str, ident: str) -> ManagementError:
    return ManagementError(404, "Not Found", f"{what} {ident} does not exist in this organization.")


def state_refusal(message: str) -> Refusal:
    return Refusal(STATE, message)


def duplicate_refusal(message: str) -> Refusal:
    return Refusal(DUPLICATE, message)


async def list_organizations(request: Request) -> Response:
    sandbox = management_sandbox(request)
    return JSONResponse({"data": [views.org_view(sandbox.world())]})


async def get_organization(request: Request) -> Response:
    sandbox = org_sandbox(request)
    return JSONResponse(views.org_view(sandbox.world()))


async def list_models(request: Request) -> Response:
    sandbox = org_sandbox(request)
    params = request.query_params
    status_filter = params.get("modelStatus") or None
    kind_filter = params.get("modelKind") or None
    if status_filter is not None and status_filter not in lifecycle.STATUSES:
        raise invalid(f"modelStatus must be one of {', '.join(lifecycle.STATUSES)}")
    if kind_filter is not None and kind_filter not in catalog.MODEL_KINDS:
        raise invalid(f"modelKind must be one of {', '.join(catalog.MODEL_KINDS)}")
    world, now, base = sandbox.world(), sandbox.now(), base_url(request)
    records = [m for m in sorted(world.models.values(), key=lambda m: m.audit.created_at) if lifecycle.visible(m, now)]
    if status_filter is None and kind_filter is None:
        # Render only the page asked for: rendering every model for every page made listing N models cost N²/perPage.
        page_records, cursor = views.paginate(
            records, base + request.url.path, params, max_per_page=sandbox.faults.max_per_page
        )
        return JSONResponse(
            {"cursor": cursor, "data": [{"model": views.model_view(m, now, base)} for m in page_records]}
        )
    shown = [
        v
        for v in (views.model_view(m, now, base) for m in records)
        if (status_filter is None or v["status"] == status_filter)
        and (kind_filter is None or v["config"]["type"] == kind_filter)
    ]
    page, cursor = views.paginate(shown, base + request.url.path, params, max_per_page=sandbox.faults.max_per_page)
    return JSONResponse({"cursor": cursor, "data": [{"model": v} for v in page]})


async def create_model(request: Request) -> Response:
    sandbox = org_sandbox(request)
    spec = bodies.parse_model_create(await management_json(request))
    with sandbox.mutate() as world:
        now = sandbox.now()
        lifecycle.settle_world(world, now)
        if sandbox.rules == operations.CONFLICTS:
            _check_unique_model_name(world, spec.name)
        model = ModelRecord(
            id=str(uuid.uuid4()),
            name=spec.name,
            catalog_model_name=spec.catalog_model.name,
            cloud_provider=spec.cloud_provider,
            region=spec.region,
            cpu=spec.cpu,
            gpu_memory=spec.gpu_memory,
            options=spec.options,
            status=lifecycle.DEPLOYING,
            audit=Audit.new(world.actor_id, now),
        )
        outcome = sandbox.injector.deploy_outcome()
        if outcome == DEPLOY_HANG:
            lifecycle.begin(model, lifecycle.DEPLOYING, lifecycle.HEALTHY, now, None)
        else:
            target = lifecycle.DEPLOY_FAILED if outcome == DEPLOY_FAIL else lifecycle.HEALTHY
            lifecycle.begin(model, lifecycle.DEPLOYING, target, now, sandbox.timings.deploy_seconds)
        world.models[model.id] = model
    return JSONResponse({"id": model.id}, status_code=202)


async def get_model(request: Request) -> Response:
    sandbox = org_sandbox(request)
    now = sandbox.now()
    model = _visible_model(sandbox.world(), request.path_params["modelId"], now)
    return JSONResponse({"model": views.model_view(model, now, base_url(request))})


async def update_model(request: Request) -> Response:
    sandbox = org_sandbox(request)
    changes = bodies.parse_model_update(await management_json(request, optional=True))
    expected = if_match_version(request)
    with sandbox.mutate() as world:
        now = sandbox.now()
        model = _settled_model(world, request.path_params["modelId"], now)
        check_version(expected, model.audit, "model")
        if model.status not in lifecycle.EDITABLE_STATUSES:
            raise state_refusal(
                f"The model is {model.status}; it can be edited only when healthy or paused. "
                "Wait until its status settles, then send the change again."
            )
        new_name = changes.get("name", model.name)
        if new_name != model.name and sandbox.rules == operations.CONFLICTS:
            _check_unique_model_name(world, new_name)
        lifecycle.edit(model, changes, now, sandbox.faults.edit_delay_seconds)
        model.audit.touch(world.actor_id, now)
    return Response(status_code=204)


async def delete_model(request: Request) -> Response:
    sandbox = org_sandbox(request)
    with sandbox.mutate() as world:
        now = sandbox.now()
        model = _settled_model(world, request.path_params["modelId"], now)
        if model.status == lifecycle.DESTROYING:
            raise state_refusal("The model is already being destroyed.")
        lifecycle.begin(model, lifecycle.DESTROYING, lifecycle.GONE, now, sandbox.timings.destroy_seconds)
        model.audit.touch(world.actor_id, now)
    return Response(status_code=202)


async def pause_model(request: Request) -> Response:
    return _switch(request, lifecycle.HEALTHY, lifecycle.PAUSING, lifecycle.PAUSED, "turned off")


async def resume_model(request: Request) -> Response:
    return _switch(request, lifecycle.PAUSED, lifecycle.RESUMING, lifecycle.HEALTHY, "turned on")


def _switch(request: Request, required: str, passing: str, target: str, verb: str) -> Response:
    sandbox = org_sandbox(request)
    seconds = {
        lifecycle.PAUSING: sandbox.timings.pause_seconds,
        lifecycle.RESUMING: sandbox.timings.resume_seconds,
    }[passing]
    with sandbox.mutate() as world:
        now = sandbox.now()
        model = _settled_model(world, request.path_params["modelId"], now)
        if model.status != required:
            raise state_refusal(f"The model is {model.status}; only a {required} model can be {verb}.")
        lifecycle.begin(model, passing, target, now, seconds)
        model.audit.touch(world.actor_id, now)
    return Response(status_code=202)


async def get_connection_string(request: Request) -> Response:
    sandbox = org_sandbox(request)
    model = _visible_model(sandbox.world(), request.path_params["modelId"], sandbox.now())
    return JSONResponse({"connectionString": views.connection_string(base_url(request), model.id)})


async def list_keys(request: Request) -> Response:
    sandbox = org_sandbox(request)
    params = request.query_params
    sort_by = params.get("sortBy", "createdAt")
    direction = params.get("sortDirection", "asc")
    if sort_by not in KEY_SORTS:
        raise invalid(f"sortBy must be one of {', '.join(KEY_SORTS)}")
    if direction not in ("asc", "desc"):
        raise invalid("sortDirection must be asc or desc")
    region: str | None = None
    if "filterBy" in params:
        match = _FILTER.match(params["filterBy"])
        if match is None:
            raise invalid("filterBy must look like region:eq:<region>")
        region = match["region"]
    world = sandbox.world()
    keys = [k for k in world.api_keys.values() if region is None or k.region == region]
    keys.sort(key=KEY_SORTS[sort_by], reverse=direction == "desc")
    page, cursor = views.paginate(
        keys, base_url(request) + request.url.path, params, max_per_page=sandbox.faults.max_per_page
    )
    return JSONResponse({"cursor": cursor, "data": [views.key_view(k, world) for k in page]})


async def create_key(request: Request) -> Response:
    sandbox = org_sandbox(request)
    spec = bodies.parse_key_create(await management_json(request))
    token = secrets.token_urlsafe(32)
    with sandbox.mutate() as world:
        now = sandbox.now()
        lifecycle.settle_world(world, now)
        if sandbox.rules == operations.CONFLICTS and any(k.name == spec.name for k in world.api_keys.values()):
            raise duplicate_refusal(f"A Model API key named {spec.name!r} already exists in this organization.")
        _check_allowed_models(world, spec)
        key = ApiKeyRecord(
            id=str(uuid.uuid4()),
            name=spec.name,
            description=spec.description,
            expiry_days=spec.expiry_days,
            allowed_cidrs=spec.allowed_cidrs,
            region=spec.region,
            allowed_models=spec.allowed_models,
            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
            audit=Audit.new(world.actor_id, now),
        )
        world.api_keys[key.id] = key
    return JSONResponse({"id": key.id, "token": token}, status_code=201)


async def get_key(request: Request) -> Response:
    sandbox = org_sandbox(request)
    world = sandbox.world()
    key = world.api_keys.get(request.path_params["apiKeyId"])
    if key is None:
        raise not_found("Model API key", request.path_params["apiKeyId"])
    return JSONResponse(views.key_view(key, world))


async def delete_key(request: Request) -> Response:
    sandbox = org_sandbox(request)
    with sandbox.mutate() as world:
        if world.api_keys.pop(request.path_params["apiKeyId"], None) is None:
            raise not_found("Model API key", request.path_params["apiKeyId"])
    return Response(status_code=204)


def _visible_model(world: World, model_id: str, now: float) -> ModelRecord:
    model = world.models.get(model_id)
    if model is None or not lifecycle.visible(model, now):
        raise not_found("Model", model_id)
    return model


def _settled_model(world: World, model_id: str, now: float) -> ModelRecord:
    lifecycle.settle_world(world, now)
    return _visible_model(world, model_id, now)


def _check_unique_model_name(world: World, name: str) -> None:
    if any(m.name == name and m.status != lifecycle.DESTROYING for m in world.models.values()):
        raise duplicate_refusal(f"A model named {name!r} already exists in this organization.")


def _check_allowed_models(world: World, spec: bodies.KeySpec) -> None:
    if spec.allowed_models == ["*"]:
        return
    for model_id in spec.allowed_models:
        model = world.models.get(model_id)
        if model is None:
            raise invalid(f"allowedModels: model {model_id} does not exist in this organization")
        if model.region != spec.region:
            raise invalid(
                f"allowedModels: model {model_id} runs in {model.region}, not in the key's region {spec.region}"
            )


def if_match_version(request: Request) -> int | None:
    """The version an If-Match header names, if it was sent."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    match = _IF_MATCH.match(raw.strip())
    if match is None:
        raise invalid(f"If-Match must carry the resource's audit version number; got {raw!r}")
    return int(match["version"])


def check_version(expected: int | None, audit: Audit, what: str) -> None:
    """412 when If-Match named a version other than the current one."""
    if expected is not None and expected != audit.version:
        raise ManagementError(
            412,
            "Precondition Failed",
            f"If-Match names version {expected} but the {what} is at version {audit.version}; read it again and retry.",
        )


def routes() -> list[Route]:
    # The apiKeys routes come before /{modelId}: the patterns overlap.
    return [
        operations.LIST_ORGANIZATIONS.route(list_organizations),
        operations.GET_ORGANIZATION.route(get_organization),
        operations.LIST_MODELS.route(list_models),
        operations.CREATE_MODEL.route(create_model),
        operations.LIST_KEYS.route(list_keys),
        operations.CREATE_KEY.route(create_key),
        operations.GET_KEY.route(get_key),
        operations.DELETE_KEY.route(delete_key),
        operations.GET_MODEL.route(get_model),
        operations.UPDATE_MODEL.route(update_model),
        operations.DELETE_MODEL.route(delete_model),
        operations.PAUSE_MODEL.route(pause_model),
        operations.RESUME_MODEL.route(resume_model),
        operations.GET_CONNECTION_STRING.route(get_connection_string),
    ]
