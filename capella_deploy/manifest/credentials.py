"""Credentials a manifest refers to: read from the environment or a file when they are needed, never written in
the manifest, never kept.

A provider's credentials are ``{env: VARIABLE}`` or ``{file: PATH}`` references. ``read_credential`` reads one
and wraps it in a ``Secret`` at once, so from that moment the value is masked wherever the process writes text.
``credential_problems`` says which references cannot be read now (a variable not set, a file missing or
unreadable), each at its place in the manifest, so a plan can refuse what it could not carry out before
anything is created. No message here ever holds a value: only the reference and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from capella_deploy.errors import ConfigError
from capella_deploy.manifest.fields import Loc, format_loc
from capella_deploy.manifest.load import LoadedManifest
from capella_deploy.manifest.spec import Manifest, ProviderSpec
from capella_deploy.secrets import Secret


class CredentialUnavailable(ConfigError):
    """A credential reference that cannot be read now; the message names the reference, never a value."""


def read_credential(env: str | None, file: str | None, environ: Mapping[str, str]) -> Secret:
    """The credential an ``{env: ...}`` or ``{file: ...}`` reference points at, as a ``Secret``."""
    if env is not None:
        value = environ.get(env)
        if value is None:
            raise CredentialUnavailable(f"the environment variable {env} is not set")
        if not value.strip():
            raise CredentialUnavailable(f"the environment variable {env} is empty")
        return Secret(value)
    assert file is not None
    path = Path(file)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CredentialUnavailable(f"the file {path} does not exist") from None
    except IsADirectoryError:
        raise CredentialUnavailable(f"{path} is a directory, not a file holding the credential") from None
    except OSError as exc:
        raise CredentialUnavailable(f"the file {path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        # The exception would quote the bytes it stumbled on: part of the credential.
        raise CredentialUnavailable(f"the file {path} is not UTF-8 text") from None
    # An editor or `echo` ends the file with a newline, which is not part of the credential.
    secret = Secret(text.removesuffix("\n").removesuffix("\r"))
    if not secret.reveal().strip():
        raise CredentialUnavailable(f"the file {path} is empty")
    return secret


def provider_credentials(spec: ProviderSpec, environ: Mapping[str, str]) -> dict[str, Secret]:
    """Every credential ``spec`` refers to, by its field (apiKey, accessKeyId...); the first that cannot be read
    raises ``CredentialUnavailable`` naming the field."""
    found: dict[str, Secret] = {}
    for field, ref in spec.credentials:
        if ref is None:
            continue
        try:
            found[field] = read_credential(ref.env, ref.file, environ)
        except CredentialUnavailable as exc:
            raise CredentialUnavailable(f"credentials.{field}: {exc}") from None
    return found


@dataclass(frozen=True)
class CredentialProblem:
    loc: Loc  # ("providers", 0, "credentials", "apiKey", "env")
    address: str  # the resource whose credential it is: "provider.openai"
    message: str


def credential_problems(manifest: Manifest, environ: Mapping[str, str]) -> list[CredentialProblem]:
    """Every credential reference of ``manifest`` that cannot be read now. Reading one masks its value from then
    on; the value itself is dropped at once."""
    problems: list[CredentialProblem] = []
    for index, spec in enumerate(manifest.providers):
        for field, ref in spec.credentials:
            if ref is None:
                continue
            try:
                read_credential(ref.env, ref.file, environ)
            except CredentialUnavailable as exc:
                source = "env" if ref.env is not None else "file"
                loc: Loc = ("providers", index, "credentials", field, source)
                problems.append(CredentialProblem(loc, f"provider.{spec.name}", str(exc)))
    return problems


@dataclass(frozen=True)
class CredentialFinding:
    text: str  # "file:line: path: message", or "address: path: message" without the manifest's files
    address: str


def check_credentials(
    manifest: Manifest, environ: Mapping[str, str], loaded: LoadedManifest | None = None
) -> tuple[CredentialFinding, ...]:
    """``credential_problems``, located in the manifest's files when ``loaded`` (the files as read) is given."""
    findings = []
    for problem in credential_problems(manifest, environ):
        text = (
            str(loaded.issue_at(problem.loc, problem.message))
            if loaded is not None
            else f"{problem.address}: {format_loc(problem.loc)}: {problem.message}"
        )
        findings.append(CredentialFinding(text, problem.address))
    return tuple(findings)
