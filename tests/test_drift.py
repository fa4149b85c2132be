"""Drift: the report derived from a plan, ignore rules, renderings, and the drift command end to end."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import jsonschema
import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.kinds.api_key import LiveKey
from capella_deploy.kinds.base import Action, AttributeChange, Kind, ResourceChange
from capella_deploy.kinds.model import LiveModel
from capella_deploy.live import LiveState
from capella_deploy.manifest import Manifest
from capella_deploy.plan import Plan
from capella_deploy.plan.drift import IgnoreRules, drift_report
from capella_deploy.plan.planner import plan
from capella_deploy.sandbox import IN_PROCESS_BASE_URL
from capella_deploy.schemas import schema_text
from capella_deploy.secrets import Secret
from capella_deploy.views.drift import MARKDOWN_MARKER, render_markdown, render_text, slack_payload
from tests.conftest import World
from tests.test_cli_e2e import manifest

T = TypeVar("T")
NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
CHAT = "mistralai/mistral-7b-instruct-v0.3"


# -- the report, from plans made by the real planner ----------------------------------------------------


def live_model(name: str, **changes: Any) -> LiveModel:
    model = LiveModel(
        id=f"id-{name}",
        name=name,
        status="healthy",
        actions=frozenset(),
        provider="aws",
        region="us-east-1",
        cpu=4,
        gpu_memory=48,
        catalog_model=CHAT,
        model_type="text-generation",
        vendor="mistral",
        dimensions=None,
        quantization=None,
        optimization=None,
        caching=None,
        enable_batching=None,
        keyword_filtering=None,
        connection_string=None,
        version=1,
    )
    return replace(model, **changes)


def live_key(name: str, **changes: Any) -> LiveKey:
    key = LiveKey(
        id=f"id-{name}",
        name=name,
        description=None,
        region="us-east-1",
        expiry_days=180,
        allowed_cidrs=("10.0.0.0/16",),
        allowed_models=(("*", "*"),),
        created_at=NOW - timedelta(days=1),
    )
    return replace(key, **changes)


def declared(*models: dict[str, Any], keys: tuple[dict[str, Any], ...] = ()) -> Manifest:
    return Manifest.model_validate(
        {
            "apiVersion": "capella-deploy/v1",
            "defaults": {"region": "us-east-1"},
            "models": [{"catalogModel": CHAT, "gpuMemory": 48, **m} for m in models],
            "apiKeys": [{"allowedCIDRs": ["10.0.0.0/16"], **k} for k in keys],
        }
    )


def report_for(manifest: Manifest, *models: LiveModel, keys: tuple[LiveKey, ...] = (), rules: str = "") -> Any:
    live = LiveState(org_id="org", models=models, keys=keys)
    return drift_report(plan(manifest, live, now=NOW), IgnoreRules.parse(rules))


def test_changes_sort_into_drifted_missing_and_unmanaged() -> None:
    manifest = declared({"name": "chat"}, {"name": "new"}, keys=({"name": "app"},))
    report = report_for(
        manifest,
        live_model("chat", status="paused", gpu_memory=24),
        live_model("stray"),
        keys=(live_key("app"), live_key("by-hand")),
    )
    assert not report.in_sync
    assert report.summary() == {"drifted": 1, "missing": 1, "unmanaged": 2}
    (chat,) = report.drifted
    assert chat.address == "model.chat" and chat.action.value == "replace"
    # before is the live value, after the declared one, as in the JSON plan.
    assert [(a.path, a.before, a.after) for a in chat.attributes] == [
        ("gpuMemory", 24, 48),
        ("state", "paused", "running"),
    ]
    assert [m.address for m in report.missing] == ["model.new"]
    assert [u.address for u in report.unmanaged] == ["apiKey.by-hand", "model.stray"]


def test_in_sync_when_live_matches() -> None:
    report = report_for(declared({"name": "chat"}), live_model("chat"))
    assert report.in_sync and report.summary() == {"drifted": 0, "missing": 0, "unmanaged": 0}


def test_ignore_rules_match_an_address_an_attribute_or_a_prefix_of_one() -> None:
    manifest = declared(
        {"name": "chat", "cache": {"type": "standard", "expirySeconds": 600}, "enableBatching": True},
        keys=({"name": "app"},),
    )
    live = live_model(
        "chat", caching={"enableStandard": True, "defaultCache": "standard", "expiryTTL": 60}, enable_batching=False
    )
    keys = (live_key("app"), live_key("legacy-1"), live_key("legacy-2"))
    everything = report_for(manifest, live, keys=keys)
    # The manifest's words: cache.expirySeconds, not the API's caching.expiryTTL.
    assert [a.path for a in everything.drifted[0].attributes] == ["cache.expirySeconds", "enableBatching"]
    assert len(everything.unmanaged) == 2

    rules = "# server-managed TTL\nmodel.*.cache.expirySeconds\napiKey.legacy-*   # hand-managed\n"
    report = report_for(manifest, live, keys=keys, rules=rules)
    assert [a.path for a in report.drifted[0].attributes] == ["enableBatching"]
    assert report.unmanaged == ()
    assert set(report.ignored) == {
        "model.chat.cache.expirySeconds",
        "apiKey.legacy-1[id-legacy-1]",
        "apiKey.legacy-2[id-legacy-2]",
    }
    # A prefix silences everything under it; when nothing is left the resource is in sync.
    quiet = report_for(manifest, live, keys=keys[:1], rules="model.chat.cache\nmodel.chat.enableBatching")
    assert quiet.in_sync


def test_ignore_rules_in_the_apis_words_are_read_in_the_manifests() -> None:
    manifest = declared({"name": "chat", "cache": {"type": "semantic", "threshold": 0.85, "expirySeconds": 600}})
    live = live_model(
        "chat",
        caching={
            "enableStandard": True,
            "defaultCache": "semantic",
            "expiryTTL": 60,
            "semantic": {"scoreThreshold": 0.7},
        },
    )
    rules = IgnoreRules.parse("model.*.caching.expiryTTL\nmodel.chat.caching.semantic\nmodel.caching.state\n")
    assert rules.respellings == {
        "model.*.caching.expiryTTL": ("model.*.cache.expirySeconds",),
        "model.chat.caching.semantic": ("model.chat.cache.semantic", "model.chat.cache.threshold"),
    }  # a model named "caching" is a name, not an attribute
    report = drift_report(plan(manifest, LiveState("org", (live,)), now=NOW), rules)
    assert report.in_sync and sorted(report.ignored) == ["model.chat.cache.expirySeconds", "model.chat.cache.threshold"]


def test_a_removed_attribute_is_drift_against_the_apis_default() -> None:
    manifest = declared({"name": "chat", "cache": {"type": "standard", "expirySeconds": 600}})
    live = live_model("chat", keyword_filtering=("secret",), enable_batching=True)
    report = report_for(manifest, live, rules="model.chat.cache.expirySeconds")
    (chat,) = report.drifted
    # The live model has no caching: the API's default, compared leaf by leaf with the declared cache.
    assert [(a.path, a.before, a.after, a.to_default) for a in chat.attributes] == [
        ("cache.type", "none", "standard", False),
        ("enableBatching", True, False, True),
        ("keywordFiltering", ["secret"], [], True),
    ]
    text = render_text(report)
    assert 'keywordFiltering: live ["secret"], manifest unset (API default [])' in text


def test_a_block_missing_on_one_side_splits_into_leaves_so_rules_can_name_one() -> None:
    change = ResourceChange(
        Kind.MODEL,
        "chat",
        Action.UPDATE,
        live_id="m-1",
        before={"cache": None},
        after={"cache": {"type": "standard", "expirySeconds": 600}},
        attribute_changes=(AttributeChange("cache", None, {"type": "standard", "expirySeconds": 600}),),
    )
    report = drift_report(Plan("org", (change,)), IgnoreRules.parse("model.chat.cache.expirySeconds"))
    (chat,) = report.drifted
    assert [(a.path, a.before, a.after) for a in chat.attributes] == [("cache.type", None, "standard")]
    assert report.ignored == ("model.chat.cache.expirySeconds",)


def test_rotation_for_age_is_not_drift_but_a_failed_deployment_is() -> None:
    manifest = declared({"name": "chat"}, keys=({"name": "app", "expiryDays": 30, "rotateBeforeDays": 10},))
    aging = live_key("app", expiry_days=30, created_at=NOW - timedelta(days=25))
    assert report_for(manifest, live_model("chat"), keys=(aging,)).in_sync

    failed = report_for(manifest, live_model("chat", status="deployFailed"), keys=(live_key("app", expiry_days=30),))
    (chat,) = failed.drifted
    assert chat.attributes == () and "deployFailed" in (chat.reason or "")


def test_a_key_renewed_only_because_its_model_is_missing_is_not_reported_twice() -> None:
    manifest = declared({"name": "chat"}, keys=({"name": "app", "allowedModels": ["chat"]},))
    key = live_key("app", allowed_models=(("id-chat", "chat"),))
    report = report_for(manifest, keys=(key,))
    assert [m.address for m in report.missing] == ["model.chat"]
    assert report.drifted == ()


def test_slack_payload_has_text_and_blocks_and_cuts_long_lists() -> None:
    manifest = declared(*({"name": f"m{i:02d}"} for i in range(20)))
    payload = slack_payload(report_for(manifest))
    assert "20 missing" in payload["text"]
    missing = payload["blocks"][1]["text"]["text"]
    assert missing.startswith("*Missing") and "`model.m00`" in missing and "… and 5 more" in missing
    assert "model.m19" not in missing


def test_markdown_starts_with_the_marker_and_nests_attributes() -> None:
    report = report_for(declared({"name": "chat"}), live_model("chat", status="paused"))
    lines = render_markdown(report).splitlines()
    assert lines[0] == MARKDOWN_MARKER
    assert "- `model.chat`: apply would resume it (state is paused)" in lines
    assert '  - `state`: live "paused", manifest "running"' in lines


# -- the command, against the sandbox -------------------------------------------------------------------


def by_hand(world: World, action: Callable[[CapellaClient, str], Awaitable[T]]) -> T:
    """Change the organization through the Management API, as someone in the console would."""

    async def run() -> T:
        client = CapellaClient(
            base_url=IN_PROCESS_BASE_URL,
            token=Secret(world.token),
            transport=world.sandbox.transport(),
            clock=world.sandbox.clock,
        )
        async with client:
            return await action(client, world.sandbox.org_id)

    return asyncio.run(run())


def model_id(world: World, name: str) -> str:
    return next(m.id for m in world.sandbox.world().models.values() if m.name == name)


def hand_key_body(name: str) -> dict[str, Any]:
    return {"name": name, "expiry": 30, "allowedCIDRs": ["10.1.0.0/16"], "region": "us-east-1", "allowedModels": ["*"]}


def applied(world: World) -> str:
    path = manifest(world)
    result = world.cli("apply", "-f", path, "--auto-approve")
    assert result.exit_code == 0, result.output
    return path


def test_exit_codes_follow_terraform(world: World) -> None:
    path = manifest(world)
    assert world.cli("drift", "-f", path).exit_code == 2  # nothing deployed yet: all missing
    applied(world)
    in_sync = world.cli("drift", "-f", path)
    assert in_sync.exit_code == 0, in_sync.output
    assert "No drift" in in_sync.stdout
    broken = world.write("broken.yaml", "apiVersion: capella-deploy/v1\nmodels: [{name: x}]\n")
    assert world.cli("drift", "-f", str(broken)).exit_code == 1
    assert world.cli("drift", "-f", str(world.root / "absent.yaml")).exit_code == 1


def test_a_hand_paused_model_and_a_hand_created_key_are_reported(world: World) -> None:
    path = applied(world)
    chat = model_id(world, "chat")
    by_hand(world, lambda client, org: client.pause_model(org, chat))
    created = by_hand(world, lambda client, org: client.create_api_key(org, hand_key_body("console-key")))
    before = world.sandbox.world()

    report_path = world.root / "drift.json"
    result = world.cli("drift", "-f", path, "--report", str(report_path))
    assert result.exit_code == 2, result.output
    assert "model.chat: apply would resume it" in result.stdout
    assert f"apiKey.console-key ({created.id})" in result.stdout

    text = report_path.read_text()
    report = json.loads(text)
    assert report["format_version"] == "3.0" and report["in_sync"] is False
    jsonschema.validate(report, json.loads(schema_text("drift")))
    assert report["unmanaged"][0]["live_id"] == created.id
    assert report["organization_id"] == world.sandbox.org_id
    assert report["summary"] == {"drifted": 1, "missing": 0, "unmanaged": 1}
    assert report["drifted"][0]["address"] == "model.chat"
    assert report["drifted"][0]["attributes"] == [
        {"path": "state", "before": "paused", "after": "running", "to_default": False}
    ]
    assert report["unmanaged"][0]["name"] == "console-key"
    # Read-only and secret-free: nothing changed, no token anywhere.
    assert created.token.reveal() not in text and created.token.reveal() not in result.output
    outputs_token = json.loads(world.outputs.read_text())["apiKeys"]["app"]["token"]
    assert outputs_token not in text
    after = world.sandbox.world()
    assert after.models.keys() == before.models.keys() and after.api_keys.keys() == before.api_keys.keys()


def test_markdown_output_for_an_issue_body(world: World) -> None:
    result = world.cli("drift", "-f", manifest(world), "--markdown")
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines[0] == "<!-- capella-deploy-drift -->"
    assert "0 drifted, 3 missing, 0 unmanaged." in lines
    assert "- `model.chat`" in lines


def test_ignore_rules_from_options_and_from_the_ignore_file(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    path = applied(world)
    by_hand(world, lambda client, org: client.create_api_key(org, hand_key_body("legacy-ci")))
    chat = model_id(world, "chat")
    by_hand(world, lambda client, org: client.pause_model(org, chat))

    assert world.cli("drift", "-f", path, "--ignore", "apiKey.legacy-*").exit_code == 2
    quiet = world.cli("drift", "-f", path, "--ignore", "apiKey.legacy-*", "--ignore", "model.chat.state")
    assert quiet.exit_code == 0, quiet.output
    assert "Ignored by rules: 2 difference(s)." in quiet.stdout

    monkeypatch.chdir(world.root)
    (world.root / ".capella").mkdir()
    (world.root / ".capella" / "drift-ignore").write_text("apiKey.legacy-*\n")
    assert world.cli("drift", "-f", path, "--ignore", "model.*.state").exit_code == 0
    other = world.write("other-ignore", "model.chat.state\n")
    assert world.cli("drift", "-f", path, "--ignore-file", str(other)).exit_code == 2  # legacy-ci is back
    missing = world.cli("drift", "-f", path, "--ignore-file", str(world.root / "nope"))
    assert missing.exit_code == 1 and "cannot read the ignore file" in missing.stderr


@contextmanager
def webhook(status: int = 200) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local Slack-style incoming webhook recording what is posted to it."""
    posts: list[dict[str, Any]] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
            self.send_response(status)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/hook-secret-part", posts
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_notify_posts_the_report_only_when_there_is_drift(world: World) -> None:
    path = applied(world)
    with webhook() as (url, posts):
        assert world.cli("drift", "-f", path, "--notify", url).exit_code == 0
        assert posts == []
        by_hand(world, lambda client, org: client.create_api_key(org, hand_key_body("console-key")))
        result = world.cli("drift", "-f", path, "--notify", url)
    assert result.exit_code == 2
    (post,) = posts
    assert post["path"] == "/services/T0/B0/hook-secret-part" and post["type"] == "application/json"
    assert "0 drifted, 0 missing, 1 unmanaged" in post["json"]["text"]
    assert any("apiKey.console-key" in block["text"]["text"] for block in post["json"]["blocks"])
    assert "hook-secret-part" not in result.output
    assert "Posted the drift report to http://127.0.0.1" in result.stderr


def test_a_webhook_given_by_environment_that_fails_is_a_warning(world: World) -> None:
    path = manifest(world)
    with webhook(status=500) as (url, posts):
        world.env["CAPELLA_DRIFT_WEBHOOK"] = url
        refused = world.cli("drift", "-f", path)
    assert refused.exit_code == 2 and len(posts) == 1
    assert "refused the drift report: HTTP 500" in refused.stderr

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    world.env["CAPELLA_DRIFT_WEBHOOK"] = f"http://127.0.0.1:{closed}/hook-secret-part"
    unreachable = world.cli("drift", "-f", path)
    assert unreachable.exit_code == 2
    assert "could not post the drift report to http://127.0.0.1: ConnectError" in unreachable.stderr
    assert "hook-secret-part" not in unreachable.output

    world.env["CAPELLA_DRIFT_WEBHOOK"] = "http://hooks.example.com/hook-secret-part"
    plain = world.cli("drift", "-f", path)
    assert plain.exit_code == 2 and "use https" in plain.stderr and "hook-secret-part" not in plain.output
