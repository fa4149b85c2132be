"""Model API keys: immutable, shown once, identified by their name.

Everything about the kind lives here: reading a key from the API (its lifetime, however the API reports it),
the attributes the planner compares, its create body, and its export entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from capella_deploy.kinds.base import ExportNotes, LiveStateError, first_problem
from capella_deploy.kinds.parsing import as_list, as_mapping, as_str, parse_time
from capella_deploy.manifest import ApiKeySpec, Defaults

# A key's lifetime read as days remaining adds up with its age to whole days, give or take the time between
# the server's reading and ours and the skew of the two clocks.
_EXPIRY_SKEW_DAYS = 5 / (24 * 60)


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


def key_age(key: LiveKey) -> tuple[float, str]:
    """Sort key: among live keys of one name, the newest (the one to keep) sorts last."""
    return (key.created_at.timestamp() if key.created_at else 0.0, key.id)


def parse_key(raw: Mapping[str, Any], now: datetime | None = None) -> LiveKey:
    """One key; ``now`` (the time of the reading) lets an ``expiry`` given as days remaining be read as the
    lifetime the key was given, so a key does not look changed as it ages."""
    key_id = raw.get("keyId", raw.get("id"))
    name = raw.get("name")
    if not isinstance(key_id, str) or not isinstance(name, str):
        raise LiveStateError("an API key entry has no keyId or name")
    allowed: list[tuple[str, str]] = []
    for entry in as_list(raw.get("allowedModels")):
        if isinstance(entry, Mapping):
            allowed.append((str(entry.get("id", "")), str(entry.get("name", entry.get("id", "")))))
        elif isinstance(entry, str):
            allowed.append((entry, entry))
    cidrs = as_list(raw.get("allowedCIDRs"))
    created_at = parse_time(as_mapping(raw.get("audit")).get("createdAt"))
    expiry = _expiry(raw.get("expiry"))
    return LiveKey(
        id=key_id,
        name=name,
        description=as_str(raw.get("description")) or None,
        region=as_str(raw.get("region")),
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


def _expiry(value: Any) -> float | None:
    # A number of days, whole or not. Keys live at most 365 days; a value far outside that is garbage, not a
    # date to compute with.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    days = float(value)
    return days if 0 <= days <= 36_500 else None


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


def export_entry(key: LiveKey, exported_ids: Mapping[str, str], notes: ExportNotes) -> dict[str, Any] | None:
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
        notes.omitted.append(f"apiKey {key.name!r}: {first_problem(exc)}")
        return None
    return entry
