"""Post-apply checks against the sandbox (in process and served), the `verify` and `env` commands, and the
header profile round trip; hand-made HTTP answers for what the sandbox never does (broken streams)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from capella_deploy.checks import (
    CheckReport,
    CheckResult,
    run_checks,
)
from capella_deploy.cli.checks import read_outputs
from capella_deploy.kinds.model import header_profile
from capella_deploy.manifest import Manifest, load_manifest
from capella_deploy.run.verify import sandbox_transport_for
from capella_deploy.sandbox.server import running_server
from capella_deploy.schemas import schema_text
from capella_deploy.secrets import MASK
from capella_deploy.views.checks import render_checks, render_checks_json, render_checks_markdown
from capella_deploy.views.env import render_env
from tests.conftest import World

ROOT = Path(__file__).resolve().parent.parent
CHAT = "mistralai/mistral-7b-instruct-v0.3"
DAY = 86_400

MANIFEST = """\
apiVersion: capella-deploy/v1
defaults:
  region: us-east-1
  routing: {{strategy: least-latency, maxRetries: 2, requestTimeoutSeconds: 30}}
  cache: {{type: semantic, threshold: 0.85, expirySeconds: 3600}}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    routing: {{strategy: prefix-aware}}
  - name: embed
    catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
    gpuMemory: 24
    dimensions: 2048
    cache: {{type: none}}
apiKeys:
  - name: app
    expiryDays: {expiry}
    allowedCIDRs: [{cidr}]
checks:
{checks}
"""

ALL_KINDS = """\
  - {name: chat-ok, model: chat, kind: chat, expect: {nonEmpty: true, maxLatencyMs: 60000}}
  - {name: stream-ok, model: chat, kind: chat-stream, expect: {maxFirstTokenMs: 60000}}
  - {name: completion-ok, model: chat, kind: completion}
  - {name: embed-ok, model: embed, kind: embedding, prompt: a document, expect: {dimensions: declared}}
