"""The manifest: what a deployment should look like, as validated, immutable values.

``load_manifest`` reads one or more YAML files (see ``yamlsource`` for reading, ``${VAR}``
interpolation and overlay merging), validates the result against the models below, runs the
cross-field checks, and raises one ``ManifestError`` listing every problem as
``file:line: path: message``. ``manifest_json_schema`` is the JSON Schema editors use; the committed
copy in ``schemas/`` is regenerated with ``python -m capella_deploy.manifest --write-schema``.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import ipaddress
import json
import os
import re
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from capella_deploy.lease import NAME_PREFIX as LEASE_NAME_PREFIX
from capella_deploy.manifest.patterns import example_outside, matches_some_name
from capella_deploy.manifest.yamlsource import (
    ManifestIssue,
    YMap,
    YNode,
    YScalar,
    locate,
    merge_sources,
    read_source,
    references,
    to_plain,
)
from capella_deploy.secrets import API_TOKEN_VARIABLE, redact

__all__ = [
    "ApiKeySpec",
    "Cache",
    "CheckExpect",
    "CheckKind",
    "CheckSpec",
    "CredentialRef",
    "Defaults",
    "InPlaceAttribute",
    "Jailbreak",
    "LoadedManifest",
    "Manifest",
    "ManifestError",
    "ManifestIssue",
    "ModelSpec",
    "OutputsSpec",
    "Provider",
    "ProviderCredentials",
    "ProviderSpec",
    "ProviderType",
    "Prune",
    "Routing",
    "RoutingStrategy",
    "Scope",
    "SemanticCache",
    "load_manifest",
    "manifest_json_schema",
    "read_manifest",
    "schema_text",
    "write_schema",
]

SCHEMA_ID = "urn:capella-deploy:schema:manifest:v1"
DEFAULT_SCHEMA_PATH = Path("schemas/manifest.schema.json")
PACKAGED_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "manifest.schema.json"
# Passed as validation context by load_manifest, which runs the cross-field checks itself so that
# their problems carry their own paths and lines.
_DEFER_CROSS_CHECKS = "defer_cross_checks"

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# aws us-east-1, gcp us-central1 / europe-west4, azure eastus / westeurope: lowercase words and digits.
REGION_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
# Capella ids are UUIDs. The id becomes part of every API path, so only letters, digits and '-' may pass.
ORG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
MODEL_REF_PATTERN = r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]*)$"
# A deployed model's id, as the API gives it.
UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# AWS's rule for S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens.
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# A pattern over names: the characters of a name, and fnmatch's * ? [ ] !
SCOPE_PATTERN = r"^[A-Za-z0-9._*?!\[\]-]+$"
_PATTERN_HINTS = {
    NAME_PATTERN: "use letters, digits, '.', '_' and '-', starting with a letter or digit",
    REGION_PATTERN: "a cloud region is lowercase letters, digits and '-', e.g. us-east-1, us-central1, eastus",
    MODEL_REF_PATTERN: 'name a model of this manifest, or "*" for all of them',
    ORG_ID_PATTERN: "an organization id is a UUID such as 6af08c0a-8cab-4c1c-b257-b521575c16d0 (letters, digits, '-')",
    ENV_VAR_PATTERN: "the name of an environment variable: letters, digits and '_', e.g. CLOUDBASE_API_KEY",
    BUCKET_PATTERN: "an S3 bucket name is 3 to 63 lowercase letters, digits, '.' and '-', e.g. team-docs",
    SCOPE_PATTERN: "an fnmatch pattern over names: letters, digits, '.', '_', '-' and * ? [...], e.g. team-a-*",
}


def _int_from_text(value: object) -> object:
    """``gpuMemory: ${GPU}`` reaches validation as text; the choice fields need the number."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return value


def _blank_is_unset(value: object) -> object:
    """``${VAR:-}`` yields "", which means "not set" for optional text such as a region."""
    return None if value == "" else value


def _check_org_id(value: str | None) -> str | None:
    # A check rather than a schema pattern: the schema also validates raw files, where `${CAPELLA_ORG_ID}` stands.
    if value is not None and not re.fullmatch(ORG_ID_PATTERN, value):
        raise ValueError(f"{_show(value)} is not valid: {_PATTERN_HINTS[ORG_ID_PATTERN]}")
    return value


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"'{value}' is not an IP address or CIDR block; write e.g. 10.0.0.0/16, 203.0.113.7 or 2001:db8::/32"
        ) from None
    return value


Provider = Literal["aws", "gcp", "azure"]
RoutingStrategy = Literal[
    "round-robin", "least-latency", "throughput", "least-requests", "least-cache-usage", "prefix-aware"
]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]
# Short: it becomes part of file paths, comment markers, artifact names and the lock's lease description.
EnvironmentName = Annotated[str, Field(min_length=1, max_length=32, pattern=NAME_PATTERN)]
# The constraints sit on the text arm: a blank value is turned into None first, and None has no length.
Region = Annotated[
    Annotated[str, Field(max_length=64, pattern=REGION_PATTERN)] | None, BeforeValidator(_blank_is_unset)
]
Cidr = Annotated[str, AfterValidator(_check_cidr)]
ModelRef = Annotated[str, Field(pattern=MODEL_REF_PATTERN)]


def _field_title(name: str, info: object) -> str:
    return name  # the YAML key itself, rather than pydantic's "Allowedcidrs"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, field_title_generator=_field_title)


class Routing(_Spec):
    """Model Service request routing (X-cb-routing-strategy, X-cb-max-retries, X-cb-request-duration)."""

    strategy: RoutingStrategy | None = Field(
        default=None, description="X-cb-routing-strategy; the service default is round-robin."
    )
    maxRetries: int | None = Field(default=None, ge=0, le=10, description="X-cb-max-retries, 0..10.")
    requestTimeoutSeconds: int | None = Field(default=None, ge=1, description="X-cb-request-duration in seconds.")


class SemanticCache(_Spec):
    """Settings of the semantic cache (the create body's caching.semantic)."""

    embeddingModel: str | None = Field(
        default=None,
        description="The embedding model the cache compares prompts with: the name of a model of this manifest, "
        "or the id of a deployed model (not a catalog name).",
    )
    dimensions: int | None = Field(default=None, ge=1, description="Embedding dimensions.")
    distanceMetric: Literal["dot_product", "cosine", "l2_norm"] | None = None


