"""An OpenAI-compatible AI gateway in the CloudBase style: ``POST /v1/ai/<provider>/chat/completions``.

It answers with a Bearer Model API key of the sandbox (existing, unexpired, called from an allowed address).
Provider ``capella`` routes to the organization's deployed text-generation models (by catalog name, id or
deployment name; the key's region and allowed models apply); the other providers serve a fixed set of hosted
model names, so a check such as ``.../v1/ai/hunyuan`` with model ``hy3-preview`` has something to talk to.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from capella_deploy.sandbox import catalog, completions, lifecycle
from capella_deploy.sandbox.errors import ServiceError
from capella_deploy.sandbox.http import client_host, sandbox_of
from capella_deploy.sandbox.modelservice import (
    KeywordFilter,
    answers_to,
    authenticate,
    authorize,
    chat_reply,
    check_client_address,
    model_not_found,
    record_usage,
    require_ready,
    service_json,
)

CAPELLA_PROVIDER = "capella"
HOSTED_MODELS = {
    "cloudbase": ("hy3-preview", "deepseek-v3", "deepseek-r1"),
    "hunyuan": ("hy3-preview", "hunyuan-turbos-latest", "hunyuan-lite"),
    "deepseek": ("deepseek-chat", "deepseek-reasoner"),
}


async def gateway_chat(request: Request) -> Response:
    sandbox = sandbox_of(request)
    body = await service_json(request)
    world, now, host = sandbox.world(), sandbox.now(), client_host(request)
    key = authenticate(request, world, now)
    check_client_address(key, host)
    provider = request.path_params["provider"]
    requested = completions.requested_model(body)
    model_id: str | None = None
    if provider == CAPELLA_PROVIDER:
        matching = [m for m in world.models.values() if lifecycle.visible(m, now) and answers_to(m, requested)]
        if not matching:
            raise model_not_found(requested)
        # Among deployments of the same catalog model, the key's own region wins.
        model = next((m for m in matching if m.region == key.region), matching[0])
        authorize(key, model, host)
        if catalog.CATALOG[model.catalog_model_name].kind != catalog.TEXT_GENERATION:
            raise ServiceError(400, f"{requested} is not a text-generation model.", "unsupported_model_type")
        require_ready(model, now)
        model_id, model_name = model.id, model.catalog_model_name
    elif provider in HOSTED_MODELS:
        if requested not in HOSTED_MODELS[provider]:
            raise model_not_found(requested)
        model_name = requested
    else:
        known = ", ".join([CAPELLA_PROVIDER, *HOSTED_MODELS])
        raise ServiceError(404, f"Unknown provider {provider!r}; known providers: {known}.", "provider_not_found")
    response, tokens = chat_reply(
        completions.parse_chat(body),
        model_name=model_name,
        salt=str(sandbox.seed),
        created=int(now),
        keywords=KeywordFilter([], check_request=False, mask_response=False),
        headers={},
    )
    if model_id is not None:
        record_usage(sandbox, model_id, tokens)
    return response


def routes() -> list[Route]:
    return [Route("/v1/ai/{provider}/chat/completions", gateway_chat, methods=["POST"])]
