"""The sandbox's own control routes (not part of Capella), for driving a served sandbox from outside.

They need the Management API token and are never subject to injected faults.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from capella_deploy.sandbox.bodies import Reader
from capella_deploy.sandbox.errors import undecodable
from capella_deploy.sandbox.faults import Faults
from capella_deploy.sandbox.http import management_json, management_sandbox
from capella_deploy.sandbox.operations import Operation
from capella_deploy.sandbox.views import rfc3339

ADMIN_STATUSES = frozenset({200, 204, 400, 401})  # not Capella's: every refusal here is a 400


def _clock_view(request: Request) -> dict[str, Any]:
    sandbox = management_sandbox(request)
    now = sandbox.now()
    return {"now": now, "time": rfc3339(now), "clock": type(sandbox.clock).__name__}


async def get_faults(request: Request) -> Response:
    return JSONResponse(management_sandbox(request).faults.to_dict())


async def put_faults(request: Request) -> Response:
    sandbox = management_sandbox(request)
    try:
        faults = Faults.from_dict(await management_json(request))
    except ValueError as exc:
        raise undecodable(str(exc)) from exc
    sandbox.faults = faults
    return JSONResponse(faults.to_dict())


async def get_clock(request: Request) -> Response:
    return JSONResponse(_clock_view(request))


async def advance_clock(request: Request) -> Response:
    sandbox = management_sandbox(request)
    body = Reader(await management_json(request), "")
    body.only(("seconds",))
    seconds = body.number("seconds", 0, float("inf"), required=True)
    assert seconds is not None
    try:
        sandbox.advance_clock(seconds)
    except ValueError as exc:
        raise undecodable(str(exc)) from exc
    return JSONResponse(_clock_view(request))


async def reset(request: Request) -> Response:
    management_sandbox(request).reset()
    return Response(status_code=204)


def routes() -> list[Route]:
    return [
        Operation(handler.__name__, method, path, ADMIN_STATUSES).route(handler)
        for method, path, handler in (
            ("GET", "/_sandbox/faults", get_faults),
            ("PUT", "/_sandbox/faults", put_faults),
            ("GET", "/_sandbox/clock", get_clock),
            ("POST", "/_sandbox/clock/advance", advance_clock),
            ("POST", "/_sandbox/reset", reset),
        )
    ]
