"""Secret hygiene: the API token and every key token never appear in anything the tool produces.

The test drives a whole life through the CLI, under faults that exercise the error paths (5xx, dropped
connections, lost key tokens, 429 storms) and with ``--debug``, then searches every byte produced for every
secret: stdout, stderr, log records at every level, plan files, JSON and Markdown renderings, drift reports,
exported manifests, the lock directory and the sandbox's own state. Only the outputs file holds key tokens,
and only ``--show-secrets`` prints them; those are the positive controls that prove the search can find one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from capella_deploy.api.client import CapellaClient, load_token
from capella_deploy.cli import main
from capella_deploy.errors import CapellaError
from capella_deploy.outputs import Outputs, atomic_write
from capella_deploy.sandbox import Sandbox
from capella_deploy.sandbox.server import running_server
from capella_deploy.secrets import Secret

API_TOKEN = "cbrel-Secret-Api-Token-9c4e1d7f2a"
MANIFEST = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
  - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [0.0.0.0/0], allowedModels: [chat, embed]}
  - {name: ops, expiryDays: 30, allowedCIDRs: [10.0.0.0/8]}
checks:
  - {name: chat-ok, model: chat, kind: chat, prompt: Reply with OK, apiKey: app}
  - {name: embed-ok, model: embed, kind: embedding, apiKey: app}
outputs: {path: outputs.json}
"""
# With stepped sandbox time the whole life follows from this seed (and from the requests made, the lock's
# included); seed 3 loses a key token in transit on the first apply and the rotation brings both keys' tokens
# back, which the checks below count on.
FAULTS = {
    "seed": 3,
    "routes": [
        {"match": "**", "error_rate": 0.02, "error_status": 429, "storm_seconds": 20},
        {"match": "POST /v4/organizations/*/aiServices/models/apiKeys", "drop_after": 0.5},
        {"match": "**", "error_rate": 0.15, "error_status": 503, "retry_after": 1},
        {"match": "**", "drop_before": 0.03},
    ],
    "deploy_fail_rate": 0.2,
}


