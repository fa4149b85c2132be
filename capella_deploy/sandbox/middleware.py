"""Applies injected faults around every request except the sandbox's own admin routes.

A dropped connection sends a response start and then raises ``ConnectionDropped``: served by uvicorn, the
client sees the connection die before the body (a protocol error); in-process, the transport turns the
exception into the httpx error a real network would give. Either way the client cannot tell whether the
request was carried out, which is the point of a "drop after".
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capella_deploy.sandbox.errors import default_message, management_body, openai_body
from capella_deploy.sandbox.faults import DROP_AFTER, DROP_BEFORE

if TYPE_CHECKING:
    from capella_deploy.sandbox import Sandbox

ADMIN_PREFIX = "/_sandbox/"


class ConnectionDropped(Exception):
    """The sandbox abandoned this connection on purpose (an injected fault)."""


def is_management_path(path: str) -> bool:
    return path.startswith(("/v4/", "/_sandbox/")) or path == "/v4"


def error_response(
    path: str, status: int, message: str, hint: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the dialect of the API the path belongs to."""
    if is_management_path(path):
        return JSONResponse(management_body(status, message, hint), status_code=status, headers=headers)
    return JSONResponse(openai_body(status, hint, code), status_code=status, headers=headers)


class FaultMiddleware:
    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        client_key = hashlib.sha256(authorization.encode()).hexdigest()
        decision = self.sandbox.injector.decide(scope["method"], path, client_key, self.sandbox.now())
        if decision.latency_seconds > 0:
            await asyncio.sleep(decision.latency_seconds)  # real time: latency is what benchmarks measure
        if decision.rate_limit_retry_after is not None:
            wait = decision.rate_limit_retry_after
            limit = self.sandbox.faults.rate_limit_per_minute
            response = error_response(
                path,
                429,
                default_message(429),
                f"Rate limit of {limit} requests per minute reached; retry after {wait} seconds.",
                "rate_limit_exceeded",
                {"Retry-After": str(wait)},
            )
            await response(scope, receive, send)
            return
        if decision.drop == DROP_BEFORE:
            await _drop(send)
        if decision.error_status is not None:
            status = decision.error_status
            headers = {} if decision.error_retry_after is None else {"Retry-After": str(decision.error_retry_after)}
            response = error_response(
                path,
                status,
                default_message(status),
                f"{default_message(status)} (a fault injected by the sandbox).",
                "server_error",
                headers,
            )
            await response(scope, receive, send)
            return
        if decision.drop == DROP_AFTER:

            async def discard(message: Message) -> None:
                return None

            await self.app(scope, receive, discard)
            await _drop(send)
        await self.app(scope, receive, send)


async def _drop(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    raise ConnectionDropped("connection dropped by an injected fault")
