"""The Management API operations the sandbox serves, each with the statuses the official spec lists for it.

The Capella Management API v4 specification (``openapi.generated.yaml``, as vendored in the Capella Terraform
provider) lists, per operation, every status it may answer. In the spec world the sandbox answers nothing
else, with three exceptions that belong to no single operation: 401 for a missing or wrong token (the
spec's bearer security applies everywhere), and the 429s and 5xx of injected faults.

A refusal (``errors.Refusal``) gets its status here, from its kind, the operation and the world's rules:

=============  ==========================================  =======================
kind           spec world                                  conflicts world
=============  ==========================================  =======================
invalid        422 if listed, else 400                     the same
undecodable    400 if listed, else 422                     the same
state          409 if listed, else 422                     409
duplicate      (never raised: names may repeat)            409
=============  ==========================================  =======================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from capella_deploy.sandbox.errors import DUPLICATE, INVALID, STATE, UNDECODABLE, ManagementError, Refusal

if TYPE_CHECKING:  # Starlette loads with the app, not with the state or the fault file that name the rules
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

Rules = Literal["spec", "conflicts"]
SPEC: Rules = "spec"
CONFLICTS: Rules = "conflicts"
RULES: tuple[Rules, ...] = (SPEC, CONFLICTS)

ORG = "/v4/organizations/{organizationId}"
MODELS = ORG + "/aiServices/models"
MODEL = MODELS + "/{modelId}"
KEYS = MODELS + "/apiKeys"
KEY = KEYS + "/{apiKeyId}"
PROVIDERS = ORG + "/aiServices/providers"
PROVIDER = PROVIDERS + "/{providerId}"

_TITLES = {400: "Bad Request", 409: "Conflict", 422: "Unprocessable Entity"}


@dataclass(frozen=True)
class Operation:
    id: str  # the spec's operationId
    method: str
    path: str
    statuses: frozenset[int]

    def status_for(self, kind: str, rules: Rules) -> int:
        if kind == INVALID:
            return 422 if 422 in self.statuses else 400
        if kind == UNDECODABLE:
            return 400 if 400 in self.statuses else 422
        if kind == STATE:
            return 409 if rules == CONFLICTS or 409 in self.statuses else 422
        if kind == DUPLICATE:
            return 409
        raise ValueError(f"unknown refusal kind {kind!r}")

    def route(self, handler: Callable[[Request], Awaitable[Response]]) -> Route:
        """The route serving this operation with ``handler``; refusals leave it with this operation's status."""
        from starlette.routing import Route

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Refusal as refusal:
                status = self.status_for(refusal.kind, request.app.state.sandbox.rules)
                raise ManagementError(status, _TITLES[status], refusal.message) from refusal

        endpoint.__name__ = self.id
        return Route(self.path, endpoint, methods=[self.method])


def _op(operation_id: str, method: str, path: str, *statuses: int) -> Operation:
    return Operation(operation_id, method, path, frozenset(statuses))


LIST_ORGANIZATIONS = _op("listOrganizations", "GET", "/v4/organizations", 200, 403, 404, 429, 500)
GET_ORGANIZATION = _op("getOrganizationByID", "GET", ORG, 200, 403, 404, 429, 500)
LIST_MODELS = _op("listModels", "GET", MODELS, 200, 400, 403, 404, 422, 429, 500)
CREATE_MODEL = _op("createModel", "POST", MODELS, 202, 400, 401, 403, 404, 422, 429, 500)
GET_MODEL = _op("getModel", "GET", MODEL, 200, 403, 404, 422, 429, 500)
UPDATE_MODEL = _op("putModel", "PUT", MODEL, 204, 403, 404, 412, 422, 429, 500)
DELETE_MODEL = _op("destroyModel", "DELETE", MODEL, 202, 403, 404, 409, 429, 500)
RESUME_MODEL = _op("modelOn", "POST", MODEL + "/activationState", 202, 403, 404, 409, 412, 422, 429, 500)
PAUSE_MODEL = _op("modelOff", "DELETE", MODEL + "/activationState", 202, 403, 404, 409, 429, 500)
GET_CONNECTION_STRING = _op("getConnectionString", "GET", MODEL + "/connectionString", 200, 403, 404, 422, 429, 500)
CREATE_KEY = _op("createModelAPIKey", "POST", KEYS, 201, 400, 401, 403, 422, 500)
LIST_KEYS = _op("listModelAPIKeys", "GET", KEYS, 200, 401, 403, 422, 500)
GET_KEY = _op("getModelAPIKey", "GET", KEY, 200, 400, 401, 403, 404, 422, 429, 500)
DELETE_KEY = _op("deleteModelAPIKey", "DELETE", KEY, 204, 401, 403, 404, 409, 429, 500)
LIST_PROVIDERS = _op("listProviders", "GET", PROVIDERS, 200, 400, 403, 404, 429, 500)
CREATE_PROVIDER = _op("createProvider", "POST", PROVIDERS, 201, 400, 403, 404, 422, 429, 500)
GET_PROVIDER = _op("getProvider", "GET", PROVIDER, 200, 400, 403, 404, 429, 500)
UPDATE_PROVIDER = _op("updateProvider", "PUT", PROVIDER, 204, 400, 403, 404, 412, 422, 429, 500)
DELETE_PROVIDER = _op("deleteProvider", "DELETE", PROVIDER, 204, 400, 403, 404, 422, 429, 500)

OPERATIONS = (
    LIST_ORGANIZATIONS,
    GET_ORGANIZATION,
    LIST_MODELS,
    CREATE_MODEL,
    GET_MODEL,
    UPDATE_MODEL,
    DELETE_MODEL,
    RESUME_MODEL,
    PAUSE_MODEL,
    GET_CONNECTION_STRING,
    CREATE_KEY,
    LIST_KEYS,
    GET_KEY,
    DELETE_KEY,
    LIST_PROVIDERS,
    CREATE_PROVIDER,
    GET_PROVIDER,
    UPDATE_PROVIDER,
    DELETE_PROVIDER,
)
