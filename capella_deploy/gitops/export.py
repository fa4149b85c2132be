"""Export: a manifest of what is live, which plans as no changes against the same organization. Pure.

Each kind (kinds/) writes its live resources back as manifest entries holding every attribute the planner
compares, in the manifest's vocabulary, in dependency order so that a reference (a key's models) can name what
was exported before it. What a manifest cannot say is left out with a warning (and a comment in the YAML)
rather than guessed: guardrails and jailbreak settings (the API never returns them), a caching object with no
``cache`` block that maps onto it exactly, a key that names a model outside the export, a provider's
credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from capella_deploy.kinds import REGISTRY
from capella_deploy.kinds.base import ExportNotes, ExportScope
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
    selected = ExportScope(match, region)
    document: dict[str, Any] = {"apiVersion": API_VERSION, "organizationId": live.org_id}
    owned = _owned(match, scope)
    if owned:
        document["scope"] = {"match": owned}
    exported: dict[str, str] = {}
    for kind in REGISTRY:
        entries = kind.export(live.of(kind.kind), selected, exported, notes)
        if entries:
            document[kind.section] = entries
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
