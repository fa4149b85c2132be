"""Timeouts: no network call waits for ever, and a deployment that hangs ends the run at --timeout.

Servers that never answer (or answer a byte at a time) are plain sockets on port 0 in a thread; the hung
deployment is the sandbox's own ``deploy_hang_rate`` fault, waited out in sandbox time.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capella_deploy.api.client import CapellaClient
from capella_deploy.cli import main
from capella_deploy.errors import AmbiguousCreate, TransportError
from capella_deploy.run.session import Target, open_session
from capella_deploy.sandbox import Sandbox, lifecycle
from capella_deploy.sandbox.server import running_server
from capella_deploy.secrets import Secret

PACKAGE = Path(__file__).resolve().parents[2] / "capella_deploy"
TOKEN = "cbrel-timeout-token-71"


@contextlib.contextmanager
def silent_server(trickle: bytes = b"", every: float = 0.1) -> Iterator[str]:
    """A server that accepts connections and never completes an answer (``trickle`` sends it a byte at a time)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                held.append(connection)
                if trickle:
                    threading.Thread(target=drip, args=(connection,), daemon=True).start()

    def drip(connection: socket.socket) -> None:
        for byte in trickle:
            if stop.wait(every):
                return
            with contextlib.suppress(OSError):
                connection.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for connection in held:
            connection.close()
        listener.close()


def quick_client(base_url: str, timeout: float = 0.3) -> CapellaClient:
    return CapellaClient(base_url=base_url, token=Secret(TOKEN), timeout=timeout, max_attempts=2, backoff_base=0)


def test_a_server_that_never_answers_times_out_every_kind_of_call() -> None:
    async def calls(base_url: str) -> list[BaseException]:
        errors: list[BaseException] = []
        async with quick_client(base_url) as client:
            for call in (
                client.list_models("org"),
                client.create_model("org", {"name": "chat"}),
                client.create_api_key("org", {"name": "app"}),
                client.delete_model("org", "m1"),
            ):
                try:
                    await call
                except (TransportError, AmbiguousCreate) as exc:
                    errors.append(exc)
        return errors

    with silent_server() as base_url:
        started = time.monotonic()
        errors = asyncio.run(calls(base_url))
        elapsed = time.monotonic() - started
    assert [type(e) for e in errors] == [TransportError, AmbiguousCreate, AmbiguousCreate, TransportError]
    assert "ReadTimeout" in str(errors[0]) and "after 2 attempts" in str(errors[0])
    assert "outcome unknown" in str(errors[1]), "a create that timed out may have happened: never repeated blindly"
    assert elapsed < 4, f"{elapsed:.1f} s: six 0.3 s timeouts and nothing more"


def test_an_answer_trickled_a_byte_at_a_time_is_still_bounded() -> None:
    trickle = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 24  # 1.6 s of bytes, each within the read timeout

    async def call(base_url: str) -> None:
        async with CapellaClient(base_url=base_url, token=Secret(TOKEN), timeout=0.3, max_attempts=1) as client:
            with pytest.raises(TransportError):
                await client.list_models("org")

    with silent_server(trickle=trickle, every=0.04) as base_url:
        started = time.monotonic()
        with contextlib.suppress(BaseException):
            asyncio.run(call(base_url))
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the call took {elapsed:.1f} s with a 0.3 s timeout"


