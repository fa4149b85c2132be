"""Injected faults: reproducible from a seed, each kind doing what it says."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from sandbox_support import Api, chat_body

from capella_deploy.clock import ManualClock
from capella_deploy.sandbox import Faults, RouteFault, Sandbox
from capella_deploy.sandbox.faults import FaultInjector

MIXED = [RouteFault(match="/v4/**", error_rate=0.3, drop_before=0.1, drop_after=0.1)]


def outcomes(tmp_path, name: str, faults: Faults, count: int = 40) -> list[str]:
    api = Api(Sandbox(tmp_path / name, clock=ManualClock(), faults=faults))
    seen = []
    for _ in range(count):
        try:
            seen.append(str(api.get(api.models_url).status_code))
        except httpx.TransportError as exc:
            seen.append(type(exc).__name__)
    return seen


def test_the_same_seed_gives_the_same_faults(tmp_path) -> None:
    first = outcomes(tmp_path, "a.json", Faults(seed=7, routes=MIXED))
    second = outcomes(tmp_path, "b.json", Faults(seed=7, routes=MIXED))
    other = outcomes(tmp_path, "c.json", Faults(seed=8, routes=MIXED))
    assert first == second
    assert first != other
    assert {"200", "503", "RemoteProtocolError"} <= set(first)


def test_the_sandbox_seed_is_the_default_fault_seed(tmp_path) -> None:
    faults = Faults(routes=MIXED)
    by_sandbox = Api(Sandbox(tmp_path / "x.json", clock=ManualClock(), faults=faults, seed=7))
    assert by_sandbox.sandbox.faults is faults
    assert outcomes(tmp_path, "y.json", Faults(seed=7, routes=MIXED)) == outcomes(
        tmp_path, "z.json", Faults(seed=7, routes=MIXED)
    )


def test_no_faults_means_a_clean_world(api) -> None:
    for _ in range(30):
        assert api.get(api.models_url).status_code == 200


def test_drop_before_does_nothing_and_drop_after_does_the_work(api) -> None:
    body = {
        "name": "m",
        "catalogModelName": "mistralai/mistral-7b-instruct-v0.3",
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 24}},
    }
    api.sandbox.faults = Faults(routes=[RouteFault(match="POST /v4/**", drop_before=1.0)])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(api.models_url, json=body)
    assert api.sandbox.world().models == {}
    api.sandbox.faults = Faults(routes=[RouteFault(match="POST /v4/**", drop_after=1.0)])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(api.models_url, json=body)
    assert [m.name for m in api.sandbox.world().models.values()] == ["m"]


def test_latency_is_real_time(api) -> None:
    api.sandbox.faults = Faults(routes=[RouteFault(latency_ms=(40, 40))])
    start = time.perf_counter()
    assert api.get(api.models_url).status_code == 200
    assert time.perf_counter() - start >= 0.04


def test_route_patterns_and_methods() -> None:
    rule = RouteFault(match="POST /v4/organizations/*/aiServices/models")
    assert rule.matches("POST", "/v4/organizations/o1/aiServices/models")
    assert not rule.matches("GET", "/v4/organizations/o1/aiServices/models")
    assert not rule.matches("POST", "/v4/organizations/o1/aiServices/models/m1")
    deep = RouteFault(match="/ai/**/chat/completions")
    assert deep.matches("POST", "/ai/m1/v1/chat/completions")
    assert not deep.matches("POST", "/ai/m1/v1/embeddings")
    assert RouteFault().matches("DELETE", "/anything/at/all")


def test_rate_limit_counts_per_token(api, ready) -> None:
    api.sandbox.faults = Faults(rate_limit_per_minute=1)
    assert api.get(api.models_url).status_code == 200
    assert api.get(api.models_url).status_code == 429
    chat = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body())
    assert chat.status_code == 200  # another token, another budget
    limited = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body())
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["Retry-After"] == "60"


def test_model_service_faults_use_the_openai_body(api, ready) -> None:
    api.sandbox.faults = Faults(routes=[RouteFault(match="/ai/**", error_rate=1.0, error_status=502)])
    response = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body())
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "server_error"
    assert api.get(api.models_url).status_code == 200


def test_fault_files_in_yaml_and_json(tmp_path) -> None:
    yaml_file = tmp_path / "faults.yaml"
    yaml_file.write_text(
        "seed: 3\nrate_limit_per_minute: 100\ndeploy_fail_rate: 0.25\nroutes:\n"
        "  - match: GET /v4/**\n    error_rate: 0.5\n    latency_ms: [10, 20]\n"
    )
    loaded = Faults.load(yaml_file)
    assert loaded.seed == 3 and loaded.rate_limit_per_minute == 100 and loaded.deploy_fail_rate == 0.25
    assert loaded.routes[0].latency_ms == (10.0, 20.0) and loaded.routes[0].error_rate == 0.5
    json_file = tmp_path / "faults.json"
    json_file.write_text(json.dumps(loaded.to_dict()))
    assert Faults.load(json_file) == loaded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: red", "unknown keys colour"),
        ("routes:\n  - error_rate: 2", "between 0 and 1"),
        ("routes:\n  - error_rate: 0.6\n    drop_after: 0.6", "exceeds 1"),
        ("routes:\n  - error_status: 404", "5xx"),
        ("routes:\n  - match: FETCH /x", "unknown method"),
        ("routes:\n  - latency_ms: [5, 1]", "latency_ms"),
        ("rate_limit_per_minute: 0", "at least 1"),
        ("deploy_fail_rate: 0.7\ndeploy_hang_rate: 0.7", "exceeds 1"),
        ("routes:\n  - error_rate: lots", "wrong type"),
        ("[1, 2]", "mapping"),
    ],
)
def test_bad_fault_files_say_what_is_wrong(tmp_path, text, message) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        Faults.load(path)
    assert str(path) in str(raised.value)


def test_deploy_outcomes_follow_the_rates() -> None:
    injector = FaultInjector(Faults(seed=1, deploy_fail_rate=0.2, deploy_hang_rate=0.3), default_seed=0)
    rolls = [injector.deploy_outcome() for _ in range(1000)]
    assert 150 < rolls.count("deployFailed") < 250
    assert 250 < rolls.count("hang") < 350


def test_admin_routes_drive_a_sandbox_from_outside(api, clock) -> None:
    assert api.get("/_sandbox/faults", token=None).status_code == 401
    new = {"rate_limit_per_minute": 1, "routes": [{"match": "/ai/**", "latency_ms": 5}]}
    put = api.put("/_sandbox/faults", json=new)
    assert put.status_code == 200
    assert api.sandbox.faults.rate_limit_per_minute == 1
    assert api.get("/_sandbox/faults").json()["routes"][0]["latency_ms"] == [5.0, 5.0]
    for _ in range(3):  # admin routes are never limited or faulted
        assert api.get("/_sandbox/clock").status_code == 200
    assert api.put("/_sandbox/faults", json={"routes": [{"error_rate": 9}]}).status_code == 400

    api.sandbox.faults = Faults()
    model_id = api.deploy("m")
    advanced = api.post("/_sandbox/clock/advance", json={"seconds": 300})
    assert advanced.json()["time"] == "2026-01-01T00:05:00.000000Z"
    assert api.model(model_id)["status"] == "healthy"
    assert api.post("/_sandbox/clock/advance", json={"seconds": -1}).status_code == 400

    org = api.sandbox.org_id
    assert api.post("/_sandbox/reset").status_code == 204
    assert api.get(api.models_url).json()["data"] == []
    assert api.sandbox.org_id == org


def test_a_model_edit_can_land_minutes_after_its_204(api, clock, tmp_path) -> None:
    # The spec: "Model updates may take up to a few minutes to take effect."
    api.sandbox.faults = Faults(edit_delay_seconds=120)
    model_id = api.deploy("chat")
    clock.advance(300)
    url = f"{api.models_url}/{model_id}"
    assert api.put(url, json={"name": "renamed", "enableBatching": True}).status_code == 204
    seen = api.model(model_id)
    assert seen["name"] == "chat" and "enableBatching" not in seen["config"]
    assert seen["audit"]["version"] == 2, "the edit was accepted: If-Match must name the new version"
    clock.advance(60)
    assert api.put(url, json={"keywordFiltering": ["x"]}, headers={"If-Match": "2"}).status_code == 204
    clock.advance(119)  # a second edit starts the wait again, and takes the first along
    assert api.model(model_id)["name"] == "chat"
    clock.advance(1)
    landed = api.model(model_id)
    assert landed["name"] == "renamed"
    assert landed["config"]["enableBatching"] is True and landed["config"]["keywordFiltering"] == ["x"]
    assert [m["model"]["name"] for m in api.get(api.models_url).json()["data"]] == ["renamed"]
    again = Sandbox(api.sandbox.state_path, clock=clock)
    assert Api(again).model(model_id)["name"] == "renamed", "the landing time is in the shared state"


def test_a_server_may_serve_smaller_pages(api) -> None:
    api.sandbox.faults = Faults(max_per_page=25)
    providers = f"/v4/organizations/{api.sandbox.org_id}/aiServices/providers"
    for url, refused in ((api.models_url, 422), (api.keys_url, 422), (providers, 400)):
        assert api.get(url, params={"perPage": 100}).status_code == refused
        assert api.get(url, params={"perPage": 25}).json()["cursor"]["pages"]["perPage"] == 25
    assert "at most 25" in api.get(api.keys_url, params={"perPage": 26}).json()["hint"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [("edit_delay_seconds: -1", "must not be negative"), ("max_per_page: 0", "must be at least 1")],
)
def test_edit_delay_and_page_size_must_make_sense(tmp_path, setting, message) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(setting + "\n")
    with pytest.raises(ValueError, match=f"{setting.split(':')[0]} {message}"):
        Faults.load(path)