class Cache(_Spec):
    """Model caching: the model's caching config and the X-cb-cache* header profile."""

    type: Literal["standard", "semantic", "none"] = Field(
        default="standard", description="X-cb-cache: standard, semantic or none."
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Semantic match threshold, 0..1 (X-cb-cache-threshold).",
    )
    expirySeconds: int | None = Field(
        default=None, ge=1, description="Cache entry lifetime in seconds (X-cb-cache-expiry-duration)."
    )
    conversational: bool | None = Field(default=None, description="Enable the conversational cache.")
    semantic: SemanticCache | None = None

    @model_validator(mode="after")
    def _threshold_the_model_accepts(self) -> Cache:
        # The header takes 0..1, but a semantic threshold also becomes the model's caching.semantic.scoreThreshold,
        # which the Management API takes strictly between 0 and 1: refuse here, not halfway through an apply.
        if self.type == "semantic" and self.threshold in (0, 1):
            raise ValueError(
                f"threshold {self.threshold:g} is not allowed for a semantic cache: "
                "use a value strictly between 0 and 1 (the model's scoreThreshold)"
            )
        return self


# The in-place attributes a manifest may leave to be managed by hand (see ModelSpec.unmanagedAttributes).
InPlaceAttribute = Literal["enableBatching", "keywordFiltering", "cache"]
_UNMANAGED_DESCRIPTION = (
    "In-place attributes managed by hand (enableBatching, keywordFiltering, cache): sent on create when set, "
    "then never compared, updated or reset. Any other in-place attribute left unset is reset to the API's default "
    "(batching off, no keyword filtering, no caching)."
)


class Jailbreak(_Spec):
    """Jailbreak detection."""

    scoreThreshold: float = Field(
        gt=0, lt=1, allow_inf_nan=False, description="Score above which a prompt is refused, strictly between 0 and 1."
    )


class ModelSpec(_Spec):
    """A deployed model, identified by its name."""

    name: Name = Field(description="Identity of the model: unique in the organization.")
    renamedFrom: Name | None = Field(
        default=None,
        description="The model's former name: a live model of that name (and none of this one) is renamed in "
        "place. Keep it until every organization this manifest deploys to has the new name.",
    )
    catalogModel: str = Field(min_length=1, description="Catalog model name, e.g. mistralai/mistral-7b-instruct-v0.3.")
    provider: Provider | None = Field(
        default=None, description="Cloud provider: aws, gcp or azure; defaults.provider when unset."
    )
    region: Region = Field(default=None, description="Cloud region, e.g. us-east-1; defaults.region when unset.")
    gpuMemory: Annotated[Literal[24, 48, 192], BeforeValidator(_int_from_text)] = Field(
        description="GPU memory in GB: 24, 48 or 192."
    )
    cpu: Annotated[Literal[4, 32] | None, BeforeValidator(_int_from_text)] = Field(
        default=None, description="vCPUs: 4 or 32."
    )
    state: Literal["running", "paused"] = Field(default="running", description="running or paused.")
    preventDestroy: bool = Field(default=False, description="Refuse to plan a delete or replace of this model.")
    quantization: Literal["fp8", "fp16", "fullPrecision"] | None = None
    optimization: Literal["throughput", "latency"] | None = None
    dimensions: int | None = Field(default=None, ge=1, description="Output dimensions of an embedding model.")
    enableBatching: bool | None = None
    guardrails: tuple[str, ...] | None = Field(default=None, description="Guardrail categories, e.g. [hate speech].")
    jailbreak: Jailbreak | None = None
    keywordFiltering: tuple[str, ...] | None = Field(
        default=None, description="Keywords filtered from requests and responses."
    )
    cache: Cache | None = Field(default=None, description="Caching; defaults.cache when unset.")
    routing: Routing | None = Field(default=None, description="Routing header profile; defaults.routing when unset.")
    unmanagedAttributes: tuple[InPlaceAttribute, ...] | None = Field(
        default=None, description=_UNMANAGED_DESCRIPTION + " Replaces defaults.unmanagedAttributes when set."
    )


class ApiKeySpec(_Spec):
    """A Model API key, identified by its name. Any change means a new key."""

    name: Name = Field(description="Identity of the key: unique in the organization.")
    renamedFrom: Name | None = Field(
        default=None,
        description="The key's former name: keys cannot be edited, so a live key of that name (and none of this "
        "one) is succeeded by a new key of this name, its token written to the outputs, then deleted.",
    )
    description: Annotated[str | None, BeforeValidator(_blank_is_unset)] = Field(default=None, max_length=250)
    region: Region = Field(
        default=None, description="The key works for models of this region only; defaults.region when unset."
    )
    expiryDays: int = Field(default=180, ge=1, le=365, description="Lifetime in days, 1..365.")
    allowedCIDRs: tuple[Cidr, ...] = Field(
        min_length=1, description="Addresses allowed to use the key: IPs or CIDR blocks."
    )
    allowedModels: tuple[ModelRef, ...] = Field(
        default=("*",), min_length=1, description='Model names of this manifest, or "*".'
    )
    rotateBeforeDays: int = Field(
        default=0,
        ge=0,
        le=364,
        description="Plan a rotation when the key expires within this many days; below expiryDays.",
    )
    preventDestroy: bool = Field(default=False, description="Refuse to plan a delete or rotation of this key.")


# -- AI provider integrations -------------------------------------------------------------------------

ProviderType = Literal["openAI", "awsBedrock", "awsS3"]
# The credential fields each provider type takes, and those it requires; the API reads none of them back.
PROVIDER_CREDENTIALS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openAI": (("apiKey",), ("apiKey",)),
    "awsBedrock": (("accessKeyId", "secretAccessKey"), ("accessKeyId", "secretAccessKey")),
    "awsS3": (("accessKeyId", "secretAccessKey", "sessionToken"), ("accessKeyId", "secretAccessKey")),
}
# The non-secret configuration, awsS3 only: reads show it, so the plan compares it.
S3_SETTINGS = ("awsRegion", "bucket", "folderPath")
_LITERAL_CREDENTIAL = (
    "a credential is never written in the manifest (nor put there by ${VAR}): refer to it as {env: VARIABLE} "
    "or {file: PATH}, which apply reads when it sends the credential"
)


