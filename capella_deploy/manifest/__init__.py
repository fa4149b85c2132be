"""The manifest: what a deployment should look like, as validated, immutable values.

The pipeline, one module a step: ``yamlsource`` reads YAML files (``${VAR}`` interpolation, overlays),
``fields`` holds the values they are made of, ``spec`` the pydantic models up to ``Manifest``, ``rules`` the
cross-field checks, ``messages`` the wording of a validation error, ``load`` puts them together into
``load_manifest`` (one ``ManifestError`` listing every problem as ``file:line: path: message``), and ``schema``
writes the JSON Schema editors use (``python -m capella_deploy.manifest --write-schema``). ``credentials`` and
``offered`` check a loaded manifest against the world: credentials it can read, models Capella offers.

Other packages import the manifest from here.
"""

from capella_deploy.manifest.fields import NAME_PATTERN, PROVIDER_CREDENTIALS, UUID_PATTERN, admits
from capella_deploy.manifest.load import LoadedManifest, ManifestError, load_manifest, read_manifest
from capella_deploy.manifest.schema import main, manifest_json_schema, schema_text
from capella_deploy.manifest.spec import (
    DEFAULT_CHECK_PROMPT,
    ApiKeySpec,
    Cache,
    CheckSpec,
    Defaults,
    Manifest,
    ModelSpec,
    ProviderSpec,
    Routing,
    Scope,
    effective_region,
)
from capella_deploy.manifest.yamlsource import ManifestIssue

__all__ = [
    "DEFAULT_CHECK_PROMPT",
    "NAME_PATTERN",
    "PROVIDER_CREDENTIALS",
    "UUID_PATTERN",
    "ApiKeySpec",
    "Cache",
    "CheckSpec",
    "Defaults",
    "LoadedManifest",
    "Manifest",
    "ManifestError",
    "ManifestIssue",
    "ModelSpec",
    "ProviderSpec",
    "Routing",
    "Scope",
    "admits",
    "effective_region",
    "load_manifest",
    "main",
    "manifest_json_schema",
    "read_manifest",
    "schema_text",
]
