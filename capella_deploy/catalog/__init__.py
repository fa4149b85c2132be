"""What Capella AI Services offers: cloud providers, regions, compute sizes and catalog models.

The offering is data, ``catalog.json`` beside this module, with a ``version`` (raised on every change) and
the date it was last checked against Capella. The tool checks a manifest against it before anything is
created, and the sandbox refuses exactly what it does not list, so the two cannot disagree. The Management
API has no endpoint that lists the catalog, so the file is kept by hand (README: "The catalog").

The API's enums are wider than the offering: ``cloudConfig.provider`` takes aws, gcp and azure, but models
deploy on aws only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

DATA_FILE = Path(__file__).resolve().with_name("catalog.json")

# A catalog model's kind: what the Management API reports as config.type and filters on as modelKind.
TEXT_GENERATION = "text-generation"
EMBEDDING_GENERATION = "embedding-generation"
MODERATION = "moderation"
PROMPT_INJECTION = "prompt-injection"
MODEL_KINDS = (TEXT_GENERATION, EMBEDDING_GENERATION, MODERATION, PROMPT_INJECTION)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    kind: str
    vendor: str  # what the Management API reports as config.provider
    dimensions: int | None = None  # embedding models only: the longest vector they produce, and the default


@dataclass(frozen=True)
class Catalog:
    version: int
    checked: date
    providers: tuple[str, ...]
    regions: tuple[str, ...]
    gpu_memory: tuple[int, ...]
    cpu: tuple[int, ...]
    models: Mapping[str, CatalogModel]

    @property
    def label(self) -> str:
        """How messages name this catalog, so a stale one is recognised as such."""
        return f"catalog version {self.version}, checked {self.checked.isoformat()}"


def load(path: Path = DATA_FILE) -> Catalog:
    """Read and check a catalog file; a malformed one raises ValueError naming the file and the field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the catalog ({exc})") from None
    try:
        return parse(data)
    except KeyError as exc:
        raise ValueError(f"{path}: not a valid catalog: the field {exc} is missing") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid catalog: {exc}") from None


def parse(data: Any) -> Catalog:
    if not isinstance(data, dict):
        raise TypeError("the document must be a JSON object")
    version = data["version"]
    if type(version) is not int or version < 1:
        raise ValueError(f"version must be a whole number from 1; got {version!r}")
    models: dict[str, CatalogModel] = {}
    for entry in _list(data, "models", dict):
        model = CatalogModel(
            name=_text(entry, "name"),
            kind=_text(entry, "kind"),
            vendor=_text(entry, "vendor"),
            dimensions=entry.get("dimensions"),
        )
        if model.kind not in MODEL_KINDS:
            raise ValueError(f"model {model.name}: kind must be one of {', '.join(MODEL_KINDS)}; got {model.kind!r}")
        embedding = model.kind == EMBEDDING_GENERATION
        if embedding != (type(model.dimensions) is int and model.dimensions > 0):
            raise ValueError(f"model {model.name}: an embedding model, and only one, has dimensions (a number)")
        if model.name in models:
            raise ValueError(f"model {model.name} is listed twice")
        models[model.name] = model
    return Catalog(
        version=version,
        checked=date.fromisoformat(_text(data, "checked")),
        providers=tuple(_list(data, "providers", str)),
        regions=tuple(_list(data, "regions", str)),
        gpu_memory=tuple(_list(data, "gpu_memory", int)),
        cpu=tuple(_list(data, "cpu", int)),
        models=MappingProxyType(models),
    )


def _list(data: dict[str, Any], key: str, item: type) -> list[Any]:
    value = data[key]
    if not isinstance(value, list) or not value or not all(type(v) is item for v in value):
        raise ValueError(f"{key} must be a non-empty list of {item.__name__}")
    if item is not dict and len(set(value)) != len(value):  # models are told apart by name, below
        raise ValueError(f"{key} lists a value twice")
    return value


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be text")
    return value


CATALOG: Catalog = load()
