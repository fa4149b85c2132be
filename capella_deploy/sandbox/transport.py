"""The in-process transport: httpx talks to the sandbox app directly, with no socket and no port."""

from __future__ import annotations

import httpx
from starlette.types import ASGIApp

from capella_deploy.sandbox.middleware import ConnectionDropped


class InProcessTransport(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp, client_address: str) -> None:
        self._inner = httpx.ASGITransport(app=app, client=(client_address, 49152))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except ConnectionDropped as exc:
            # What a client of a real server sees when the connection dies before the response is complete.
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a complete response.", request=request
            ) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()
