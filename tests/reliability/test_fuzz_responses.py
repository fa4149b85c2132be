"""Adversarial API answers: whatever comes back, the tool ends with a clear error or a result, never a traceback.

Hypothesis (derandomized, see conftest) builds answers of every kind: arbitrary JSON where a page belongs,
pages whose items have missing fields, wrong types and unknown enum values, statuses from 100 to 599 with
HTML, text, empty or binary bodies and odd Retry-After headers, and malformed create answers. Each is served
through ``httpx.MockTransport`` to the real client, and what the client returns goes through the live
snapshot, the planner and the renderer, as ``plan`` does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from capella_deploy.api.client import CapellaClient
from capella_deploy.errors import AmbiguousCreate, CapellaError, UnexpectedResponse
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest
from capella_deploy.plan.planner import plan
from capella_deploy.secrets import Secret
from capella_deploy.views.plan import RENDERERS

PROFILE = settings.get_profile("reliability")
MANIFEST = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16], allowedModels: [chat], rotateBeforeDays: 10}
"""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
odd = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | st.lists(json_values, max_size=3)
STATUSES = ["healthy", "deploying", "paused", "deployFailed", "destroying", "hibernating", "", "HEALTHY"]


_MISSING = object()


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right value, a value of the wrong kind, or nothing at all (the field left out)."""
    return st.one_of(value, odd, st.just(_MISSING))


def fields(shape: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(shape).map(lambda d: {k: v for k, v in d.items() if v is not _MISSING})


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    shape = {
        "id": maybe(st.sampled_from(["m1", "m2", "chat-id"])),
        "name": maybe(st.sampled_from(["chat", "other", "chat"])),
        "status": maybe(st.sampled_from(STATUSES)),
        "actions": maybe(st.lists(st.sampled_from(["pause", "resume", "destroy", "edit", "fly"]))),
        "cloudConfig": maybe(
            fields(
                {
                    "provider": maybe(st.sampled_from(["aws", "gcp", "mars"])),
                    "region": maybe(st.sampled_from(["us-east-1", "eu-west-1"])),
                    "compute": maybe(fields({"cpu": maybe(st.integers()), "gpuMemory": odd})),
                }
            )
        ),
        "config": maybe(
            fields(
                {
                    "catalogModelName": maybe(st.just("mistralai/mistral-7b-instruct-v0.3")),
                    "dimensions": odd,
                    "caching": odd,
                    "keywordFiltering": odd,
                    "enableBatching": odd,
                }
            )
        ),
        "connectionString": odd,
        "audit": maybe(fields({"version": odd, "createdAt": odd})),
    }
    item = draw(fields(shape))
    return {"model": item} if draw(st.booleans()) else item


@st.composite
def keys(draw: st.DrawFn) -> dict[str, Any]:
    shape = {
        "keyId": maybe(st.sampled_from(["k1", "k2"])),
        "name": maybe(st.sampled_from(["app", "other"])),
        "region": maybe(st.sampled_from(["us-east-1", "eu-west-1"])),
        "expiry": maybe(st.integers(min_value=-10, max_value=400) | st.floats()),
        "allowedCIDRs": maybe(st.lists(st.sampled_from(["10.0.0.0/16", "nonsense", ""]), max_size=3)),
        "allowedModels": maybe(st.lists(st.sampled_from(["*", "m1"]) | fields({"id": odd}))),
        "description": odd,
        "audit": maybe(
            fields({"createdAt": maybe(st.sampled_from(["2026-01-01T00:00:00.123456789Z", "yesterday", "2026-13-45"]))})
        ),
    }
    return draw(fields(shape))


def page(items: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    well_formed = st.builds(
        lambda data, cursor: {"data": data, "cursor": cursor},
        st.lists(items, max_size=5),
        st.none() | fields({"pages": fields({"next": odd, "last": odd, "perPage": odd})}),
    )
    return st.one_of(well_formed, json_values)


def serve(answers: dict[str, httpx.Response]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        for suffix, response in answers.items():
            if request.url.path.endswith(suffix):
                return response
        return httpx.Response(404, json={"code": 3000, "message": "Not Found", "hint": "", "httpStatusCode": 404})

    return httpx.MockTransport(handler)


def client(transport: httpx.MockTransport) -> CapellaClient:
    return CapellaClient(
        base_url="https://api.example",
        token=Secret("cbrel-fuzz-token"),
        transport=transport,
        max_attempts=2,
        backoff_base=0,
        backoff_max=0,
    )


def plan_against(transport: httpx.MockTransport) -> str:
    """What ``capella-deploy plan`` would print, or the error it would print."""
    manifest = Manifest.model_validate(yaml.safe_load(MANIFEST))

    async def run() -> str:
        async with client(transport) as api:
            live = await read_live(api, "org")
        result = plan(manifest, live, now=datetime(2026, 6, 1, tzinfo=timezone.utc))
        return RENDERERS["human"](result) + RENDERERS["json"](result) + RENDERERS["markdown"](result)

    try:
        return asyncio.run(run())
    except CapellaError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        return message


def response(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode())


@settings(PROFILE, max_examples=150)
@given(models_page=page(st.just({})), keys_page=page(st.just({})))
def test_any_json_where_a_page_belongs_is_a_clear_error_or_a_plan(models_page: Any, keys_page: Any) -> None:
    transport = serve({"/models": response(200, models_page), "/apiKeys": response(200, keys_page)})
    plan_against(transport)


@settings(PROFILE, max_examples=150)
@given(items=st.lists(models(), max_size=4))
def test_model_entries_with_missing_or_wrong_fields_never_crash_the_plan(items: list[dict[str, Any]]) -> None:
    transport = serve({"/models": response(200, {"data": items}), "/apiKeys": response(200, {"data": []})})
    plan_against(transport)


@settings(PROFILE, max_examples=150)
@given(items=st.lists(keys(), max_size=4))
def test_key_entries_with_missing_or_wrong_fields_never_crash_the_plan(items: list[dict[str, Any]]) -> None:
    transport = serve({"/models": response(200, {"data": []}), "/apiKeys": response(200, {"data": items})})
    plan_against(transport)


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b""),
    st.just(b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"),
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),
    fields({"code": odd, "message": odd, "hint": odd, "httpStatusCode": odd}).map(lambda v: json.dumps(v).encode()),
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Content-Type", "Location"]),
    st.sampled_from(["5", "-3", "1e9", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", "text/html", ""]),
)


@settings(PROFILE, max_examples=300)
@given(status=st.integers(min_value=100, max_value=599), body=bodies, extra=headers)
def test_any_status_body_and_headers_end_in_a_result_or_a_clear_error(
    status: int, body: bytes, extra: dict[str, str]
) -> None:
    answer = httpx.Response(status, content=body, headers=extra)

    async def calls() -> None:
        async with client(serve({"/models": answer, "/apiKeys": answer})) as api:
            for call in (
                api.list_models("org"),
                api.list_api_keys("org"),
                api.create_model("org", {"name": "chat"}),
                api.create_api_key("org", {"name": "app"}),
                api.delete_model("org", "m1"),
            ):
                try:
                    await asyncio.wait_for(call, timeout=5)  # a Retry-After of 1e9 must not be slept for
                except CapellaError as exc:
                    assert str(exc)
                    if isinstance(exc, UnexpectedResponse):
                        assert "not the Capella API's" in str(exc)

    asyncio.run(calls())


@settings(PROFILE, max_examples=200)
@given(status=st.sampled_from([200, 201, 202]), body=bodies)
def test_a_malformed_create_answer_is_an_unclear_create_not_a_crash(status: int, body: bytes) -> None:
    answer = httpx.Response(status, content=body)

    async def calls() -> None:
        async with client(serve({"/models": answer, "/apiKeys": answer})) as api:
            for create in (api.create_model("org", {"name": "chat"}), api.create_api_key("org", {"name": "app"})):
                try:
                    created = await create
                except AmbiguousCreate as exc:
                    assert "outcome unknown" in str(exc)
                else:
                    assert created  # a usable id (and token) came back

    asyncio.run(calls())


def test_a_huge_page_is_read() -> None:
    items = [{"model": {"id": f"m{i}", "name": f"n{i}", "status": "healthy"}} for i in range(20_000)]
    transport = serve({"/models": response(200, {"data": items}), "/apiKeys": response(200, {"data": []})})
    printed = plan_against(transport)
    assert "Unmanaged" in printed


def test_a_page_count_of_a_billion_is_refused_quickly_with_bounded_memory(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, resource, httpx
        from capella_deploy.api.client import CapellaClient
        from capella_deploy.errors import CapellaError
        from capella_deploy.secrets import Secret
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        def handler(request):
            page = int(request.url.params.get("page", 1))
            cursor = {"pages": {"page": page, "next": 2 if page == 1 else 0, "last": 10**9, "perPage": 100}}
            return httpx.Response(200, json={"data": [], "cursor": cursor})
        async def main():
            transport = httpx.MockTransport(handler)
            async with CapellaClient(base_url="https://a.example", token=Secret("t"), transport=transport) as c:
                try:
                    await c.list_models("org")
                except CapellaError as exc:
                    print("refused:", exc)
        asyncio.run(main())
        """
    )
    try:
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.fail("still listing pages after 3 s")
    assert child.returncode == 0 and "refused:" in child.stdout, child.stderr[-500:]