def test_no_call_in_the_package_switches_its_timeout_off() -> None:
    """httpx times out after 5 s unless told otherwise; nothing here may say timeout=None."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if (
                        keyword.arg == "timeout"
                        and isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is None
                    ):
                        offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []


def test_the_client_the_cli_builds_has_a_timeout_on_every_phase(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "served.json", token=TOKEN)

    async def timeouts(base_url: str) -> dict[str, float | None]:
        # A session reads its organization's name once: the API it opens on must answer.
        environ = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": sandbox.org_id, "CAPELLA_API_URL": base_url}
        async with open_session(Target(sandbox_state=None, token_file=None, environ=environ)) as session:
            configured = session.client._http.timeout  # the one place the setting can be read back
            return {
                "connect": configured.connect,
                "read": configured.read,
                "write": configured.write,
                "pool": configured.pool,
            }

    with running_server(sandbox) as base_url:
        configured = asyncio.run(timeouts(base_url))
    assert all(value is not None and 0 < value <= 60 for value in configured.values())


def test_a_check_against_an_endpoint_that_never_answers_fails_at_its_timeout(tmp_path: Path) -> None:
    with silent_server() as base_url:
        manifest = tmp_path / "capella.yaml"
        manifest.write_text(
            "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\nchecks:\n"
            f"  - {{name: gw, kind: chat, endpoint: '{base_url}/v1', endpointModel: m, apiKeyEnv: GW_KEY,"
            " timeoutSeconds: 0.5}\n"
        )
        started = time.monotonic()
        result = CliRunner().invoke(main, ["verify", "-f", str(manifest)], env={"GW_KEY": "k"})
        elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "within 0.5s" in result.output
    assert elapsed < 3


# -- a deployment that hangs ---------------------------------------------------------------------------------

MANIFEST = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16], allowedModels: [chat]}
"""


def cli(tmp_path: Path, *args: str, faults: Path | None = None) -> Result:
    env = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": str(faults or "")}
    target = [f"--sandbox={tmp_path / 'sandbox.json'}"]
    if args[0] == "apply":
        target += ["--outputs", str(tmp_path / "outputs.json"), "--auto-approve"]
    return CliRunner().invoke(main, [*args, *target], env=env)


def chat_models(sandbox: Sandbox) -> list[tuple[str, str]]:
    now = sandbox.now()
    return [(m.id, lifecycle.status_at(m, now)) for m in sandbox.world().models.values() if m.name == "chat"]


def test_a_hung_deployment_ends_at_the_timeout_and_is_picked_up_by_the_next_run(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sandbox.json", token=TOKEN)
    sandbox.set_speed(20_000)
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"deploy_hang_rate": 1.0}))

    started = time.monotonic()
    hung = cli(tmp_path, "apply", "-f", str(tmp_path / "capella.yaml"), "--timeout", "10m", faults=faults)
    assert time.monotonic() - started < 10, "ten sandbox minutes are half a second of wall time"
    assert hung.exit_code == 1, hung.output
    assert "model.chat" in hung.stdout and "still deploying when the timeout ran out (600 s, --timeout)" in hung.stdout
    assert "it is left in place and the next apply waits for it again" in hung.stdout
    assert "Traceback" not in hung.output
    [(model_id, status)] = chat_models(sandbox)
    assert status == "deploying", "left in place for the next run, neither deleted nor made again"
    outputs = json.loads((tmp_path / "outputs.json").read_text())
    assert outputs["models"]["chat"]["id"] == model_id and outputs["models"]["chat"]["status"] == "deploying"
    assert outputs["apiKeys"]["app"]["token"], "the key needed only the model's id, not its health"

    # The deployment finishes late; the next run finds it, records it and creates nothing.
    with sandbox.mutate() as world:
        world.models[model_id].transition_ends_at = sandbox.now()
    again = cli(tmp_path, "apply", "-f", str(tmp_path / "capella.yaml"), "--timeout", "10m")
    assert again.exit_code == 0, again.output
    assert chat_models(sandbox) == [(model_id, "healthy")]
    outputs = json.loads((tmp_path / "outputs.json").read_text())
    assert outputs["models"]["chat"] == {**outputs["models"]["chat"], "id": model_id, "status": "healthy"}


def test_a_run_that_ends_with_a_model_still_deploying_does_not_exit_0(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sandbox.json", token=TOKEN)
    sandbox.set_speed(20_000)
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"deploy_hang_rate": 1.0}))
    assert cli(tmp_path, "apply", "-f", str(tmp_path / "capella.yaml"), "--timeout", "5m", faults=faults).exit_code == 1
    still = cli(tmp_path, "apply", "-f", str(tmp_path / "capella.yaml"), "--timeout", "5m")
    assert "model.chat" in still.stderr and "deploying" in still.stderr
    assert still.exit_code == 1
