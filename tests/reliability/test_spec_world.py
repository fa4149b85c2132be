"""The official spec's world: no status code proves anything, updates show late, ids rather than names.

In the spec's world two models or keys may share a name, and a call refused because of the model's state is
answered 422 (the sandbox's default rules). These tests drive the applier there, each at one exact situation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import click
from reliability_support import (
    CALM,
    ChaosWorld,
    Step,
    apply_together,
    duplicates,
    live_keys,
    live_models,
    new_world,
    read_outputs,
    sha256,
    untruths,
)

from capella_deploy.sandbox import Faults, lifecycle
from capella_deploy.sandbox.state import ApiKeyRecord, Audit

ORG = "/v4/organizations/#0"
MODELS = ORG + "/aiServices/models"
KEYS = MODELS + "/apiKeys"
ONE_MODEL = """\
apiVersion: capella-deploy/v1
defaults: {{provider: aws, region: us-east-1}}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    state: {state}
    keywordFiltering: [{keyword}]
apiKeys:
  - {{name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16], allowedModels: [chat]}}
"""
CACHING = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    cache: {type: semantic, threshold: 0.8, semantic: {embeddingModel: embed}}
  - name: embed
    catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
    gpuMemory: 24
    cache: {type: none}
"""


def one_model(state: str = "running", keyword: str = "secret") -> str:
    return ONE_MODEL.format(state=state, keyword=keyword)


def test_an_edit_of_a_model_still_deploying_waits_until_the_model_allows_edits(tmp_path: Path) -> None:
    world = new_world(1, tmp_path, manifest_text=one_model())
    first = world.apply(timeout=60)  # gives up while the model deploys (300 s)
    assert first.exit_code == 1 and "still deploying" in first.stdout
    world.set_manifest(one_model(keyword="internal"))
    second = world.apply()
    assert second.plan is not None and second.plan.pending[0].action.value == "update"
    assert second.exit_code == 0, second.stdout
    puts = [e for e in world.requests.entries if e.startswith("PUT ")]
    assert puts == [f"PUT {MODELS}/#1 -> 204"], "the edit waited for the model instead of meeting a refusal"
    assert world.sandbox.world().models[live_models(world.sandbox)[0][1]].options["keywordFiltering"] == ["internal"]
    assert untruths(world, second) == []


