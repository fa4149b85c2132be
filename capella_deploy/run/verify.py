"""Running the manifest's checks against what apply deployed, for `verify` and after `apply`.

Reads connection strings and tokens from the outputs document; never calls the Management API.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from capella_deploy.checks import CheckReport, TransportFor, run_checks
from capella_deploy.errors import ConfigError
from capella_deploy.manifest import Manifest
from capella_deploy.run.session import embedded_sandbox


def sandbox_transport_for(state: Path, environ: Mapping[str, str]) -> TransportFor:
    """Route the embedded sandbox's connection strings (http://capella.sandbox/...) through its in-process app.

    The sandbox gets the same state file and fault file (CAPELLA_SANDBOX_FAULTS) as the commands that manage it,
    so a failure drill reaches the Model Service too. Other URLs go to the network.
    """
    from capella_deploy.sandbox import IN_PROCESS_BASE_URL  # the sandbox loads only when asked for

    sandbox = embedded_sandbox(state, environ)
    host = httpx.URL(IN_PROCESS_BASE_URL).host

    def transport_for(base_url: str) -> httpx.AsyncBaseTransport | None:
        return sandbox.transport() if httpx.URL(base_url).host == host else None

    return transport_for


async def run_manifest_checks(
    manifest: Manifest, outputs: Mapping[str, Any], *, sandbox_state: Path | None, environ: Mapping[str, str]
) -> CheckReport:
    if sandbox_state is None:
        _refuse_sandbox_urls(manifest, outputs)
        return await run_checks(manifest, outputs, environ=environ)
    transport_for = sandbox_transport_for(sandbox_state, environ)
    return await run_checks(manifest, outputs, transport_for=transport_for, environ=environ)


def _refuse_sandbox_urls(manifest: Manifest, outputs: Mapping[str, Any]) -> None:
    """Sandbox connection strings resolve nowhere on the network: say so instead of failing on DNS."""
    from capella_deploy.sandbox import IN_PROCESS_BASE_URL

    models = outputs.get("models") or {}
    checked = [models.get(check.model) for check in manifest.checks if check.model is not None]
    if any(
        isinstance(e, Mapping) and str(e.get("connectionString", "")).startswith(IN_PROCESS_BASE_URL) for e in checked
    ):
        raise ConfigError(
            f"the outputs point at the embedded sandbox ({IN_PROCESS_BASE_URL}/...), which only --sandbox reaches; "
            "run again with --sandbox[=STATE]"
        )