def _reference_only(value: object) -> object:
    # Refused before any other check, so no message ever quotes what may be a secret.
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(_LITERAL_CREDENTIAL)
    return value


class CredentialRef(_Spec):
    """Where apply reads one credential: an environment variable or a file (relative to the manifest file)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    env: Annotated[str, Field(pattern=ENV_VAR_PATTERN)] | None = Field(
        default=None, description="The environment variable holding the credential."
    )
    file: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="A file holding the credential (a final newline is not part of it), relative to the manifest.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> CredentialRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give either env: VARIABLE or file: PATH, not both or neither")
        return self


Credential = Annotated[CredentialRef | None, BeforeValidator(_reference_only)]


class ProviderCredentials(_Spec):
    """References to the credentials, by type: openAI apiKey; awsBedrock accessKeyId and secretAccessKey; awsS3
    accessKeyId, secretAccessKey and optionally sessionToken."""

    apiKey: Credential = None
    accessKeyId: Credential = None
    secretAccessKey: Credential = None
    sessionToken: Credential = None


class ProviderSpec(_Spec):
    """An AI provider integration: credentials Capella uses to reach an outside AI service or storage."""

    name: Annotated[str, Field(min_length=1, max_length=50, pattern=NAME_PATTERN)] = Field(
        description="Identity of the provider: unique in the organization, at most 50 characters."
    )
    renamedFrom: Name | None = Field(
        default=None,
        description="The provider's former name: the API cannot rename a provider, so a live one of that name (and "
        "none of this one) is succeeded by a new provider of this name, its credentials sent, then deleted.",
    )
    type: ProviderType = Field(description="openAI, awsBedrock or awsS3; a change replaces the provider.")
    awsRegion: Region = Field(default=None, description="awsS3 only (required there): the bucket's AWS region.")
    bucket: Annotated[str, Field(pattern=BUCKET_PATTERN)] | None = Field(
        default=None, description="awsS3 only (required there): the S3 bucket."
    )
    folderPath: str | None = Field(default=None, description="awsS3 only: a folder of the bucket; unset: its root.")
    credentials: ProviderCredentials = Field(
        description="Where apply reads each credential ({env: VARIABLE} or {file: PATH}); never the values."
    )
    credentialsVersion: Annotated[int, BeforeValidator(_int_from_text)] = Field(
        default=1,
        ge=1,
        description="Credentials cannot be read back: raise this number to send them again (a roll).",
    )
    preventDestroy: bool = Field(default=False, description="Refuse to plan a delete or replace of this provider.")


class Defaults(_Spec):
    """Values for every model and key that does not set its own."""

    provider: Provider = "aws"
    region: Region = None
    routing: Routing | None = None
    cache: Cache | None = None
    unmanagedAttributes: tuple[InPlaceAttribute, ...] = Field(default=(), description=_UNMANAGED_DESCRIPTION)


class Prune(_Spec):
    """Opt in to deleting live resources the manifest does not declare."""

    match: str = Field(
        min_length=1, description="fnmatch-style pattern; unmanaged resources whose name matches are deleted."
    )


def _one_or_more(value: object) -> object:
    """One pattern may be written without a list around it."""
    return [value] if isinstance(value, str) else value


NamePattern = Annotated[str, Field(min_length=1, max_length=128, pattern=SCOPE_PATTERN)]


class Scope(_Spec):
    """The names this manifest owns: no plan, drift report, prune, export or saved plan of it sees the others."""

    match: Annotated[
        tuple[NamePattern, ...],
        BeforeValidator(_one_or_more),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": 128, "pattern": SCOPE_PATTERN},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": SCOPE_PATTERN},
                    },
                ]
            }
        ),
    ] = Field(
        min_length=1,
        description="fnmatch pattern(s) over names, e.g. [team-a-*]; every name the manifest declares must match one.",
    )

    @property
    def patterns(self) -> tuple[str, ...]:
        return self.match

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    def describe(self) -> str:
        return ", ".join(self.patterns)


class OutputsSpec(_Spec):
    """Where connection strings and key tokens are written."""

    path: str = Field(
        default=".capella/outputs.json",
        min_length=1,
        description="Outputs file; when unset and the manifest has an environment, .capella/ENVIRONMENT/outputs.json.",
    )
    format: Literal["json", "dotenv"] = "json"


# -- checks -------------------------------------------------------------------------------------------

CheckKind = Literal["chat", "chat-stream", "completion", "embedding"]
DEFAULT_CHECK_PROMPT = "Reply with the single word OK."


def _check_endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"'{value}' is not an http(s) base URL; write e.g. https://ENV_ID.api.tcloudbasegateway.com/v1/ai/hunyuan"
        )
    if parts.username is not None or parts.password is not None:
        # Printed in every check table: a credential in it would leak. The key belongs in apiKeyEnv.
        raise ValueError("put no credentials in the URL; name the environment variable holding the key in apiKeyEnv")
    if parts.query or parts.fragment:
        raise ValueError("give the base URL only (no ?query or #fragment); /chat/completions etc. are appended to it")
    return value.rstrip("/")


def _dimensions_choice(value: object) -> object:
    """A number of dimensions or "declared"; one clear message instead of one per member of the union."""
    if value is None or value == "declared":
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(
        f'{_show(value)} is not allowed; give the expected vector length (e.g. 2048) or "declared" '
        "for the model's own dimensions"
    )


Endpoint = Annotated[str, AfterValidator(_check_endpoint)]
Dimensions = Annotated[int | Literal["declared"] | None, BeforeValidator(_dimensions_choice)]


class CheckExpect(_Spec):
    """What a check's answer must satisfy; every assertion set here must hold for the check to pass."""

    nonEmpty: bool = Field(default=True, description="The answer has text (chat, completion) or a vector (embedding).")
    contains: str | None = Field(
        default=None, min_length=1, description="Text the answer must contain, ignoring case (not for embedding)."
    )
    dimensions: Dimensions = Field(
        default=None,
        description='embedding only: the vector length, or "declared" for the model\'s declared dimensions.',
    )
    maxLatencyMs: int | None = Field(default=None, ge=1, description="Longest acceptable time to the whole answer.")
    maxFirstTokenMs: int | None = Field(
        default=None, ge=1, description="chat-stream only: longest acceptable time to the first token."
    )


