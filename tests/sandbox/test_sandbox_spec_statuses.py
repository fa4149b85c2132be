"""Operation by operation, the spec world answers only the statuses the official spec lists.

A battery of requests (good ones, and every kind of bad one the sandbox can refuse) goes to every Management
API operation; each answer is attributed to the operation whose route served it. In the spec world every
status is one the spec lists for that operation (401 for a wrong token aside: the spec's bearer security
applies everywhere). The conflicts world adds 409s, and nothing else.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
from sandbox_support import CHAT_MODEL, Api
from starlette.routing import Match

from capella_deploy.clock import ManualClock
from capella_deploy.sandbox import Sandbox, operations

BY_ID = {op.id: op for op in operations.OPERATIONS}


def operation_of(sandbox: Sandbox, method: str, path: str) -> str:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in sandbox.app.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            name: str = getattr(route, "name", "")
            return name
    raise AssertionError(f"no route serves {method} {path}")


def model_body(name: str = "chat", **changes: object) -> dict[str, object]:
    return {
        "name": name,
        "catalogModelName": CHAT_MODEL,
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}},
        **changes,
    }


KEY = {"name": "app", "expiry": 30, "allowedCIDRs": ["10.0.0.0/8"], "region": "us-east-1"}
PROVIDER = {"name": "llm", "type": "openAI", "configuration": {"apiKey": "sk-battery"}}
JSON_ERRORS = (b"{not json", b"[1, 2]")


def battery(api: Api, clock: ManualClock) -> Iterator[tuple[str, str, dict[str, object]]]:
    """(method, path, request options) for every operation, good and bad, in an organization in every state."""
    org = f"/v4/organizations/{api.sandbox.org_id}"
    other_org = f"/v4/organizations/{uuid.uuid4()}"
    models, keys, providers = api.models_url, api.keys_url, f"{org}/aiServices/providers"
    missing = str(uuid.uuid4())
    healthy, paused, to_destroy = api.deploy("chat"), api.deploy("paused"), api.deploy("doomed")
    clock.advance(300)
    api.delete(f"{models}/{paused}/activationState")
    clock.advance(60)
    deploying = api.deploy("young")
    api.delete(f"{models}/{to_destroy}")
    key_id, _ = api.create_key("app")
    provider_id = api.post(providers, json=PROVIDER).json()["id"]

    yield "GET", "/v4/organizations", {}
    yield "GET", "/v4/organizations", {"token": "wrong"}
    yield "GET", org, {}
    yield "GET", other_org, {}
    yield "GET", other_org + "/aiServices/models", {}

    yield "GET", models, {}
    for params in ({"perPage": 0}, {"page": 0}, {"perPage": 101}, {"page": "two"}, {"modelStatus": "x"}):
        yield "GET", models, {"params": params}
    yield "GET", models, {"params": {"modelKind": "vision"}}
    yield "POST", models, {"json": model_body()}  # a second model named chat
    yield "POST", models, {"json": model_body("fresh")}
    for body in ({"name": "x"}, model_body(colour=1), model_body(enableBatching="yes"), model_body(region="x")):
        yield "POST", models, {"json": body}
    yield "POST", models, {"json": model_body(cloudConfig={"provider": "aws", "region": "moon-1", "compute": {}})}
    for raw in (*JSON_ERRORS, b""):
        yield "POST", models, {"content": raw}
    yield "POST", models, {"json": model_body(), "token": "wrong"}
    yield "POST", other_org + "/aiServices/models", {"json": model_body()}

    for model_id in (healthy, paused, deploying, to_destroy, missing):
        yield "GET", f"{models}/{model_id}", {}
        yield "GET", f"{models}/{model_id}/connectionString", {}
    yield "PUT", f"{models}/{healthy}", {"json": {"enableBatching": True}, "headers": {"If-Match": "1"}}
    yield "PUT", f"{models}/{healthy}", {"json": {"enableBatching": False}, "headers": {"If-Match": "1"}}
    yield "PUT", f"{models}/{healthy}", {"json": {"enableBatching": False}, "headers": {"If-Match": "latest"}}
    yield "PUT", f"{models}/{healthy}", {}
    yield "PUT", f"{models}/{healthy}", {"json": {"name": "paused"}}  # a rename onto a taken name
    for body in ({"caching": {"ttl": 1}}, {"quantization": "fp8"}, {"name": ""}, {"enableBatching": "yes"}):
        yield "PUT", f"{models}/{healthy}", {"json": body}
    for raw in JSON_ERRORS:
        yield "PUT", f"{models}/{healthy}", {"content": raw}
    for model_id in (paused, deploying, to_destroy, missing):
        yield "PUT", f"{models}/{model_id}", {"json": {"enableBatching": True}}
    for model_id in (healthy, paused, deploying, to_destroy, missing):
        yield "POST", f"{models}/{model_id}/activationState", {}
        yield "DELETE", f"{models}/{model_id}/activationState", {}
    for model_id in (deploying, to_destroy, missing):
        yield "DELETE", f"{models}/{model_id}", {}

    yield "POST", keys, {"json": KEY}  # a second key named app
    yield "POST", keys, {"json": {**KEY, "allowedModels": []}}
    for changes in ({"expiry": 0}, {"region": "moon-1"}, {"allowedModels": [missing]}, {"allowedCIDRs": ["x"]}):
        yield "POST", keys, {"json": {**KEY, **changes}}
    yield "POST", keys, {"json": {"name": "app"}}
    yield "POST", keys, {"json": {**KEY, "expiry": "30"}}
    for raw in JSON_ERRORS:
        yield "POST", keys, {"content": raw}
    yield "GET", keys, {}
    for params in ({"perPage": 0}, {"page": 0}, {"page": "two"}, {"sortBy": "x"}, {"sortDirection": "x"}):
        yield "GET", keys, {"params": params}
    yield "GET", keys, {"params": {"filterBy": "name:eq:x"}}
    yield "GET", keys, {"token": "wrong"}
    for key in (key_id, missing):
        yield "GET", f"{keys}/{key}", {}
        yield "DELETE", f"{keys}/{key}", {}

    yield "GET", providers, {}
    for params in ({"providerType": "azure"}, {"perPage": 0}, {"page": "x"}):
        yield "GET", providers, {"params": params}
    yield "POST", providers, {"json": PROVIDER}  # a second provider named llm
    for body in ({"name": "x"}, {**PROVIDER, "type": "azure"}, {**PROVIDER, "configuration": {"apiKey": 1}}):
        yield "POST", providers, {"json": body}
    for raw in JSON_ERRORS:
        yield "POST", providers, {"content": raw}
    for provider in (provider_id, missing):
        yield "GET", f"{providers}/{provider}", {}
    update = {"configuration": {"apiKey": "sk-2"}}
    yield "PUT", f"{providers}/{provider_id}", {"json": update, "headers": {"If-Match": "1"}}
    yield "PUT", f"{providers}/{provider_id}", {"json": update, "headers": {"If-Match": "1"}}
    yield "PUT", f"{providers}/{provider_id}", {"json": update, "headers": {"If-Match": "v"}}
    for body in ({}, {"configuration": {"bucket": "b"}}, {"configuration": "x"}):
        yield "PUT", f"{providers}/{provider_id}", {"json": body}
    yield "PUT", f"{providers}/{missing}", {"json": update}
    yield "DELETE", f"{providers}/{provider_id}", {}
    yield "DELETE", f"{providers}/{missing}", {}

    yield "DELETE", f"{models}/{healthy}", {}  # last: the model others were tried against


def answers(rules: str) -> dict[str, set[int]]:
    """Every status each operation answered to the battery."""
    clock = ManualClock()
    sandbox = Sandbox(clock=clock, rules=rules)  # type: ignore[arg-type]
    api = Api(sandbox)
    seen: dict[str, set[int]] = defaultdict(set)
    for method, path, options in battery(api, clock):
        response = api.request(method, path, **options)  # type: ignore[arg-type]
        operation = operation_of(sandbox, method, path)
        if response.status_code == 401:
            assert options.get("token") == "wrong", (method, path, response.text)
        seen[operation].add(response.status_code)
    return seen


@pytest.fixture(scope="module")
def spec_answers() -> dict[str, set[int]]:
    return answers("spec")


@pytest.fixture(scope="module")
def conflicts_answers() -> dict[str, set[int]]:
    return answers("conflicts")


def test_every_management_route_is_an_operation_of_the_spec(sandbox) -> None:
    served = {
        (method, route.path)
        for route in sandbox.app.routes
        if getattr(route, "path", "").startswith("/v4")
        for method in getattr(route, "methods", ()) or ()
        if method != "HEAD"
    }
    assert served == {(op.method, op.path) for op in operations.OPERATIONS}


def test_the_spec_world_answers_only_statuses_the_spec_lists(spec_answers) -> None:
    seen = spec_answers
    for operation, statuses in seen.items():
        unlisted = statuses - BY_ID[operation].statuses - {401}
        assert not unlisted, f"{operation} answered {sorted(unlisted)}, which the spec does not list"
    assert set(seen) == set(BY_ID), "the battery reaches every operation"
    # What the spec says in so many words, seen in the answers.
    assert 409 not in seen["createModel"] | seen["createModelAPIKey"] | seen["putModel"] | seen["createProvider"]
    assert {204, 412, 422} <= seen["putModel"] and 400 not in seen["putModel"]
    assert {200, 422} <= seen["listModelAPIKeys"] and 400 not in seen["listModelAPIKeys"]
    assert {200, 400} <= seen["listProviders"] and 422 not in seen["listProviders"]
    assert {202, 400, 422} <= seen["createModel"] and {201, 400, 422} <= seen["createModelAPIKey"]
    assert {202, 409} <= seen["modelOff"] and {202, 409} <= seen["modelOn"] and {202, 409} <= seen["destroyModel"]


def test_the_conflicts_world_adds_409s_and_nothing_else(spec_answers, conflicts_answers) -> None:
    spec, conflicts = spec_answers, conflicts_answers
    for operation in BY_ID:
        assert conflicts[operation] - spec[operation] <= {409}, operation
    for operation in ("createModel", "createModelAPIKey", "putModel", "createProvider"):
        assert 409 in conflicts[operation], operation


@pytest.mark.parametrize(
    ("kind", "listed", "rules", "status"),
    [
        ("invalid", {400, 422}, "spec", 422),
        ("invalid", {400}, "spec", 400),
        ("undecodable", {400, 422}, "spec", 400),
        ("undecodable", {422}, "spec", 422),
        ("state", {409, 422}, "spec", 409),
        ("state", {422}, "spec", 422),
        ("state", {422}, "conflicts", 409),
        ("duplicate", {422}, "conflicts", 409),
    ],
)
def test_a_refusal_takes_the_status_its_operation_lists(kind, listed, rules, status) -> None:
    operation = operations.Operation("op", "GET", "/x", frozenset(listed))
    assert operation.status_for(kind, rules) == status
