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
from capella_deploy.errors import ConfigError
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
async def open_session(target: Target, manifest_org: str | None) -> AsyncIterator[Session]:
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
        async with client:
            org_id = manifest_org or target.environ.get("CAPELLA_ORG_ID") or sandbox.org_id
            yield Session(client, sandbox.clock, _checked_org(org_id))
        return

    token = load_token(token_file=target.token_file, environ=target.environ)
    base_url = target.environ.get("CAPELLA_API_URL") or DEFAULT_API_URL
    client = CapellaClient(base_url=base_url, token=token, requests_per_minute=target.requests_per_minute)
    async with client:
        org_id = manifest_org or target.environ.get("CAPELLA_ORG_ID") or await _only_org(client)
        yield Session(client, SystemClock(), _checked_org(org_id))


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