class CheckSpec(_Spec):
    """A smoke test run after apply and by `capella-deploy verify` (like a Terraform check block)."""

    name: Name = Field(description="Names the check in results; unique among the checks.")
    kind: CheckKind = Field(description="chat, chat-stream (SSE until data: [DONE]), completion or embedding.")
    model: Name | None = Field(
        default=None, description="A model of this manifest to call at its connection string; or give endpoint."
    )
    endpoint: Endpoint | None = Field(
        default=None,
        description="Base URL of an external OpenAI-compatible API, e.g. https://ENV.api.tcloudbasegateway.com"
        "/v1/ai/hunyuan; /chat/completions, /completions or /embeddings is appended.",
    )
    endpointModel: str | None = Field(
        default=None, min_length=1, description="With endpoint: the model name to request, e.g. hy3-preview."
    )
    apiKey: Name | None = Field(
        default=None,
        description="With model: the API key of this manifest to call with; else the first key of the model's "
        "region that allows it.",
    )
    apiKeyEnv: Annotated[str, Field(pattern=ENV_VAR_PATTERN)] | None = Field(
        default=None, description="Environment variable holding the API key (required with endpoint)."
    )
    prompt: str = Field(
        default=DEFAULT_CHECK_PROMPT, min_length=1, description="The prompt; for embedding, the text to embed."
    )
    maxTokens: int = Field(default=64, ge=1, le=4096, description="max_tokens of chat and completion requests.")
    timeoutSeconds: float = Field(
        default=30, gt=0, le=600, allow_inf_nan=False, description="Give up on the answer after this long."
    )
    expect: CheckExpect = CheckExpect()


class Manifest(_Spec):
    """A capella-deploy manifest: the models and API keys an organization should have."""

    apiVersion: Literal["capella-deploy/v1"] = Field(description="Always capella-deploy/v1.")
    environment: EnvironmentName | None = Field(
        default=None,
        description="The environment this manifest deploys (e.g. staging, production), or --environment: "
        "it names the plan comment, the lock's holder and the default outputs path .capella/ENVIRONMENT/outputs.json.",
    )
    organizationId: Annotated[str | None, AfterValidator(_check_org_id)] = Field(
        default=None,
        description="Organization id. Left out: CAPELLA_ORG_ID (not with --sandbox), else the token's only "
        "organization. Set but empty (an unset ${VAR:-}) is an error.",
    )
    expectOrganizationName: Annotated[
        Annotated[str, Field(max_length=256)] | None, BeforeValidator(_blank_is_unset)
    ] = Field(
        default=None,
        description="The organization's name as Capella shows it: plan, apply, drift and destroy refuse to act "
        "on an organization of another name.",
    )
    defaults: Defaults = Defaults()
    models: tuple[ModelSpec, ...] = ()
    apiKeys: tuple[ApiKeySpec, ...] = ()
    providers: tuple[ProviderSpec, ...] = Field(
        default=(), description="AI provider integrations: credentials for outside AI services and storage."
    )
    scope: Scope | None = Field(
        default=None,
        description="The names this manifest owns, in an organization it shares: live resources outside are "
        "invisible to its plans, drift reports, prunes, exports and saved plans.",
    )
    prune: Prune | None = None
    outputs: OutputsSpec = OutputsSpec()
    checks: tuple[CheckSpec, ...] = Field(
        default=(), description="Smoke tests of the deployed models or external endpoints, run after apply."
    )

    @property
    def outputs_path(self) -> str:
        """Where the outputs go: outputs.path when set, else a file of this environment's own, if it has one."""
        if "path" in self.outputs.model_fields_set or self.environment is None:
            return self.outputs.path
        return f".capella/{self.environment}/outputs.json"

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Manifest:
        if isinstance(info.context, Mapping) and info.context.get(_DEFER_CROSS_CHECKS):
            return self
        problems = cross_field_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(f"{_format_loc(loc)}: {message}" for loc, message in problems))
        return self


# -- cross-field checks -------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def cross_field_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Checks spanning several fields, on plain data that may be wrong elsewhere (so: defensively)."""
    problems: list[tuple[Loc, str]] = []
    defaults = data.get("defaults")
    written_default = defaults.get("region") if isinstance(defaults, Mapping) else None
    default_region = _region(written_default)
    models = _entries(data.get("models"))
    keys = _entries(data.get("apiKeys"))
    problems += _unique_names("models", models)
    problems += _unique_names("apiKeys", keys)
    providers = _entries(data.get("providers"))
    problems += _rename_problems("models", models)
    problems += _rename_problems("apiKeys", keys)
    problems += _rename_problems("providers", providers)
    problems += _scope_problems(data, {"models": models, "apiKeys": keys, "providers": providers})

    model_regions: dict[str, str | None] = {}
    for index, model in models:
        if model.get("region") in (None, "") and written_default in (None, ""):
            problems.append((("models", index, "region"), "no region: set region here or defaults.region"))
        name = _text(model.get("name"))
        if name is not None:
            model_regions.setdefault(name, _effective_region(model.get("region"), default_region))

    declared = ", ".join(sorted(model_regions)) or "none"
    renamed: dict[str, str] = {}
    for _, model in models:
        if (old := _text(model.get("renamedFrom"))) and (name := _text(model.get("name"))):
            renamed.setdefault(old, name)
    for index, key in keys:
        if (_text(key.get("name")) or "").startswith(LEASE_NAME_PREFIX):
            problems.append(
                (("apiKeys", index, "name"), f"names starting with {LEASE_NAME_PREFIX} are the organization lock's")
            )
        if key.get("region") in (None, "") and written_default in (None, ""):
            problems.append((("apiKeys", index, "region"), "no region: set region here or defaults.region"))
        region = _effective_region(key.get("region"), default_region)
        # Digit text (from a ${VAR}) counts as the number pydantic will make of it.
        expiry = _int_from_text(key.get("expiryDays", 180))
        rotate = _int_from_text(key.get("rotateBeforeDays", 0))
        if type(expiry) is int and type(rotate) is int and 1 <= expiry <= 365 and rotate >= expiry:
            problems.append(
                (
                    ("apiKeys", index, "rotateBeforeDays"),
                    f"must be less than expiryDays ({expiry}), or every plan would rotate the key",
                )
            )
        allowed = key.get("allowedModels")
        if not isinstance(allowed, (list, tuple)):
            continue
        for position, ref in enumerate(allowed):
            if not isinstance(ref, str) or ref == "*":
                continue
            loc: Loc = ("apiKeys", index, "allowedModels", position)
            if ref in renamed and ref not in model_regions:
                problems.append(
                    (loc, f"model '{ref}' is renamed to '{renamed[ref]}' (renamedFrom); name '{renamed[ref]}'")
                )
            elif ref not in model_regions:
                problems.append((loc, f"no model named '{ref}' in the manifest (models: {declared}); or use \"*\""))
            elif region is not None and model_regions[ref] is not None and model_regions[ref] != region:
                problems.append(
                    (
                        loc,
                        f"model '{ref}' is in {model_regions[ref]} but this key is for {region}; "
                        "a key works only for models of its own region",
                    )
                )
    problems += _embedding_problems(defaults if isinstance(defaults, Mapping) else {}, models)
    problems += _check_problems(_entries(data.get("checks")), models, keys, default_region)
    problems += _provider_problems(providers)
    return problems


