"""What the manifest asks for, in the API's terms.

Pure functions from manifest specs (with defaults applied) to the attributes the planner compares,
the request bodies the applier sends, and the Model Service header profile an application should use.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

from capella_deploy.manifest import ApiKeySpec, Cache, Defaults, ModelSpec, Routing

# Attributes the Management API cannot change in place: a difference means delete + create.
REPLACE_ATTRIBUTES = (
    "catalogModel",
    "provider",
    "region",
    "cpu",
    "gpuMemory",
    "quantization",
    "optimization",
    "dimensions",
)
# Attributes a PUT can change (name, caching, batching, keyword filtering, guardrails, jailbreak).
UPDATE_ATTRIBUTES = ("enableBatching", "keywordFiltering", "caching")
# Sent on create and update but never returned by a read, so drift in them cannot be seen.
WRITE_ONLY_ATTRIBUTES = ("guardrails", "jailbreak")


def default_cpu(gpu_memory: int) -> int:
    """The vCPU count of the instance that carries ``gpu_memory`` GB when the manifest names none."""
    return 32 if gpu_memory >= 192 else 4


def effective_cache(spec: ModelSpec, defaults: Defaults) -> Cache | None:
    return _overlay(defaults.cache, spec.cache)


def effective_routing(spec: ModelSpec, defaults: Defaults) -> Routing | None:
    return _overlay(defaults.routing, spec.routing)


_Block = TypeVar("_Block", bound=BaseModel)


def _overlay(default: _Block | None, own: _Block | None) -> _Block | None:
    """``own`` over ``default`` field by field: a model that sets only ``cache.expirySeconds`` keeps the default
    cache type and threshold, as "defaults apply to whatever a model does not say otherwise" promises."""
    if default is None or own is None:
        return own if own is not None else default
    update: dict[str, Any] = {}
    for field in own.model_fields_set:
        mine, theirs = getattr(own, field), getattr(default, field)
        both_blocks = isinstance(mine, BaseModel) and isinstance(theirs, BaseModel)
        update[field] = _overlay(theirs, mine) if both_blocks else mine
    return default.model_copy(update=update)


def caching_body(cache: Cache) -> dict[str, Any]:
    """The create/PUT body's ``caching`` object for a manifest cache block."""
    if cache.type == "none":
        return {"enableStandard": False, "enableConversational": False}
    body: dict[str, Any] = {"enableStandard": True, "defaultCache": cache.type}
    if cache.conversational is not None:
        body["enableConversational"] = cache.conversational
    if cache.expirySeconds is not None:
        body["expiryTTL"] = cache.expirySeconds
    if cache.type == "semantic":
        semantic: dict[str, Any] = {}
        if cache.threshold is not None:
            semantic["scoreThreshold"] = cache.threshold
        if cache.semantic is not None:
            for field in ("embeddingModel", "dimensions", "distanceMetric"):
                value = getattr(cache.semantic, field)
                if value is not None:
                    semantic[field] = value
        if semantic:
            body["semantic"] = semantic
    return body


def model_attributes(spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    """The comparable attributes a model declares; attributes left unset are left to the server."""
    cache = effective_cache(spec, defaults)
    attrs: dict[str, Any] = {
        "catalogModel": spec.catalogModel,
        "provider": spec.provider or defaults.provider,
        "region": spec.region or defaults.region,
        "cpu": spec.cpu,
        "gpuMemory": spec.gpuMemory,
        "quantization": spec.quantization,
        "optimization": spec.optimization,
        "dimensions": spec.dimensions,
        "enableBatching": spec.enableBatching,
        "keywordFiltering": list(spec.keywordFiltering) if spec.keywordFiltering is not None else None,
        "caching": caching_body(cache) if cache is not None else None,
        "state": spec.state,
    }
    return {key: value for key, value in attrs.items() if value is not None}


def write_only_attributes(spec: ModelSpec) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if spec.guardrails is not None:
        attrs["guardrails"] = list(spec.guardrails)
    if spec.jailbreak is not None:
        attrs["jailbreak"] = {"scoreThreshold": spec.jailbreak.scoreThreshold}
    return attrs


def model_create_body(spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    attrs = model_attributes(spec, defaults)
    compute = {"cpu": attrs.get("cpu", default_cpu(attrs["gpuMemory"])), "gpuMemory": attrs["gpuMemory"]}
    body: dict[str, Any] = {
        "name": spec.name,
        "catalogModelName": attrs["catalogModel"],
        "cloudConfig": {"provider": attrs["provider"], "region": attrs["region"], "compute": compute},
    }
    for field in (
        "quantization",
        "optimization",
        "dimensions",
        "enableBatching",
        "keywordFiltering",
        "caching",
    ):
        if field in attrs:
            body[field] = attrs[field]
    body.update(write_only_attributes(spec))
    return body


def model_update_body(spec: ModelSpec, defaults: Defaults) -> dict[str, Any]:
    """A PUT body carrying every in-place attribute the manifest sets (PUT replaces what it names)."""
    attrs = model_attributes(spec, defaults)
    body: dict[str, Any] = {"name": spec.name}
    for field in UPDATE_ATTRIBUTES:
        if field in attrs:
            body[field] = attrs[field]
    body.update(write_only_attributes(spec))
    return body


def key_attributes(spec: ApiKeySpec, defaults: Defaults) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "description": spec.description,
        "region": spec.region or defaults.region,
        "expiryDays": spec.expiryDays,
        "allowedCIDRs": sorted(spec.allowedCIDRs),
        "allowedModels": sorted(spec.allowedModels),
    }
    return {key: value for key, value in attrs.items() if value is not None}


def key_create_body(spec: ApiKeySpec, defaults: Defaults, model_ids: dict[str, str]) -> dict[str, Any]:
    """The create body; ``model_ids`` maps manifest model names to the live ids known at apply time."""
    attrs = key_attributes(spec, defaults)
    allowed = ["*"] if "*" in spec.allowedModels else [model_ids[name] for name in spec.allowedModels]
    body: dict[str, Any] = {
        "name": spec.name,
        "expiry": attrs["expiryDays"],
        "allowedCIDRs": list(spec.allowedCIDRs),
        "region": attrs["region"],
        "allowedModels": allowed,
    }
    if spec.description is not None:
        body["description"] = spec.description
    return body


def header_profile(spec: ModelSpec, defaults: Defaults) -> dict[str, str]:
    """The X-cb-* request headers an application should send to get the declared routing and cache."""
    headers: dict[str, str] = {}
    routing = effective_routing(spec, defaults)
    if routing is not None:
        if routing.strategy is not None:
            headers["X-cb-routing-strategy"] = routing.strategy
        if routing.maxRetries is not None:
            headers["X-cb-max-retries"] = str(routing.maxRetries)
        if routing.requestTimeoutSeconds is not None:
            headers["X-cb-request-duration"] = str(routing.requestTimeoutSeconds)
    cache = effective_cache(spec, defaults)
    if cache is not None:
        headers["X-cb-cache"] = cache.type
        if cache.type == "semantic" and cache.threshold is not None:
            headers["X-cb-cache-threshold"] = _number(cache.threshold)
        if cache.type != "none" and cache.expirySeconds is not None:
            headers["X-cb-cache-expiry-duration"] = str(cache.expirySeconds)
    return headers


def _number(value: float) -> str:
    # Plain decimals: "g" would write 1e-05, which a header parser expecting a number may refuse.
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