class Produced:
    """Every byte the tool produced, by where it went, and every secret it could have leaked."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.blobs: dict[str, str] = {}
        self.secrets: set[str] = {API_TOKEN}
        self._caplog = caplog

    def add(self, where: str, text: str) -> None:
        self.blobs[f"{len(self.blobs):02d} {where}"] = text

    def learn_tokens(self, outputs: Path) -> None:
        if outputs.exists():
            for entry in json.loads(outputs.read_text())["apiKeys"].values():
                if entry.get("token"):
                    self.secrets.add(entry["token"])

    def leaks(self) -> list[str]:
        for record in self._caplog.records:
            self.add(f"log {record.name} {record.levelname}", record.getMessage() + (record.exc_text or ""))
        return [
            f"{where}: {secret[:6]}…" for where, text in self.blobs.items() for secret in self.secrets if secret in text
        ]


@pytest.fixture
def life(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Produced]:
    monkeypatch.chdir(tmp_path)
    for name in (None, "httpx", "httpcore"):  # every logger, every level, the client's request log included
        caplog.set_level(logging.DEBUG, logger=name)
    yield Produced(caplog)


def run_cli(produced: Produced, env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    produced.add(" ".join(args), result.stdout + result.stderr)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        produced.add("traceback of " + " ".join(args), "".join(traceback.format_exception(result.exception)))
    produced.learn_tokens(Path("outputs.json"))
    return result


def test_a_whole_life_under_faults_leaks_no_secret(life: Produced, tmp_path: Path) -> None:
    produced = life
    Path("capella.yaml").write_text(MANIFEST)
    Path("faults.json").write_text(json.dumps(FAULTS))
    # Stepped time: deployments, storms and Retry-After waits end after the same requests on any machine, so the
    # faults (drawn in request order from a seeded generator) land on the same calls in every run.
    Sandbox(tmp_path / "sandbox.json", token=API_TOKEN).step_clock()
    env = {"CAPELLA_API_TOKEN": API_TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": "faults.json"}
    target = ["--sandbox=sandbox.json"]

    run_cli(produced, env, "validate", "-f", "capella.yaml")
    for extra in ([], ["--json"], ["--markdown"], ["--out", "plan.json"]):
        run_cli(produced, env, "plan", "-f", "capella.yaml", *target, *extra)
    codes = [run_cli(produced, env, "--debug", "apply", "-f", "capella.yaml", "--auto-approve", *target).exit_code]
    while codes[-1] != 0 and len(codes) < 5:
        codes.append(
            run_cli(produced, env, "--debug", "apply", "-f", "capella.yaml", "--auto-approve", *target).exit_code
        )
    rotate = ["--replace", "apiKey.app", "--replace", "apiKey.ops"]
    run_cli(produced, env, "--debug", "apply", "-f", "capella.yaml", "--auto-approve", *target, *rotate)
    run_cli(produced, env, "apply", "plan.json", "--auto-approve", *target)  # stale by now: refused
    run_cli(produced, env, "plan", "-f", "capella.yaml", *target, "--json", "--out", "plan2.json")
    run_cli(produced, env, "outputs", "--outputs", "outputs.json")
    run_cli(produced, env, "outputs", "--outputs", "outputs.json", "--format", "dotenv")
    run_cli(produced, env, "env", "chat", "--outputs", "outputs.json")
    run_cli(produced, env, "verify", "-f", "capella.yaml", *target, "--outputs", "outputs.json")
    run_cli(produced, env, "drift", "-f", "capella.yaml", *target, "--report", "drift.json")
    run_cli(produced, env, "drift", "-f", "capella.yaml", *target, "--markdown")
    run_cli(produced, env, "export", *target, "-o", "exported.yaml")
    run_cli(produced, env, "--debug", "destroy", "-f", "capella.yaml", "--auto-approve", *target)

    assert len(produced.secrets) >= 3, "the life made keys and their tokens reached the outputs"
    assert any("token was lost in transit" in text for text in produced.blobs.values()), "faults hit key creates"
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "outputs.json":
            produced.add(f"file {path.relative_to(tmp_path)}", path.read_text(errors="replace"))
    assert produced.leaks() == []
    assert sum(" log capella_deploy.http DEBUG" in where for where in produced.blobs) > 50, "the request log ran"

    # Positive controls: the search finds a token where the user asked to see it.
    shown = CliRunner().invoke(main, ["outputs", "--outputs", "outputs.json", "--show-secrets"], env=env)
    current = {e["token"] for e in json.loads(Path("outputs.json").read_text())["apiKeys"].values() if e.get("token")}
    assert all(token in shown.stdout for token in current)


def child_cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPELLA_")}
    return subprocess.run(
        [sys.executable, "-c", "from capella_deploy.cli import main; main()", *args],
        cwd=cwd,
        env={**base, "CAPELLA_API_TOKEN": API_TOKEN, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_output_of_child_processes_leaks_no_secret(tmp_path: Path) -> None:
    # Child processes, so --debug configures logging as it does for a user (pytest holds the root logger here).
    sandbox = Sandbox(tmp_path / "sandbox.json", token=API_TOKEN)
    sandbox.set_speed(20_000)
    (tmp_path / "capella.yaml").write_text(MANIFEST.split("checks:")[0])
    args = ["--debug", "apply", "-f", "capella.yaml", "--auto-approve", "--sandbox=sandbox.json"]
    applied = child_cli(tmp_path, {}, *args, "--outputs", "outputs.json")
    assert applied.returncode == 0, applied.stderr
    with running_server(sandbox) as base_url:
        # Over real HTTP, where httpx and httpcore log too.
        planned = child_cli(tmp_path, {"CAPELLA_API_URL": base_url}, "--debug", "plan", "-f", "capella.yaml")
    assert planned.returncode == 0, planned.stderr
    for child in (applied, planned):
        assert "DEBUG capella_deploy.http: GET" in child.stderr, "debug logging was on"
    tokens = [e["token"] for e in json.loads((tmp_path / "outputs.json").read_text())["apiKeys"].values()]
    assert len(tokens) == 2
    for secret in [API_TOKEN, *tokens]:
        assert secret not in applied.stdout + applied.stderr + planned.stdout + planned.stderr


def test_every_log_record_of_real_http_calls_is_free_of_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (None, "httpx", "httpcore"):  # an earlier CLI run in this process may have quietened httpx
        caplog.set_level(logging.DEBUG, logger=name)
    sandbox = Sandbox(tmp_path / "sandbox.json", token=API_TOKEN)

    async def calls(base_url: str) -> str:
        async with CapellaClient(base_url=base_url, token=Secret(API_TOKEN)) as client:
            key = await client.create_api_key(
                sandbox.org_id, {"name": "k", "expiry": 5, "allowedCIDRs": ["10.0.0.0/8"], "region": "us-east-1"}
            )
            await client.list_api_keys(sandbox.org_id)
            await client.delete_api_key(sandbox.org_id, key.id)
            with pytest.raises(CapellaError):
                await client.get_model(sandbox.org_id, "missing")
            return key.token.reveal()

    with running_server(sandbox) as base_url:
        key_token = asyncio.run(calls(base_url))
    assert {r.name.split(".")[0] for r in caplog.records} >= {"capella_deploy", "httpx", "httpcore"}
    for record in caplog.records:
        text = record.getMessage()
        assert API_TOKEN not in text and key_token not in text, record.name


# -- errors built from hostile answers --------------------------------------------------------------------


def echoing(status: int, body: Callable[[httpx.Request], bytes], **headers: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body(request), headers=headers)

    return httpx.MockTransport(handler)


def auth_of(request: httpx.Request) -> str:
    return str(request.headers.get("Authorization", ""))


HOSTILE = {
    "html page quoting the request": lambda r: f"<html><pre>{auth_of(r)}</pre></html>".encode(),
    "json error quoting the token": lambda r: json.dumps(
        {"code": 1001, "message": f"bad token {auth_of(r)}", "hint": auth_of(r), "httpStatusCode": 401}
    ).encode(),
    "code 0 quoting the token": lambda r: json.dumps({"code": 0, "message": auth_of(r)}).encode(),
    "text quoting the bare token": lambda r: auth_of(r).removeprefix("Bearer ").encode(),
}


@pytest.mark.parametrize("status", [302, 401, 404, 500, 503])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_an_answer_that_echoes_the_token_is_scrubbed_from_every_error(kind: str, status: int) -> None:
    headers = {"Location": f"https://evil.example/?t={API_TOKEN}"} if status == 302 else {}
    transport = echoing(status, HOSTILE[kind], **headers)

    async def attempt() -> BaseException:
        client = CapellaClient(
            base_url="https://api.example", token=Secret(API_TOKEN), transport=transport, max_attempts=2, backoff_base=0
        )
        async with client:
            try:
                await client.list_models("org")
            except CapellaError as exc:
                return exc
        raise AssertionError("the call should have failed")

    error = asyncio.run(attempt())
    text = str(error) + repr(error) + "".join(traceback.format_exception(error)) + repr(error.__dict__)
    assert API_TOKEN not in text


def test_a_key_answer_without_an_id_never_quotes_its_token() -> None:
    key_token = "cbrel-key-token-never-print-me"
    bodies = [
        json.dumps({"token": key_token}).encode(),
        json.dumps({"id": 5, "token": key_token}).encode(),
        f"<html>{key_token}</html>".encode(),
        json.dumps([{"id": "k", "token": key_token}]).encode(),
    ]

    async def attempt(body: bytes) -> BaseException:
        transport = echoing(201, lambda r: body)
        async with CapellaClient(
            base_url="https://api.example", token=Secret(API_TOKEN), transport=transport
        ) as client:
            try:
                await client.create_api_key("org", {"name": "k"})
            except CapellaError as exc:
                return exc
        raise AssertionError("an answer without a key id cannot be a created key")

    for body in bodies:
        error = asyncio.run(attempt(body))
        assert key_token not in str(error) + repr(error) + "".join(traceback.format_exception(error))


# -- the outputs file: private from its first byte ----------------------------------------------------------


def test_the_outputs_file_is_0600_from_creation_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []
    real_fsync = os.fsync

    def fsync_and_look(fd: int) -> None:
        # Called while the new content sits in the not yet renamed file: its mode at that moment.
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_and_look)
    old_umask = os.umask(0)
    try:
        path = tmp_path / "out" / "outputs.json"
        path.parent.mkdir()
        path.write_text("{}")
        path.chmod(0o644)  # a world-readable file to replace
        store = Outputs(tmp_path / "out" / "fresh.json")
        store.record_key("app", key_id="k1", token=Secret("tok"))
        atomic_write(path, json.dumps({"models": {}, "apiKeys": {}}))
    finally:
        os.umask(old_umask)
    file_modes = [m for m in modes if m != stat.S_IMODE((tmp_path / "out").stat().st_mode)]
    assert file_modes and set(file_modes) == {0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "out" / "fresh.json").stat().st_mode) == 0o600


# -- the token is never taken from the command line ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "-f", "m.yaml", "--token", API_TOKEN],
        ["apply", "-f", "m.yaml", f"--token={API_TOKEN}"],
        ["apply", "-f", "m.yaml", "--api-token", API_TOKEN],
        ["drift", "-f", "m.yaml", "--token", API_TOKEN],
        ["--token", API_TOKEN, "plan", "-f", "m.yaml"],
    ],
)
def test_the_token_is_refused_on_the_command_line(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, args, env={"CAPELLA_API_TOKEN": ""})
    assert result.exit_code == 1
    assert "No such option" in result.output
    assert API_TOKEN not in result.output


def test_a_malformed_token_is_refused_without_being_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("secret part\twith-tab")
    with pytest.raises(CapellaError) as caught:
        load_token(token_file=token_file, environ={})
    assert "secret part" not in str(caught.value)
    with pytest.raises(CapellaError) as caught:
        load_token(token_file=None, environ={"CAPELLA_API_TOKEN": "zq9 secret-value"})
    assert "zq9" not in str(caught.value)


def test_the_help_says_where_the_token_comes_from() -> None:
    result = CliRunner().invoke(main, ["apply", "--help"])
    assert "--token-file" in result.output and "--token " not in result.output


# -- provider credentials ---------------------------------------------------------------------------------------

OPENAI_CREDENTIAL = "sk-proj-Hygiene-OpenAI-5c7e2a9d41"
ACCESS_KEY_ID = "AKIAHYGIENE4K7Q2W9ZZ"
SECRET_ACCESS_KEY = "hygiene/Secret+Access/Key=e1d2c3b4a5"
ROLLED_CREDENTIAL = "sk-proj-Hygiene-Rolled-0f9e8d7c6b"
CREDENTIAL_FILE = "aws-secret.txt"  # the user's own file: the one place a credential is meant to be
PROVIDERS = f"""\
apiVersion: capella-deploy/v1
providers:
  - name: openai
    type: openAI
    credentials: {{apiKey: {{env: OPENAI_API_KEY}}}}
    credentialsVersion: ${{VERSION:-1}}
  - name: docs
    type: awsS3
    awsRegion: us-east-1
    bucket: team-docs
    credentials:
      accessKeyId: {{env: AWS_ACCESS_KEY_ID}}
      secretAccessKey: {{file: {CREDENTIAL_FILE}}}
