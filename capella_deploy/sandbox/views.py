"""The Management API's read shapes, exactly as the Management API documentation shows them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlencode

from capella_deploy.sandbox import catalog, lifecycle
from capella_deploy.sandbox.errors import invalid, undecodable
from capella_deploy.sandbox.state import ApiKeyRecord, Audit, ModelRecord, Usage, World

PER_PAGE_DEFAULT = 10
SESSION_DURATION = 7200

T = TypeVar("T")


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_view(audit: Audit) -> dict[str, Any]:
    return {
        "createdBy": audit.created_by,
        "createdAt": rfc3339(audit.created_at),
        "modifiedBy": audit.modified_by,
        "modifiedAt": rfc3339(audit.modified_at),
        "version": audit.version,
    }


def org_view(world: World) -> dict[str, Any]:
    return {
        "audit": audit_view(Audit.new(world.actor_id, world.org_created_at)),
        "description": "",
        "id": world.org_id,
        "name": world.org_name,
        "preferences": {"sessionDuration": SESSION_DURATION},
    }


def connection_string(base_url: str, model_id: str) -> str:
    return f"{base_url}/ai/{model_id}"


def model_dimensions(model: ModelRecord) -> int | None:
    chosen = model.options.get("dimensions")
    return int(chosen) if chosen is not None else catalog.CATALOG[model.catalog_model_name].dimensions


def model_view(model: ModelRecord, now: float, base_url: str) -> dict[str, Any]:
    entry = catalog.CATALOG[model.catalog_model_name]
    config: dict[str, Any] = {
        "catalogModelName": model.catalog_model_name,
        "provider": entry.vendor,
        "type": entry.kind,
    }
    dimensions = model_dimensions(model)
    if dimensions is not None:
        config["dimensions"] = dimensions
    # Guardrails and jailbreak settings are write-only: Capella does not return them.
    for key in ("quantization", "optimization", "caching", "enableBatching", "keywordFiltering"):
        if key in model.options:
            config[key] = model.options[key]
    status = lifecycle.status_at(model, now)
    return {
        "id": model.id,
        "name": model.name,
        "status": status,
        "actions": lifecycle.actions_for(status),
        "cloudConfig": {
            "compute": {"cpu": model.cpu, "gpuMemory": model.gpu_memory},
            "provider": model.cloud_provider,
            "region": model.region,
        },
        "config": config,
        "connectionString": connection_string(base_url, model.id),
        "usageMetrics": usage_view(model.usage, now),
        "audit": audit_view(model.audit),
    }


def usage_view(usage: Usage, now: float) -> dict[str, Any]:
    current = Usage(**vars(usage))
    current.roll(now)

    def trend(this_hour: int, last_hour: int) -> str:
        return "increasing" if this_hour >= last_hour else "decreasing"

    return {
        "tokens": {"value": current.tokens, "trend": trend(current.hour_tokens, current.previous_tokens)},
        "requests": {
            "value": current.requests,
            "trend": trend(current.hour_requests, current.previous_requests),
        },
    }


def key_view(key: ApiKeyRecord, world: World) -> dict[str, Any]:
    if key.allowed_models == ["*"]:
        allowed = [{"id": "*", "name": "*"}]
    else:
        allowed = [
            {"id": model_id, "name": world.models[model_id].name if model_id in world.models else ""}
            for model_id in key.allowed_models
        ]
    return {
        "keyId": key.id,
        "name": key.name,
        "description": key.description,
        "expiry": key.expiry_days,
        "allowedCIDRs": key.allowed_cidrs,
        "region": key.region,
        "allowedModels": allowed,
        "audit": audit_view(key.audit),
    }


def page_params(params: Mapping[str, str], max_per_page: int) -> tuple[int, int]:
    def positive(name: str, default: int) -> int:
        raw = params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise undecodable(f"{name} must be a whole number; got {raw!r}") from None
        if value < 1:
            raise invalid(f"{name} must be a whole number from 1; got {raw!r}")
        return value

    per_page = positive("perPage", min(PER_PAGE_DEFAULT, max_per_page))
    if per_page > max_per_page:
        raise invalid(f"perPage must be at most {max_per_page}; got {per_page}")
    return positive("page", 1), per_page


def paginate(
    items: Sequence[T], url: str, params: Mapping[str, str], *, max_per_page: int
) -> tuple[Sequence[T], dict[str, Any]]:
    """One page of ``items`` and its cursor; ``url`` is the list's absolute URL without a query."""
    page, per_page = page_params(params, max_per_page)
    total = len(items)
    last = max(1, math.ceil(total / per_page))
    following = page + 1 if page < last else 0
    preceding = min(page - 1, last) if page > 1 else 0
    extra = {k: v for k, v in params.items() if k not in ("page", "perPage")}

    def href(n: int) -> str:
        return f"{url}?{urlencode({'page': n, 'perPage': per_page, **extra})}"

    cursor = {
        "hrefs": {
            "first": href(1),
            "last": href(last),
            # As the documentation shows: past the last page "next" still names page 0, while "previous" before the
            # first page is an empty string.
            "next": href(following),
            "previous": href(preceding) if preceding else "",
        },
        "pages": {
            "last": last,
            "next": following,
            "page": page,
            "perPage": per_page,
            "previous": preceding,
            "totalItems": total,
        },
    }
    start = (page - 1) * per_page
    return items[start : start + per_page], cursor
