"""The values a manifest is made of: the patterns its text must match, each with the hint a message gives,
the field types and value checks several models share, which credentials each provider type takes, and ``Loc``,
a place in the manifest, with ``show`` and ``format_loc`` to write about it in messages.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
)

from capella_deploy.secrets import redact

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
PATTERN_HINTS = {
    NAME_PATTERN: "use letters, digits, '.', '_' and '-', starting with a letter or digit",
    REGION_PATTERN: "a cloud region is lowercase letters, digits and '-', e.g. us-east-1, us-central1, eastus",
    MODEL_REF_PATTERN: 'name a model of this manifest, or "*" for all of them',
    ORG_ID_PATTERN: "an organization id is a UUID such as 6af08c0a-8cab-4c1c-b257-b521575c16d0 (letters, digits, '-')",
    ENV_VAR_PATTERN: "the name of an environment variable: letters, digits and '_', e.g. CLOUDBASE_API_KEY",
    BUCKET_PATTERN: "an S3 bucket name is 3 to 63 lowercase letters, digits, '.' and '-', e.g. team-docs",
    SCOPE_PATTERN: "an fnmatch pattern over names: letters, digits, '.', '_', '-' and * ? [...], e.g. team-a-*",
}


def int_from_text(value: object) -> object:
    """``gpuMemory: ${GPU}`` reaches validation as text; the choice fields need the number."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return value


def blank_is_unset(value: object) -> object:
    """``${VAR:-}`` yields "", which means "not set" for optional text such as a region."""
    return None if value == "" else value


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
Region = Annotated[Annotated[str, Field(max_length=64, pattern=REGION_PATTERN)] | None, BeforeValidator(blank_is_unset)]
Cidr = Annotated[str, AfterValidator(_check_cidr)]
ModelRef = Annotated[str, Field(pattern=MODEL_REF_PATTERN)]


ProviderType = Literal["openAI", "awsBedrock", "awsS3"]
# The credential fields each provider type takes, and those it requires; the API reads none of them back.
PROVIDER_CREDENTIALS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openAI": (("apiKey",), ("apiKey",)),
    "awsBedrock": (("accessKeyId", "secretAccessKey"), ("accessKeyId", "secretAccessKey")),
    "awsS3": (("accessKeyId", "secretAccessKey", "sessionToken"), ("accessKeyId", "secretAccessKey")),
}
# The non-secret configuration, awsS3 only: reads show it, so the plan compares it.
S3_SETTINGS = ("awsRegion", "bucket", "folderPath")
# The fields of spec.ProviderCredentials: a credential some provider type takes.
CREDENTIAL_FIELDS = frozenset(field for allowed, _ in PROVIDER_CREDENTIALS.values() for field in allowed)


# A place in the manifest, e.g. ("models", 0, "region"), which format_loc writes as models[0].region.
Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def show(value: object) -> str:
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


def admits(allowed_models: Sequence[str], model: str) -> bool:
    """Whether a key whose allowedModels is this list may call the model: "*" admits every model. The key's
    region must match the model's too (``spec.effective_region``)."""
    return "*" in allowed_models or model in allowed_models
