"""Model lifecycles in sandbox time, driven by a manual clock."""

from __future__ import annotations

import time

import pytest
from sandbox_support import Api

from capella_deploy.clock import ScaledClock
from capella_deploy.sandbox import Faults, Sandbox, Timings


def status(api, model_id: str) -> str:
    return api.model(model_id)["status"]


def test_deploy_turns_healthy_exactly_when_the_deploy_time_has_passed(api, clock) -> None:
    model_id = api.deploy("chat")
    assert status(api, model_id) == "deploying"
    assert api.model(model_id)["actions"] == ["destroy"]
    clock.advance(299.9)
    assert status(api, model_id) == "deploying"
    clock.advance(0.1)
    model = api.model(model_id)
    assert model["status"] == "healthy"
    assert model["actions"] == ["pause", "destroy", "edit"]


def test_pause_resume_and_destroy(api, clock) -> None:
    timings = api.sandbox.timings
    model_id = api.deploy("chat")
    clock.advance(timings.deploy_seconds)
    url = f"{api.models_url}/{model_id}"

    assert api.delete(url + "/activationState").status_code == 202
    assert status(api, model_id) == "pausing"
    clock.advance(timings.pause_seconds)
    model = api.model(model_id)
    assert model["status"] == "paused"
    assert model["actions"] == ["resume", "destroy", "edit"]

    assert api.post(url + "/activationState").status_code == 202
    assert status(api, model_id) == "resuming"
    clock.advance(timings.resume_seconds)
    assert status(api, model_id) == "healthy"

    assert api.delete(url).status_code == 202
    model = api.model(model_id)
    assert model["status"] == "destroying" and model["actions"] == []
    clock.advance(timings.destroy_seconds)
    assert api.get(url).status_code == 404
    assert api.get(api.models_url).json()["data"] == []
    api.deploy("next")  # the next write forgets the destroyed model's record
    assert model_id not in api.sandbox.world().models


def test_every_change_bumps_the_audit_version(api, clock) -> None:
    model_id = api.deploy("chat")
    clock.advance(300)
    url = f"{api.models_url}/{model_id}"
    versions = [api.model(model_id)["audit"]["version"]]
    assert api.put(url, json={"enableBatching": True}).status_code == 204
    versions.append(api.model(model_id)["audit"]["version"])
    api.delete(url + "/activationState")
    versions.append(api.model(model_id)["audit"]["version"])
    clock.advance(60)
    api.post(url + "/activationState")
    versions.append(api.model(model_id)["audit"]["version"])
    assert versions == [1, 2, 3, 4]
    assert api.model(model_id)["audit"]["modifiedAt"] == "2026-01-01T00:06:00.000000Z"


REFUSED_CALLS = [
    ("deploying", ("DELETE", "/activationState"), "healthy"),
    ("paused", ("DELETE", "/activationState"), "healthy"),
    ("healthy", ("POST", "/activationState"), "paused"),
    ("deploying", ("POST", "/activationState"), "paused"),
    ("deploying", ("PUT", ""), "healthy or paused"),
    ("pausing", ("PUT", ""), "healthy or paused"),
    ("destroying", ("PUT", ""), "healthy or paused"),
    ("destroying", ("DELETE", ""), None),
]
# The spec lists 409 for pause, resume and delete, and no 409 but a 422 for an edit (PUT).
SPEC_STATUS = {"DELETE": 409, "POST": 409, "PUT": 422}


@pytest.mark.parametrize("rules", ["spec", "conflicts"])
@pytest.mark.parametrize(("setup", "call", "allowed_from"), REFUSED_CALLS)
def test_calls_the_status_does_not_allow_are_refused(api, clock, rules, setup, call, allowed_from) -> None:
    api.sandbox.set_rules(rules)
    model_id = api.deploy("chat")
    url = f"{api.models_url}/{model_id}"
    if setup != "deploying":
        clock.advance(300)
    if setup in ("paused", "pausing"):
        api.delete(url + "/activationState")
        clock.advance(60 if setup == "paused" else 1)
    if setup == "destroying":
        api.delete(url)
    assert status(api, model_id) == setup
    method, suffix = call
    response = api.request(method, url + suffix, json={"name": "x"} if method == "PUT" else None)
    expected = SPEC_STATUS[method] if rules == "spec" else 409
    assert response.status_code == expected
    assert response.json()["code"] == {409: 1010, 422: 1005}[expected]
    assert setup in response.json()["hint"] or "already" in response.json()["hint"]
    if allowed_from:
        assert allowed_from in response.json()["hint"]
    assert status(api, model_id) == setup
    assert api.model(model_id)["name"] == "chat"


def test_edit_is_allowed_while_paused_and_delete_from_any_other_state(api, clock) -> None:
    model_id = api.deploy("chat")
    url = f"{api.models_url}/{model_id}"
    assert api.delete(url).status_code == 202  # straight from deploying
    other = api.deploy("other")
    clock.advance(300)
    api.delete(f"{api.models_url}/{other}/activationState")
    clock.advance(60)
    assert api.put(f"{api.models_url}/{other}", json={"name": "renamed"}).status_code == 204
    assert api.model(other)["name"] == "renamed"


def test_faults_make_deployments_fail_or_hang(sandbox, clock) -> None:
    api = Api(sandbox)
    sandbox.faults = Faults(deploy_fail_rate=1.0)
    failed = api.deploy("fails")
    sandbox.faults = Faults(deploy_hang_rate=1.0)
    hung = api.deploy("hangs")
    clock.advance(10 * 24 * 3600)
    assert status(api, failed) == "deployFailed"
    assert api.model(failed)["actions"] == ["destroy"]
    assert status(api, hung) == "deploying"
    assert api.delete(f"{api.models_url}/{hung}").status_code == 202


def test_timings_are_configurable(tmp_path, clock) -> None:
    api = Api(Sandbox(tmp_path / "s.json", clock=clock, timings=Timings(deploy_seconds=5)))
    model_id = api.deploy("quick")
    clock.advance(5)
    assert status(api, model_id) == "healthy"


def test_a_scaled_clock_makes_a_ten_minute_deploy_take_milliseconds(tmp_path) -> None:
    api = Api(Sandbox(tmp_path / "s.json", clock=ScaledClock(speed=1_000_000)))
    model_id = api.deploy("fast")
    start = time.monotonic()
    while status(api, model_id) != "healthy":
        assert time.monotonic() - start < 2
    assert time.monotonic() - start < 0.5


def test_default_clock_is_the_state_timeline_at_speed_100(tmp_path) -> None:
    sandbox = Sandbox(tmp_path / "s.json")
    assert isinstance(sandbox.clock, ScaledClock)
    assert sandbox.clock.speed == 100
    assert abs(sandbox.now() - time.time()) < 5