"""


def deploy(world: World, checks: str = ALL_KINDS, *, cidr: str = "127.0.0.1/32", expiry: int = 90) -> Path:
    path = world.write("capella.yaml", MANIFEST.format(checks=checks, cidr=cidr, expiry=expiry))
    applied = world.cli("apply", "-f", str(path), "--auto-approve")
    # Every resource is created; apply's own exit code also carries the checks, which some tests make fail.
    assert "Apply complete!" in applied.stdout, applied.output
    return path


def verify(world: World, path: Path, *extra: str) -> Any:
    return world.cli("verify", "-f", str(path), "--outputs", str(world.outputs), *extra)


def check_in_process(world: World, path: Path, **kw: Any) -> CheckReport:
    manifest = load_manifest([path], environ={})
    transport_for = sandbox_transport_for(world.state, world.env)
    return asyncio.run(run_checks(manifest, read_outputs(world.outputs), transport_for=transport_for, **kw))


def by_name(report: CheckReport) -> dict[str, CheckResult]:
    return {result.name: result for result in report.results}


# -- against the sandbox ------------------------------------------------------------------------------


def test_every_kind_passes_against_a_fresh_apply(world: World) -> None:
    path = deploy(world)
    result = verify(world, path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, json.loads(schema_text("verify")))
    assert report["ok"] and report["summary"] == {"pass": 4, "fail": 0, "skip": 0}
    checks = {c["name"]: c for c in report["checks"]}
    assert [c["name"] for c in report["checks"]] == ["chat-ok", "stream-ok", "completion-ok", "embed-ok"]
    assert checks["embed-ok"]["detail"] == "2048 dimensions"
    assert checks["stream-ok"]["first_token_ms"] is not None
    assert checks["stream-ok"]["first_token_ms"] <= checks["stream-ok"]["latency_ms"]
    assert all(c["latency_ms"] > 0 for c in report["checks"])
    assert checks["chat-ok"]["target"] == "model chat"

    table = verify(world, path)
    assert table.exit_code == 0
    assert "CHECK" in table.stdout and "LATENCY" in table.stdout and "4 passed, 0 failed" in table.stdout


def test_quickstart_apply_ends_with_a_passing_checks_table(world: World) -> None:
    quickstart = ROOT / "examples" / "quickstart.yaml"
    manifest = load_manifest([quickstart], environ={})
    assert [c.name for c in manifest.checks] == ["chat-answers"]
    applied = world.cli("apply", "-f", str(quickstart), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    after_apply = applied.stdout[applied.stdout.index("Apply complete!") :]
    assert "chat-answers" in after_apply and "1 passed, 0 failed" in after_apply
    # With nothing left to change, apply still runs the checks.
    again = world.cli("apply", "-f", str(quickstart), "--auto-approve")
    assert again.exit_code == 0, again.output
    assert "No changes." in again.stdout and "1 passed, 0 failed" in again.stdout


def test_wrong_dimensions_fail_and_exit_1(world: World) -> None:
    path = deploy(world, "  - {name: embed-size, model: embed, kind: embedding, expect: {dimensions: 1024}}\n")
    result = verify(world, path)
    assert result.exit_code == 1
    assert "FAIL" in result.stdout
    assert "embed-size: the embedding has 2048 dimensions, expected 1024" in result.stdout


def test_an_expired_key_fails_with_the_services_message(world: World) -> None:
    world.sandbox.set_speed(2_000)  # a one-day key must outlive a slow machine's apply and first verify (43 s)
    path = deploy(world, "  - {name: chat-ok, model: chat, kind: chat}\n", expiry=1)
    assert verify(world, path).exit_code == 0
    world.sandbox.advance_clock(2 * DAY)
    (result,) = check_in_process(world, path).results
    assert result.status == "fail"
    assert result.reason is not None and result.reason.startswith("HTTP 401: The API key expired at ")


def test_a_caller_outside_the_keys_cidrs_fails(world: World) -> None:
    path = deploy(world, "  - {name: chat-ok, model: chat, kind: chat-stream}\n", cidr="10.0.0.0/16")
    (result,) = check_in_process(world, path).results
    assert result.status == "fail"
    assert result.reason == "HTTP 403: Requests from 127.0.0.1 are not allowed for this API key."


def test_a_storm_of_5xx_fails_every_check(world: World) -> None:
    path = deploy(world)
    faults = world.write("faults.yaml", "routes:\n  - {match: '/ai/**', error_rate: 1.0, error_status: 503}\n")
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(faults)
    result = verify(world, path, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["summary"] == {"pass": 0, "fail": 4, "skip": 0}
    assert {c["reason"] for c in report["checks"]} == {
        "HTTP 503: Service Unavailable (a fault injected by the sandbox)."
    }


def test_latency_limits_use_the_timer(world: World) -> None:
    path = deploy(
        world,
        "  - {name: slow, model: chat, kind: chat, expect: {maxLatencyMs: 1500}}\n"
        "  - {name: slow-first, model: chat, kind: chat-stream, expect: {maxFirstTokenMs: 500}}\n",
    )
    ticks = iter(range(0, 1000))
    report = check_in_process(world, path, timer=lambda: float(next(ticks)))  # every reading is one second later
    slow, first = report.results
    assert slow.status == "fail" and slow.reason is not None and "more than maxLatencyMs 1500" in slow.reason
    assert first.status == "fail" and first.reason is not None and "more than maxFirstTokenMs 500" in first.reason


def test_streaming_through_the_cloudbase_style_gateway(world: World) -> None:
    checks = """\
  - name: gateway
    endpoint: http://capella.sandbox/v1/ai/hunyuan
    endpointModel: hy3-preview
    apiKeyEnv: GATEWAY_KEY
    kind: chat-stream
    expect: {nonEmpty: true}
  - name: gateway-capella
    endpoint: http://capella.sandbox/v1/ai/capella
    endpointModel: mistralai/mistral-7b-instruct-v0.3
    apiKeyEnv: GATEWAY_KEY
    kind: chat
"""
    path = deploy(world, checks)
    world.env["GATEWAY_KEY"] = read_outputs(world.outputs)["apiKeys"]["app"]["token"]
    result = verify(world, path, "--json")
    assert result.exit_code == 0, result.output
    gateway = json.loads(result.stdout)["checks"][0]
    assert gateway["target"] == "http://capella.sandbox/v1/ai/hunyuan"
    assert gateway["first_token_ms"] is not None and gateway["detail"].endswith("event(s)")


def test_a_missing_api_key_variable_fails_that_check_only(world: World) -> None:
    checks = """\
  - {name: chat-ok, model: chat, kind: chat}
  - {name: gateway, endpoint: "http://capella.sandbox/v1/ai/hunyuan", endpointModel: hy3-preview,
     apiKeyEnv: UNSET_GATEWAY_KEY, kind: chat}
