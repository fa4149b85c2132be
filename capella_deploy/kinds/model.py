"""Models: a deployed catalog model, identified by its name.

Everything about the kind lives here: its statuses, reading it from the API, the attributes the planner
compares and the bodies the applier sends, the Model Service header profile, and its export entry.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from capella_deploy.errors import AmbiguousCreate, CapellaError, Conflict, NotFound, WaitFailed, WaitTimedOut
from capella_deploy.kinds.base import (
    CREATE_ATTEMPTS,
    REFUSED,
    Action,
    Address,
    ApplyError,
    ApplyRun,
    ApplyStep,
    AttributeChange,
    ExportNotes,
    ExportScope,
    Extra,
    Kind,
    LiveStateError,
    OutputChange,
    PlanContext,
    ResourceChange,
    Settled,
    SettleRun,
    StatusFacts,
    Watch,
    by_name,
    create_pause,
    created,
    first_problem,
    unchanged,
)
from capella_deploy.kinds.diff import attribute_changes
from capella_deploy.kinds.parsing import as_int, as_list, as_mapping, as_str, parse_time
from capella_deploy.kinds.shared import oldest
from capella_deploy.manifest import UUID_PATTERN, Cache, Defaults, Manifest, ModelSpec, Routing, effective_region
from capella_deploy.outputs import Outputs

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient

log = logging.getLogger("capella_deploy.kinds.model")


# Statuses from the Management API reference; anything else is treated as "in progress".
KNOWN_STATUSES = frozenset(
    {
        "pending",
        "deploying",
        "deployFailed",
        "healthy",
        "unhealthy",
        "pausing",
        "paused",
        "resuming",
        "pauseFailed",
        "resumeFailed",
        "destroying",
        "destroyFailed",
    }
)


FAILED_STATUSES = frozenset({"deployFailed", "pauseFailed", "resumeFailed", "destroyFailed", "unhealthy"})


# The documented examples say destroy/edit, the spec says delete; keep one vocabulary inside the tool.
_ACTION_ALIASES = {"destroy": "delete", "edit": "edit", "delete": "delete"}


_ACTION_WORDS = frozenset({"deploy", "delete", "pause", "resume", "edit"})


# Statuses in which a call is taken when the model does not list its actions. Which states refuse which call
# is not documented; these are the settled ones, where nothing is under way.
_SETTLED_FOR = {
    "edit": frozenset({"healthy", "paused"}),
    "pause": frozenset({"healthy"}),
    "resume": frozenset({"paused"}),
}


# Statuses a model passes through on its own, on the way to another.
TRANSITIONAL_STATUSES = frozenset({"pending", "deploying", "pausing", "resuming", "destroying"})


@dataclass(frozen=True)
class LiveModel:
    id: str
    name: str
    status: str
    actions: frozenset[str]
    provider: str | None
    region: str | None
    cpu: int | None
    gpu_memory: int | None
    catalog_model: str | None
    model_type: str | None
    vendor: str | None
    dimensions: int | None
    quantization: str | None
    optimization: str | None
    caching: Mapping[str, Any] | None
    enable_batching: bool | None
    keyword_filtering: tuple[str, ...] | None
    connection_string: str | None
    version: int | None
    created_at: datetime | None = None

    @property
    def attributes(self) -> dict[str, Any]:
        """The attributes the planner compares, named and shaped as in the manifest (``cache``, not ``caching``)."""
        return {
            "catalogModel": self.catalog_model,
            "provider": self.provider,
            "region": self.region,
            "cpu": self.cpu,
            "gpuMemory": self.gpu_memory,
            "quantization": self.quantization,
            "optimization": self.optimization,
            "dimensions": self.dimensions,
            "enableBatching": self.enable_batching,
            "keywordFiltering": list(self.keyword_filtering) if self.keyword_filtering is not None else None,
            "cache": cache_view(self.caching) if self.caching is not None else None,
            "state": state_of(self.status),
        }


# Failed deployments are not repaired in place: the planner replaces them.
REPLACE_STATUSES = frozenset({"deployFailed", "destroyFailed"})


def model_rank(model: LiveModel) -> tuple[bool, bool, float, str]:
    """Sort key: among live models of one name, the one to manage sorts first: the healthiest, then the oldest,
    which is the one runs racing to create a name agree to keep (``ModelSteps._one_of_its_name``)."""
    created = model.created_at.timestamp() if model.created_at is not None else float("inf")
    return (model.status in REPLACE_STATUSES, model.status in FAILED_STATUSES, created, model.id)


def allows(model: LiveModel, action: str) -> bool:
    """Whether the model takes ``action`` (edit, pause, resume) now: by its ``actions`` when it lists them in
    a vocabulary we know, else by its status. Only the documented examples list ``edit``, so a list without
    it says nothing about edits, and the status decides."""
    listed = model.actions & _ACTION_WORDS
    if action in listed:
        return True
    if listed and action != "edit":
        return False
    return model.status in _SETTLED_FOR[action]


def state_of(status: str) -> str:
    """Map an API status onto the manifest's running/paused vocabulary."""
    if status in {"paused", "pausing", "pauseFailed"}:
        return "paused"
    return "running"


