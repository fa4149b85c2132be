"""`outputs`, `env` and `verify` find the manifest's outputs; `outputs NAME`; `env` picks an allowed key; `status`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import jsonschema
import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.clock import SystemClock
from capella_deploy.plan.status import StatusReport
from capella_deploy.run.session import Session
from capella_deploy.run.status import read_status
from capella_deploy.schemas import schema_text
from capella_deploy.secrets import Secret
from tests.conftest import World

TWO_KEYS = """\
apiVersion: capella-deploy/v1
defaults: {region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
  - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24, dimensions: 2048}
apiKeys:
  - {name: chat-key, allowedCIDRs: [127.0.0.1/32], allowedModels: [chat], expiryDays: 30}
  - {name: embed-key, allowedCIDRs: [127.0.0.1/32], allowedModels: [embed], expiryDays: 30}
checks:
  - {name: embeds, model: embed, kind: embedding}
outputs: {path: out/outputs.json}
"""


@pytest.fixture
def deployed(world: World, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TWO_KEYS applied from the world's root, the manifest one folder down: cfg/capella.yaml."""
    monkeypatch.chdir(world.root)
    (world.root / "cfg").mkdir()
    path = world.write("cfg/capella.yaml", TWO_KEYS)
    result = world.run("apply", "-f", "cfg/capella.yaml", f"--sandbox={world.state}", "--auto-approve")
    assert result.exit_code == 0, result.output
    return path


def test_the_manifests_outputs_path_is_relative_to_the_manifest(world: World, deployed: Path) -> None:
    written = world.root / "cfg" / "out" / "outputs.json"
    assert written.exists() and not (world.root / "out").exists()
    doc = json.loads(written.read_text())

    shown = world.run("outputs", "-f", "cfg/capella.yaml")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["models"]["chat"]["id"] == doc["models"]["chat"]["id"]
    assert doc["apiKeys"]["chat-key"]["token"] not in shown.stdout

    env = world.run("env", "chat", "-f", "cfg/capella.yaml")
    assert env.exit_code == 0 and f"OPENAI_BASE_URL={doc['models']['chat']['connectionString']}/v1" in env.stdout
    verified = world.run("verify", "-f", "cfg/capella.yaml", f"--sandbox={world.state}")
    assert verified.exit_code == 0, verified.output

    # Without -f the default in the working directory is read; there is none here, and the message says so.
    default = world.run("outputs")
    assert default.exit_code == 1
    assert ".capella/outputs.json (the default; -f MANIFEST reads the manifest's outputs.path)" in default.stderr
    # --outputs still wins.
    assert world.run("outputs", "-f", "cfg/capella.yaml", "--outputs", str(written)).exit_code == 0


def test_one_output_by_name(world: World, deployed: Path) -> None:
    doc = json.loads((world.root / "cfg" / "out" / "outputs.json").read_text())
    url = world.run("outputs", "-f", "cfg/capella.yaml", "model.chat.connectionString", "--raw")
    assert url.exit_code == 0 and url.stdout == doc["models"]["chat"]["connectionString"] + "\n"
    entry = world.run("outputs", "-f", "cfg/capella.yaml", "embed-key", "--json")
    shown = json.loads(entry.stdout)
    assert shown["id"] == doc["apiKeys"]["embed-key"]["id"] and shown["token"] == "********"
    assert shown["allowedModels"] == ["embed"]

    token = doc["apiKeys"]["chat-key"]["token"]
    hidden = world.run("outputs", "-f", "cfg/capella.yaml", "apiKey.chat-key.token", "--raw")
    assert hidden.exit_code == 1 and "holds a key token; add --show-secrets" in hidden.stderr
    assert token not in hidden.output
    revealed = world.run("outputs", "-f", "cfg/capella.yaml", "apiKey.chat-key.token", "--raw", "--show-secrets")
    assert revealed.stdout == token + "\n"
    org = world.run("outputs", "-f", "cfg/capella.yaml", "organizationId", "--raw")
    assert org.stdout.strip() == world.sandbox.org_id

    whole = world.run("outputs", "-f", "cfg/capella.yaml", "chat", "--raw")
    assert whole.exit_code == 1 and "is not a single value; use --json" in whole.stderr
    unknown = world.run("outputs", "-f", "cfg/capella.yaml", "model.chat.url")
    assert unknown.exit_code == 1 and "model.chat has no field 'url' (fields: connectionString" in unknown.stderr
    nothing = world.run("outputs", "-f", "cfg/capella.yaml", "nope")
    assert (
        nothing.exit_code == 1 and "no output named 'nope' (models: chat, embed; API keys: chat-key" in nothing.stderr
    )


def test_env_picks_the_key_allowed_to_call_the_model(world: World, deployed: Path) -> None:
    embed = world.run("env", "embed", "-f", "cfg/capella.yaml")
    assert embed.exit_code == 0, embed.output
    assert embed.stdout.startswith("# model embed (us-east-1), key embed-key\n")
    refused = world.run("env", "embed", "-f", "cfg/capella.yaml", "--key", "chat-key")
    assert refused.exit_code == 1 and "key 'chat-key' may not call model 'embed'" in refused.stderr

    # Outputs of an older apply do not record allowedModels: the manifest answers, when given.
    path = world.root / "cfg" / "out" / "outputs.json"
    doc = json.loads(path.read_text())
    for entry in doc["apiKeys"].values():
        del entry["allowedModels"]
    old = world.root / "old-outputs.json"
    old.write_text(json.dumps(doc))
    with_manifest = world.run("env", "embed", "-f", "cfg/capella.yaml", "--outputs", str(old))
    assert with_manifest.exit_code == 0 and "key embed-key" in with_manifest.stdout
    guessing = world.run("env", "embed", "--outputs", str(old))
    assert guessing.exit_code == 1 and "choose one with --key: chat-key, embed-key" in guessing.stderr


