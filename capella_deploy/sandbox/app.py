"""Assembles the Starlette app: Management API (models, keys, providers), Model Service API, gateway, admin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from capella_deploy.sandbox import admin, batches, gateway, management, modelservice, providers
from capella_deploy.sandbox.errors import ManagementError, ServiceError, default_message
from capella_deploy.sandbox.middleware import FaultMiddleware, error_response

if TYPE_CHECKING:
    from capella_deploy.sandbox import Sandbox


async def _management_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ManagementError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and wrong methods answer in the dialect of the API the path belongs to.
    assert isinstance(exc, HTTPException)
    message = default_message(exc.status_code)
    hint = f"{request.method} {request.url.path}: {exc.detail}"
    code = "not_found" if exc.status_code == 404 else "method_not_allowed"
    return error_response(request.url.path, exc.status_code, message, hint, code, dict(exc.headers or {}))


def build_app(sandbox: Sandbox) -> Starlette:
    app = Starlette(
        routes=[
            *management.routes(),
            *providers.routes(),
            *admin.routes(),
            *modelservice.routes(),
            *batches.routes(modelservice.PREFIX),
            *gateway.routes(),
        ],
        middleware=[Middleware(FaultMiddleware, sandbox=sandbox)],
        exception_handlers={
            ManagementError: _management_error,
            ServiceError: _service_error,
            HTTPException: _http_error,
        },
    )
    app.state.sandbox = sandbox
    return app