def parse_model(raw: Mapping[str, Any]) -> LiveModel:
    item = raw.get("model", raw)
    if not isinstance(item, Mapping):
        raise LiveStateError("a model entry is not an object")
    model_id, name = item.get("id"), item.get("name")
    if not isinstance(model_id, str) or not isinstance(name, str):
        raise LiveStateError("a model entry has no id or name")
    cloud = as_mapping(item.get("cloudConfig"))
    compute = as_mapping(cloud.get("compute"))
    config = as_mapping(item.get("config"))
    actions = as_list(item.get("actions"))
    keyword = config.get("keywordFiltering")
    return LiveModel(
        id=model_id,
        name=name,
        status=str(item.get("status") or "pending"),
        actions=frozenset(_ACTION_ALIASES.get(str(a), str(a)) for a in actions if isinstance(a, str)),
        provider=as_str(cloud.get("provider")),
        region=as_str(cloud.get("region")),
        cpu=as_int(compute.get("cpu")),
        gpu_memory=as_int(compute.get("gpuMemory")),
        catalog_model=as_str(config.get("catalogModelName")),
        model_type=as_str(config.get("type")),
        vendor=as_str(config.get("provider")),
        dimensions=as_int(config.get("dimensions")),
        quantization=as_str(config.get("quantization")),
        optimization=as_str(config.get("optimization")),
        caching=config.get("caching") if isinstance(config.get("caching"), Mapping) else None,
        enable_batching=config.get("enableBatching") if isinstance(config.get("enableBatching"), bool) else None,
        keyword_filtering=tuple(str(k) for k in keyword) if isinstance(keyword, list) else None,
        connection_string=as_str(item.get("connectionString")) or None,
        version=as_int(as_mapping(item.get("audit")).get("version")),
        created_at=parse_time(as_mapping(item.get("audit")).get("createdAt")),
    )


async def connection_string(client: CapellaClient, org_id: str, model: LiveModel) -> str | None:
    """The model's connection string: from the model object, else from its own endpoint (the field is
    optional on the model; the endpoint always has it). None when neither answers."""
    if model.connection_string:
        return model.connection_string
    try:
        return await client.get_connection_string(org_id, model.id)
    except CapellaError as exc:
        log.warning("could not read the connection string of model %s: %s", model.id, exc)
        return None


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


# Attributes a PUT can change (name, caching, batching, keyword filtering, guardrails, jailbreak), by their
# manifest names. One the manifest leaves unset is reset to the API's default, unless it is unmanagedAttributes.
UPDATE_ATTRIBUTES = ("enableBatching", "keywordFiltering", "cache")


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


def known_after_apply(name: str) -> str:
    """What a plan shows for the id of a manifest model that does not exist yet."""
    return f"(known after apply: id of model.{name})"


def embedding_dependency(spec: ModelSpec, defaults: Defaults, names: Collection[str]) -> str | None:
    """The model of ``names`` (the manifest's) whose id ``spec``'s semantic cache needs, if it names one."""
    cache = effective_cache(spec, defaults)
    if cache is None or cache.type != "semantic" or cache.semantic is None:
        return None
    name = cache.semantic.embeddingModel
    return name if name is not None and name in names else None