def test_env_refuses_when_no_key_may_call_the_model(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(world.root)
    only_chat = TWO_KEYS.replace(
        "  - {name: embed-key, allowedCIDRs: [127.0.0.1/32], allowedModels: [embed], expiryDays: 30}\n", ""
    )
    only_chat = only_chat.replace("checks:\n  - {name: embeds, model: embed, kind: embedding}\n", "")
    path = world.write("capella.yaml", only_chat)
    assert world.run("apply", "-f", str(path), f"--sandbox={world.state}", "--auto-approve").exit_code == 0
    result = world.run("env", "embed", "-f", str(path))
    assert result.exit_code == 1
    assert "no API key in the outputs may call model 'embed'" in result.stderr
    assert "(chat-key) do not list it in allowedModels" in result.stderr


def test_status_shows_what_is_deployed_and_what_the_manifest_declares(world: World, deployed: Path) -> None:
    stray = world.write(
        "stray.yaml",
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\n"
        "models:\n  - {name: hand-made, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 24}\n",
    )
    assert (
        world.run(
            "apply", "-f", str(stray), f"--sandbox={world.state}", "--auto-approve", "--outputs", "x.json"
        ).exit_code
        == 0
    )
    world.sandbox.set_speed(1)  # time stands (nearly) still from here
    world.sandbox.advance_clock(2 * 86_400)
    doc = json.loads((world.root / "cfg" / "out" / "outputs.json").read_text())

    table = world.run("status", "-f", "cfg/capella.yaml", f"--sandbox={world.state}")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    org = world.sandbox.org_id
    assert lines[0] == (
        f'Target: embedded sandbox {world.state}, organization "Sandbox Organization" '
        f"({org}, the sandbox's own organization)"
    )
    assert lines[2].split() == ["NAME", "KIND", "REGION", "GPU", "STATE", "AGE", "DECLARED", "CONNECTION"]
    rows = {line.split()[0]: line.split() for line in lines[3:] if line and not line.startswith(("1 ", "2 ", "3 "))}
    assert rows["chat"][:6] == ["chat", "model", "us-east-1", "48", "GB", "healthy"]
    assert rows["chat"][-2:] == ["yes", doc["models"]["chat"]["connectionString"]]
    assert rows["hand-made"][-2] == "no"
    assert rows["embed-key"][:5] == ["embed-key", "apiKey", "us-east-1", "-", "active"]
    assert rows["chat"][6] == "2d"  # applied two sandbox days (and some minutes) ago
    assert "3 model(s), 2 API key(s)." in table.stdout

    as_json = json.loads(world.run("status", f"--sandbox={world.state}", "--json").stdout)
    jsonschema.validate(as_json, json.loads(schema_text("status")))
    by_address = {r["address"]: r for r in as_json["resources"]}
    assert by_address["model.embed"]["gpu_memory"] == 24 and by_address["model.embed"]["declared"] is None
    assert by_address["apiKey.chat-key"]["expires_at"] is not None
    assert doc["apiKeys"]["chat-key"]["token"] not in json.dumps(as_json)


def test_status_asks_for_the_connection_strings_the_listing_leaves_out() -> None:
    # The connection string on the model object is optional in the API; the dedicated endpoint always has it.
    org = "6af08c0a-8cab-4c1c-b257-b521575c16d0"
    models = f"/v4/organizations/{org}/aiServices/models"
    model = {
        "id": "m1",
        "name": "chat",
        "status": "healthy",
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}},
        "config": {"catalogModelName": "mistralai/mistral-7b-instruct-v0.3"},
        "audit": {"createdAt": "2026-01-01T00:00:00Z", "version": 1},
    }
    asked: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == models:
            return httpx.Response(
                200,
                json={
                    "data": [{"model": model}, {"model": {**model, "id": "m2", "name": "new", "status": "deploying"}}]
                },
            )
        if request.url.path == f"{models}/apiKeys":
            return httpx.Response(200, json={"data": []})
        if request.url.path == f"{models}/m1/connectionString":
            return httpx.Response(200, json={"connectionString": "https://m1.ai.couchbase.com"})
        return httpx.Response(404, json={"code": 3000, "hint": "", "httpStatusCode": 404, "message": "not found"})

    async def run() -> StatusReport:
        client = CapellaClient(
            base_url="https://api.test", token=Secret("status-test-token"), transport=httpx.MockTransport(api)
        )
        async with client:
            return await read_status(Session(client, SystemClock(), org), None)

    report = asyncio.run(run())
    by_name = {r.name: r for r in report.resources}
    assert by_name["chat"].connection_string == "https://m1.ai.couchbase.com"
    assert by_name["new"].connection_string is None  # still deploying: not asked
    assert asked.count(f"{models}/m1/connectionString") == 1 and f"{models}/m2/connectionString" not in asked
