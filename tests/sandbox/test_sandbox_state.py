"""The persisted world: survives restarts, is shared between sandboxes on one file, keeps one timeline."""

from __future__ import annotations

import json
import time

import pytest
from sandbox_support import Api

from capella_deploy.clock import ScaledClock, SystemClock
from capella_deploy.sandbox import Sandbox
from capella_deploy.sandbox.state import StateError


def test_state_survives_a_restart(tmp_path, clock) -> None:
    path = tmp_path / "state.json"
    before = Api(Sandbox(path, clock=clock))
    model_id = before.deploy("chat")
    key_id, _ = before.create_key()
    clock.advance(300)

    after = Api(Sandbox(path, clock=clock))
    assert after.sandbox.org_id == before.sandbox.org_id
    assert after.model(model_id)["status"] == "healthy"
    assert after.get(f"{after.keys_url}/{key_id}").status_code == 200


def test_two_sandboxes_on_one_file_see_one_world(tmp_path, clock) -> None:
    path = tmp_path / "state.json"
    one, two = Api(Sandbox(path, clock=clock)), Api(Sandbox(path, clock=clock))
    first = one.deploy("from-one")
    second = two.deploy("from-two")
    assert {m["model"]["id"] for m in one.get(one.models_url).json()["data"]} == {first, second}
    one.sandbox.set_rules("conflicts")
    duplicate = {
        "name": "from-one",
        "catalogModelName": "mistralai/mistral-7b-instruct-v0.3",
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 24}},
    }
    assert two.post(two.models_url, json=duplicate).status_code == 409  # two sees what one created, and its rules
    assert two.delete(f"{two.models_url}/{first}").status_code == 202
    assert one.model(first)["status"] == "destroying"


def test_the_timeline_is_shared_through_the_state(tmp_path) -> None:
    path = tmp_path / "state.json"
    writer = Sandbox(path)
    writer.set_speed(1.0)
    reader = Sandbox(path)
    assert isinstance(reader.clock, ScaledClock) and reader.clock.speed == 1.0
    writer.advance_clock(3600)
    assert abs(reader.now() - writer.now()) < 1
    assert reader.now() - time.time() > 3500
    model_id = Api(writer).deploy("chat")
    reader.advance_clock(300)
    assert Api(writer).model(model_id)["status"] == "healthy"


def test_set_speed_keeps_time_continuous(tmp_path) -> None:
    sandbox = Sandbox(tmp_path / "s.json")
    before = sandbox.now()
    sandbox.set_speed(1_000)
    assert 0 <= sandbox.now() - before < 100  # no jump: a tenth of a real second at most has passed
    assert Sandbox(tmp_path / "s.json").clock.speed == 1_000  # type: ignore[attr-defined]


def test_speed_and_advance_refuse_what_they_cannot_do(tmp_path) -> None:
    system = Sandbox(tmp_path / "s.json", clock=SystemClock())
    with pytest.raises(ValueError):
        system.set_speed(2)
    with pytest.raises(ValueError):
        system.advance_clock(1)
    with pytest.raises(ValueError):
        Sandbox(tmp_path / "t.json").set_speed(0)


def test_writes_are_atomic_files_and_leave_nothing_behind(tmp_path, clock) -> None:
    path = tmp_path / "state.json"
    api = Api(Sandbox(path, clock=clock))
    for i in range(5):
        api.deploy(f"m{i}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.lock"]
    data = json.loads(path.read_text())
    assert data["schemaVersion"] == 2 and data["world"] == "spec"
    assert [m["name"] for m in data["models"].values()] == [f"m{i}" for i in range(5)]


def test_a_failed_write_changes_nothing(tmp_path, clock) -> None:
    path = tmp_path / "state.json"
    sandbox = Sandbox(path, clock=clock)
    Api(sandbox).deploy("keep")
    before = path.read_bytes()
    with pytest.raises(RuntimeError), sandbox.mutate() as world:
        world.models.clear()
        raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert [m.name for m in sandbox.world().models.values()] == ["keep"]


def test_unreadable_state_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{ nope")
    with pytest.raises(StateError, match="not a readable sandbox state"):
        Sandbox(path)
    path.write_text(json.dumps({"schemaVersion": 99}))
    with pytest.raises(StateError, match="schemaVersion"):
        Sandbox(path)


def test_reset_keeps_the_organization(tmp_path, clock) -> None:
    path = tmp_path / "state.json"
    sandbox = Sandbox(path, clock=clock)
    api = Api(sandbox)
    api.deploy("m")
    api.create_key()
    org = sandbox.org_id
    sandbox.reset()
    again = Sandbox(path, clock=clock)
    assert again.org_id == org
    assert again.world().models == {} and again.world().api_keys == {}


def test_an_in_memory_sandbox_needs_no_file(clock) -> None:
    api = Api(Sandbox(clock=clock))
    api.deploy("m")
    assert api.sandbox.state_path is None
    assert len(api.get(api.models_url).json()["data"]) == 1
