"""Clone: the same deployment for another region, as a new manifest document, and what of it Capella does not
offer. Pure.

Every region field moves to the target region, every model, key and provider name takes a suffix (names are
unique in an organization, so a clone without one would replace the originals), and references to renamed
models follow, as do the scope's patterns and former names (renamedFrom). API keys are declared again with the
same settings: a token cannot be copied, so apply creates new keys and writes their new tokens. ``prune`` is
dropped, because a clone's prune pattern would match the original resources, which the clone does not declare,
and delete them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capella_deploy.catalog import Catalog
from capella_deploy.manifest import LoadedManifest, Manifest
from capella_deploy.manifest.offered import unoffered

_SUFFIX = re.compile(r"^[A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CloneResult:
    document: dict[str, Any]
    renamed_models: dict[str, str]  # old name -> new name
    renamed_keys: dict[str, str]
    warnings: tuple[str, ...]


def default_suffix(region: str) -> str:
    return f"-{region}"


def clone_manifest(
    document: Mapping[str, Any],
    *,
    region: str,
    name_suffix: str,
    provider: str | None = None,
    org_id: str | None = None,
) -> CloneResult:
    """``document`` is a manifest as plain data (validated, defaults not filled in); it is not modified.

    Raises ValueError for a suffix that cannot be part of a name.
    """
    if not _SUFFIX.match(name_suffix):
        raise ValueError(f"name suffix {name_suffix!r} may hold only letters, digits, '.', '_' and '-'")
    doc: dict[str, Any] = _without_nulls(copy.deepcopy(dict(document)))
    warnings: list[str] = []
    if org_id is not None:
        doc["organizationId"] = org_id

    defaults = doc.setdefault("defaults", {})
    defaults["region"] = region
    if provider is not None:
        defaults["provider"] = provider

    # Every name takes the suffix, so each pattern of the scope takes it too: it then owns exactly the clone's
    # names. A former name (renamedFrom) is the clone's former name.
    scope = doc.get("scope")
    if scope is not None:
        patterns = [scope["match"]] if isinstance(scope["match"], str) else scope["match"]
        scope["match"] = [pattern + name_suffix for pattern in patterns]
    for entry in [*doc.get("models", []), *doc.get("apiKeys", [])]:
        if "renamedFrom" in entry:
            entry["renamedFrom"] += name_suffix
    renamed: dict[str, str] = {}
    for model in doc.get("models", []):
        renamed[model["name"]] = model["name"] + name_suffix
        model["name"] = renamed[model["name"]]
        _move(model, region, provider)
    # A semantic cache embeds with a model of the manifest (which follows its rename) or a deployed model's id,
    # which names a model of the original region.
    for where, holder in [("defaults", defaults), *((f"model {m['name']!r}", m) for m in doc.get("models", []))]:
        semantic = (holder.get("cache") or {}).get("semantic") or {}
        embedding = semantic.get("embeddingModel")
        if embedding in renamed:
            semantic["embeddingModel"] = renamed[embedding]
        elif embedding is not None:
            warnings.append(
                f"{where}: the semantic cache embeds with the deployed model {embedding}, which is not part of the "
                f"clone; name an embedding model deployed in {region} instead"
            )
    renamed_keys: dict[str, str] = {}
    for key in doc.get("apiKeys", []):
        renamed_keys[key["name"]] = key["name"] + name_suffix
        key["name"] = renamed_keys[key["name"]]
        _move(key, region, None)
        if "allowedModels" in key:
            key["allowedModels"] = [renamed.get(ref, ref) for ref in key["allowedModels"]]
    # Providers are organization-wide, so a clone in the same organization declares providers of its own: destroying
    # the clone then never deletes the original's. Their credentials are the same references.
    for provider_entry in doc.get("providers", []):
        provider_entry["name"] += name_suffix
        files = sorted(ref["file"] for ref in (provider_entry.get("credentials") or {}).values() if "file" in ref)
        if files:
            warnings.append(
                f"provider {provider_entry['name']!r} reads credentials from {', '.join(files)}, relative to the "
                "manifest that names it: in the clone, relative to the clone's file; check it still points there"
            )
    # Checks call the clone's own models with the clone's own keys.
    for check in doc.get("checks", []):
        if check.get("model") in renamed:
            check["model"] = renamed[check["model"]]
        if check.get("apiKey") in renamed_keys:
            check["apiKey"] = renamed_keys[check["apiKey"]]

    if doc.pop("prune", None) is not None:
        warnings.append(
            "prune was dropped: its pattern would match the original resources, which the clone does not "
            "declare, and delete them; add a prune block that matches only the clone's names if you want one"
        )
    return CloneResult(doc, renamed, renamed_keys, tuple(warnings))


def unoffered_in_clone(
    clone: Manifest, source: LoadedManifest, catalog: Catalog, *, region: str, provider: str | None
) -> list[str]:
    """What the clone asks for that ``catalog`` does not offer, each said where it comes from.

    A region comes from --to-region, a provider from --provider when given; anything else the clone took from
    the source manifest, at the same place (a clone keeps the order of models and keys), so it is located there.
    """
    problems: dict[str, None] = {}  # in order, once: every region of the clone is the one --to-region
    for problem in unoffered(clone, catalog):
        field = problem.loc[-1]
        if field == "region":
            problems[f"--to-region {region}: {problem.message}"] = None
        elif field == "provider" and provider is not None:
            problems[f"--provider {provider}: {problem.message}"] = None
        else:
            problems[str(source.issue_at(problem.loc, problem.message))] = None
    return list(problems)


def _without_nulls(value: Any) -> Any:
    """Drop null entries: in a manifest, an optional field set to null means the same as leaving it out."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _move(entry: dict[str, Any], region: str, provider: str | None) -> None:
    if "region" in entry:
        entry["region"] = region
    if provider is not None and "provider" in entry:
        entry["provider"] = provider
