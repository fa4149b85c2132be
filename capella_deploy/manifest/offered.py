"""What a manifest asks for that Capella does not offer, by the catalog (``capella_deploy.catalog``).

``unoffered`` is pure: a manifest and a catalog in, problems out, each with the manifest location that asks
for it and the resources whose create Capella would refuse. It checks what a create body carries and the
API refuses with a 422: the cloud provider, the region, the compute sizes, the catalog model, and
dimensions (embedding models only, at most the model's own). The commands decide what a problem means:
``validate`` warns, ``plan``, ``apply`` and ``clone`` refuse unless told ``--skip-catalog-check``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from capella_deploy.catalog import Catalog
from capella_deploy.manifest.fields import Loc, show
from capella_deploy.manifest.load import LoadedManifest
from capella_deploy.manifest.spec import Manifest, effective_region

_CLOSE = 0.75
# Longer text is no near miss of a catalog name, and comparing it would cost time for nothing.
_LONGEST_GUESSED = 200


@dataclass(frozen=True)
class Unoffered:
    """One thing the manifest asks for that the catalog does not list."""

    loc: Loc  # where the manifest says it: ("models", 0, "region"), or ("defaults", "region") when inherited
    message: str
    addresses: tuple[str, ...]  # the resources whose create would be refused: "model.chat", "apiKey.app"


@dataclass(frozen=True)
class CatalogFinding:
    text: str  # "file:line: path: message"
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class CatalogCheck:
    """A manifest's problems with the catalog, located in its files, and whether the user chose to skip them."""

    catalog: str  # the catalog's label: its version and when it was checked
    findings: tuple[CatalogFinding, ...] = ()
    skipped: bool = False


def check_catalog(loaded: LoadedManifest, catalog: Catalog, *, skipped: bool = False) -> CatalogCheck:
    findings = tuple(
        CatalogFinding(str(loaded.issue_at(problem.loc, problem.message)), problem.addresses)
        for problem in unoffered(loaded.manifest, catalog)
    )
    return CatalogCheck(catalog.label, findings, skipped)


def unoffered(manifest: Manifest, catalog: Catalog) -> list[Unoffered]:
    """Every value the catalog does not offer, once per place it is written, in manifest order."""
    found: dict[tuple[Loc, str], list[str]] = {}

    def add(loc: Loc, message: str, address: str) -> None:
        found.setdefault((loc, message), []).append(address)

    defaults = manifest.defaults
    for index, model in enumerate(manifest.models):
        address, here = f"model.{model.name}", ("models", index)
        provider = model.provider or defaults.provider
        if provider not in catalog.providers:
            where = (*here, "provider") if model.provider else ("defaults", "provider")
            add(where, _not_offered("cloud provider", provider, catalog.providers), address)
        region = effective_region(model, defaults)
        if region is not None and region not in catalog.regions:
            where = (*here, "region") if model.region else ("defaults", "region")
            add(where, _not_offered("region", region, catalog.regions), address)
        if model.gpuMemory not in catalog.gpu_memory:
            add((*here, "gpuMemory"), _not_offered("gpuMemory", model.gpuMemory, catalog.gpu_memory), address)
        if model.cpu is not None and model.cpu not in catalog.cpu:
            add((*here, "cpu"), _not_offered("cpu", model.cpu, catalog.cpu), address)
        entry = catalog.models.get(model.catalogModel)
        if entry is None:
            add((*here, "catalogModel"), _not_offered("catalog model", model.catalogModel, catalog.models), address)
        elif model.dimensions is not None and entry.dimensions is None:
            message = f"dimensions applies to embedding models only; {entry.name} is a {entry.kind} model"
            add((*here, "dimensions"), message, address)
        elif model.dimensions is not None and entry.dimensions is not None and model.dimensions > entry.dimensions:
            message = f"{entry.name} produces at most {entry.dimensions} dimensions; got {model.dimensions}"
            add((*here, "dimensions"), message, address)
    for index, key in enumerate(manifest.apiKeys):
        region = effective_region(key, defaults)
        if region is not None and region not in catalog.regions:
            where = ("apiKeys", index, "region") if key.region else ("defaults", "region")
            add(where, _not_offered("region", region, catalog.regions), f"apiKey.{key.name}")
    return [Unoffered(loc, message, tuple(addresses)) for (loc, message), addresses in found.items()]


def _not_offered(what: str, value: str | int, offered: Iterable[str | int]) -> str:
    choices = [str(choice) for choice in offered]
    if not isinstance(value, str):  # a size: the list says it all
        return f"{what} {value} is not offered; offered: {', '.join(choices)}"
    close = _closest(value, choices) if len(value) <= _LONGEST_GUESSED else []
    guess = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"{what} {show(value)} is not offered{guess}; offered: {', '.join(choices)}"


def _closest(value: str, choices: list[str]) -> list[str]:
    """The choices nearest ``value`` (ignoring case), at most two, in catalog order; none when nothing is close."""
    scores = {choice: difflib.SequenceMatcher(None, value.lower(), choice.lower()).ratio() for choice in choices}
    best = max(scores.values(), default=0.0)
    if best < _CLOSE:
        return []
    return [choice for choice in choices if scores[choice] == best][:2]