def _provider_problems(providers: list[tuple[int, Mapping[str, Any]]]) -> list[tuple[Loc, str]]:
    """What each provider type takes: its credential fields, and the S3 settings for awsS3 alone."""
    problems = _unique_names("providers", providers)
    for index, provider in providers:
        kind = provider.get("type")
        if kind not in PROVIDER_CREDENTIALS:
            continue  # field validation reports the type
        here: Loc = ("providers", index)
        if kind == "awsS3":
            for field in ("awsRegion", "bucket"):
                if provider.get(field) in (None, ""):
                    problems.append(((*here, field), f"required for an awsS3 provider: the {_S3_WHAT[field]}"))
        else:
            for field in S3_SETTINGS:
                if provider.get(field) is not None:
                    problems.append(((*here, field), f"only an awsS3 provider has {field}; this one is {kind}"))
        credentials = provider.get("credentials")
        if not isinstance(credentials, Mapping):
            continue
        allowed, required = PROVIDER_CREDENTIALS[kind]
        for field in required:
            if credentials.get(field) is None:
                problems.append(
                    (
                        (*here, "credentials", field),
                        f"required for an {kind} provider: refer to it as {{env: VARIABLE}} or {{file: PATH}}",
                    )
                )
        for field, value in credentials.items():
            if isinstance(value, Mapping) and value.get("env") == API_TOKEN_VARIABLE:
                problems.append(
                    (
                        (*here, "credentials", field, "env"),
                        f"{API_TOKEN_VARIABLE} is the Management API token, not a credential of this provider",
                    )
                )
            if field not in allowed and field in ProviderCredentials.model_fields and value is not None:
                problems.append(
                    (
                        (*here, "credentials", field),
                        f"an {kind} provider takes no {field}; it takes {', '.join(allowed)}",
                    )
                )
    return problems


_S3_WHAT = {"awsRegion": "bucket's AWS region, e.g. us-east-1", "bucket": "S3 bucket's name"}


_EMBEDDING = ("cache", "semantic", "embeddingModel")


def _embedding_problems(
    defaults: Mapping[str, Any], models: list[tuple[int, Mapping[str, Any]]]
) -> list[tuple[Loc, str]]:
    """A semantic cache's embeddingModel is a deployed model: one of this manifest (by name) or an id."""
    names = {name: index for index, model in models if (name := _text(model.get("name"))) is not None}
    problems: list[tuple[Loc, str]] = []
    written: list[tuple[Loc, object]] = [(("defaults", *_EMBEDDING), _dig(defaults, _EMBEDDING))]
    written += [(("models", index, *_EMBEDDING), _dig(model, _EMBEDDING)) for index, model in models]
    for loc, ref in written:
        if isinstance(ref, str) and ref not in names and not UUID_PATTERN.fullmatch(ref):
            problems.append((loc, _embedding_hint(ref, models, names)))

    # Which model each model's effective cache embeds with, and where that is written; no model may wait
    # for itself, directly or through others.
    depends: dict[str, tuple[str, Loc]] = {}
    default_cache = _mapping_at(defaults, "cache")
    for index, model in models:
        name = _text(model.get("name"))
        own = _mapping_at(model, "cache")
        kind = own.get("type", default_cache.get("type", "standard"))
        ref, loc = _dig(own, _EMBEDDING[1:]), ("models", index, *_EMBEDDING)
        if ref is None:
            ref, loc = _dig(default_cache, _EMBEDDING[1:]), ("defaults", *_EMBEDDING)
        if name is not None and kind == "semantic" and isinstance(ref, str) and ref in names:
            depends[name] = (ref, loc)
    for name, (ref, loc) in depends.items():
        path, current = [name], ref
        while current in depends and current not in path:
            path.append(current)
            current = depends[current][0]
        if current == name:
            loop = " -> ".join([*path, name])
            how = "would cache with itself" if len(path) == 1 else f"is in a loop of semantic caches ({loop})"
            problems.append(
                (
                    loc,
                    f"model '{name}' {how}: an embedding model must be ready before the model that caches "
                    "with it; give the embedding model its own cache (e.g. cache: {type: none})",
                )
            )
    return problems


