"""Serving the sandbox over real HTTP with uvicorn, on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from capella_deploy.sandbox.middleware import ConnectionDropped
from capella_deploy.secrets import revealed

if TYPE_CHECKING:
    import uvicorn

    from capella_deploy.sandbox import Sandbox

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0


def _served(app: ASGIApp) -> ASGIApp:
    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except ConnectionDropped:
            # Returning with the response unfinished makes uvicorn close the connection: the client sees
            # it die mid-response, as with a real network fault.
            return

    return asgi


def _bind(port: int) -> socket.socket:
    # Naming IPPROTO_TCP lets asyncio recognise the accepted connections as TCP and set TCP_NODELAY on
    # them; without it, each request on a kept-alive connection waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    # Listening before uvicorn starts means a client that read the printed URL is queued, not refused.
    sock.listen(128)
    return sock


def _server(sandbox: Sandbox, *, access_log: bool) -> uvicorn.Server:
    import uvicorn

    config = uvicorn.Config(
        _served(sandbox.app), lifespan="off", log_level="warning", access_log=access_log, server_header=False
    )
    return uvicorn.Server(config)


def base_url_of(sock: socket.socket) -> str:
    return f"http://{HOST}:{sock.getsockname()[1]}"


def serve(sandbox: Sandbox, *, port: int, token_source: str, token_export: str = "") -> None:
    """Serve until interrupted; first print the organization and URLs to use (never a token of the user's).

    ``token_export`` ends the ``export`` line: how a client sets CAPELLA_API_TOKEN for this sandbox.
    """
    sock = _bind(port)
    base = base_url_of(sock)
    speed = getattr(sandbox.clock, "speed", 1.0)
    lines = [
        f"Capella sandbox: organization {sandbox.org_id} ({sandbox.org_name})",
        f"  Management API   {base}",
        f"  Model endpoints  {base}/ai/<modelId>/v1/...",
        f"  Gateway          {base}/v1/ai/<provider>/chat/completions",
        f"  State            {sandbox.state_path or 'in memory'}  (sandbox time runs {speed:g}x)",
        f"  World            {sandbox.rules} rules (see 'The sandbox' in README.md)",
        f"  Token            {token_source}",
        f"export CAPELLA_API_URL={base} CAPELLA_ORG_ID={sandbox.org_id}{token_export}",
    ]
    # Nothing here is a user's secret: the default token is public, a user's is never in these lines.
    with revealed():
        print("\n".join(lines), flush=True)
    _server(sandbox, access_log=True).run(sockets=[sock])


@contextlib.contextmanager
def running_server(sandbox: Sandbox) -> Iterator[str]:
    """Serve ``sandbox`` from a background thread on a free port; yields the base URL."""
    sock = _bind(0)
    server = _server(sandbox, access_log=False)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)
        yield base_url_of(sock)
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT)
        sock.close()
