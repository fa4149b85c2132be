"""Export: a manifest of what is live, which plans as no changes against the same organization. Pure.

Each live model and key becomes a manifest entry holding every attribute the planner compares, written
back in the manifest's vocabulary. What a manifest cannot say is left out with a warning (and a comment
in the YAML) rather than guessed: guardrails and jailbreak settings (the API never returns them), a
caching object with no ``cache`` block that maps onto it exactly, a key that names a model outside the
export.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from capella_deploy.kinds.desired import caching_body
from capella_deploy.live import (
    FAILED_STATUSES,
    LiveKey,
    LiveModel,
    LiveState,
    by_name,
    key_age,
    model_rank,
    state_of,
    whole_days,
)
from capella_deploy.manifest import UUID_PATTERN, ApiKeySpec, Cache, ModelSpec

API_VERSION = "capella-deploy/v1"
DEFAULT_SCHEMA_REF = "schemas/manifest.schema.json"


@dataclass(frozen=True)
class ExportResult:
    document: dict[str, Any]
    omitted: tuple[str, ...]  # what the manifest leaves out, and why
    warnings: tuple[str, ...]  # what else a reader should know


@dataclass
class _Notes:
    omitted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def export_manifest(live: LiveState, *, match: str | None = None, region: str | None = None) -> ExportResult:
    """The manifest document for ``live``; ``match`` (fnmatch on names) and ``region`` narrow it."""
    notes = _Notes()

    def wanted(name: str, where: str | None) -> bool:
        return (match is None or fnmatch.fnmatchcase(name, match)) and (region is None or where == region)

    models: list[dict[str, Any]] = []
    present = [m for m in live.models if m.status != "destroying" and wanted(m.name, m.region)]
    chosen_models: list[LiveModel] = []
    for name, group in sorted(by_name(present).items()):
        chosen = sorted(group, key=model_rank)[0]
        if len(group) > 1:
            others = ", ".join(m.id for m in group if m is not chosen)
            notes.warnings.append(f"model {name!r}: exported {chosen.id}; other live models share the name ({others})")
        chosen_models.append(chosen)
    # A semantic cache names its embedding model by id; in the manifest, a model of the export goes by its name.
    names = {m.id: m.name for m in chosen_models}
    exported_ids: dict[str, str] = {}
    for chosen in chosen_models:
        entry = _model_entry(chosen, names, notes)
        if entry is not None:
            models.append(entry)
            exported_ids[chosen.id] = chosen.name

    keys: list[dict[str, Any]] = []
    for name, key_group in sorted(by_name(k for k in live.keys if wanted(k.name, k.region)).items()):
        newest = sorted(key_group, key=key_age)[-1]
        if len(key_group) > 1:
            notes.warnings.append(f"apiKey {name!r}: exported the newest key {newest.id}; older keys share the name")
        key_entry = _key_entry(newest, exported_ids, notes)
        if key_entry is not None:
            keys.append(key_entry)

    document: dict[str, Any] = {"apiVersion": API_VERSION, "organizationId": live.org_id}
    if models:
        document["models"] = models
    if keys:
        document["apiKeys"] = keys
    return ExportResult(document, tuple(notes.omitted), tuple(notes.warnings))


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


def manifest_yaml(
    document: Mapping[str, Any], comments: Sequence[str] = (), *, schema_ref: str = DEFAULT_SCHEMA_REF
) -> str:
    """YAML text for a manifest document, headed by the schema line editors read and ``comments``."""
    header = [f"# yaml-language-server: $schema={schema_ref}"]
    header += [f"# {line}".rstrip() for text in comments for line in text.splitlines()]
    body = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    return "\n".join(header) + "\n" + body


def _model_entry(model: LiveModel, names: Mapping[str, str], notes: _Notes) -> dict[str, Any] | None:
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
                "an exported model nor a model id; the exported manifest leaves its caching as it is"
            )
            cache = None
        elif cache is None:
            notes.omitted.append(
                f"model {model.name!r}: its caching settings have no exact manifest equivalent; "
                "the exported manifest leaves them as they are"
            )
        if cache is not None:
            entry["cache"] = cache
    entry = {key: value for key, value in entry.items() if value is not None}
    try:
        ModelSpec.model_validate(entry)
    except ValidationError as exc:
        notes.omitted.append(f"model {model.name!r}: {_first_problem(exc)}")
        return None
    if model.status in FAILED_STATUSES:
        notes.warnings.append(f"model {model.name!r} is {model.status}: a plan of the export will replace or report it")
    return entry


def _key_entry(key: LiveKey, exported_ids: Mapping[str, str], notes: _Notes) -> dict[str, Any] | None:
    if key.allows_every_model:
        allowed = ["*"]
    else:
        outside = [name or model_id for model_id, name in key.allowed_models if model_id not in exported_ids]
        if outside:
            notes.omitted.append(f"apiKey {key.name!r}: it allows models outside this export ({', '.join(outside)})")
            return None
        allowed = sorted(exported_ids[model_id] for model_id, _ in key.allowed_models)
    if key.region is None:
        notes.omitted.append(f"apiKey {key.name!r}: the API did not report its region")
        return None
    entry: dict[str, Any] = {
        "name": key.name,
        "description": key.description,
        "region": key.region,
        "expiryDays": whole_days(key.expiry_days),
        "allowedCIDRs": list(key.allowed_cidrs),
        "allowedModels": allowed,
    }
    entry = {k: v for k, v in entry.items() if v is not None}
    try:
        ApiKeySpec.model_validate(entry)
    except ValidationError as exc:
        notes.omitted.append(f"apiKey {key.name!r}: {_first_problem(exc)}")
        return None
    return entry


def _guess_cache(caching: Mapping[str, Any]) -> dict[str, Any] | None:
    """Invert desired.caching_body; the caller checks the guess by mapping it forward again."""
    if caching.get("enableStandard") is False:
        return {"type": "none"}
    kind = caching.get("defaultCache")
    if caching.get("enableStandard") is not True or kind not in ("standard", "semantic"):
        return None
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


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']} (got {error.get('input')!r})"