def _embedding_hint(ref: str, models: list[tuple[int, Mapping[str, Any]]], names: Mapping[str, int]) -> str:
    """Why ``ref`` is not an embedding model the API takes, and what to write instead."""
    if "/" in ref:
        deploying = sorted(
            name for index, model in models if (name := _text(model.get("name"))) and model.get("catalogModel") == ref
        )
        if deploying:
            suggestion = f"; name '{deploying[0]}', the model of this manifest that deploys it"
        else:
            suggestion = "; declare a model that deploys it and name that model here"
        return (
            f"'{ref}' is a catalog model name, but the cache needs a deployed embedding model: the name of a model "
            f"of this manifest or a deployed model's id{suggestion}"
        )
    declared = ", ".join(sorted(names)) or "none"
    return (
        f"no model named '{ref}' in the manifest (models: {declared}); name a model of this manifest or give a "
        "deployed model's id (a UUID)"
    )


def _mapping_at(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _dig(data: Mapping[str, Any], path: Sequence[str]) -> object:
    current: object = data
    for part in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _check_problems(
    checks: list[tuple[int, Mapping[str, Any]]],
    models: list[tuple[int, Mapping[str, Any]]],
    keys: list[tuple[int, Mapping[str, Any]]],
    default_region: str | None,
) -> list[tuple[Loc, str]]:
    """What a check refers to must exist and be callable, and its assertions must fit its kind."""
    problems = _unique_names("checks", checks)
    model_by_name = {name: model for _, model in models if (name := _text(model.get("name"))) is not None}
    key_by_name = {name: key for _, key in keys if (name := _text(key.get("name"))) is not None}
    for index, check in checks:
        found: list[tuple[tuple[str, ...], str]] = _assertion_problems(check)
        if check.get("endpoint") is not None:
            found += _endpoint_problems(check)
        elif check.get("model") is None:
            found.append(((), "name a model of this manifest (model:) or an external API (endpoint:)"))
        else:
            found += _model_problems(check, model_by_name, key_by_name, default_region)
        problems += [(("checks", index, *where), message) for where, message in found]
    return problems


def _expect(check: Mapping[str, Any]) -> Mapping[str, Any]:
    expect = check.get("expect")
    return expect if isinstance(expect, Mapping) else {}


def _assertion_problems(check: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    kind, expect = check.get("kind"), _expect(check)
    only = {
        "contains": kind != "embedding",
        "dimensions": kind == "embedding",
        "maxFirstTokenMs": kind == "chat-stream",
    }
    return [
        (("expect", field), f"does not apply to kind: {kind}")
        for field, applies in only.items()
        if expect.get(field) is not None and not applies
    ]


def _endpoint_problems(check: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    if check.get("model") is not None:
        found.append(
            (
                ("model",),
                "give model (of this manifest) or endpoint, not both; name the endpoint's model in endpointModel",
            )
        )
    if check.get("endpointModel") is None:
        found.append(((), "endpointModel is required with endpoint: the model name to request, e.g. hy3-preview"))
    if check.get("apiKeyEnv") is None:
        found.append(((), "apiKeyEnv is required with endpoint: the environment variable holding its API key"))
    if check.get("apiKey") is not None:
        found.append((("apiKey",), "a key of this manifest works only for its own models; use apiKeyEnv"))
    if _expect(check).get("dimensions") == "declared":
        found.append((("expect", "dimensions"), '"declared" needs a model of this manifest; give the number'))
    return found


def _model_problems(
    check: Mapping[str, Any],
    model_by_name: Mapping[str, Mapping[str, Any]],
    key_by_name: Mapping[str, Mapping[str, Any]],
    default_region: str | None,
) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    if check.get("endpointModel") is not None:
        found.append((("endpointModel",), "only with endpoint; a model of this manifest is called by its catalog name"))
    name = _text(check.get("model"))
    model = model_by_name.get(name) if name is not None else None
    if name is None or model is None:
        if name is not None:  # malformed names are reported by field validation
            declared = ", ".join(sorted(model_by_name)) or "none"
            found.append((("model",), f"no model named '{name}' in the manifest (models: {declared})"))
        return found
    if _expect(check).get("dimensions") == "declared" and model.get("dimensions") is None:
        found.append(
            (("expect", "dimensions"), f"model '{name}' declares no dimensions; declare them or give the number")
        )
    region = _effective_region(model.get("region"), default_region)
    key_name = _text(check.get("apiKey"))
    if key_name is None:
        if check.get("apiKeyEnv") is None and not any(
            _key_admits(key, name, region, default_region) for key in key_by_name.values()
        ):
            found.append(
                (
                    (),
                    f"no API key of this manifest can call model '{name}' (region {region}): add one whose "
                    "allowedModels include it, or give apiKeyEnv",
                )
            )
        return found
    if check.get("apiKeyEnv") is not None:
        found.append((("apiKeyEnv",), "give apiKey (a key of this manifest) or apiKeyEnv, not both"))
    key = key_by_name.get(key_name)
    if key is None:
        declared = ", ".join(sorted(key_by_name)) or "none"
        found.append((("apiKey",), f"no API key named '{key_name}' in the manifest (apiKeys: {declared})"))
    elif not _key_admits(key, name, region, default_region):
        found.append(
            (
                ("apiKey",),
                f"key '{key_name}' cannot call model '{name}': a key works only for models of its own region "
                "that its allowedModels list",
            )
        )
    return found


def _key_admits(key: Mapping[str, Any], model: str, region: str | None, default_region: str | None) -> bool:
    allowed = key.get("allowedModels", ["*"])
    listed = isinstance(allowed, (list, tuple)) and ("*" in allowed or model in allowed)
    return listed and _effective_region(key.get("region"), default_region) == region


def _entries(value: object) -> list[tuple[int, Mapping[str, Any]]]:
    if not isinstance(value, (list, tuple)):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, Mapping)]


def _unique_names(section: str, entries: list[tuple[int, Mapping[str, Any]]]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for index, entry in entries:
        name = _text(entry.get("name"))
        if name is None:
            continue
        if name in first:
            message = f"'{name}' is already the name of {section}[{first[name]}]; names must be unique"
            problems.append(((section, index, "name"), message))
        else:
            first[name] = index
    return problems


def _rename_problems(section: str, entries: list[tuple[int, Mapping[str, Any]]]) -> list[tuple[Loc, str]]:
    """A former name belongs to one entry, and to no entry the manifest still declares by that name."""
    names = {name: index for index, entry in entries if (name := _text(entry.get("name"))) is not None}
    claimed: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for index, entry in entries:
        old = _text(entry.get("renamedFrom"))
        if old is None:
            continue
        loc: Loc = (section, index, "renamedFrom")
        if old == _text(entry.get("name")):
            problems.append((loc, f"'{old}' is this entry's own name; remove renamedFrom"))
        elif old in names:
            problems.append(
                (
                    loc,
                    f"'{old}' is the name of {section}[{names[old]}], which the manifest still declares; a "
                    "resource is renamed from a name the manifest no longer uses",
                )
            )
        elif old in claimed:
            problems.append((loc, f"'{old}' is already the renamedFrom of {section}[{claimed[old]}]"))
        else:
            claimed[old] = index
    return problems


def _scope_problems(
    data: Mapping[str, Any], sections: Mapping[str, list[tuple[int, Mapping[str, Any]]]]
) -> list[tuple[Loc, str]]:
    """Every name the manifest declares, or renames from, is inside its scope, and so is what it prunes."""
    written = _mapping_at(data, "scope").get("match")
    listed = [written] if isinstance(written, str) else list(written) if isinstance(written, (list, tuple)) else []
    if not listed or not all(isinstance(p, str) and re.fullmatch(SCOPE_PATTERN, p) for p in listed):
        return []  # no scope, or one that field validation reports
    patterns: list[str] = listed
    problems: list[tuple[Loc, str]] = []
    for position, pattern in enumerate(patterns):
        if not matches_some_name(pattern):
            loc: Loc = ("scope", "match") if isinstance(written, str) else ("scope", "match", position)
            problems.append(
                (
                    loc,
                    f"'{pattern}' matches no name a manifest can declare (a letter or digit, then letters, "
                    "digits, '.', '_' and '-')",
                )
            )
    shown = ", ".join(patterns)
    for section, entries in sections.items():
        for index, entry in entries:
            name, old = _text(entry.get("name")), _text(entry.get("renamedFrom"))
            if name is not None and not _covered(name, patterns):
                problems.append(
                    (
                        (section, index, "name"),
                        f"'{name}' is outside the manifest's scope ({shown}): rename it to match, or widen scope.match",
                    )
                )
            if old is not None and not _covered(old, patterns):
                problems.append(
                    (
                        (section, index, "renamedFrom"),
                        f"'{old}' is outside the manifest's scope ({shown}), so no plan "
                        "of this manifest sees the resource to rename; widen scope.match",
                    )
                )
    prune = _mapping_at(data, "prune").get("match")
    if isinstance(prune, str) and prune:
        outside = example_outside(prune, patterns)
        if outside is not None:
            problems.append(
                (
                    ("prune", "match"),
                    f"'{prune}' reaches outside the manifest's scope ({shown}): it matches "
                    f"'{outside}', for one; prune acts only inside the scope, so write a pattern within it",
                )
            )
    return problems


def _covered(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _effective_region(own: object, default: str | None) -> str | None:
    return default if own in (None, "") else _region(own)


def _region(value: object) -> str | None:
    """A region fit to compare: malformed ones are reported by field validation, not compared."""
    text = _text(value)
    return text if text is not None and re.fullmatch(REGION_PATTERN, text) else None


# -- loading ------------------------------------------------------------------------------------------


class ManifestError(Exception):
    """Every problem found in the manifest files, in the order the files were given, then by line."""

    def __init__(self, issues: Sequence[ManifestIssue], files: Sequence[str] = ()) -> None:
        rank = {name: index for index, name in enumerate(files)}
        self.issues: list[ManifestIssue] = sorted(
            issues, key=lambda i: (rank.get(i.file, len(rank)), i.file, i.line or 0, i.path)
        )
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest with what its files said beyond the values: which variables they use, who set what."""

    manifest: Manifest
    # The names the files reference as ${NAME}, whether or not a value was found.
    variables_used: frozenset[str]
    _tree: YMap

    def file_that_set(self, *loc: str | int) -> str | None:
        """The file that supplied the value at ``loc`` (e.g. "outputs", "path"); None when it is a default."""
        node: YNode = self._tree
        for part in loc:
            found = locate(node, (part,))
            if found is node:
                return None
            node = found
        return node.pos.file

    def issue_at(self, loc: Loc, message: str) -> ManifestIssue:
        """A problem with the value at ``loc`` (e.g. ("models", 0, "region")), at the file and line that set it."""
        return locate(self._tree, loc).pos.issue(_format_loc(loc), message)


def load_manifest(
    paths: Sequence[str | Path],
    *,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    environment: str | None = None,
) -> Manifest:
    """Read, merge, interpolate and validate manifest files; raise ``ManifestError`` listing every problem.

    ``variables`` (``--var K=V``) win over ``environ``, which defaults to ``os.environ``; a variable the files
    never reference is a problem (a misspelt name would otherwise be ignored and its default used).
    ``environment`` (``--environment``) sets the manifest's environment; a manifest that names another one is
    an error.
    """
    return read_manifest(paths, variables=variables, environ=environ, environment=environment).manifest


def read_manifest(
    paths: Sequence[str | Path],
    *,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    environment: str | None = None,
) -> LoadedManifest:
    """``load_manifest``, keeping what the files said about variables and where each value came from."""
    if not paths:
        raise ManifestError([ManifestIssue("(no file)", None, "", "no manifest given; pass one or more -f FILE")])
    lookup = dict(os.environ if environ is None else environ)
    lookup.update(variables or {})

    issues: list[ManifestIssue] = []
    trees: list[YMap] = []
    referenced: set[str] = set()
    unreadable = False
    for path in paths:
        source = read_source(Path(path), lookup)
        issues.extend(source.issues)
        referenced |= source.referenced
        if source.tree is None:
            unreadable = True
        else:
            trees.append(source.tree)
    if unreadable:  # validating what is left would only add noise about the missing parts
        raise ManifestError(issues, [str(path) for path in paths])
    issues.extend(_unused_variables(variables or {}, referenced, [str(path) for path in paths]))

    tree, merge_issues = merge_sources(trees)
    issues.extend(merge_issues)
    issues.extend(_empty_organization(tree))
    data = to_plain(tree)
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data, context={_DEFER_CROSS_CHECKS: True})
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose every item is invalid is also "too short" (the count is of valid items): the items'
        # own messages say what is wrong, the count would only add a puzzle.
        with_bad_items = {tuple(e["loc"][:-1]) for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
        for error in errors:
            if error["type"] == "too_short" and tuple(error["loc"]) in with_bad_items:
                continue
            issue = _issue_at(tree, error["loc"], _describe(error))
            if issue is not None:
                issues.append(issue)
    for loc, message in cross_field_problems(data):
        issue = _issue_at(tree, loc, message)
        if issue is not None:
            issues.append(issue)
    if environment is not None and manifest is not None and manifest.environment not in (None, environment):
        issue = _issue_at(
            tree,
            ("environment",),
            f"this manifest is for environment '{manifest.environment}', not '{environment}' (--environment)",
        )
        issues.extend([issue] if issue is not None else [])
    if issues or manifest is None:
        raise ManifestError(issues, [str(path) for path in paths])
    if environment is not None:
        manifest = manifest.model_copy(update={"environment": environment})
    return LoadedManifest(manifest, frozenset(referenced), tree)


def _empty_organization(tree: YMap) -> list[ManifestIssue]:
    """An organizationId the files set that came out empty: without this, the run would fall back to
    CAPELLA_ORG_ID or the token's only organization, which may be another organization than the one meant."""
    node = tree.entries.get("organizationId")
    if not isinstance(node, YScalar) or node.tainted:
        return []
    if node.value is not None and not (isinstance(node.value, str) and not node.value.strip()):
        return []
    node.tainted = True  # the validation error about the same value would only repeat this less clearly
    names = references(node.written or "")
    if names:
        message = (
            "the manifest sets organizationId but it is empty after interpolation: "
            f"set {' or '.join(names)} or remove the field"
        )
    else:
        message = (
            "the manifest sets organizationId but it is empty: write the organization id, or remove the field "
            "to use CAPELLA_ORG_ID or the token's only organization"
        )
    return [node.pos.issue("organizationId", message)]


def _unused_variables(variables: Mapping[str, str], referenced: set[str], files: Sequence[str]) -> list[ManifestIssue]:
    issues = []
    for name in sorted(set(variables) - referenced):
        close = difflib.get_close_matches(name, sorted(referenced), n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (it uses: {', '.join(sorted(referenced)) or 'none'})"
        issues.append(
            ManifestIssue(f"--var {name}", None, "", f"no manifest file ({', '.join(files)}) uses ${{{name}}}{hint}")
        )
    return issues


def _issue_at(tree: YNode, loc: Loc, message: str) -> ManifestIssue | None:
    node = locate(tree, loc)
    if isinstance(node, YScalar) and node.tainted:
        return None  # the interpolation problem at this spot is already reported
    return node.pos.issue(_format_loc(loc), message)


def _format_loc(loc: Loc) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


# -- error messages -----------------------------------------------------------------------------------


def _describe(error: ErrorDetails) -> str:
    """A message that says what is wrong and what to write instead."""
    kind, loc, value = error["type"], error["loc"], error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        info = _field_at(loc)
        hint = f": {info.description}" if info is not None and info.description else ""
        return f"required field '{loc[-1]}' is missing{hint}"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        return _unknown_field(str(loc[-1]), list(model.model_fields) if model is not None else [])
    if kind == "literal_error":
        return f"{_show(value)} is not allowed; use one of {ctx['expected']}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"{_show(value)} is not valid: {_PATTERN_HINTS.get(pattern, f'must match {pattern}')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value entries), got {_show(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_show(value)}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "string_type":
        quote = "; put it in quotes" if isinstance(value, (int, float, bool)) or value is None else ""
        return f"expected text, got {_show(value)}{quote}"
    message = error["msg"].replace("Input should be", "must be")
    return f"{message} (got {_show(value)})"


def _unknown_field(name: str, allowed: list[str]) -> str:
    by_lower = {field.lower(): field for field in allowed}
    guess = by_lower.get(name.lower())
    if guess is None:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        guess = by_lower[close[0]] if close else None
    if guess is not None:
        return f"unknown field '{name}'; did you mean '{guess}'?"
    return f"unknown field '{name}'; allowed fields: {', '.join(allowed)}"


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A message quotes enough of a value to recognise it, never a whole file's worth; secrets are masked
        # first, as a cut would leave part of one that no later masking recognises.
        value = redact(value)
        return f"'{value}'" if len(value) <= 80 else f"'{value[:60]}…' ({len(value)} characters)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return str(value)


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class validating the value at ``loc``, following field annotations from Manifest."""
    current: Any = Manifest
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = get_args(current)
            if get_origin(current) is not tuple or not args:
                return None
            current = args[0]
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_at(loc: Sequence[str | int]) -> FieldInfo | None:
    model = _model_at(loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return None
    return model.model_fields.get(loc[-1])


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and ``X | None`` down to X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


# -- JSON Schema --------------------------------------------------------------------------------------


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of a manifest file, generated from the models."""
    generated = Manifest.model_json_schema()
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "capella-deploy manifest",
        "description": (
            "Models and Model API keys of a Couchbase Capella AI Services organization, as capella-deploy "
            "plans and applies them. String values may use ${VAR} and ${VAR:-default}."
        ),
    }
    schema.update({key: value for key, value in generated.items() if key not in ("title", "description")})
    return schema


def schema_text() -> str:
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: str | Path = DEFAULT_SCHEMA_PATH) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_text(), encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capella_deploy.manifest", description="Print or write the manifest JSON Schema."
    )
    parser.add_argument(
        "--write-schema",
        nargs="?",
        const="",
        metavar="PATH",
        help=f"write the schema to PATH (default: {DEFAULT_SCHEMA_PATH} and the packaged copy) instead of printing it",
    )
    args = parser.parse_args(argv)
    if args.write_schema is None:
        sys.stdout.write(schema_text())
        return 0
    # The repository publishes the schema in schemas/; the package ships its own copy for `capella-deploy schema`.
    targets = [args.write_schema] if args.write_schema else [DEFAULT_SCHEMA_PATH, PACKAGED_SCHEMA_PATH]
    for target in targets:
        print(f"wrote {write_schema(target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