outputs: {{path: outputs.json}}
"""
PROVIDER_FAULTS = {
    "seed": 5,
    "routes": [
        # Every create's answer is lost: the error and adoption paths run with the credentials in the body.
        {"match": "POST /v4/organizations/*/aiServices/providers", "drop_after": 1.0},
        {"match": "PUT /v4/organizations/*/aiServices/providers/*", "error_rate": 0.3, "error_status": 503},
        {"match": "**", "error_rate": 0.1, "error_status": 503, "retry_after": 1},
    ],
}


def test_provider_credentials_never_leave_the_request_that_sends_them(life: Produced, tmp_path: Path) -> None:
    produced = life
    produced.secrets |= {OPENAI_CREDENTIAL, ACCESS_KEY_ID, SECRET_ACCESS_KEY, ROLLED_CREDENTIAL}
    Path("capella.yaml").write_text(PROVIDERS)
    Path(CREDENTIAL_FILE).write_text(SECRET_ACCESS_KEY + "\n")
    Path("faults.json").write_text(json.dumps(PROVIDER_FAULTS))
    sandbox = Sandbox(tmp_path / "sandbox.json", token=API_TOKEN)
    sandbox.step_clock()
    env = {
        "CAPELLA_API_TOKEN": API_TOKEN,
        "CAPELLA_ORG_ID": "",
        "CAPELLA_SANDBOX_FAULTS": "faults.json",
        "OPENAI_API_KEY": OPENAI_CREDENTIAL,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
    }
    target = ["--sandbox=sandbox.json"]

    run_cli(produced, env, "validate", "-f", "capella.yaml")
    for extra in ([], ["--json"], ["--markdown"], ["--out", "plan.json"]):
        run_cli(produced, env, "--debug", "plan", "-f", "capella.yaml", *target, *extra)
    codes = [run_cli(produced, env, "--debug", "apply", "-f", "capella.yaml", "--auto-approve", *target).exit_code]
    while codes[-1] != 0 and len(codes) < 4:
        codes.append(
            run_cli(produced, env, "--debug", "apply", "-f", "capella.yaml", "--auto-approve", *target).exit_code
        )
    assert codes[-1] == 0
    rolled = {**env, "OPENAI_API_KEY": ROLLED_CREDENTIAL, "VERSION": "2"}
    run_cli(produced, rolled, "--debug", "plan", "-f", "capella.yaml", *target, "--json", "--out", "roll.json")
    for _ in range(3):
        if (
            run_cli(produced, rolled, "--debug", "apply", "-f", "capella.yaml", "--auto-approve", *target).exit_code
            == 0
        ):
            break
    run_cli(
        produced,
        rolled,
        "--debug",
        "apply",
        "-f",
        "capella.yaml",
        "--auto-approve",
        *target,
        "--replace",
        "provider.docs",
    )
    run_cli(produced, env, "apply", "plan.json", *target)  # stale by now: refused
    run_cli(produced, env, "outputs", "--outputs", "outputs.json")
    run_cli(produced, env, "outputs", "--outputs", "outputs.json", "--format", "dotenv")
    run_cli(produced, env, "outputs", "--outputs", "outputs.json", "--show-secrets")
    run_cli(produced, env, "drift", "-f", "capella.yaml", *target, "--report", "drift.json")
    run_cli(produced, env, "drift", "-f", "capella.yaml", *target, "--markdown")
    run_cli(produced, env, "status", *target, "--json")
    run_cli(produced, env, "export", *target, "-o", "exported.yaml")
    # An error path: the variable unset, so the roll it asks for is refused, naming the variable only.
    missing = {k: v for k, v in rolled.items() if k != "OPENAI_API_KEY"} | {"VERSION": "3"}
    refused = run_cli(produced, missing, "--debug", "apply", "-f", "capella.yaml", "--auto-approve", *target)
    assert refused.exit_code == 1 and "OPENAI_API_KEY is not set" in refused.stdout + refused.stderr
    run_cli(produced, env, "--debug", "destroy", "-f", "capella.yaml", "--auto-approve", *target)

    assert any("after an unclear create answer" in text for text in produced.blobs.values()), "faults hit creates"
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != CREDENTIAL_FILE:
            produced.add(f"file {path.relative_to(tmp_path)}", path.read_text(errors="replace"))
    assert produced.leaks() == []
    assert sum(" log capella_deploy.http DEBUG" in where for where in produced.blobs) > 20, "the request log ran"
    # Positive control: the credentials did go out, and the one roll sent the new key (the sandbox keeps digests).
    sent = (tmp_path / "sandbox.json").read_text()
    assert hashlib.sha256(ROLLED_CREDENTIAL.encode()).hexdigest() not in sent, "destroyed with the rest"
    assert any("provider.openai: updated; credentials sent" in text for text in produced.blobs.values())


def test_debug_output_of_a_served_provider_run_leaks_no_credential(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sandbox.json", token=API_TOKEN)
    sandbox.set_speed(20_000)
    (tmp_path / "capella.yaml").write_text(PROVIDERS)
    (tmp_path / CREDENTIAL_FILE).write_text(SECRET_ACCESS_KEY)
    credentials = {"OPENAI_API_KEY": OPENAI_CREDENTIAL, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID}
    with running_server(sandbox) as base_url:
        served = {"CAPELLA_API_URL": base_url, "CAPELLA_ORG_ID": sandbox.org_id, **credentials}
        applied = child_cli(tmp_path, served, "--debug", "apply", "-f", "capella.yaml", "--auto-approve")
        rolled = child_cli(
            tmp_path,
            {**served, "VERSION": "2"},
            "--debug",
            "apply",
            "-f",
            "capella.yaml",
            "--auto-approve",
            "--replace",
            "provider.docs",
        )
    assert applied.returncode == 0, applied.stderr
    assert rolled.returncode == 0, rolled.stderr
    for child in (applied, rolled):
        assert "DEBUG capella_deploy.http: POST" in child.stderr or "DEBUG capella_deploy.http: PUT" in child.stderr
        for secret in (API_TOKEN, OPENAI_CREDENTIAL, ACCESS_KEY_ID, SECRET_ACCESS_KEY):
            assert secret not in child.stdout + child.stderr
    digests = {p.name: p.credential_sha256 for p in sandbox.world().providers.values()}
    assert digests["openai"] == {"apiKey": hashlib.sha256(OPENAI_CREDENTIAL.encode()).hexdigest()}
