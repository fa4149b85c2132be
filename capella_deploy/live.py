"""A read-only snapshot of what exists in a Capella organization.

The snapshot is built from list calls only (one per page, no per-resource GET), and parsed
defensively: the documentation's examples and the OpenAPI spec disagree on a few names, so both are accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from capella_deploy.errors import CapellaError
from capella_deploy.lease import is_lease_key

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient

log = logging.getLogger("capella_deploy.live")

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
# A key's lifetime read as days remaining adds up with its age to whole days, give or take the time between
# the server's reading and ours and the skew of the two clocks.
_EXPIRY_SKEW_DAYS = 5 / (24 * 60)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)


class LiveStateError(ValueError):
    """An API answer that cannot be read as a model or key."""


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
        """The attributes the planner compares, named as in the manifest."""
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
            "caching": dict(self.caching) if self.caching is not None else None,
            "state": state_of(self.status),
        }


@dataclass(frozen=True)
class LiveKey:
    id: str
    name: str
    description: str | None
    region: str | None
    expiry_days: float | None  # the lifetime the key was given, however the API reports it (see parse_key)
    allowed_cidrs: tuple[str, ...]
    allowed_models: tuple[tuple[str, str], ...]  # (id, name) pairs; ("*", "*") means every model
    created_at: datetime | None

    @property
    def allows_every_model(self) -> bool:
        return self.allowed_models == (("*", "*"),)

    @property
    def expires_at(self) -> datetime | None:
        if self.created_at is None or self.expiry_days is None:
            return None
        return self.created_at + timedelta(days=self.expiry_days)

    @property
    def attributes(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "region": self.region,
            "expiryDays": whole_days(self.expiry_days),
            "allowedCIDRs": sorted(self.allowed_cidrs),
            "allowedModels": sorted(name for _, name in self.allowed_models),
        }


@dataclass(frozen=True)
class LiveState:
    org_id: str
    models: tuple[LiveModel, ...] = ()
    keys: tuple[LiveKey, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def fingerprint(self, held_tokens: frozenset[str] = frozenset()) -> str:
        """A digest of everything the planner looks at; a saved plan is stale when this changes.

        ``held_tokens`` (the live key ids whose token the outputs hold) is part of it: it decides which key
        of a name the plan keeps.
        """
        doc = {
            "org": self.org_id,
            # A model already being destroyed is about to vanish and plays no part in any plan.
            "models": sorted(
                (
                    # Whether a model failed matters to the planner (it replaces failed deployments); the
                    # passing statuses of a healthy lifecycle do not, so a deploy finishing leaves a plan fresh.
                    {"id": m.id, "name": m.name, "failed": m.status in FAILED_STATUSES, **m.attributes}
                    for m in self.models
                    if m.status != "destroying"
                ),
                key=lambda d: d["id"],
            ),
            "keys": sorted(
                (
                    {
                        "id": k.id,
                        "name": k.name,
                        "expiresAt": _iso(k.expires_at),
                        "allowedModelIds": None
                        if k.allows_every_model
                        else sorted(model_id for model_id, _ in k.allowed_models),
                        "tokenHeld": k.id in held_tokens,
                        **k.attributes,
                    }
                    for k in self.keys
                ),
                key=lambda d: d["id"],
            ),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


# Failed deployments are not repaired in place: the planner replaces them.
REPLACE_STATUSES = frozenset({"deployFailed", "destroyFailed"})


def by_name(resources: Iterable[R]) -> dict[str, list[R]]:
    """Live resources grouped by name: a name is the identity, but the API may hold several of one name."""
    grouped: dict[str, list[R]] = defaultdict(list)
    for resource in resources:
        grouped[resource.name].append(resource)
    return grouped


def model_rank(model: LiveModel) -> tuple[bool, bool, str]:
    """Sort key: among live models of one name, the one to manage (the healthiest) sorts first."""
    return (model.status in REPLACE_STATUSES, model.status in FAILED_STATUSES, model.id)


def key_age(key: LiveKey) -> tuple[float, str]:
    """Sort key: among live keys of one name, the newest (the one to keep) sorts last."""
    return (key.created_at.timestamp() if key.created_at else 0.0, key.id)


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
    cloud = _mapping(item.get("cloudConfig"))
    compute = _mapping(cloud.get("compute"))
    config = _mapping(item.get("config"))
    actions = _list(item.get("actions"))
    keyword = config.get("keywordFiltering")
    return LiveModel(
        id=model_id,
        name=name,
        status=str(item.get("status") or "pending"),
        actions=frozenset(_ACTION_ALIASES.get(str(a), str(a)) for a in actions if isinstance(a, str)),
        provider=_str(cloud.get("provider")),
        region=_str(cloud.get("region")),
        cpu=_int(compute.get("cpu")),
        gpu_memory=_int(compute.get("gpuMemory")),
        catalog_model=_str(config.get("catalogModelName")),
        model_type=_str(config.get("type")),
        vendor=_str(config.get("provider")),
        dimensions=_int(config.get("dimensions")),
        quantization=_str(config.get("quantization")),
        optimization=_str(config.get("optimization")),
        caching=config.get("caching") if isinstance(config.get("caching"), Mapping) else None,
        enable_batching=config.get("enableBatching") if isinstance(config.get("enableBatching"), bool) else None,
        keyword_filtering=tuple(str(k) for k in keyword) if isinstance(keyword, list) else None,
        connection_string=_str(item.get("connectionString")) or None,
        version=_int(_mapping(item.get("audit")).get("version")),
        created_at=parse_time(_mapping(item.get("audit")).get("createdAt")),
    )


def parse_key(raw: Mapping[str, Any], now: datetime | None = None) -> LiveKey:
    """One key; ``now`` (the time of the reading) lets an ``expiry`` given as days remaining be read as the
    lifetime the key was given, so a key does not look changed as it ages."""
    key_id = raw.get("keyId", raw.get("id"))
    name = raw.get("name")
    if not isinstance(key_id, str) or not isinstance(name, str):
        raise LiveStateError("an API key entry has no keyId or name")
    allowed: list[tuple[str, str]] = []
    for entry in _list(raw.get("allowedModels")):
        if isinstance(entry, Mapping):
            allowed.append((str(entry.get("id", "")), str(entry.get("name", entry.get("id", "")))))
        elif isinstance(entry, str):
            allowed.append((entry, entry))
    cidrs = _list(raw.get("allowedCIDRs"))
    created_at = parse_time(_mapping(raw.get("audit")).get("createdAt"))
    expiry = _expiry(raw.get("expiry"))
    return LiveKey(
        id=key_id,
        name=name,
        description=_str(raw.get("description")) or None,
        region=_str(raw.get("region")),
        expiry_days=lifetime_days(expiry, created_at, now) if expiry is not None else None,
        allowed_cidrs=tuple(str(c) for c in cidrs if isinstance(c, str)),
        allowed_models=tuple(allowed) or (("*", "*"),),
        created_at=created_at,
    )


def lifetime_days(expiry: float, created_at: datetime | None, now: datetime | None) -> float:
    """The days a key was given at creation, from an ``expiry`` that may be those days or the days remaining.

    The key's creation time tells them apart: a lifetime in whole days reads back whole, while the days
    remaining are whole only at the moment a whole number of days has passed, and add up with the key's age
    to a whole number. Anything else is taken as read.
    """
    if created_at is None or now is None or _whole(expiry, 1e-6):
        return expiry
    total = expiry + (now - created_at).total_seconds() / 86400
    return float(round(total)) if _whole(total, _EXPIRY_SKEW_DAYS) else expiry


def whole_days(days: float | None) -> float | int | None:
    """A number of days as people write it: 90, not 90.0."""
    return int(days) if days is not None and float(days).is_integer() else days


def _whole(value: float, tolerance: float) -> bool:
    return abs(value - round(value)) <= tolerance


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


async def read_live(client: CapellaClient, org_id: str, *, now: datetime | None = None) -> LiveState:
    """One snapshot of the organization's models and keys, read concurrently; ``now`` as for ``parse_key``."""
    raw_models, raw_keys = await asyncio.gather(client.list_models(org_id), client.list_api_keys(org_id))
    warnings: list[str] = []
    models: list[LiveModel] = []
    for raw in raw_models:
        try:
            model = parse_model(raw)
        except LiveStateError as exc:
            warnings.append(f"skipped an unreadable model entry: {exc}")
            continue
        if model.status not in KNOWN_STATUSES:
            warnings.append(f"model {model.name!r} has an unknown status {model.status!r}; treated as in progress")
        models.append(model)
    keys: list[LiveKey] = []
    # The organization lock's leases are keys too, but no manifest's: no plan, drift report or export sees them.
    for raw in (raw for raw in raw_keys if not is_lease_key(raw)):
        try:
            keys.append(parse_key(raw, now))
        except LiveStateError as exc:
            warnings.append(f"skipped an unreadable API key entry: {exc}")
    for warning in warnings:
        log.warning(warning)
    return LiveState(org_id=org_id, models=tuple(models), keys=tuple(keys), warnings=tuple(warnings))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    """A field that should hold a list; anything else reads as empty, like a missing field."""
    return value if isinstance(value, list) else []


def _expiry(value: Any) -> float | None:
    # A number of days, whole or not. Keys live at most 365 days; a value far outside that is garbage, not a
    # date to compute with.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    days = float(value)
    return days if 0 <= days <= 36_500 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


_RFC3339 = re.compile(r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)?")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time of the API (audit fields), or None when it is not one."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    # The documented examples show nanoseconds, which datetime does not take: keep microseconds.
    fraction = (match["fraction"] or "")[:6].ljust(6, "0") if match["fraction"] else ""
    zone = match["zone"] or "Z"
    text = match["base"] + (f".{fraction}" if fraction else "") + ("+00:00" if zone == "Z" else zone)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
