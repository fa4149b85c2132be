"""Request plumbing shared by the route modules."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from capella_deploy.sandbox.errors import ManagementError, undecodable

if TYPE_CHECKING:
    from capella_deploy.sandbox import Sandbox


def sandbox_of(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def base_url(request: Request) -> str:
    """The scheme and authority the client used: connection strings and hrefs are built on it."""
    return str(request.base_url).rstrip("/")


def client_host(request: Request) -> str:
    return request.client.host if request.client else ""


async def read_json(request: Request, *, optional: bool = False) -> Any:
    """The JSON body (None for an ``optional`` one not sent), or ``ValueError`` saying why there is none."""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return None
        raise ValueError("the request body is empty; a JSON document is required")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the request body is not valid JSON: {exc}") from exc


def management_sandbox(request: Request) -> Sandbox:
    """The sandbox, once the request proved it holds the Management API token."""
    sandbox = sandbox_of(request)
    token = bearer_token(request)
    if token is None:
        raise ManagementError(401, "Unauthorized", "Send the API key token as 'Authorization: Bearer <token>'.")
    if not sandbox.token_matches(token):
        raise ManagementError(401, "Unauthorized", "The API key token is not valid for this organization.")
    return sandbox


def org_sandbox(request: Request) -> Sandbox:
    """As ``management_sandbox``, and the path's organization must be the sandbox's own."""
    sandbox = management_sandbox(request)
    if request.path_params["organizationId"] != sandbox.org_id:
        raise ManagementError(
            403,
            "Access Denied",
            "The API key has no access to this organization. List yours with GET /v4/organizations.",
        )
    return sandbox


async def management_json(request: Request, *, optional: bool = False) -> Any:
    try:
        return await read_json(request, optional=optional)
    except ValueError as exc:
        raise undecodable(str(exc)) from exc
