"""The Model Service API of each deployed model, at its connection string ``<base>/ai/<modelId>``.

Authentication follows the documentation: a Model API key that exists, has not expired, belongs to the
model's region, lists the model (or ``*``) in allowedModels, and whose allowedCIDRs hold the caller's address.
Failures use the statuses an OpenAI client expects: 401 for an unknown or expired key, 403 for a key that may
not reach this model, 404 for an unknown model, 503 while the model is not healthy.

The target model is the one at the path, unless ``X-cb-model-ref``, ``deployment_id`` or ``deployment_name``
picks another deployment of the organization; a request's ``model`` field must name the target (its catalog
name, optionally with a NIM ``-query``/``-passage`` suffix, or its id or deployment name).

ASSUMED: the service information document is served at ``GET <connection string>/v1/info``; the reference
shows its shape but not its path.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from capella_deploy.sandbox import catalog, completions, lifecycle
from capella_deploy.sandbox.cbheaders import CbHeaders, parse_cb_headers
from capella_deploy.sandbox.errors import ServiceError
from capella_deploy.sandbox.http import bearer_token, client_host, read_json, sandbox_of
from capella_deploy.sandbox.state import ApiKeyRecord, ModelRecord, World
from capella_deploy.sandbox.views import model_dimensions, rfc3339

if TYPE_CHECKING:
    from capella_deploy.sandbox import Sandbox

PREFIX = "/ai/{modelId}/v1"
BUILD_TIME = "2026-01-01T00:00:00+0000"
DEFAULT_MAX_REQUESTS_PER_MINUTE = 1000


async def service_json(request: Request) -> dict[str, Any]:
    try:
        body = await read_json(request)
    except ValueError as exc:
        raise ServiceError(400, str(exc), "invalid_json") from exc
    if not isinstance(body, dict):
        raise ServiceError(400, "the request body must be a JSON object", "invalid_json")
    return body


def authenticate(request: Request, world: World, now: float) -> ApiKeyRecord:
    token = bearer_token(request)
    if token is None:
        raise ServiceError(
            401, "Missing API key: send a Model API key as 'Authorization: Bearer <token>'.", "missing_api_key"
        )
    digest = hashlib.sha256(token.encode()).hexdigest()
    key = next((k for k in world.api_keys.values() if k.token_sha256 == digest), None)
    if key is None:
        raise ServiceError(
            401,
            "Invalid API key. The Model Service accepts Model API keys only, not Management API keys.",
            "invalid_api_key",
        )
    if now >= key.expires_at:
        raise ServiceError(401, f"The API key expired at {rfc3339(key.expires_at)}.", "expired_api_key")
    return key


def check_client_address(key: ApiKeyRecord, host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    networks = (ipaddress.ip_network(c, strict=False) for c in key.allowed_cidrs)
    if address is None or not any(address in net for net in networks):
        raise ServiceError(
            403, f"Requests from {host or 'this address'} are not allowed for this API key.", "ip_not_allowed"
        )


def authorize(key: ApiKeyRecord, model: ModelRecord, host: str) -> None:
    if key.region != model.region:
        raise ServiceError(
            403,
            f"The API key belongs to region {key.region}; this model runs in {model.region}.",
            "region_mismatch",
        )
    if key.allowed_models != ["*"] and model.id not in key.allowed_models:
        raise ServiceError(403, "The API key is not allowed to use this model.", "model_not_allowed")
    check_client_address(key, host)


def answers_to(model: ModelRecord, name: str) -> bool:
    catalog_name = model.catalog_model_name
    return name in (catalog_name, f"{catalog_name}-query", f"{catalog_name}-passage", model.id, model.name)


def model_not_found(name: str) -> ServiceError:
    return ServiceError(404, f"The model {name!r} does not exist or is not served here.", "model_not_found")


def require_ready(model: ModelRecord, now: float) -> None:
    status = lifecycle.status_at(model, now)
    if status != lifecycle.HEALTHY:
        raise ServiceError(503, f"The model is {status}; it serves requests only when healthy.", "model_not_ready")


@dataclass
class Call:
    """An authorized request to one model."""

    sandbox: Sandbox
    model: ModelRecord
    cb: CbHeaders
    now: float
    request_id: str

    @property
    def salt(self) -> str:
        return str(self.sandbox.seed)

    @property
    def created(self) -> int:
        return int(self.now)

    def headers(self) -> dict[str, str]:
        return self.cb.debug_headers(self.model.id, self.request_id)

    def keywords(self) -> KeywordFilter:
        configured = self.model.options.get("keywordFiltering") or []
        return KeywordFilter(
            [*configured, *self.cb.content_filters],
            check_request=not self.cb.suppress_request_filtering,
            mask_response=not self.cb.suppress_response_filtering,
        )


def open_call(
    request: Request, body: dict[str, Any] | None = None, *, kinds: tuple[str, ...] = (), ready: bool = True
) -> Call:
    """Check headers, key, target model, permissions and readiness, in the order a client would expect."""
    sandbox = sandbox_of(request)
    cb = parse_cb_headers(request.headers)
    world, now = sandbox.world(), sandbox.now()
    key = authenticate(request, world, now)
    model = _target(world, request.path_params["modelId"], cb, body or {}, now)
    authorize(key, model, client_host(request))
    kind = catalog.CATALOG[model.catalog_model_name].kind
    if kinds and kind not in kinds:
        raise ServiceError(
            400,
            f"{model.catalog_model_name} is a {kind} model; this endpoint needs a {' or '.join(kinds)} model.",
            "unsupported_model_type",
        )
    if ready:
        require_ready(model, now)
    return Call(sandbox, model, cb, now, str(uuid.uuid4()))


def _target(world: World, path_model_id: str, cb: CbHeaders, body: dict[str, Any], now: float) -> ModelRecord:
    def live(model: ModelRecord | None) -> ModelRecord | None:
        return model if model is not None and lifecycle.visible(model, now) else None

    model = live(world.models.get(path_model_id))
    if model is None:
        raise ServiceError(404, "No model is deployed at this endpoint.", "model_not_found")
    ref = cb.model_ref or body.get("deployment_id")
    if ref:
        model = live(world.models.get(str(ref)))
        if model is None:
            raise model_not_found(str(ref))
    elif body.get("deployment_name"):
        name = str(body["deployment_name"])
        model = next((m for m in world.models.values() if m.name == name and live(m)), None)
        if model is None:
            raise model_not_found(name)
    if "model" in body:
        requested = completions.requested_model(body)
        if not answers_to(model, requested):
            raise model_not_found(requested)
    return model


@dataclass
class KeywordFilter:
    keywords: list[str]
    check_request: bool
    mask_response: bool

    def check(self, text: str) -> None:
        if not self.check_request:
            return
        lowered = text.lower()
        hit = next((k for k in self.keywords if k.lower() in lowered), None)
        if hit is not None:
            raise ServiceError(400, f"The request contains the filtered keyword {hit!r}.", "content_filter")

    def mask(self, picked: list[completions.Choice]) -> list[completions.Choice]:
        if not self.mask_response or not self.keywords:
            return picked
        lowered = [k.lower() for k in self.keywords]

        def clean(word: str) -> str:
            return "*" * len(word) if any(k in word.lower() for k in lowered) else word

        return [completions.Choice(c.index, [clean(w) for w in c.words], c.finish_reason) for c in picked]


def record_usage(sandbox: Sandbox, model_id: str, tokens: int) -> None:
    with sandbox.mutate() as world:
        model = world.models.get(model_id)
        if model is not None:
            model.usage.add(sandbox.now(), tokens)


def sse(events: Iterator[str], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers})


def chat_reply(
    gen: completions.Generation,
    *,
    model_name: str,
    salt: str,
    created: int,
    keywords: KeywordFilter,
    headers: dict[str, str],
) -> tuple[Response, int]:
    """The chat completion (JSON or SSE) and the tokens it used; shared with the gateway."""
    keywords.check(gen.prompts[0])
    picked = keywords.mask(completions.choices(salt, model_name, gen))
    rid = completions.response_id("chatcmpl-", salt, model_name, gen, created)
    tokens = gen.prompt_tokens + sum(len(c.words) for c in picked)
    if gen.stream:
        return sse(completions.chat_stream(rid, model_name, created, gen, picked), headers), tokens
    body = completions.chat_response(rid, model_name, created, gen, picked)
    return JSONResponse(body, headers=headers), tokens


async def chat_completions(request: Request) -> Response:
    body = await service_json(request)
    call = open_call(request, body, kinds=(catalog.TEXT_GENERATION,))
    response, tokens = chat_reply(
        completions.parse_chat(body),
        model_name=call.model.catalog_model_name,
        salt=call.salt,
        created=call.created,
        keywords=call.keywords(),
        headers=call.headers(),
    )
    record_usage(call.sandbox, call.model.id, tokens)
    return response


async def text_completions(request: Request) -> Response:
    body = await service_json(request)
    call = open_call(request, body, kinds=(catalog.TEXT_GENERATION,))
    gen = completions.parse_completion(body)
    keywords = call.keywords()
    for prompt in gen.prompts:
        keywords.check(prompt)
    name = call.model.catalog_model_name
    picked = keywords.mask(completions.choices(call.salt, name, gen))
    rid = completions.response_id("cmpl-", call.salt, name, gen, call.created)
    record_usage(call.sandbox, call.model.id, gen.prompt_tokens + sum(len(c.words) for c in picked))
    if gen.stream:
        return sse(completions.completion_stream(rid, name, call.created, gen, picked), call.headers())
    response = completions.completion_response(rid, name, call.created, gen, picked, bool(body.get("echo")))
    return JSONResponse(response, headers=call.headers())


def embed(salt: str, model: ModelRecord, body: dict[str, Any], created: int) -> dict[str, Any]:
    """The embeddings response for ``body``; shared with batches."""
    texts = completions.embedding_inputs(body)
    dimensions = model_dimensions(model) or 0
    wanted = body.get("dimensions", dimensions)
    if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= dimensions:
        raise completions.bad(f"dimensions must be an integer from 1 to {dimensions} for this model", "dimensions")
    name = model.catalog_model_name
    vectors = [completions.embedding_vector(salt, name, text, wanted) for text in texts]
    rid = completions.response_id("embd-", salt, name, texts, created)
    base64_format = body.get("encoding_format") == "base64"
    return completions.embeddings_response(rid, name, created, vectors, texts, base64_format)


async def embeddings(request: Request) -> Response:
    body = await service_json(request)
    call = open_call(request, body, kinds=(catalog.EMBEDDING_GENERATION,))
    response = embed(call.salt, call.model, body, call.created)
    record_usage(call.sandbox, call.model.id, response["usage"]["total_tokens"])
    return JSONResponse(response, headers=call.headers())


async def moderations(request: Request) -> Response:
    body = await service_json(request)
    # The reference makes ``model`` optional here: without it, the model at the path moderates.
    call = open_call(request, body, kinds=(catalog.MODERATION, catalog.PROMPT_INJECTION))
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise completions.bad("input must be a non-empty string", "input")
    record_usage(call.sandbox, call.model.id, completions.count_tokens(text))
    kind = catalog.CATALOG[call.model.catalog_model_name].kind
    return JSONResponse(completions.moderation_response(text, kind), headers=call.headers())


def model_object(model: ModelRecord, now: float) -> dict[str, Any]:
    return {
        "id": model.catalog_model_name,
        "deployment_id": model.id,
        "deployment_name": model.name,
        "model_id": model.id,
        "model_name": model.catalog_model_name,
        "server_kind": "nim",
        "status": lifecycle.status_at(model, now),
        "object": "model",
        "created": int(model.audit.created_at),
        "owned_by": "model-service",
    }


async def list_models(request: Request) -> Response:
    call = open_call(request, ready=False)
    return JSONResponse({"object": "list", "data": [model_object(call.model, call.now)]}, headers=call.headers())


async def get_model(request: Request) -> Response:
    call = open_call(request, ready=False)
    name = request.path_params["model"]
    if not answers_to(call.model, name):
        raise model_not_found(name)
    return JSONResponse(model_object(call.model, call.now), headers=call.headers())


async def service_info(request: Request) -> Response:
    call = open_call(request, ready=False)
    limit = call.sandbox.faults.rate_limit_per_minute or DEFAULT_MAX_REQUESTS_PER_MINUTE
    return JSONResponse(
        {
            "build_time": BUILD_TIME,
            "commit_hash": "sandbox",
            "defaults": {"routing_strategy": "round-robin", "cache": "none", "max_retries": 3},
            "max_requests_per_minute": limit,
            "models": [model_object(call.model, call.now)],
            "version": "1.0.0-sandbox",
        },
        headers=call.headers(),
    )


def routes() -> list[BaseRoute]:
    return [
        Route(PREFIX + "/chat/completions", chat_completions, methods=["POST"]),
        Route(PREFIX + "/completions", text_completions, methods=["POST"]),
        Route(PREFIX + "/embeddings", embeddings, methods=["POST"]),
        Route(PREFIX + "/moderations", moderations, methods=["POST"]),
        Route(PREFIX + "/models", list_models, methods=["GET"]),
        Route(PREFIX + "/models/{model:path}", get_model, methods=["GET"]),
        Route(PREFIX + "/info", service_info, methods=["GET"]),
    ]