"""
    path = deploy(world, checks)
    report = by_name(check_in_process(world, path, environ={}))
    assert report["chat-ok"].status == "pass"
    assert report["gateway"].status == "fail"
    assert report["gateway"].reason == "the environment variable UNSET_GATEWAY_KEY (apiKeyEnv) is not set"


def test_the_first_key_of_the_models_region_that_allows_it_is_used(world: World) -> None:
    text = MANIFEST.format(checks="  - {name: chat-ok, model: chat, kind: chat}", cidr="127.0.0.1/32", expiry=90)
    text = text.replace(
        "apiKeys:\n",
        "apiKeys:\n  - {name: eu, region: eu-west-1, allowedCIDRs: [127.0.0.1/32]}\n"
        "  - {name: embed-only, allowedCIDRs: [127.0.0.1/32], allowedModels: [embed]}\n",
    )
    path = world.write("capella.yaml", text)
    assert world.cli("apply", "-f", str(path), "--auto-approve").exit_code == 0
    assert verify(world, path).exit_code == 0  # eu and embed-only would both be refused

    doc = read_outputs(world.outputs)
    doc["apiKeys"]["app"]["token"] = None  # a token lost in transit
    manifest = load_manifest([path], environ={})
    (result,) = asyncio.run(run_checks(manifest, doc, transport_for=sandbox_transport_for(world.state, {}))).results
    assert result.status == "fail" and result.reason is not None
    assert result.reason.startswith("the outputs hold no token for key 'app'")


def test_without_outputs_model_checks_fail_and_paused_models_are_skipped(world: World) -> None:
    text = MANIFEST.format(checks=ALL_KINDS, cidr="127.0.0.1/32", expiry=90).replace(
        "    cache: {type: none}\n", "    cache: {type: none}\n    state: paused\n"
    )
    manifest = load_manifest([world.write("capella.yaml", text)], environ={})
    report = by_name(asyncio.run(run_checks(manifest, {})))
    assert report["chat-ok"].status == "fail"
    assert report["chat-ok"].reason == "the outputs have no connection string for model 'chat'; run apply first"
    assert report["embed-ok"].status == "skip" and report["embed-ok"].ok
    assert not CheckReport(tuple(report.values())).ok


def test_verify_without_sandbox_refuses_sandbox_connection_strings(world: World) -> None:
    path = deploy(world, "  - {name: chat-ok, model: chat, kind: chat}\n")
    result = world.run("verify", "-f", str(path), "--outputs", str(world.outputs))
    assert result.exit_code == 1
    assert "--sandbox" in result.stderr


# -- the header profile and the openai SDK -------------------------------------------------------------


@pytest.fixture
def served(world: World) -> Iterator[tuple[World, dict[str, Any], str]]:
    """A deployed world served over HTTP; connection strings rewritten to the served host, as a served apply gives."""
    path = deploy(world)
    doc = read_outputs(world.outputs)
    with running_server(world.sandbox) as base:
        for entry in doc["models"].values():
            entry["connectionString"] = f"{base}/ai/{entry['id']}"
        yield world, doc, str(path)


def test_the_sandbox_accepts_every_header_of_every_profile(served: tuple[World, dict[str, Any], str]) -> None:
    _, doc, path = served
    manifest = load_manifest([path], environ={})
    token = doc["apiKeys"]["app"]["token"]
    assert doc["models"]["chat"]["headers"] == {
        "X-cb-routing-strategy": "prefix-aware",  # the model's own strategy
        "X-cb-max-retries": "2",  # the rest of the routing block from the defaults
        "X-cb-request-duration": "30",
        "X-cb-cache": "semantic",
        "X-cb-cache-threshold": "0.85",
        "X-cb-cache-expiry-duration": "3600",
    }
    for spec in manifest.models:
        profile = doc["models"][spec.name]["headers"]
        assert profile == header_profile(spec, manifest.defaults)
        url = doc["models"][spec.name]["connectionString"] + "/v1/models"
        echoed = httpx.get(url, headers={**profile, "X-cb-debug": "true", "Authorization": f"Bearer {token}"})
        assert echoed.status_code == 200, echoed.text
        for header, value in profile.items():
            assert echoed.headers[header] == value
    # The acceptance above means something: a value outside the documented range is refused.
    refused = httpx.get(
        doc["models"]["chat"]["connectionString"] + "/v1/models",
        headers={"X-cb-cache-threshold": "1.5", "Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 400 and "X-cb-cache-threshold" in refused.json()["error"]["message"]


def test_openai_sdk_with_the_outputs_and_the_profile(served: tuple[World, dict[str, Any], str]) -> None:
    _, doc, _ = served
    chat, embed = doc["models"]["chat"], doc["models"]["embed"]
    key = doc["apiKeys"]["app"]["token"]
    client = openai.OpenAI(
        base_url=chat["connectionString"] + "/v1", api_key=key, default_headers=chat["headers"], max_retries=0
    )
    messages: Any = [{"role": "user", "content": "Reply with OK"}]
    reply = client.chat.completions.create(model=CHAT, messages=messages)
    assert reply.choices[0].message.content
    stream = client.chat.completions.create(model=CHAT, messages=messages, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == reply.choices[0].message.content

    embedder = openai.OpenAI(
        base_url=embed["connectionString"] + "/v1", api_key=key, default_headers=embed["headers"], max_retries=0
    )
    vector = embedder.embeddings.create(model="nvidia/llama-3.2-nv-embedqa-1b-v2", input="a document")
    assert len(vector.data[0].embedding) == 2048


def test_checks_over_real_http_including_the_stream(served: tuple[World, dict[str, Any], str]) -> None:
    _, doc, path = served
    report = asyncio.run(run_checks(load_manifest([path], environ={}), doc))
    assert report.ok, render_checks(report)
    assert by_name(report)["stream-ok"].first_token_ms is not None


# -- env ------------------------------------------------------------------------------------------------


def test_env_prints_base_url_masked_key_and_header_hints(world: World) -> None:
    deploy(world, "  - {name: chat-ok, model: chat, kind: chat}\n")
    doc = read_outputs(world.outputs)
    token = doc["apiKeys"]["app"]["token"]

    masked = world.run("env", "chat", "--outputs", str(world.outputs))
    assert masked.exit_code == 0, masked.output
    lines = masked.stdout.splitlines()
    assert f"OPENAI_BASE_URL={doc['models']['chat']['connectionString']}/v1" in lines
    assert f"OPENAI_API_KEY={MASK}" in lines
    assert "# X-cb-routing-strategy: prefix-aware" in lines and "# X-cb-cache: semantic" in lines

    shown = world.run("env", "chat", "--outputs", str(world.outputs), "--show-secrets", "--key", "app")
    assert shown.exit_code == 0
    assert f"OPENAI_API_KEY={token}" in shown.stdout.splitlines()


def test_env_refuses_what_it_cannot_answer(world: World) -> None:
    doc = {
        "models": {"chat": {"connectionString": "https://x.ai.couchbase.com", "region": "us-east-1"}},
        "apiKeys": {
            "a": {"region": "us-east-1", "token": "t1"},
            "b": {"region": "us-east-1", "token": "t2"},
            "eu": {"region": "eu-west-1", "token": "t3"},
        },
    }
    from capella_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="no model 'nope' in the outputs"):
        render_env(doc, "nope", key_name=None, show_secrets=False)
    with pytest.raises(ConfigError, match="choose one with --key: a, b"):
        render_env(doc, "chat", key_name=None, show_secrets=False)
    assert "OPENAI_API_KEY=t2" in render_env(doc, "chat", key_name="b", show_secrets=True).text
    missing = world.run("env", "chat", "--outputs", str(world.root / "none.json"))
    assert missing.exit_code == 1 and "no outputs file" in missing.stderr


# -- answers the sandbox never gives -------------------------------------------------------------------

TOKEN = "sk-check-" + "x" * 24


def mock_manifest(*checks: dict[str, Any]) -> Manifest:
    return Manifest.model_validate(
        {
            "apiVersion": "capella-deploy/v1",
            "defaults": {"region": "us-east-1", "routing": {"strategy": "throughput"}},
            "models": [{"name": "chat", "catalogModel": CHAT, "gpuMemory": 48}],
            "apiKeys": [{"name": "app", "allowedCIDRs": ["0.0.0.0/0"]}],
            "checks": list(checks),
        }
    )


OUTPUTS = {
    "models": {"chat": {"id": "m1", "connectionString": "http://mock.test/ai/m1"}},
    "apiKeys": {"app": {"id": "k1", "region": "us-east-1", "token": TOKEN}},
}


def run_mocked(handler: Callable[[httpx.Request], Any], **check: Any) -> CheckResult:
    """One check against a hand-written server; async handlers may stream or stall."""
    spec = {"name": "c", "model": "chat", "kind": "chat-stream", **check}
    transport = httpx.MockTransport(handler)
    (result,) = asyncio.run(run_checks(mock_manifest(spec), OUTPUTS, transport_for=lambda url: transport)).results
    assert TOKEN not in repr(result) and TOKEN not in json.dumps(result.to_dict())
    return result


def sse(*events: str, content_type: str = "text/event-stream") -> Callable[[httpx.Request], httpx.Response]:
    body = "".join(f"data: {event}\n\n" for event in events).encode()
    return lambda request: httpx.Response(200, headers={"content-type": content_type}, content=body)


def chunk(text: str) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]})


def test_a_stream_is_read_until_done_and_sends_what_an_app_sends() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse(json.dumps({"choices": [{"delta": {"role": "assistant"}}]}), chunk("O"), chunk("K"), "[DONE]")(
            request
        )

    result = run_mocked(handler, expect={"contains": "ok"})
    assert result.status == "pass", result.reason
    assert result.detail == "1 word(s) in 3 event(s)"
    (request,) = seen
    assert str(request.url) == "http://mock.test/ai/m1/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["x-cb-routing-strategy"] == "throughput"
    body = json.loads(request.content)
    assert body["stream"] is True and body["model"] == CHAT and body["messages"][0]["role"] == "user"


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (sse(chunk("OK")), "the stream ended after 1 event(s) without data: [DONE]"),
        (
            sse(chunk("OK"), content_type="application/json"),
            "asked for a stream but got application/json, not server-sent events (text/event-stream)",
        ),
        (sse("{not json", "[DONE]"), "event 1 of the stream is not JSON"),
        (
            sse(chunk("O"), json.dumps({"error": {"message": "model overloaded"}})),
            "the stream reported an error after 1 event(s): model overloaded",
        ),
    ],
    ids=["no-done", "not-sse", "bad-json", "error-event"],
)
def test_a_broken_stream_fails_cleanly(handler: Callable[[httpx.Request], httpx.Response], reason: str) -> None:
    result = run_mocked(handler)
    assert (result.status, result.reason) == ("fail", reason)


def test_a_connection_dropped_mid_stream_fails_cleanly() -> None:
    class Dropping(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield f"data: {chunk('O')}\n\n".encode()
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    result = run_mocked(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Dropping())
    )
    assert result.status == "fail"
    assert result.reason == (
        "the connection failed after 1 event(s): RemoteProtocolError: "
        "peer closed connection without sending complete message body"
    )


def test_http_errors_carry_the_message_without_the_token() -> None:
    def echo_token(request: httpx.Request) -> httpx.Response:
        presented = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(401, json={"error": {"message": f"key {presented} is revoked", "type": "auth"}})

    result = run_mocked(echo_token, kind="chat")
    assert result.reason == f"HTTP 401: key {MASK} is revoked"

    html = run_mocked(lambda request: httpx.Response(502, html="<h1>Bad gateway</h1>"), kind="chat")
    assert html.reason == "HTTP 502: Bad Gateway"
    not_json = run_mocked(lambda request: httpx.Response(200, text="OK"), kind="completion")
    assert not_json.reason == "HTTP 200 but the answer is not JSON (text/plain)"
    wrong_shape = run_mocked(lambda request: httpx.Response(200, json={"data": []}), kind="embedding")
    assert wrong_shape.reason is not None and wrong_shape.reason.startswith(
        "the answer is not an OpenAI-style embedding"
    )


def test_timeouts_fail_with_the_limit() -> None:
    def times_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    assert run_mocked(times_out, kind="chat").reason == "no complete answer within 30s (timeoutSeconds)"

    async def stalls(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    stalled = run_mocked(stalls, kind="chat", timeoutSeconds=0.02)
    assert stalled.reason == "no complete answer within 0.02s (timeoutSeconds)"


def test_empty_answers_and_missing_text_fail() -> None:
    empty = {"choices": [{"message": {"role": "assistant", "content": ""}}]}
    result = run_mocked(lambda request: httpx.Response(200, json=empty), kind="chat", expect={"contains": "OK"})
    assert result.reason == "the answer is empty; the answer does not contain 'OK': ''"
    allowed = run_mocked(lambda request: httpx.Response(200, json=empty), kind="chat", expect={"nonEmpty": False})
    assert allowed.status == "pass"


def test_one_client_per_target_and_checks_run_concurrently() -> None:
    asked: list[str] = []
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)  # yield so that the other checks' requests can start
        await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200, json={"choices": [{"message": {"content": "OK"}}]})

    def transport_for(url: str) -> httpx.AsyncBaseTransport:
        asked.append(url)
        return httpx.MockTransport(handler)

    checks = [{"name": f"c{i}", "model": "chat", "kind": "chat"} for i in range(3)]
    report = asyncio.run(run_checks(mock_manifest(*checks), OUTPUTS, transport_for=transport_for))
    assert report.ok and asked == ["http://mock.test/ai/m1/v1"] and peak == 3


# -- rendering ------------------------------------------------------------------------------------------


def test_renderings_show_status_latency_and_reasons() -> None:
    report = CheckReport(
        (
            CheckResult("chat-ok", "chat", "model chat", "pass", 12.3, detail="3 word(s)"),
            CheckResult("stream", "chat-stream", "model chat", "pass", 40.0, 9.6),
            CheckResult("embed|x", "embedding", "model embed", "fail", 8.0, reason="the embedding has 2 dimensions"),
            CheckResult("paused", "chat", "model p", "skip", reason="model 'p' is declared paused"),
        )
    )
    table = render_checks(report)
    assert "  chat-ok  " in table and "12 ms" in table and "40 ms (first token 10 ms)" in table
    assert "FAIL" in table and "  embed|x: the embedding has 2 dimensions" in table
    assert "  paused: skipped: model 'p' is declared paused" in table
    assert table.rstrip().endswith("Checks: 2 passed, 1 failed, 1 skipped (checks failed).")

    markdown = render_checks_markdown(report)
    assert "| `embed\\|x` | `model embed` | embedding | ❌ fail | 8 ms | the embedding has 2 dimensions |" in markdown

    doc = json.loads(render_checks_json(report))
    assert doc["ok"] is False and doc["checks"][1]["first_token_ms"] == 9.6
    assert render_checks(CheckReport()) == "No checks declared.\n"


def test_verify_markdown_and_no_checks(world: World) -> None:
    path = deploy(world, "  - {name: chat-ok, model: chat, kind: chat}\n")
    markdown = verify(world, path, "--markdown")
    assert markdown.exit_code == 0 and markdown.stdout.startswith("#### Checks")
    none = world.write(
        "none.yaml",
        textwrap.dedent("""\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        """),
    )
    empty = verify(world, none)
    assert empty.exit_code == 0 and "No checks declared." in empty.stdout


def test_a_key_is_never_sent_over_plain_http_to_another_machine(world: World) -> None:
    checks = """\
  - {name: remote, endpoint: "http://gateway.example/v1/ai/hunyuan", endpointModel: hy3-preview,
     apiKeyEnv: GATEWAY_KEY, kind: chat}
"""
    path = deploy(world, checks)
    report = by_name(check_in_process(world, path, environ={"GATEWAY_KEY": "gk-123"}))
    assert report["remote"].status == "fail"
    assert report["remote"].reason == (
        "http://gateway.example is plain http: the key would cross the network unencrypted; "
        "use https (plain http is allowed only for localhost)"
    )
