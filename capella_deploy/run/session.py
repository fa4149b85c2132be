"""Wiring: which API to talk to, with which token and clock, for one command.

Against the real Capella the client speaks HTTPS to CAPELLA_API_URL; with ``--sandbox`` it speaks
to the embedded sandbox through an in-process transport and shares the sandbox's clock, so waiting
for a deployment costs sandbox time, not wall time.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from capella_deploy.api.client import DEFAULT_API_URL, CapellaClient, load_token
from capella_deploy.clock import Clock, SystemClock
from capella_deploy.errors import APIError, CapellaError, ConfigError, Forbidden, TransportError, Unauthorized
from capella_deploy.secrets import Secret

if TYPE_CHECKING:
    from capella_deploy.sandbox import Sandbox

SANDBOX_TOKEN = "sandbox-token"
# Capella ids are UUIDs; what becomes part of every API path must at least be letters, digits and '-'.
_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
DEFAULT_SANDBOX_STATE = ".capella/sandbox.json"


@dataclass(frozen=True)
class Target:
    """Where commands go: the real API, or the sandbox kept in ``sandbox_state``."""

    sandbox_state: Path | None
    token_file: Path | None
    environ: Mapping[str, str]
    requests_per_minute: float | None = None


@dataclass
class Session:
    client: CapellaClient
    clock: Clock
    org_id: str
    # Where the commands go and where the token and organization id came from, to name them in messages.
    api_url: str = ""
    token_source: str = ""
    org_source: str = ""


def embedded_sandbox(state: Path, environ: Mapping[str, str]) -> Sandbox:
    """The in-process sandbox kept in ``state``, with the fault file CAPELLA_SANDBOX_FAULTS names, if any.

    Every command that reaches the embedded sandbox builds it here, so a failure drill set up through the
    environment reaches the Management API and the Model Service alike.
    """
    from capella_deploy.sandbox import Faults, Sandbox

    faults_file = environ.get("CAPELLA_SANDBOX_FAULTS")
    try:
        faults = Faults.load(Path(faults_file)) if faults_file else None
    except ValueError as exc:
        raise ConfigError(f"CAPELLA_SANDBOX_FAULTS: {exc}") from None
    return Sandbox(state, token=environ.get("CAPELLA_API_TOKEN") or SANDBOX_TOKEN, faults=faults)


@contextlib.asynccontextmanager
async def open_session(
    target: Target, manifest_org: str | None, org_source: str = "the manifest's organizationId"
) -> AsyncIterator[Session]:
    """A client for ``target`` and the organization to act on: ``manifest_org`` (said to come from
    ``org_source``), else CAPELLA_ORG_ID, else the token's only organization.

    An API that does not answer, or refuses the token, ends the session with an error that names the URL,
    where the token and the organization id came from, and the organizations the token can see.
    """
    if target.sandbox_state is not None:
        from capella_deploy.sandbox import IN_PROCESS_BASE_URL

        sandbox = embedded_sandbox(target.sandbox_state, target.environ)
        token_text = target.environ.get("CAPELLA_API_TOKEN") or SANDBOX_TOKEN
        client = CapellaClient(
            base_url=IN_PROCESS_BASE_URL,
            token=Secret(token_text),
            transport=sandbox.transport(),
            requests_per_minute=target.requests_per_minute,
            clock=sandbox.clock,
        )
        session = Session(
            client,
            sandbox.clock,
            "",
            api_url=f"the embedded sandbox ({target.sandbox_state})",
            token_source="CAPELLA_API_TOKEN" if target.environ.get("CAPELLA_API_TOKEN") else "the sandbox's default",
        )
        async with client, _explained(session):
            session.org_id, session.org_source = _org_choice(manifest_org, org_source, target.environ) or (
                sandbox.org_id,
                "the sandbox's organization",
            )
            session.org_id = _checked_org(session.org_id)
            yield session
        return

    token = load_token(token_file=target.token_file, environ=target.environ)
    base_url = target.environ.get("CAPELLA_API_URL") or DEFAULT_API_URL
    client = CapellaClient(base_url=base_url, token=token, requests_per_minute=target.requests_per_minute)
    session = Session(
        client,
        SystemClock(),
        "",
        api_url=base_url,
        token_source=f"--token-file {target.token_file}" if target.token_file is not None else "CAPELLA_API_TOKEN",
    )
    async with client, _explained(session):
        chosen = _org_choice(manifest_org, org_source, target.environ)
        session.org_id, session.org_source = chosen or (await _only_org(client), "the token's only organization")
        session.org_id = _checked_org(session.org_id)
        yield session


def _org_choice(manifest_org: str | None, source: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    if manifest_org:
        return manifest_org, source
    if environ.get("CAPELLA_ORG_ID"):
        return environ["CAPELLA_ORG_ID"], "CAPELLA_ORG_ID"
    return None


@contextlib.asynccontextmanager
async def _explained(session: Session) -> AsyncIterator[None]:
    """Say where the request went and with what, when the API is out of reach or refuses the token."""
    try:
        yield
    except TransportError as exc:
        raise ConfigError(
            f"no answer from the Capella Management API at {session.api_url} ({exc}); "
            "check CAPELLA_API_URL, the network and any proxy"
        ) from None
    except (Unauthorized, Forbidden) as exc:
        raise ConfigError(await _access_message(session, exc)) from None


async def _access_message(session: Session, exc: APIError) -> str:
    org = f"organization {session.org_id} (from {session.org_source})" if session.org_id else "the organizations"
    if isinstance(exc, Unauthorized):
        return (
            f"the API at {session.api_url} refused the token from {session.token_source}: {exc}. "
            "Check that it is a current Management API key (not a Model API key) and was copied whole"
        )
    message = f"the token from {session.token_source} may not do this in {org}: {exc}."
    try:
        visible = await session.client.list_organizations()
    except CapellaError:
        return message + " The token cannot list organizations either; check its roles in the Capella console"
    names = [f"{o.get('id')} ({o.get('name') or 'no name'})" for o in visible if isinstance(o.get("id"), str)]
    if not names:
        return message + " The token can see no organization"
    return (
        message + f" Organizations this token can see: {', '.join(names)}; "
        "set organizationId or CAPELLA_ORG_ID to one of them, or check the token's roles"
    )


def _checked_org(org_id: str) -> str:
    # The id becomes part of every API path: only letters, digits and '-' (a UUID's alphabet) get through.
    if not _ORG_ID.fullmatch(org_id):
        raise ConfigError(
            f"organization id {org_id[:70]!r} is not an id (letters, digits and '-'); "
            "check CAPELLA_ORG_ID or organizationId"
        )
    return org_id


async def _only_org(client: CapellaClient) -> str:
    orgs = await client.list_organizations()
    if len(orgs) == 1 and isinstance(orgs[0].get("id"), str):
        return str(orgs[0]["id"])
    raise ConfigError(
        f"the API token can see {len(orgs)} organizations; set organizationId in the manifest or CAPELLA_ORG_ID"
    )