def test_an_edit_refused_with_422_during_a_transition_is_waited_out_and_sent_again(tmp_path: Path) -> None:
    world = new_world(7, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    world.set_manifest(one_model(keyword="internal"))

    def redeploys() -> None:  # the model starts a transition just as the edit arrives
        with world.sandbox.mutate() as state:
            [model] = state.models.values()
            lifecycle.begin(model, lifecycle.DEPLOYING, lifecycle.HEALTHY, world.clock.now(), 90)

    world.script.append(Step(rf"PUT {MODELS}/#\d+", "skip", meanwhile=redeploys))
    started = world.clock.now()
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    puts = [e for e in world.requests.entries if e.startswith("PUT ")]
    assert puts == [f"PUT {MODELS}/#1 -> 422", f"PUT {MODELS}/#1 -> 204"]
    assert "refused while deploying; waiting for it to settle" in report.stdout
    assert world.clock.now() - started < 600
    [model] = world.sandbox.world().models.values()
    assert model.options["keywordFiltering"] == ["internal"]
    assert untruths(world, report) == []


def test_a_resume_waits_for_a_pause_under_way_to_end(tmp_path: Path) -> None:
    world = new_world(6, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    with world.sandbox.mutate() as state:  # someone else pauses it, just now
        [model] = state.models.values()
        lifecycle.begin(model, lifecycle.PAUSING, lifecycle.PAUSED, world.clock.now(), 60)
    report = world.apply()
    assert report.plan is not None and [c.action.value for c in report.plan.pending] == ["resume"]
    assert report.exit_code == 0, report.stdout
    resumes = [e for e in world.requests.entries if e.startswith(f"POST {MODELS}/#1/activationState")]
    assert resumes == [f"POST {MODELS}/#1/activationState -> 202"]
    assert [m[2] for m in live_models(world.sandbox)] == ["healthy"]


def test_a_refusal_of_a_settled_model_is_an_answer_not_a_reason_to_wait(tmp_path: Path) -> None:
    world = new_world(9, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    world.set_manifest(one_model(keyword="internal"))
    world.script.append(Step(rf"PUT {MODELS}/#\d+", "422", times=100))
    started = world.clock.now()
    report = world.apply()
    assert report.exit_code == 1
    assert "model.chat" in report.stdout and "refused while healthy" in report.stdout
    assert sum(e.startswith("PUT ") for e in world.requests.entries) == 1
    assert world.clock.now() - started < 600


def test_apply_waits_until_an_update_shows_so_the_next_plan_has_no_changes(tmp_path: Path) -> None:
    world = new_world(10, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    world.sandbox.faults = Faults(edit_delay_seconds=240)
    world.set_manifest(one_model(keyword="internal"))
    updated = world.apply()
    assert updated.exit_code == 0, updated.stdout
    assert "waiting until a read shows it" in updated.stdout
    assert updated.result is not None and updated.result.warnings == ()
    again = world.apply()
    assert again.result is None, f"the next plan repeats the update:\n{again.stdout}"


def test_an_update_still_invisible_at_the_timeout_is_accepted_with_a_warning(tmp_path: Path) -> None:
    world = new_world(11, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    world.sandbox.faults = Faults(edit_delay_seconds=10 * 3600)
    world.set_manifest(one_model(keyword="internal"))
    report = world.apply(timeout=600)
    assert report.exit_code == 0, report.stdout
    assert report.result is not None and report.result.ok
    [warning] = report.result.warnings
    assert warning.startswith("model.chat: the update was accepted but is not yet visible after 600 s")
    assert "Warning: model.chat: the update was accepted" in click.unstyle(report.stdout)
    assert sum(e.startswith("PUT ") for e in world.requests.entries) == 1


def test_the_embedding_model_is_healthy_before_the_model_that_caches_with_it(tmp_path: Path) -> None:
    world = new_world(12, tmp_path, manifest_text=CACHING)
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert report.plan is not None
    chat = next(c for c in report.plan.changes if c.name == "chat")
    assert [str(a) for a in chat.depends_on] == ["model.embed"]
    assert chat.after is not None
    assert chat.after["cache"]["semantic"]["embeddingModel"] == "(known after apply: id of model.embed)"
    creates = [i for i, e in enumerate(world.requests.entries) if e == f"POST {MODELS} -> 202"]
    assert len(creates) == 2
    models = {name: (model_id, status) for name, model_id, status in live_models(world.sandbox)}
    records = world.sandbox.world().models
    embed_id, chat_id = models["embed"][0], models["chat"][0]
    assert records[chat_id].options["caching"]["semantic"]["embeddingModel"] == embed_id
    assert records[embed_id].audit.created_at < records[chat_id].audit.created_at
    # chat was created only once embed had been seen healthy, at least one deployment later
    assert (
        records[chat_id].audit.created_at - records[embed_id].audit.created_at >= world.sandbox.timings.deploy_seconds
    )
    assert world.apply().result is None, "the live id of the named model is no change"


def test_a_model_without_a_connection_string_gets_it_from_its_own_endpoint(tmp_path: Path) -> None:
    world = new_world(13, tmp_path, manifest_text=one_model())

    def without_connection_strings(answer: dict[str, object]) -> dict[str, object]:
        data = answer.get("data")
        if isinstance(data, list):
            for item in data:
                item["model"].pop("connectionString", None)
        else:
            answer["model"].pop("connectionString", None)  # type: ignore[attr-defined]
        return answer

    world.script.append(Step(rf"GET {MODELS}(/#\d+)?", "rewrite", times=1000, rewrite_body=without_connection_strings))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    model_id = live_models(world.sandbox)[0][1]
    assert read_outputs(world.outputs_path)["models"]["chat"]["connectionString"].endswith(f"/ai/{model_id}")
    assert any(e.endswith("/connectionString -> 200") for e in world.requests.entries)


def another_run_makes(world: ChaosWorld, name: str) -> Callable[[], None]:
    def make() -> None:
        with world.sandbox.mutate() as state:
            key = ApiKeyRecord(
                id=str(uuid.uuid4()),
                name=name,
                description="",
                expiry_days=90,
                allowed_cidrs=["10.0.0.0/16"],
                region="us-east-1",
                allowed_models=["*"],
                token_sha256=sha256("the other run's token"),
                audit=Audit.new(state.actor_id, world.clock.now()),
            )
            state.api_keys[key.id] = key

    return make


def test_a_lost_key_answer_beside_another_runs_key_claims_neither(tmp_path: Path) -> None:
    world = new_world(14, tmp_path, manifest_text=one_model())
    world.script.append(Step(f"POST {KEYS}", "drop-after", meanwhile=another_run_makes(world, "app")))
    report = world.apply()
    assert report.exit_code == 1
    assert report.result is not None
    [failed] = report.result.failed
    assert failed.address == "apiKey.app" and "another run is making this key too" in failed.detail
    keys = live_keys(world.sandbox)
    assert len(keys) == 2 and all(key_id in failed.detail for _, key_id, _ in keys), "both named, neither deleted"
    assert "app" not in read_outputs(world.outputs_path)["apiKeys"], "neither recorded as this run's"
    assert untruths(world, report) == []


def test_two_applies_at_once_in_the_spec_world_leave_one_of_each(tmp_path: Path) -> None:
    for seed in range(6):
        (tmp_path / str(seed)).mkdir()
        first = new_world(seed, tmp_path / str(seed))
        second = first.twin(tmp_path / str(seed) / "other-outputs.json")
        apply_together([first, second])
        assert duplicates(first.sandbox) == [], f"seed {seed}"
        # Each live key's token is in one of the two outputs files.
        tokens = {
            sha256(entry["token"])
            for world in (first, second)
            for entry in read_outputs(world.outputs_path)["apiKeys"].values()
            if entry.get("token")
        }
        assert {k[2] for k in live_keys(first.sandbox)} <= tokens, f"seed {seed}"
        first.use(CALM)
        assert first.apply().exit_code in (0, 1)
