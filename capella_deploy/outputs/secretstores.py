"""Outputs published to a secret store, so a pipeline hands tokens to applications without files.

AWS Secrets Manager: one secret per model connection string and per key token, named
``PREFIX/models/NAME/connection-string`` and ``PREFIX/keys/NAME/token``. A secret that exists gets a new
version; one that does not is created. boto3 is an optional extra (``pip install 'capella-deploy[aws]'``)
and is imported only when a store is used. The AWS account, region and credentials come from boto3's
usual sources (environment, profile, instance role).

No value ever appears in a message: errors name the secret and the AWS error code only.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capella_deploy.outputs import OutputsError
from capella_deploy.secrets import Secret

AWS_SCHEME = "aws-secretsmanager:"
# The characters AWS accepts in a secret name; model and key names use a subset of them.
_AWS_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_HINTS = {
    "NoRegionError": "set AWS_REGION (or AWS_DEFAULT_REGION) or a profile region",
    "NoCredentialsError": "give boto3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role",
    "InvalidRequestException": "a secret scheduled for deletion cannot be written; restore it or use another prefix",
    "AccessDeniedException": "the credentials may not create or write secrets under this prefix",
}


@dataclass(frozen=True)
class SecretEntry:
    name: str
    value: Secret
    description: str


def aws_prefix(target: str | None) -> str | None:
    """PREFIX from an ``--outputs aws-secretsmanager:PREFIX`` value; None for any other target."""
    if target is None or not target.startswith(AWS_SCHEME):
        return None
    return target[len(AWS_SCHEME) :]


def secret_entries(doc: Mapping[str, Any], prefix: str) -> list[SecretEntry]:
    """The secrets an outputs document makes; a key whose token was lost in transit has none."""
    base = prefix.rstrip("/")
    if not _AWS_NAME.match(base + "/x"):
        raise OutputsError(f"secret name prefix {prefix!r} may hold only letters, digits and / _ + = . @ -")
    entries: list[SecretEntry] = []
    for name, model in sorted(doc.get("models", {}).items()):
        value = model.get("connectionString")
        if isinstance(value, str) and value:
            entries.append(
                SecretEntry(
                    f"{base}/models/{name}/connection-string",
                    Secret(value),
                    f"capella-deploy: connection string of model {name}",
                )
            )
    for name, key in sorted(doc.get("apiKeys", {}).items()):
        token = key.get("token")
        if isinstance(token, str) and token:
            entries.append(
                SecretEntry(
                    f"{base}/keys/{name}/token", Secret(token), f"capella-deploy: token of Model API key {name}"
                )
            )
    return entries


def publish_to_aws_secrets_manager(doc: Mapping[str, Any], prefix: str, *, client: Any = None) -> list[str]:
    """Write every connection string and token of the outputs ``doc``; return the secret names written."""
    entries = secret_entries(doc, prefix)
    if client is None:
        client = _default_client()
    errors = importlib.import_module("botocore.exceptions")
    written: list[str] = []
    for entry in entries:
        try:
            _write(client, entry, errors.ClientError)
        except errors.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            hint = _HINTS.get(code, "")
            raise OutputsError(
                f"AWS Secrets Manager refused {entry.name}: {code}" + (f"; {hint}" if hint else "")
            ) from None
        except errors.BotoCoreError as exc:
            raise OutputsError(_describe(exc, entry.name)) from None
        written.append(entry.name)
    return written


def _write(client: Any, entry: SecretEntry, client_error: type[Exception]) -> None:
    try:
        client.create_secret(Name=entry.name, SecretString=entry.value.reveal(), Description=entry.description)
    except client_error as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") != "ResourceExistsException":
            raise
        client.put_secret_value(SecretId=entry.name, SecretString=entry.value.reveal())


def checked_client(prefix: str) -> Any:
    """A Secrets Manager client for ``prefix``, once boto3, a region and credentials are all there.

    Nothing is sent: a missing library, region or credential is found here, before apply creates a key whose
    token would then have nowhere to go.
    """
    secret_entries({}, prefix)  # the prefix alone makes valid names
    return _default_client(require_credentials=True)


def _default_client(*, require_credentials: bool = False) -> Any:
    try:
        boto3 = importlib.import_module("boto3")
        errors = importlib.import_module("botocore.exceptions")
    except ImportError:
        raise OutputsError(
            "--outputs aws-secretsmanager:PREFIX needs boto3: pip install 'capella-deploy[aws]'"
        ) from None
    try:
        session = boto3.session.Session()
        if require_credentials and session.get_credentials() is None:
            raise errors.NoCredentialsError()
        return session.client("secretsmanager")
    except errors.BotoCoreError as exc:
        raise OutputsError(_describe(exc, None)) from None


def _describe(exc: Exception, name: str | None) -> str:
    # The class name only: some botocore messages quote request parameters, and a parameter is the secret.
    kind = type(exc).__name__
    hint = _HINTS.get(kind)
    where = f" while writing {name}" if name else ""
    return f"AWS Secrets Manager{where}: {kind}" + (f"; {hint}" if hint else "")
