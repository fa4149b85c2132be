"""Validation of Management API request bodies.

Two kinds of refusal, as the spec separates them: a body that cannot be decoded (not a JSON object, a field
of the wrong JSON type) is ``undecodable`` (400 where the operation lists it); anything else wrong (missing
or unknown fields, values outside an enum or range, a catalog model, provider or region not offered,
dimensions on a non-embedding model, a field PUT cannot change) is ``invalid`` (422). Unknown fields are
refused rather than ignored, so a client sending a field Capella does not know (the spec's own examples send
``compute.ram``) finds out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from capella_deploy.sandbox import catalog
from capella_deploy.sandbox.errors import invalid, undecodable

EDITABLE_FIELDS = ("name", "caching", "enableBatching", "keywordFiltering", "guardrails", "jailbreak")
NAME_MAX = 128
DESCRIPTION_MAX = 250
EXPIRY_MAX_DAYS = 365


class Reader:
    """Typed access to one JSON object of a request body; every refusal names the field."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise undecodable(f"{where or 'the request body'} must be a JSON object")
        self.data: dict[str, Any] = data
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def only(self, allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise invalid(f"unknown field {self.path(unknown[0])}; allowed here: {', '.join(allowed)}")

    def present(self, key: str, required: bool) -> bool:
        if key in self.data and self.data[key] is not None:
            return True
        if required:
            raise invalid(f"{self.path(key)} is required")
        return False

    def string(self, key: str, *, required: bool = False, max_len: int | None = None) -> str | None:
        if not self.present(key, required):
            return None
        value = self.data[key]
        if not isinstance(value, str):
            raise undecodable(f"{self.path(key)} must be a string")
        if required and not value.strip():
            raise invalid(f"{self.path(key)} must not be empty")
        if max_len is not None and len(value) > max_len:
            raise invalid(f"{self.path(key)} is longer than {max_len} characters")
        return value

    def choice(self, key: str, choices: tuple[Any, ...], *, required: bool = False) -> Any:
        if not self.present(key, required):
            return None
        value = self.data[key]
        if isinstance(value, bool) or value not in choices:
            listed = ", ".join(str(c) for c in choices)
            raise invalid(f"{self.path(key)} must be one of {listed}; got {value!r}")
        return value

    def integer(self, key: str, *, minimum: int = 0, required: bool = False) -> int | None:
        if not self.present(key, required):
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise undecodable(f"{self.path(key)} must be an integer")
        if value < minimum:
            raise invalid(f"{self.path(key)} must be an integer of at least {minimum}")
        return value

    def number(
        self, key: str, low: float, high: float, *, required: bool = False, exclusive: bool = False
    ) -> float | None:
        if not self.present(key, required):
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise undecodable(f"{self.path(key)} must be a number")
        inside = low < value < high if exclusive else low <= value <= high
        if not inside:
            bounds = f"strictly between {low} and {high}" if exclusive else f"between {low} and {high}"
            raise invalid(f"{self.path(key)} must be {bounds}; got {value}")
        return value  # as sent: an integer stays an integer in what the API reads back

    def boolean(self, key: str) -> bool | None:
        if not self.present(key, False):
            return None
        value = self.data[key]
        if not isinstance(value, bool):
            raise undecodable(f"{self.path(key)} must be true or false")
        return value

    def strings(self, key: str, *, required: bool = False) -> list[str] | None:
        if not self.present(key, required):
            return None
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise undecodable(f"{self.path(key)} must be a list of strings")
        return value

    def child(self, key: str, *, required: bool = False) -> Reader | None:
        if not self.present(key, required):
            return None
        return Reader(self.data[key], self.path(key))


@dataclass
class ModelSpec:
    name: str
    catalog_model: catalog.CatalogModel
    cloud_provider: str
    region: str
    cpu: int
    gpu_memory: int
    options: dict[str, Any]


def parse_model_create(data: Any) -> ModelSpec:
    body = Reader(data, "")
    body.only(
        (
            "name",
            "catalogModelName",
            "cloudConfig",
            "quantization",
            "optimization",
            "dimensions",
            *EDITABLE_FIELDS[1:],
        )
    )
    name = body.string("name", required=True, max_len=NAME_MAX)
    catalog_name = body.string("catalogModelName", required=True)
    cloud = body.child("cloudConfig", required=True)
    assert name is not None and catalog_name is not None and cloud is not None
    cloud.only(("provider", "region", "compute"))
    provider = cloud.choice("provider", catalog.CLOUD_PROVIDERS, required=True)
    region = cloud.string("region", required=True)
    compute = cloud.child("compute", required=True)
    assert compute is not None and region is not None
    compute.only(("cpu", "gpuMemory"))
    cpu = compute.choice("cpu", catalog.CPU_CHOICES, required=True)
    gpu_memory = compute.choice("gpuMemory", catalog.GPU_MEMORY_CHOICES, required=True)
    options: dict[str, Any] = {}
    quantization = body.choice("quantization", catalog.QUANTIZATIONS)
    optimization = body.choice("optimization", catalog.OPTIMIZATIONS)
    dimensions = body.integer("dimensions", minimum=1)
    for key, value in (("quantization", quantization), ("optimization", optimization)):
        if value is not None:
            options[key] = value
    options.update(parse_editable(body, with_name=False))

    model = catalog.CATALOG.get(catalog_name)
    if model is None:
        raise invalid(f"catalog model {catalog_name!r} is not offered; available: {', '.join(catalog.CATALOG)}")
    if provider not in catalog.OFFERED_PROVIDERS:
        raise invalid(
            f"cloud provider {provider!r} is not offered for AI models yet; "
            f"use one of {', '.join(catalog.OFFERED_PROVIDERS)}"
        )
    if region not in catalog.REGIONS:
        raise invalid(f"region {region!r} is not offered; available: {', '.join(catalog.REGIONS)}")
    if dimensions is not None:
        if model.dimensions is None:
            raise invalid(f"dimensions applies to embedding models only; {model.name} is {model.kind}")
        if dimensions > model.dimensions:
            raise invalid(f"{model.name} produces at most {model.dimensions} dimensions")
        options["dimensions"] = dimensions
    return ModelSpec(name, model, provider, region, cpu, gpu_memory, options)


def parse_model_update(data: Any) -> dict[str, Any]:
    """The changes a PUT asks for; the body is optional, and none means no change."""
    body = Reader({} if data is None else data, "")
    fixed = sorted(set(body.data) - set(EDITABLE_FIELDS))
    if fixed:
        raise invalid(
            f"{', '.join(fixed)} cannot be changed in place; PUT accepts only {', '.join(EDITABLE_FIELDS)}. "
            "Changing anything else means deploying a new model and deleting this one."
        )
    return parse_editable(body, with_name=True)


def parse_editable(body: Reader, *, with_name: bool) -> dict[str, Any]:
    """The fields both create and PUT accept, as given (absent fields are left out)."""
    values: dict[str, Any] = {}
    if with_name:
        values["name"] = body.string("name", required=False, max_len=NAME_MAX)
        if values["name"] is not None and not values["name"].strip():
            raise invalid("name must not be empty")
    values["enableBatching"] = body.boolean("enableBatching")
    values["keywordFiltering"] = body.strings("keywordFiltering")
    values["guardrails"] = body.strings("guardrails")
    jailbreak = body.child("jailbreak")
    if jailbreak is not None:
        jailbreak.only(("scoreThreshold",))
        jailbreak.number("scoreThreshold", 0, 1, exclusive=True)
        values["jailbreak"] = jailbreak.data
    caching = body.child("caching")
    if caching is not None:
        _check_caching(caching)
        values["caching"] = caching.data
    return {k: v for k, v in values.items() if v is not None}


def _check_caching(caching: Reader) -> None:
    caching.only(("enableStandard", "enableConversational", "defaultCache", "expiryTTL", "semantic"))
    caching.boolean("enableStandard")
    caching.boolean("enableConversational")
    caching.choice("defaultCache", ("standard", "semantic"))
    caching.integer("expiryTTL", minimum=0)
    semantic = caching.child("semantic")
    if semantic is not None:
        semantic.only(("embeddingModel", "scoreThreshold", "dimensions", "distanceMetric"))
        semantic.string("embeddingModel")
        semantic.number("scoreThreshold", 0, 1, exclusive=True)
        semantic.integer("dimensions", minimum=1)
        semantic.string("distanceMetric")


@dataclass
class KeySpec:
    name: str
    description: str
    expiry_days: float
    allowed_cidrs: list[str]
    region: str
    allowed_models: list[str]


def parse_key_create(data: Any) -> KeySpec:
    body = Reader(data, "")
    body.only(("name", "description", "expiry", "allowedCIDRs", "region", "allowedModels"))
    name = body.string("name", required=True, max_len=NAME_MAX)
    description = body.string("description", max_len=DESCRIPTION_MAX) or ""
    expiry = body.number("expiry", 0, EXPIRY_MAX_DAYS, required=True)
    cidrs = body.strings("allowedCIDRs", required=True)
    region = body.string("region", required=True)
    # Empty or absent means every model of the key's region, as the spec defines it (its own example sends []).
    models = body.strings("allowedModels") or ["*"]
    assert name is not None and expiry is not None and cidrs is not None and region is not None
    if expiry <= 0:
        raise invalid(f"expiry must be a number of days above 0 and at most {EXPIRY_MAX_DAYS}")
    if not cidrs:
        raise invalid("allowedCIDRs must name at least one IP address or CIDR block")
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise invalid(f"allowedCIDRs: {cidr!r} is not an IP address or CIDR block") from exc
    if "*" in models and len(models) > 1:
        raise invalid('allowedModels is either ["*"] or a list of model ids, not both')
    if region not in catalog.REGIONS:
        raise invalid(f"region {region!r} is not offered; available: {', '.join(catalog.REGIONS)}")
    return KeySpec(name, description, expiry, cidrs, region, models)
