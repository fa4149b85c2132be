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
from dataclasses import dataclass
from typing import Any

import yaml

from capella_deploy.kinds import api_key, model
from capella_deploy.kinds.api_key import key_age
from capella_deploy.kinds.base import ExportNotes, by_name
from capella_deploy.kinds.model import LiveModel, model_rank
from capella_deploy.live import LiveState
from capella_deploy.manifest.patterns import example_outside

API_VERSION = "capella-deploy/v1"
DEFAULT_SCHEMA_REF = "schemas/manifest.schema.json"


@dataclass(frozen=True)
class ExportResult:
    document: dict[str, Any]
    omitted: tuple[str, ...]  # what the manifest leaves out, and why
    warnings: tuple[str, ...]  # what else a reader should know


def export_manifest(
    live: LiveState, *, match: str | None = None, region: str | None = None, scope: Sequence[str] = ()
) -> ExportResult:
    """The manifest document for ``live``; ``match`` (fnmatch on names) and ``region`` narrow it. The document
    owns ``scope`` (patterns over names), narrowed to ``match`` where that lies within it: a plan of it sees
    nothing outside what was exported from."""
    notes = ExportNotes()

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
        entry = model.export_entry(chosen, names, notes)
        if entry is not None:
            models.append(entry)
            exported_ids[chosen.id] = chosen.name

    keys: list[dict[str, Any]] = []
    for name, key_group in sorted(by_name(k for k in live.keys if wanted(k.name, k.region)).items()):
        newest = sorted(key_group, key=key_age)[-1]
        if len(key_group) > 1:
            notes.warnings.append(f"apiKey {name!r}: exported the newest key {newest.id}; older keys share the name")
        key_entry = api_key.export_entry(newest, exported_ids, notes)
        if key_entry is not None:
            keys.append(key_entry)

    document: dict[str, Any] = {"apiVersion": API_VERSION, "organizationId": live.org_id}
    owned = _owned(match, scope)
    if owned:
        document["scope"] = {"match": owned}
    if models:
        document["models"] = models
    if keys:
        document["apiKeys"] = keys
    return ExportResult(document, tuple(notes.omitted), tuple(notes.warnings))


def _owned(match: str | None, scope: Sequence[str]) -> list[str]:
    """The scope of an export: the pattern it was narrowed to, if that lies within ``scope``; else ``scope``."""
    if match is not None and (not scope or example_outside(match, scope) is None):
        return [match]
    return list(scope)


def manifest_yaml(
    document: Mapping[str, Any], comments: Sequence[str] = (), *, schema_ref: str = DEFAULT_SCHEMA_REF
) -> str:
    """YAML text for a manifest document, headed by the schema line editors read and ``comments``."""
    header = [f"# yaml-language-server: $schema={schema_ref}"]
    header += [f"# {line}".rstrip() for text in comments for line in text.splitlines()]
    body = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    return "\n".join(header) + "\n" + body
