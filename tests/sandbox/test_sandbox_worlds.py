"""The world's rules: the official spec's by default (names may repeat), the conflicts world (409s) on request.

One switch, ``world: spec | conflicts``: in the state file (kept, shared by every process on the file), in a
fault file (which takes over for the sandbox that loads it), and as ``sandbox serve|reset --world``.
"""

from __future__ import annotations

import json

import httpx
import pytest
from sandbox_support import CHAT_MODEL, TOKEN, Api

from capella_deploy.run.session import embedded_sandbox
from capella_deploy.sandbox import Faults, Sandbox
from capella_deploy.sandbox.server import running_server
from capella_deploy.sandbox.state import StateError

OPENAI = {"name": "llm", "type": "openAI", "configuration": {"apiKey": "sk-world-test-1"}}


def model_body(name: str) -> dict[str, object]:
    return {
        "name": name,
        "catalogModelName": CHAT_MODEL,
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}},
    }


def key_body(name: str) -> dict[str, object]:
    return {"name": name, "expiry": 30, "allowedCIDRs": ["10.0.0.0/8"], "region": "us-east-1"}


def providers_url(api: Api) -> str:
    return f"/v4/organizations/{api.sandbox.org_id}/aiServices/providers"


def test_a_new_world_follows_the_spec_and_says_so_in_its_state(tmp_path) -> None:
    sandbox = Sandbox(tmp_path / "s.json")
    assert sandbox.rules == "spec"
    assert json.loads((tmp_path / "s.json").read_text())["world"] == "spec"


def test_the_spec_world_accepts_two_models_two_keys_and_two_providers_of_one_name(api, clock) -> None:
    first, second = api.deploy("chat"), api.deploy("chat")
    assert first != second
    listed = api.get(api.models_url).json()["data"]
    assert sorted(m["model"]["id"] for m in listed if m["model"]["name"] == "chat") == sorted([first, second])

    one, two = api.post(api.keys_url, json=key_body("app")), api.post(api.keys_url, json=key_body("app"))
    assert one.status_code == two.status_code == 201
    assert one.json()["id"] != two.json()["id"] and one.json()["token"] != two.json()["token"]
    assert [k["name"] for k in api.get(api.keys_url).json()["data"]] == ["app", "app"]

    assert api.post(providers_url(api), json=OPENAI).status_code == 201
    assert api.post(providers_url(api), json=OPENAI).status_code == 201
    assert [p["name"] for p in api.get(providers_url(api)).json()["data"]] == ["llm", "llm"]

    clock.advance(300)
    other = api.deploy("other")
    clock.advance(300)
    assert api.put(f"{api.models_url}/{other}", json={"name": "chat"}).status_code == 204  # a rename onto a taken name
    assert [m["model"]["name"] for m in api.get(api.models_url).json()["data"]] == ["chat", "chat", "chat"]


def test_the_conflicts_world_refuses_a_taken_name_with_409(api, clock) -> None:
    api.sandbox.set_rules("conflicts")
    first = api.deploy("chat")
    refused = api.post(api.models_url, json=model_body("chat"))
    assert refused.status_code == 409 and refused.json()["code"] == 1010
    assert "already exists" in refused.json()["hint"]
    api.create_key("k")
    assert api.post(api.keys_url, json=key_body("k")).status_code == 409
    assert api.post(providers_url(api), json=OPENAI).status_code == 201
    assert api.post(providers_url(api), json=OPENAI).status_code == 409
    clock.advance(300)
    other = api.deploy("other")
    clock.advance(300)
    assert api.put(f"{api.models_url}/{other}", json={"name": "chat"}).status_code == 409
    assert api.model(other)["name"] == "other"
    api.delete(f"{api.models_url}/{first}")
    assert api.post(api.models_url, json=model_body("chat")).status_code == 202, "the old one is being destroyed"


def test_the_worlds_differ_on_an_edit_during_a_transition(api) -> None:
    model_id = api.deploy("chat")
    url = f"{api.models_url}/{model_id}"
    edit = api.put(url, json={"enableBatching": True})
    assert edit.status_code == 422 and edit.json()["code"] == 1005
    assert "deploying" in edit.json()["hint"] and "Wait until its status settles" in edit.json()["hint"]
    api.sandbox.set_rules("conflicts")
    assert api.put(url, json={"enableBatching": True}).status_code == 409


