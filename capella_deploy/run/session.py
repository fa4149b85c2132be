"""Wiring: which API to talk to, with which token and clock, for one command.

Against the real Capella the client speaks HTTPS to CAPELLA_API_URL; with ``--sandbox`` it speaks
to the embedded sandbox through an in-process transport and shares the sandbox's clock, so waiting
for a deployment costs sandbox time, not wall time.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from capella_deploy.api.client import DEFAULT_API_URL, CapellaClient, load_token
from capella_deploy.clock import Clock, SystemClock
from capella_deploy.errors import (
    APIError,
    CapellaError,
    ConfigError,
    Forbidden,
    NotFound,
    TransportError,
    Unauthorized,
)
from capella_deploy.plan import OrgSource, Where
from capella_deploy.secrets import Secret

if TYPE_CHECKING:
    from capella_deploy.sandbox import Sandbox

SANDBOX_TOKEN = "sandbox-token"
# Capella ids are UUIDs; what becomes part of every API path must at least be letters, digits and '-'.
_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
DEFAULT_SANDBOX_STATE = ".capella/sandbox.json"
# An organization's name is shown in every header; a longer one is cut.
_NAME_CHARS = 100


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
    # Where the commands go (the API's URL, or the embedded sandbox's state file), the organization's name as
    # the API gave it, and where the token and the organization id came from: outputs and messages name them.
    url: str | None = None
    sandbox_state: Path | None = None
    token_source: str = ""
    org_source: OrgSource = OrgSource.MANIFEST
    org_name: str | None = None

    @property
    def api_url(self) -> str:
        return self.url if self.url is not None else f"the embedded sandbox ({self.sandbox_state})"

    def where(self, environment: str | None = None, scope: Sequence[str] = ()) -> Where:
        return Where(
            organization_id=self.org_id,
            organization_name=self.org_name,
            organization_id_source=self.org_source,
            url=self.url,
            sandbox_state=str(self.sandbox_state) if self.sandbox_state is not None else None,
            environment=environment,
            scope=tuple(scope),
        )


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
    target: Target,
    org_id: str | None = None,
    org_source: OrgSource = OrgSource.MANIFEST,
    *,
    expected_name: str | None = None,
) -> AsyncIterator[Session]:
    """A client for ``target`` and the organization to act on: ``org_id`` (from ``org_source``), else
    CAPELLA_ORG_ID, else the token's only organization; with ``--sandbox``, ``org_id`` else the sandbox's own
    organization (a CAPELLA_ORG_ID left in the shell for the real API must not send a sandbox run elsewhere).

    The organization is read once (GET /v4/organizations/{id}) for its name, which outputs show beside its id;
    ``expected_name`` (the manifest's expectOrganizationName) refuses an organization of another name.
    An API that does not answer, or refuses the token or the organization, ends the session with an error that
    names the URL, where the token and the organization id came from, and the organizations the token can see.
    """
    sandbox = None
    if target.sandbox_state is not None:
        from capella_deploy.sandbox import IN_PROCESS_BASE_URL

        sandbox = embedded_sandbox(target.sandbox_state, target.environ)
        client = CapellaClient(
            base_url=IN_PROCESS_BASE_URL,
            token=Secret(target.environ.get("CAPELLA_API_TOKEN") or SANDBOX_TOKEN),
            transport=sandbox.transport(),
            requests_per_minute=target.requests_per_minute,
            clock=sandbox.clock,
        )
        session = Session(
            client,
            sandbox.clock,
            "",
            sandbox_state=target.sandbox_state,
            token_source="CAPELLA_API_TOKEN" if target.environ.get("CAPELLA_API_TOKEN") else "the sandbox's default",
        )
    else:
        token = load_token(token_file=target.token_file, environ=target.environ)
        base_url = target.environ.get("CAPELLA_API_URL") or DEFAULT_API_URL
        client = CapellaClient(base_url=base_url, token=token, requests_per_minute=target.requests_per_minute)
        session = Session(
            client,
            SystemClock(),
            "",
            url=base_url.rstrip("/"),
            token_source=f"--token-file {target.token_file}" if target.token_file is not None else "CAPELLA_API_TOKEN",
        )
    async with client, _explained(session):
        listed_name = None
        if org_id:
            session.org_id, session.org_source = org_id, org_source
        elif sandbox is not None:
            session.org_id, session.org_source = sandbox.org_id, OrgSource.SANDBOX
        elif target.environ.get("CAPELLA_ORG_ID"):
            session.org_id, session.org_source = target.environ["CAPELLA_ORG_ID"], OrgSource.ENVIRONMENT
        else:
            (session.org_id, listed_name), session.org_source = await _only_org(client), OrgSource.ONLY_ORGANIZATION
        session.org_id = _checked_org(session.org_id, session.org_source)
        # The listing already named the token's only organization; any other is read once.
        session.org_name = listed_name if listed_name is not None else await _organization_name(session)
        if expected_name is not None:
            _check_name(session, expected_name)
        yield session


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
    org = f"organization {session.org_id} ({session.org_source.phrase})" if session.org_id else "the organizations"
    if isinstance(exc, Unauthorized):
        return (
            f"the API at {session.api_url} refused the token from {session.token_source}: {exc}. "
            "Check that it is a current Management API key (not a Model API key) and was copied whole"
        )
    return f"the token from {session.token_source} may not do this in {org}: {exc}." + await _visible(session)


async def _organization_name(session: Session) -> str | None:
    try:
        found = await session.client.get_organization(session.org_id)
    except (Forbidden, NotFound) as exc:
        # Every later call names this organization: a wrong id or another organization's token ends the run here.
        raise ConfigError(
            f"cannot read organization {session.org_id} ({session.org_source.phrase}) at {session.api_url}: "
            f"the API answered {exc.status} {exc.message}. This is usually a wrong organization id, or a token "
            "of another organization." + await _visible(session)
        ) from None
    return _display_name(found.get("name"))


async def _visible(session: Session) -> str:
    """The organizations the token can see, and what to set to choose one."""
    try:
        visible = await session.client.list_organizations()
    except CapellaError:
        return " The token cannot list organizations either; check its roles in the Capella console"
    names = [
        f"{o['id']} ({_display_name(o.get('name')) or 'no name'})" for o in visible if isinstance(o.get("id"), str)
    ]
    if not names:
        return " The token can see no organization"
    return (
        f" Organizations this token can see: {', '.join(names)}; "
        f"{_choose(session)} to one of them, or check the token's roles"
    )


def _choose(session: Session) -> str:
    """What to change to name another organization, given where the id came from."""
    if session.org_source is OrgSource.ENVIRONMENT:
        return "set CAPELLA_ORG_ID"
    if session.org_source is OrgSource.OPTION:
        return "set --org"
    if session.org_source is OrgSource.SAVED_PLAN:
        return "plan again with organizationId or CAPELLA_ORG_ID set"
    if session.sandbox_state is not None:
        return "remove the manifest's organizationId (the sandbox then uses its own), or set it"
    return "set organizationId or CAPELLA_ORG_ID"


def _check_name(session: Session, expected: str) -> None:
    if session.org_name == expected:
        return
    named = f'is named "{session.org_name}"' if session.org_name is not None else "has no name the API would give"
    raise ConfigError(
        f"organization {session.org_id} ({session.org_source.phrase}) at {session.api_url} {named}, "
        f'not "{expected}" as the manifest\'s expectOrganizationName says; nothing was changed. '
        "Check the organization id (organizationId, CAPELLA_ORG_ID) and the token, or the expected name"
    )


def _display_name(value: object) -> str | None:
    """An organization's name fit to print on one line: whatever the API sends cannot rewrite the output."""
    if not isinstance(value, str) or not value.strip():
        return None
    name = "".join(c if c.isprintable() else "?" for c in value.strip())
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def _checked_org(org_id: str, source: OrgSource) -> str:
    # The id becomes part of every API path: only letters, digits and '-' (a UUID's alphabet) get through.
    if not _ORG_ID.fullmatch(org_id):
        raise ConfigError(
            f"organization id {org_id[:70]!r} ({source.phrase}) is not an id (letters, digits and '-'); "
            "check CAPELLA_ORG_ID or organizationId"
        )
    return org_id


async def _only_org(client: CapellaClient) -> tuple[str, str | None]:
    orgs = await client.list_organizations()
    if len(orgs) == 1 and isinstance(orgs[0].get("id"), str):
        return str(orgs[0]["id"]), _display_name(orgs[0].get("name"))
    raise ConfigError(
        f"the API token can see {len(orgs)} organizations; set organizationId in the manifest or CAPELLA_ORG_ID"
    )
