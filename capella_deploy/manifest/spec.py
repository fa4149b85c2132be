"""The manifest as pydantic models: every section, its fields, defaults and descriptions, up to ``Manifest``.

The models are the single source of the JSON Schema (``schema``) and of the field checks; ``Manifest`` also runs
the cross-field rules (``rules``) unless ``load`` runs them itself to place each problem at its file and line.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from capella_deploy.manifest.fields import (
    BUCKET_PATTERN,
    ENV_VAR_PATTERN,
    NAME_PATTERN,
    ORG_ID_PATTERN,
    PATTERN_HINTS,
    SCOPE_PATTERN,
    Cidr,
    EnvironmentName,
    ModelRef,
    Name,
    Provider,
    ProviderType,
    Region,
    RoutingStrategy,
    blank_is_unset,
    format_loc,
    int_from_text,
    show,
)
from capella_deploy.manifest.rules import cross_field_problems

# Passed as validation context by load_manifest, which runs the cross-field checks itself so that
# their problems carry their own paths and lines.
DEFER_CROSS_CHECKS = "defer_cross_checks"


def _check_org_id(value: str | None) -> str | None:
    # A check rather than a schema pattern: the schema also validates raw files, where `${CAPELLA_ORG_ID}` stands.
    if value is not None and not re.fullmatch(ORG_ID_PATTERN, value):
        raise ValueError(f"{show(value)} is not valid: {PATTERN_HINTS[ORG_ID_PATTERN]}")
    return value


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
    gpuMemory: Annotated[Literal[24, 48, 192], BeforeValidator(int_from_text)] = Field(
        description="GPU memory in GB: 24, 48 or 192."
    )
    cpu: Annotated[Literal[4, 32] | None, BeforeValidator(int_from_text)] = Field(
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
    description: Annotated[str | None, BeforeValidator(blank_is_unset)] = Field(default=None, max_length=250)
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
    credentialsVersion: Annotated[int, BeforeValidator(int_from_text)] = Field(
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
        f'{show(value)} is not allowed; give the expected vector length (e.g. 2048) or "declared" '
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
    expectOrganizationName: Annotated[Annotated[str, Field(max_length=256)] | None, BeforeValidator(blank_is_unset)] = (
        Field(
            default=None,
            description="The organization's name as Capella shows it: plan, apply, drift and destroy refuse to act "
            "on an organization of another name.",
        )
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
        if isinstance(info.context, Mapping) and info.context.get(DEFER_CROSS_CHECKS):
            return self
        problems = cross_field_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(f"{format_loc(loc)}: {message}" for loc, message in problems))
        return self


def effective_region(entry: ModelSpec | ApiKeySpec, defaults: Defaults) -> str | None:
    """The region a model deploys to or a key works in: its own, else the manifest's default."""
    return entry.region or defaults.region