def version_1_state(tmp_path, reject_duplicate_names: bool | None):
    """A state file as the sandbox wrote it before worlds had names, holding one model and one key."""
    path = tmp_path / "old.json"
    sandbox = Sandbox(path)
    api = Api(sandbox)
    model_id = api.deploy("chat")
    key_id, _ = api.create_key("app")
    data = json.loads(path.read_text())
    data["schemaVersion"] = 1
    del data["world"], data["providers"]
    if reject_duplicate_names is not None:
        data["reject_duplicate_names"] = reject_duplicate_names
    path.write_text(json.dumps(data))
    return path, model_id, key_id


@pytest.mark.parametrize(("setting", "rules"), [(True, "conflicts"), (False, "spec"), (None, "conflicts")])
def test_a_version_1_state_file_is_read_in_the_world_it_described(tmp_path, setting, rules) -> None:
    path, model_id, key_id = version_1_state(tmp_path, setting)
    sandbox = Sandbox(path)
    assert sandbox.rules == rules
    api = Api(sandbox)
    assert api.model(model_id)["name"] == "chat"
    assert api.get(f"{api.keys_url}/{key_id}").json()["name"] == "app"
    assert api.post(api.keys_url, json=key_body("app")).status_code == (409 if rules == "conflicts" else 201)
    api.create_key("another")  # the next write saves the file in today's form
    saved = json.loads(path.read_text())
    assert saved["schemaVersion"] == 2 and saved["world"] == rules and "reject_duplicate_names" not in saved


def test_a_state_naming_an_unknown_world_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "s.json"
    Sandbox(path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "world": "lenient"}))
    with pytest.raises(StateError, match="world must be one of spec, conflicts"):
        Sandbox(path)
    with pytest.raises(ValueError, match="world must be one of"):
        Sandbox(tmp_path / "t.json").set_rules("lenient")  # type: ignore[arg-type]


def test_a_fault_file_world_takes_over_for_the_sandbox_that_loads_it(tmp_path, clock) -> None:
    path = tmp_path / "s.json"
    faults = tmp_path / "faults.yaml"
    faults.write_text("world: conflicts\n")
    loaded = Sandbox(path, clock=clock, faults=Faults.load(faults))
    plain = Sandbox(path, clock=clock)
    assert loaded.rules == "conflicts" and plain.rules == "spec"
    Api(plain).deploy("chat")
    assert Api(loaded).post(Api(loaded).models_url, json=model_body("chat")).status_code == 409
    assert Api(plain).post(Api(plain).models_url, json=model_body("chat")).status_code == 202
    assert json.loads(path.read_text())["world"] == "spec", "a fault file does not change the state"

    faults.write_text("world: strict\n")
    with pytest.raises(ValueError, match="world must be one of spec, conflicts"):
        Faults.load(faults)


def test_the_fault_file_of_sandbox_runs_sets_the_world(tmp_path) -> None:
    # What every command given --sandbox and CAPELLA_SANDBOX_FAULTS builds.
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"world": "conflicts"}))
    env = {"CAPELLA_SANDBOX_FAULTS": str(faults), "CAPELLA_API_TOKEN": TOKEN}
    assert embedded_sandbox(tmp_path / "s.json", env).rules == "conflicts"
    assert embedded_sandbox(tmp_path / "s.json", {"CAPELLA_API_TOKEN": TOKEN}).rules == "spec"


def test_the_admin_route_switches_a_served_world(sandbox) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_server(sandbox) as base:
        models = f"{base}/v4/organizations/{sandbox.org_id}/aiServices/models"
        assert httpx.post(models, json=model_body("chat"), headers=headers).status_code == 202
        assert httpx.put(f"{base}/_sandbox/faults", json={"world": "conflicts"}, headers=headers).status_code == 200
        assert httpx.post(models, json=model_body("chat"), headers=headers).status_code == 409
        bad = httpx.put(f"{base}/_sandbox/faults", json={"world": "x"}, headers=headers)
        assert bad.status_code == 400 and "world must be one of" in bad.json()["hint"]