def caching_body(cache: Cache, model_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The create/PUT body's ``caching`` object for a manifest cache block.

    ``model_ids`` maps manifest model names to live ids: the API takes the embedding model's id, and the
    manifest may name a model of its own instead. Such a model without a known id shows as known after apply.
    """
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
            reference = semantic.get("embeddingModel")
            if model_ids is not None and reference is not None and not _looks_like_id(reference):
                semantic["embeddingModel"] = model_ids.get(reference, known_after_apply(reference))
        if semantic:
            body["semantic"] = semantic
    return body


def _looks_like_id(value: str) -> bool:
    return UUID_PATTERN.fullmatch(value) is not None


def cache_view(caching: Mapping[str, Any]) -> dict[str, Any]:
    """A caching object in the manifest's words: the fields of a ``cache`` block that say what it says.

    Plans, drift and ignore rules speak of ``cache.expirySeconds``, not ``caching.expiryTTL``. Both sides of a
    comparison go through here (the manifest's through ``caching_body``), so they differ exactly when the
    request body differs from what the API holds. ``type`` is None where the object does not say it.
    """
    standard = caching.get("enableStandard")
    semantic = as_mapping(caching.get("semantic"))
    view: dict[str, Any] = {
        "type": "none" if standard is False else caching.get("defaultCache") if standard is True else None,
        "conversational": caching.get("enableConversational"),
        "expirySeconds": caching.get("expiryTTL"),
        "threshold": semantic.get("scoreThreshold"),
        "semantic": {k: semantic[k] for k in ("embeddingModel", "dimensions", "distanceMetric") if k in semantic}
        or None,
    }
    return {key: value for key, value in view.items() if value is not None}


def _in_place_declared(spec: ModelSpec, defaults: Defaults, model_ids: Mapping[str, str] | None) -> dict[str, Any]:
    """The in-place attributes the manifest sets, as request body fields (``caching``)."""
    cache = effective_cache(spec, defaults)
    fields = {
        "enableBatching": spec.enableBatching,
        "keywordFiltering": list(spec.keywordFiltering) if spec.keywordFiltering is not None else None,
        "caching": caching_body(cache, model_ids) if cache is not None else None,
    }
    return {key: value for key, value in fields.items() if value is not None}


# The request body field of each in-place attribute.
_BODY_FIELD = {"enableBatching": "enableBatching", "keywordFiltering": "keywordFiltering", "cache": "caching"}
# What a model has when its create body leaves an in-place attribute out (a read then shows no such field, as the
# documented examples' models do), and what a PUT sends to bring it back: batching off, no filter, no caching.
# Each a fresh value, as plans and bodies hold them in their own mutable dicts.
_NO_CACHING = caching_body(Cache(type="none"))
_NO_CACHE = cache_view(_NO_CACHING)
_BODY_DEFAULTS: Mapping[str, Callable[[], Any]] = {
    "enableBatching": lambda: False,
    "keywordFiltering": list,
    "caching": lambda: dict(_NO_CACHING),
}
API_DEFAULTS: Mapping[str, Callable[[], Any]] = {
    "enableBatching": lambda: False,
    "keywordFiltering": list,
    "cache": lambda: dict(_NO_CACHE),
}


def unmanaged_attributes(spec: ModelSpec, defaults: Defaults) -> frozenset[str]:
    """The in-place attributes left to be managed by hand: the model's own list, else the defaults'."""
    listed = spec.unmanagedAttributes if spec.unmanagedAttributes is not None else defaults.unmanagedAttributes
    return frozenset(listed)


def model_attributes(spec: ModelSpec, defaults: Defaults, model_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The attributes a model declares, in the manifest's words; attributes left unset are not in it.

    ``model_ids`` resolves a semantic cache's embedding model named in the manifest (see ``caching_body``).
    """
    declared = _in_place_declared(spec, defaults, model_ids)
    attrs: dict[str, Any] = {
        "catalogModel": spec.catalogModel,
        "provider": spec.provider or defaults.provider,
        "region": effective_region(spec, defaults),
        "cpu": spec.cpu,
        "gpuMemory": spec.gpuMemory,
        "quantization": spec.quantization,
        "optimization": spec.optimization,
        "dimensions": spec.dimensions,
        "enableBatching": declared.get("enableBatching"),
        "keywordFiltering": declared.get("keywordFiltering"),
        "cache": cache_view(declared["caching"]) if "caching" in declared else None,
        "state": spec.state,
    }
    return {key: value for key, value in attrs.items() if value is not None}


def compared(
    spec: ModelSpec, defaults: Defaults, model_ids: Mapping[str, str] | None, live: LiveModel
) -> tuple[dict[str, Any], dict[str, Any], frozenset[str]]:
    """What a plan compares for a live model: (before, after, reset).

    ``before`` is the live model's attributes, an in-place attribute it does not report read as the API's default;
    ``after`` the declared ones, less the unmanaged attributes, plus the API's default for each other in-place
    attribute the manifest leaves unset; ``reset`` names those.
    """
    unmanaged = unmanaged_attributes(spec, defaults)
    after = {k: v for k, v in model_attributes(spec, defaults, model_ids).items() if k not in unmanaged}
    reset = frozenset(name for name in UPDATE_ATTRIBUTES if name not in after and name not in unmanaged)
    after.update({name: API_DEFAULTS[name]() for name in reset})
    before = live.attributes
    for name in UPDATE_ATTRIBUTES:
        if before[name] is None:
            before[name] = API_DEFAULTS[name]()
    return before, after, reset


def write_only_attributes(spec: ModelSpec) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if spec.guardrails is not None:
        attrs["guardrails"] = list(spec.guardrails)
    if spec.jailbreak is not None:
        attrs["jailbreak"] = {"scoreThreshold": spec.jailbreak.scoreThreshold}
    return attrs


def model_create_body(spec: ModelSpec, defaults: Defaults, model_ids: Mapping[str, str]) -> dict[str, Any]:
    """The create body: what the manifest sets, unmanaged attributes included (they are managed by hand only
    after the model exists); what it leaves unset, the API decides."""
    attrs = model_attributes(spec, defaults)  # its cache is not read here: the body's caching resolves model ids
    compute = {"cpu": attrs.get("cpu", default_cpu(attrs["gpuMemory"])), "gpuMemory": attrs["gpuMemory"]}
    body: dict[str, Any] = {
        "name": spec.name,
        "catalogModelName": attrs["catalogModel"],
        "cloudConfig": {"provider": attrs["provider"], "region": attrs["region"], "compute": compute},
    }
    for field in ("quantization", "optimization", "dimensions"):
        if field in attrs:
            body[field] = attrs[field]
    body.update(_in_place_declared(spec, defaults, model_ids))
    body.update(write_only_attributes(spec))
    return body


def model_update_body(spec: ModelSpec, defaults: Defaults, model_ids: Mapping[str, str]) -> dict[str, Any]:
    """A PUT body carrying every in-place attribute the manifest manages (PUT replaces what it names): its value,
    or the API's default where the manifest leaves it unset. Unmanaged attributes are not named, so a hand-made
    value stays."""
    declared = _in_place_declared(spec, defaults, model_ids)
    unmanaged = unmanaged_attributes(spec, defaults)
    body: dict[str, Any] = {"name": spec.name}
    for name in UPDATE_ATTRIBUTES:
        if name not in unmanaged:
            field = _BODY_FIELD[name]
            body[field] = declared[field] if field in declared else _BODY_DEFAULTS[field]()
    body.update(write_only_attributes(spec))
    return body


def output_changes(
    spec: ModelSpec, defaults: Defaults, current: LiveModel | None, renews: bool, document: Mapping[str, Any] | None
) -> tuple[OutputChange, ...]:
    """What apply would change in the outputs file's entry of this model: its connection string (a model made
    anew gets one only apply learns) and each header of its ``X-cb-*`` profile. Without an outputs file there is
    nothing to compare with, and only a model made anew is said to change."""
    if document is None and not renews:
        return ()
    recorded_models = as_mapping(document.get("models") if document is not None else None)
    # A model being renamed is recorded under its former name until apply moves the entry.
    entry = as_mapping(recorded_models.get(spec.name) or recorded_models.get(current.name if current else spec.name))
    changes: list[OutputChange] = []
    recorded_url = entry.get("connectionString")
    if renews:
        changes.append(OutputChange("connectionString", recorded_url, None, known_after_apply=True))
    elif current is not None and current.connection_string is not None and recorded_url != current.connection_string:
        changes.append(OutputChange("connectionString", recorded_url, current.connection_string))
    recorded = as_mapping(entry.get("headers"))
    headers = header_profile(spec, defaults)
    for name in sorted(set(recorded) | set(headers)):
        if recorded.get(name) != headers.get(name):
            changes.append(OutputChange(f"headers.{name}", recorded.get(name), headers.get(name)))
    return tuple(changes)


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
    # Plain decimals: "g" would write 1e-05, which a header parser expecting a number may refuse. The shortest
    # repr of a threshold (a float strictly between 0 and 1) has no trailing zeros to strip.
    return f"{Decimal(repr(value)):f}"


def cache_block(caching: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest ``cache`` block whose request body is exactly ``caching``, or None when there is none."""
    candidate = _guess_cache(caching)
    if candidate is None:
        return None
    try:
        cache = Cache.model_validate(candidate)
    except ValidationError:
        return None
    return candidate if caching_body(cache) == dict(caching) else None


def export_entry(model: LiveModel, names: Mapping[str, str], notes: ExportNotes) -> dict[str, Any] | None:
    entry: dict[str, Any] = {
        "name": model.name,
        "catalogModel": model.catalog_model,
        "provider": model.provider,
        "region": model.region,
        "gpuMemory": model.gpu_memory,
        "cpu": model.cpu,
        "state": state_of(model.status),
        "quantization": model.quantization,
        "optimization": model.optimization,
        "dimensions": model.dimensions,
        "enableBatching": model.enable_batching,
        "keywordFiltering": list(model.keyword_filtering) if model.keyword_filtering is not None else None,
    }
    if model.caching is not None:
        cache = cache_block(model.caching)
        semantic = cache.get("semantic") if cache is not None else None
        embedding = semantic.get("embeddingModel") if isinstance(semantic, dict) else None
        if isinstance(semantic, dict) and isinstance(embedding, str) and embedding in names:
            semantic["embeddingModel"] = names[embedding]
        elif isinstance(embedding, str) and not UUID_PATTERN.fullmatch(embedding):
            notes.omitted.append(
                f"model {model.name!r}: its semantic cache names the embedding model {embedding!r}, which is neither "
                "an exported model nor a model id; the exported manifest leaves its caching as it is "
                "(unmanagedAttributes: [cache])"
            )
            cache = None
        elif cache is None:
            notes.omitted.append(
                f"model {model.name!r}: its caching settings have no exact manifest equivalent; "
                "the exported manifest leaves them as they are (unmanagedAttributes: [cache])"
            )
        if cache is not None:
            entry["cache"] = cache
        else:
            # Left unset, the cache would be planned back to the API's default: no caching.
            entry["unmanagedAttributes"] = ["cache"]
    entry = {key: value for key, value in entry.items() if value is not None}
    try:
        ModelSpec.model_validate(entry)
    except ValidationError as exc:
        notes.omitted.append(f"model {model.name!r}: {first_problem(exc)}")
        return None
    if model.status in FAILED_STATUSES:
        notes.warnings.append(f"model {model.name!r} is {model.status}: a plan of the export will replace or report it")
    return entry


def _guess_cache(caching: Mapping[str, Any]) -> dict[str, Any] | None:
    """Invert caching_body; the caller checks the guess by validating it and mapping it forward again, which
    refuses any object caching_body would not write (no ``enableStandard: true``, an unknown ``defaultCache``)."""
    if caching.get("enableStandard") is False:
        return {"type": "none"}
    kind = caching.get("defaultCache")
    block: dict[str, Any] = {"type": kind}
    if "enableConversational" in caching:
        block["conversational"] = caching["enableConversational"]
    if "expiryTTL" in caching:
        block["expirySeconds"] = caching["expiryTTL"]
    semantic = caching.get("semantic")
    if kind == "semantic" and isinstance(semantic, Mapping):
        if "scoreThreshold" in semantic:
            block["threshold"] = semantic["scoreThreshold"]
        settings = {k: semantic[k] for k in ("embeddingModel", "dimensions", "distanceMetric") if k in semantic}
        if settings:
            block["semantic"] = settings
    return block


# -- the kind ---------------------------------------------------------------------------------------------


class Models:
    """The model kind, as the planner, the live reading and export see it."""

    kind = Kind.MODEL
    section = "models"
    noun = "model"
    resource_type = "capella_ai_model"
    sensitive: tuple[str, ...] = ()
    former_paths: Mapping[str, tuple[str, ...]] = {
        "caching": ("cache",),
        "caching.enableStandard": ("cache.type",),
        "caching.defaultCache": ("cache.type",),
        "caching.enableConversational": ("cache.conversational",),
        "caching.expiryTTL": ("cache.expirySeconds",),
        "caching.semantic": ("cache.semantic", "cache.threshold"),
        "caching.semantic.scoreThreshold": ("cache.threshold",),
        "caching.semantic.embeddingModel": ("cache.semantic.embeddingModel",),
        "caching.semantic.dimensions": ("cache.semantic.dimensions",),
        "caching.semantic.distanceMetric": ("cache.semantic.distanceMetric",),
    }

    def specs(self, manifest: Manifest) -> Sequence[ModelSpec]:
        return manifest.models

    def refers_to(self, spec: ModelSpec, ctx: PlanContext) -> tuple[Address, ...]:
        name = embedding_dependency(spec, ctx.manifest.defaults, ctx.declared.get(Kind.MODEL, frozenset()))
        return (Address(Kind.MODEL, name),) if name is not None else ()

    async def read(self, client: CapellaClient, org_id: str, now: datetime | None) -> tuple[list[LiveModel], list[str]]:
        models: list[LiveModel] = []
        warnings: list[str] = []
        for raw in await client.list_models(org_id):
            try:
                model = parse_model(raw)
            except LiveStateError as exc:
                warnings.append(f"skipped an unreadable model entry: {exc}")
                continue
            if model.status not in KNOWN_STATUSES:
                warnings.append(f"model {model.name!r} has an unknown status {model.status!r}; treated as in progress")
            models.append(model)
        return models, warnings

    def in_play(self, live: LiveModel) -> bool:
        # A model already being destroyed is about to vanish.
        return live.status != "destroying"

    def fingerprint(self, live: LiveModel, held_tokens: frozenset[str]) -> dict[str, Any]:
        # Whether a model failed matters to the planner (it replaces failed deployments); the passing statuses of
        # a healthy lifecycle do not, so a deploy finishing leaves a saved plan fresh.
        return {"id": live.id, "name": live.name, "failed": live.status in FAILED_STATUSES, **live.attributes}

    def pick(
        self, candidates: Sequence[LiveModel], ctx: PlanContext
    ) -> tuple[LiveModel | None, list[Extra[LiveModel]]]:
        """Among live models sharing a name, manage the healthiest one and report the rest."""
        if not candidates:
            return None, []
        ranked = sorted(candidates, key=model_rank)
        extras = [
            Extra(m, f"another live model {m.id}", "duplicate of a managed name", "delete_because_duplicate")
            for m in ranked[1:]
        ]
        return ranked[0], extras

    def steps(self, run: ApplyRun) -> ModelSteps:
        return ModelSteps(run)

    def transition(self, change: ResourceChange) -> str | None:
        return _DEPLOYING if change.action in (Action.CREATE, Action.REPLACE) else None

    def reads_credentials(self, change: ResourceChange) -> bool:
        return False

    async def settle(self, run: SettleRun, live: Sequence[LiveModel]) -> Settled:
        """Wait for managed models still in transition (an earlier run may have been killed while they deployed)
        and record every managed model in the outputs (a fresh checkout's outputs lack them)."""
        wanted = {spec.name: spec for spec in run.manifest.models}
        present = by_name(m for m in live if m.name in wanted and self.in_play(m))
        models = [min(group, key=model_rank) for group in present.values()]
        watcher: Watch[LiveModel] = run.watch(lambda: run.client.list_models(run.org_id), parse_model)
        found = Settled()

        async def settle(model: LiveModel) -> LiveModel:
            # A model whose change already failed (a timeout included) is not waited for a second time.
            if model.status not in TRANSITIONAL_STATUSES or Address(Kind.MODEL, model.name) in run.failed:
                return model
            try:
                settled = await watcher.wait(
                    model.id, until={"healthy", "paused"}, failing=FAILED_STATUSES, timeout=run.timeout
                )
            except CapellaError as exc:
                found.unsettled.append(f"model.{model.name}: {exc}")
                return model
            return settled or model

        import asyncio  # here, not at the top: validate loads the kinds and has no loop to run

        for model in await asyncio.gather(*(settle(m) for m in models)):
            await record_model(run.outputs, run.client, run.org_id, wanted[model.name], run.manifest.defaults, model)
        return found

    def status(self, live: LiveModel, now: datetime) -> StatusFacts:
        return StatusFacts(
            state=live.status,
            created_at=live.created_at,
            region=live.region,
            gpu_memory=live.gpu_memory,
            connection_string=live.connection_string,
        )

    def export(
        self, live: Sequence[LiveModel], scope: ExportScope, exported: dict[str, str], notes: ExportNotes
    ) -> list[dict[str, Any]]:
        present = [m for m in live if self.in_play(m) and scope.wanted(m.name, m.region)]
        chosen_models: list[LiveModel] = []
        for name, group in sorted(by_name(present).items()):
            chosen = sorted(group, key=model_rank)[0]
            if len(group) > 1:
                others = ", ".join(m.id for m in group if m is not chosen)
                notes.warnings.append(
                    f"model {name!r}: exported {chosen.id}; other live models share the name ({others})"
                )
            chosen_models.append(chosen)
        # A semantic cache names its embedding model by id; in the manifest, a model of the export goes by its name.
        names = {m.id: m.name for m in chosen_models}
        entries: list[dict[str, Any]] = []
        for chosen in chosen_models:
            entry = export_entry(chosen, names, notes)
            if entry is not None:
                entries.append(entry)
                exported[chosen.id] = chosen.name
        return entries

    def plan(self, spec: ModelSpec, current: LiveModel | None, ctx: PlanContext) -> ResourceChange:
        change = self._change(spec, current, ctx)
        outputs = output_changes(spec, ctx.manifest.defaults, current, change.action.renews, ctx.outputs)
        return replace(change, outputs=outputs)

    def _change(self, spec: ModelSpec, current: LiveModel | None, ctx: PlanContext) -> ResourceChange:
        manifest = ctx.manifest
        address = Address(Kind.MODEL, spec.name)
        # A semantic cache's embedding model of this manifest must be ready before this model is made or edited.
        depends_on = self.refers_to(spec, ctx)
        if current is None:
            return created(
                Kind.MODEL, spec, model_attributes(spec, manifest.defaults, ctx.ids_by_name[Kind.MODEL]), depends_on
            )
        before, after, reset = compared(spec, manifest.defaults, ctx.ids_by_name[Kind.MODEL], current)
        diffs = tuple(
            replace(d, to_default=d.path.split(".")[0] in reset)
            for d in attribute_changes(before, after, replace_only=REPLACE_ATTRIBUTES)
        )
        # A model found by its former name (renamedFrom) is renamed: the PUT body carries the name.
        renamed = current.name != spec.name
        if renamed:
            before, after = {"name": current.name, **before}, {"name": spec.name, **after}
            diffs = (AttributeChange("name", current.name, spec.name), *diffs)
        base = unchanged(Kind.MODEL, spec, current.id, before, after, diffs, depends_on)
        forcing = [d.path for d in diffs if d.forces_replace]
        if address in ctx.force_replace:
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
        in_place = sorted({d.path.split(".")[0] for d in diffs if d.path not in ("state", "name") and not d.to_default})
        to_default = sorted({d.path.split(".")[0] for d in diffs if d.to_default})
        state_change = next((d for d in diffs if d.path == "state"), None)
        if in_place or to_default or renamed:
            parts = [f"renamed from {current.name}"] if renamed else []
            if in_place:
                parts.append(f"in-place change of {', '.join(in_place)}")
            if to_default:
                parts.append(f"{', '.join(to_default)} unset in the manifest: reset to the API's default")
            reason = "; ".join(parts)
            if state_change is not None:
                reason += f", then {'pause' if spec.state == 'paused' else 'resume'}"
            return replace(base, action=Action.UPDATE, reason=reason)
        if state_change is not None:
            action = Action.PAUSE if spec.state == "paused" else Action.RESUME
            return replace(base, action=action, reason=f"state is {before['state']}")
        if current.status in FAILED_STATUSES:
            return replace(base, reason=f"live status is {current.status}; nothing the manifest can change")
        return base


# -- apply ------------------------------------------------------------------------------------------------

_DEPLOY_FAILED = FAILED_STATUSES - {"unhealthy"}
_DEPLOYING = "deploying"
# Seconds a create waits for the listing that shows which models of its name exist: creates that finish
# within that time share one list call.
_LISTING_GATHER = 2.0
Ready = Callable[[LiveModel], bool]


class ModelSteps:
    """The model kind's apply steps for one run, with one watcher for every model the run waits for.

    No status code is taken as proof of anything: the API may accept two models of one name, and may refuse a
    call during a transition with 409 or 422. So a model is edited, paused or resumed only once it allows it,
    and a refusal is judged by reading the model again.
    """

    def __init__(self, run: ApplyRun) -> None:
        self._run = run
        self._specs = {spec.name: spec for spec in run.manifest.models}
        self._watch_models: Watch[LiveModel] = run.watch(lambda: run.client.list_models(run.org_id), parse_model)

    async def apply(self, step: ApplyStep) -> str:
        change = step.change
        action = change.action
        if action is Action.DELETE:
            assert change.live_id is not None
            await self._delete_model(step, change.live_id)
            step.sent()
            step.progress("destroying")
            try:
                await self._watch_models.wait(
                    change.live_id,
                    until=set(),
                    failing={"destroyFailed"},
                    gone_ok=True,
                    timeout=step.left(),
                    transition="destroying",
                )
            except WaitFailed as exc:
                raise ApplyError(f"model {change.live_id}: {exc}") from None
            self._run.outputs.forget_model(change.name, change.live_id)
            return "destroyed"
        spec = self._specs[change.name]
        wanted = "paused" if spec.state == "paused" else "healthy"
        if action is Action.REPLACE:
            assert change.live_id is not None
            await self._delete_model(step, change.live_id)
            step.progress(f"destroying {change.live_id} to replace it")
        if action in (Action.CREATE, Action.REPLACE):
            model_ids = await self._embedding_ready(step, spec)
            model_id, deploying_since = await self._create_model(spec, step, model_ids)
            # A model adopted from another run of this manifest may already have been paused by that run.
            model = await self._settle(
                step, model_id, "deploying", "healthy", wanted, transition=_DEPLOYING, since=deploying_since
            )
            if model.status != wanted:
                model = await self._set_state(step, model_id, wanted)
            return await self._record_model(spec, model, change)
        assert change.live_id is not None
        model_id = change.live_id
        shows_update: Ready | None = None
        if action is Action.UPDATE:
            model_ids = await self._embedding_ready(step, spec)
            body = model_update_body(spec, self._run.manifest.defaults, model_ids)
            await self._when_allowed(
                step, model_id, "edit", lambda: self._run.client.update_model(self._run.org_id, model_id, body)
            )
            step.sent()
            shows_update = self._shows(spec, model_ids)
        if any(c.path == "state" for c in change.attribute_changes):
            model = await self._set_state(step, model_id, wanted)
        else:
            model = await self._settle(step, model_id, "updating", wanted)
        if shows_update is not None and not shows_update(model):
            model = await self._until_visible(step, model, shows_update)
        return await self._record_model(spec, model, change)

    def _shows(self, spec: ModelSpec, model_ids: dict[str, str]) -> Ready:
        """Whether a read of the model shows the in-place attributes as the plan compares them (a reset ones too),
        and its name (a rename)."""

        def shows(model: LiveModel) -> bool:
            before, after, _ = compared(spec, self._run.manifest.defaults, model_ids, model)
            in_place = {k: v for k, v in after.items() if k in UPDATE_ATTRIBUTES}
            return model.name == spec.name and not attribute_changes(before, in_place)

        return shows

    async def _until_visible(self, step: ApplyStep, model: LiveModel, shows: Ready) -> LiveModel:
        """Wait until a read shows the update: "updates may take up to a few minutes to take effect", and a plan
        made before then would show the same update again. Past the bound, the update stands as accepted."""
        step.progress("update accepted; waiting until a read shows it")
        try:
            seen = await self._watch_models.wait(model.id, ready=shows, failing=_DEPLOY_FAILED, timeout=step.left())
        except WaitTimedOut:
            step.warn(
                f"the update was accepted but is not yet visible after {self._run.timeout:g} s (--timeout); "
                "a plan made before it shows will list it again: wait and plan again rather than apply it twice"
            )
            return model
        except WaitFailed as exc:
            raise ApplyError(f"model {model.id}: {exc}") from None
        assert seen is not None
        return seen

    async def _embedding_ready(self, step: ApplyStep, spec: ModelSpec) -> dict[str, str]:
        """The ids the model's bodies resolve manifest names with: none when its semantic cache names no model
        of the manifest (it names none, or an id); else the ids known so far, once that model exists and is in its
        declared state."""
        name = embedding_dependency(spec, self._run.manifest.defaults, self._specs)
        if name is None:
            return {}
        dependency = Address(Kind.MODEL, name)
        step.progress(f"waiting for {dependency}, its embedding model")
        finished = await self._run.finished(dependency)
        if finished is not None:
            if not finished:
                raise ApplyError(f"its semantic cache embeds with {dependency}, which could not be made ready")
            return self._run.ids_of(Kind.MODEL)
        model_id = self._run.ids_of(Kind.MODEL).get(name)
        if model_id is None:
            raise ApplyError(f"its semantic cache embeds with {dependency}, which does not exist")
        wanted = "paused" if self._specs[name].state == "paused" else "healthy"
        if (await self._read_model(model_id)).status != wanted:
            await self._settle(step, model_id, f"waiting for {dependency}, its embedding model", wanted)
        return self._run.ids_of(Kind.MODEL)

    async def _create_model(self, spec: ModelSpec, step: ApplyStep, model_ids: dict[str, str]) -> tuple[str, float]:
        """The id of the model made (or adopted), and when its deployment began, as near as can be told."""
        body = model_create_body(spec, self._run.manifest.defaults, model_ids)
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            made: str | None = None
            try:
                made = await self._run.call(self._run.client.create_model(self._run.org_id, body))
            except (AmbiguousCreate, Conflict) as exc:
                # A lost answer, or (where the API refuses a second model of one name) one made by another run.
                unclear: CapellaError = exc
            answered = self._run.clock.now()
            if made is not None:
                step.sent()
                # Known at once: keys naming the model need not wait for the look at other runs' models.
                self._run.found(step.change.ref, made)
            model_id = await self._one_of_its_name(step, made)
            if model_id is None:
                if attempt == CREATE_ATTEMPTS:
                    raise ApplyError(f"create did not go through after {attempt} attempts: {unclear}") from None
                step.progress(f"create unclear ({type(unclear).__name__}); nothing was made, retrying")
                await self._run.clock.sleep(create_pause(attempt))
                continue
            if made is None:
                step.progress(f"found {model_id} after an unclear create answer; adopting it")
            elif model_id != made and any(spec.name in key.allowedModels for key in self._run.manifest.apiKeys):
                step.warn(
                    f"a key this run made for it before {made} was given up names that model; "
                    "the next plan replaces such a key"
                )
            self._run.found(step.change.ref, model_id)
            return model_id, answered if model_id == made else self._run.clock.now()
        raise AssertionError("unreachable")

    async def _one_of_its_name(self, step: ApplyStep, made: str | None) -> str | None:
        """The model to keep of those made since the plan under this name: ``made`` by this run (None when the
        answer was lost) and any other run's (an API may accept several of one name). None when there is none.

        Every run keeps the oldest, so all agree whatever the order they look in; each deletes the others it
        made. A run whose answer was lost cannot tell which one it made, and deletes every other: their makers,
        looking too, give theirs up anyway. Creation times that tie go by the listing's order, which is the
        order of creation: the first maker, which may have looked before the others existed, then keeps what
        everyone else keeps.
        """
        change = step.change
        known = self._run.known_ids(change.ref)
        if made is None:
            listed = await self._list_models()  # read by name before anything is sent again
        else:
            listed = await self._watch_models.listing(within=_LISTING_GATHER, timeout=step.left())
        rivals = [m for m in listed if m.name == change.name and m.id not in known and m.status != "destroying"]
        if not rivals:
            return made  # not listed yet, or (after a lost answer) nothing was made
        keep = rivals[oldest(m.created_at for m in rivals)]
        for other in rivals:
            if other.id != keep.id and (other.id == made or made is None):
                await self._delete_model(step, other.id)
        if made is not None and keep.id != made:
            step.progress(f"another run made {keep.id} of this name first; keeping that one")
        return keep.id

    async def _list_models(self) -> list[LiveModel]:
        # An entry that cannot be read is not the one looked for; letting its parse error out would end
        # the whole run with a traceback instead of failing one resource.
        models = []
        for raw in await self._run.client.list_models(self._run.org_id):
            with contextlib.suppress(LiveStateError):
                models.append(parse_model(raw))
        return models

    async def _read_model(self, model_id: str) -> LiveModel:
        try:
            raw = await self._run.client.get_model(self._run.org_id, model_id)
        except NotFound:
            raise ApplyError(f"model {model_id} no longer exists") from None
        try:
            return parse_model(raw)
        except LiveStateError as exc:
            raise ApplyError(f"model {model_id}: the API's answer cannot be read: {exc}") from None

    async def _delete_model(self, step: ApplyStep, model_id: str) -> None:
        """Ask for the model's deletion; a model already on its way out is what was asked for.

        When the answer to a DELETE is lost the client sends it again, and the repeat is refused because
        the model is already being destroyed: the outcome asked for, not a failure.
        """
        while True:
            try:
                await self._run.call(self._run.client.delete_model(self._run.org_id, model_id))
                return
            except REFUSED as exc:
                try:
                    model = await self._read_model(model_id)
                except ApplyError:
                    return  # gone already
                if model.status == "destroying":
                    return
                await self._wait_out_refusal(step, model, exc, lambda m: m.status not in TRANSITIONAL_STATUSES)

    async def _set_state(self, step: ApplyStep, model_id: str, wanted: str) -> LiveModel:
        pause = wanted == "paused"
        turn = self._run.client.pause_model if pause else self._run.client.resume_model
        # A model already on its way is not asked again. It may be this very call's own doing: when the answer
        # to the first attempt is lost, the client repeats the call, and the repeat is refused.
        on_its_way = {"pausing", "paused"} if pause else {"resuming", "healthy"}
        await self._when_allowed(
            step, model_id, "pause" if pause else "resume", lambda: turn(self._run.org_id, model_id), arrived=on_its_way
        )
        step.sent()
        # The transition began with this call, unless it was under way already (another run's, or a repeat's).
        transition = "pausing" if pause else "resuming"
        return await self._settle(step, model_id, transition, wanted, transition=transition)

    async def _when_allowed(
        self,
        step: ApplyStep,
        model_id: str,
        action: str,
        call: Callable[[], Awaitable[None]],
        *,
        arrived: Collection[str] = (),
    ) -> None:
        """Make ``call`` once the model allows ``action`` (edit, pause, resume), or stop when its status is in
        ``arrived``. A refusal while the model is in transition is waited out and the call made again; one
        while it is settled and allows the call is an answer, and fails the change."""

        def done_or_allowed(model: LiveModel) -> bool:
            return model.status in arrived or allows(model, action)

        model = await self._read_model(model_id)
        while True:
            if model.status in arrived:
                return
            if not allows(model, action):
                doing = f"waiting until it can {action} ({model.status})"
                model = await self._wait(step, model_id, doing, done_or_allowed)
                continue
            try:
                await self._run.call(call())
                return
            except REFUSED as exc:
                model = await self._read_model(model_id)
                if model.status in arrived:
                    return
                model = await self._wait_out_refusal(
                    step,
                    model,
                    exc,
                    lambda m: m.status in arrived or (allows(m, action) and m.status not in TRANSITIONAL_STATUSES),
                    action=action,
                )

    async def _wait_out_refusal(
        self, step: ApplyStep, model: LiveModel, exc: CapellaError, ready: Ready, *, action: str | None = None
    ) -> LiveModel:
        """After a refusal: fail when nothing explains it (the model is settled and takes the call), else wait
        until ``ready``."""
        settled = model.status not in TRANSITIONAL_STATUSES
        if settled and (action is None or allows(model, action)):
            raise ApplyError(f"model {model.id}: refused while {model.status}: {exc}") from None
        step.progress(f"refused while {model.status}; waiting for it to settle")
        return await self._wait(step, model.id, "waiting to settle", ready)

    async def _wait(self, step: ApplyStep, model_id: str, doing: str, ready: Ready) -> LiveModel:
        step.progress(doing)
        return await self._watch(step, model_id, ready=ready)

    async def _settle(
        self,
        step: ApplyStep,
        model_id: str,
        doing: str,
        *statuses: str,
        transition: str | None = None,
        since: float | None = None,
    ) -> LiveModel:
        """Wait until the model reaches one of ``statuses``; ``transition``: the one that began just now, or at
        ``since``."""
        step.progress(doing)
        return await self._watch(step, model_id, until=set(statuses), transition=transition, since=since)

    async def _watch(
        self,
        step: ApplyStep,
        model_id: str,
        *,
        until: Collection[str] = (),
        ready: Ready | None = None,
        transition: str | None = None,
        since: float | None = None,
    ) -> LiveModel:
        try:
            model = await self._watch_models.wait(
                model_id,
                until=until,
                ready=ready,
                failing=_DEPLOY_FAILED,
                timeout=step.left(),
                transition=transition,
                since=since,
            )
        except WaitTimedOut as exc:
            # Say what happens next: nothing is deleted or made again, the next apply waits for it.
            raise ApplyError(
                f"model {model_id}: {exc} ({self._run.timeout:g} s, --timeout); it is left in place "
                "and the next apply waits for it again"
            ) from None
        except WaitFailed as exc:
            raise ApplyError(f"model {model_id}: {exc}") from None
        assert model is not None
        return model

    async def _record_model(self, spec: ModelSpec, model: LiveModel, change: ResourceChange) -> str:
        await record_model(
            self._run.outputs, self._run.client, self._run.org_id, spec, self._run.manifest.defaults, model
        )
        former = change.renamed_from
        if former is not None:
            # Renamed: the outputs know it by its new name only.
            self._run.outputs.forget_model(former, change.live_id)
        return model.status


async def record_model(
    outputs: Outputs, client: CapellaClient, org_id: str, spec: ModelSpec, defaults: Defaults, model: LiveModel
) -> None:
    outputs.record_model(
        spec.name,
        id=model.id,
        status=model.status,
        region=model.region,
        connectionString=await connection_string(client, org_id, model),
        headers=header_profile(spec, defaults),
    )


MODELS = Models()
