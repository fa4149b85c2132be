"""A model's apply steps at the moments a call meets another state than the plan saw: a delete refused while the
model is in transition, already on its way out, or settled; a pause or resume repeated after its answer was lost;
a lost create answer settled by a listing that holds an unreadable entry."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from reliability_support import API_TOKEN, Step, live_models, new_world, read_outputs, untruths

from capella_deploy.api.client import CapellaClient
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Faults, lifecycle
from capella_deploy.sandbox.state import Audit, ModelRecord
from capella_deploy.secrets import Secret

ORG = "/v4/organizations/#0"
MODELS = ORG + "/aiServices/models"
ONE_MODEL = """\
apiVersion: capella-deploy/v1
defaults: {{provider: aws, region: us-east-1}}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    state: {state}
"""
NO_MODELS = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models: []
prune: {match: "*"}
"""


def one_model(state: str = "running") -> str:
    return ONE_MODEL.format(state=state)


def calls(world: Any, method: str, suffix: str = "") -> list[str]:
    return [e for e in world.requests.entries if e.startswith(f"{method} {MODELS}/#1{suffix} ")]


def progress(report: Any) -> list[str]:
    """What the run said of the model's change as it went, without its address."""
    return [line.partition(": ")[2] for line in report.stdout.splitlines() if line.startswith("model.chat")]


def test_a_delete_refused_while_the_model_pauses_waits_for_the_pause_to_end_and_deletes_then(tmp_path: Path) -> None:
    world = new_world(21, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0

    def pauses() -> None:  # someone pauses the model just as the delete arrives, and the API refuses it then
        with world.sandbox.mutate() as state:
            [model] = state.models.values()
            lifecycle.begin(model, lifecycle.PAUSING, lifecycle.PAUSED, world.clock.now(), 60)

    world.script.append(Step(rf"DELETE {MODELS}/#\d+", "422", meanwhile=pauses))
    world.set_manifest(NO_MODELS)
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert calls(world, "DELETE") == [f"DELETE {MODELS}/#1 -> 422 (scripted)", f"DELETE {MODELS}/#1 -> 202"]
    assert progress(report) == [
        "refused while pausing; waiting for it to settle",
        "waiting to settle",
        "destroying",
        "destroyed",
    ]
    # Sent again only once the pause (60 s) was over; the deletion then took its 60 s.
    assert report.result is not None and report.result.results[0].elapsed >= 120
    assert live_models(world.sandbox) == []
    assert untruths(world, report) == []


def test_a_delete_refused_because_the_model_is_already_going_is_what_was_asked_for(tmp_path: Path) -> None:
    world = new_world(22, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0

    def destroys() -> None:  # another run deletes it just before
        with world.sandbox.mutate() as state:
            [model] = state.models.values()
            lifecycle.begin(model, lifecycle.DESTROYING, lifecycle.GONE, world.clock.now(), 60)

    world.script.append(Step(rf"DELETE {MODELS}/#\d+", "skip", meanwhile=destroys))
    world.set_manifest(NO_MODELS)
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert calls(world, "DELETE") == [f"DELETE {MODELS}/#1 -> 409"]
    assert report.result is not None and [r.detail for r in report.result.results] == ["destroyed"]
    assert live_models(world.sandbox) == []


def test_a_delete_refused_while_the_model_is_settled_fails_without_a_second_try(tmp_path: Path) -> None:
    world = new_world(23, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    world.script.append(Step(rf"DELETE {MODELS}/#\d+", "422", times=100))
    world.set_manifest(NO_MODELS)
    report = world.apply()
    assert report.exit_code == 1
    assert report.result is not None
    [failed] = report.result.failed
    model_id = live_models(world.sandbox)[0][1]
    assert failed.address == f"model.chat[{model_id}]"
    # The refusal is the answer, and the message carries it.
    assert failed.detail.startswith(f"model {model_id}: refused while healthy: DELETE ")
    assert failed.detail.endswith(": 422 Service Unavailable (hint: scripted)")
    assert len(calls(world, "DELETE")) == 1
    assert [m[2] for m in live_models(world.sandbox)] == ["healthy"]


@pytest.mark.parametrize(
    ("seed", "before", "after", "method", "steps"),
    [
        (24, "running", "paused", "DELETE", ["pausing", "paused"]),
        (25, "paused", "running", "POST", ["resuming", "healthy"]),
    ],
    ids=["pause", "resume"],
)
def test_a_pause_or_resume_whose_answer_was_lost_is_not_taken_back_by_its_repeat(
    seed: int, before: str, after: str, method: str, steps: list[str], tmp_path: Path
) -> None:
    world = new_world(seed, tmp_path, manifest_text=one_model(before))
    assert world.apply().exit_code == 0
    world.set_manifest(one_model(after))
    world.script.append(Step(rf"{method} {MODELS}/#\d+/activationState", "drop-after"))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert report.result is not None and [r.detail for r in report.result.results] == [steps[-1]]
    assert progress(report) == steps
    # The client sent the call again; the API refused the repeat, as the model was on its way already.
    assert calls(world, method, "/activationState") == [
        f"{method} {MODELS}/#1/activationState (carried out) -> 202",
        f"{method} {MODELS}/#1/activationState -> dropped after",
        f"{method} {MODELS}/#1/activationState -> 409",
    ]
    assert [m[2] for m in live_models(world.sandbox)] == [steps[-1]]
    assert untruths(world, report) == []


def test_a_lost_create_answer_is_settled_by_a_listing_that_holds_an_unreadable_entry(tmp_path: Path) -> None:
    world = new_world(26, tmp_path, manifest_text=one_model())

    def with_junk(answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "data": [*answer["data"], {"name": "no-id"}]}

    world.script.append(Step(f"POST {MODELS}", "drop-after"))
    world.script.append(Step(rf"GET {MODELS}", "rewrite", times=1000, rewrite_body=with_junk))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert [m[2] for m in live_models(world.sandbox)] == ["healthy"]
    assert "adopting it" in report.stdout


EDITED = """\
apiVersion: capella-deploy/v1
defaults: {{provider: aws, region: us-east-1}}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    keywordFiltering: [{keyword}]
"""


def edited(seed: int, tmp_path: Path) -> tuple[Any, str]:
    """A world whose model is deployed and whose manifest now asks for an edit; and the model's id."""
    world = new_world(seed, tmp_path, manifest_text=EDITED.format(keyword="secret"))
    assert world.apply().exit_code == 0
    world.set_manifest(EDITED.format(keyword="internal"))
    return world, live_models(world.sandbox)[0][1]


def test_an_edit_of_a_model_still_deploying_says_it_waits_then_edits(tmp_path: Path) -> None:
    world = new_world(34, tmp_path, manifest_text=EDITED.format(keyword="secret"))
    assert world.apply(timeout=60).exit_code == 1  # gives up while the model deploys
    world.set_manifest(EDITED.format(keyword="internal"))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert progress(report) == ["waiting until it can edit (deploying)", "updating", "healthy"]


def test_an_update_not_yet_visible_at_the_timeout_says_what_to_do(tmp_path: Path) -> None:
    world, _ = edited(35, tmp_path)
    world.sandbox.faults = Faults(edit_delay_seconds=10 * 3600)
    report = world.apply(timeout=600)
    assert report.exit_code == 0, report.stdout
    assert progress(report) == ["updating", "update accepted; waiting until a read shows it", "healthy"]
    assert report.result is not None and report.result.warnings == (
        "model.chat: the update was accepted but is not yet visible after 600 s (--timeout); a plan made before it "
        "shows will list it again: wait and plan again rather than apply it twice",
    )


def test_a_model_that_fails_while_an_update_is_awaited_fails_the_change(tmp_path: Path) -> None:
    world, model_id = edited(36, tmp_path)
    world.sandbox.faults = Faults(edit_delay_seconds=10 * 3600)

    def fails() -> None:
        with world.sandbox.mutate() as state:
            lifecycle.begin(state.models[model_id], lifecycle.DEPLOY_FAILED, None, world.clock.now(), None)

    world.script.append(Step(rf"GET {MODELS}", "skip", times=2))
    world.script.append(Step(rf"GET {MODELS}", "skip", meanwhile=fails))
    report = world.apply(timeout=600)
    assert report.exit_code == 1
    assert report.result is not None
    assert [(r.address, r.detail) for r in report.result.failed] == [
        ("model.chat", f"model {model_id}: status became deployFailed")
    ]


def test_an_edit_of_a_model_gone_since_the_plan_fails_and_says_so(tmp_path: Path) -> None:
    world, model_id = edited(37, tmp_path)

    def gone() -> None:
        with world.sandbox.mutate() as state:
            state.models.clear()

    world.script.append(Step(rf"GET {MODELS}/#\d+", "skip", meanwhile=gone))
    report = world.apply()
    assert report.exit_code == 1
    assert report.result is not None
    assert [r.detail for r in report.result.failed] == [f"model {model_id} no longer exists"]


def test_an_unreadable_answer_about_the_model_fails_its_change_with_the_reason(tmp_path: Path) -> None:
    world, model_id = edited(38, tmp_path)
    world.script.append(Step(rf"GET {MODELS}/#\d+", "rewrite", rewrite_body={"model": {"name": "chat"}}))
    report = world.apply()
    assert report.exit_code == 1
    assert report.result is not None
    assert [r.detail for r in report.result.failed] == [
        f"model {model_id}: the API's answer cannot be read: a model entry has no id or name"
    ]
    assert calls(world, "PUT") == []


TWO_MODELS = """\
apiVersion: capella-deploy/v1
defaults: {{provider: aws, region: us-east-1}}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    cache: {cache}
  - name: embed
    catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
    gpuMemory: 24
"""


def test_an_edit_to_a_semantic_cache_sends_and_sees_its_embedding_model_by_id(tmp_path: Path) -> None:
    world = new_world(39, tmp_path, manifest_text=TWO_MODELS.format(cache="{type: standard}"))
    assert world.apply().exit_code == 0
    semantic = "{type: semantic, threshold: 0.8, semantic: {embeddingModel: embed}}"
    world.set_manifest(TWO_MODELS.format(cache=semantic))
    report = world.apply(timeout=600)
    assert report.exit_code == 0, report.stdout
    assert report.plan is not None and [(c.address, c.action.value) for c in report.plan.pending] == [
        ("model.chat", "update")
    ]
    ids = {name: model_id for name, model_id, _ in live_models(world.sandbox)}
    caching = world.sandbox.world().models[ids["chat"]].options["caching"]
    assert caching["semantic"]["embeddingModel"] == ids["embed"]
    # The read after the edit shows it at once: nothing is waited for, nothing is left to warn of.
    assert progress(report) == ["waiting for model.embed, its embedding model", "updating", "healthy"]
    assert report.result is not None and report.result.warnings == ()
    assert world.apply().result is None


def test_an_edit_refused_by_a_model_that_fell_ill_waits_until_it_takes_edits_again(tmp_path: Path) -> None:
    world, model_id = edited(40, tmp_path)

    def falls_ill() -> None:  # for a minute, just as the edit arrives
        with world.sandbox.mutate() as state:
            lifecycle.begin(state.models[model_id], "unhealthy", lifecycle.HEALTHY, world.clock.now(), 60)

    world.script.append(Step(rf"PUT {MODELS}/#\d+", "422", meanwhile=falls_ill))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert calls(world, "PUT") == [f"PUT {MODELS}/#1 -> 422 (scripted)", f"PUT {MODELS}/#1 -> 204"]
    assert progress(report) == [
        "refused while unhealthy; waiting for it to settle",
        "waiting to settle",
        "updating",
        "healthy",
    ]


def test_an_edit_refused_while_the_model_takes_edits_fails_with_the_refusal(tmp_path: Path) -> None:
    world, model_id = edited(41, tmp_path)
    world.script.append(Step(rf"PUT {MODELS}/#\d+", "422", times=100))
    report = world.apply()
    assert report.exit_code == 1
    assert report.result is not None
    [failed] = report.result.failed
    assert failed.detail.startswith(f"model {model_id}: refused while healthy: PUT ")
    assert failed.detail.endswith(": 422 Service Unavailable (hint: scripted)")
    assert len(calls(world, "PUT")) == 1


@pytest.mark.parametrize(
    ("before", "after", "planned", "done"),
    [("running", "paused", "pause", "paused"), ("paused", "running", "resume", "healthy")],
)
def test_a_pause_or_resume_someone_else_made_since_the_plan_is_not_asked_again(
    before: str, after: str, planned: str, done: str, tmp_path: Path
) -> None:
    world = new_world(42, tmp_path, manifest_text=one_model(before))
    assert world.apply().exit_code == 0
    world.set_manifest(one_model(after))
    model_id = live_models(world.sandbox)[0][1]
    sent_before = len(world.requests.entries)

    def turned() -> None:
        with world.sandbox.mutate() as state:
            lifecycle.begin(state.models[model_id], done, None, world.clock.now(), None)

    world.script.append(Step(rf"GET {MODELS}/#\d+", "skip", meanwhile=turned))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert report.plan is not None and [c.action.value for c in report.plan.pending] == [planned]
    assert report.result is not None and [r.detail for r in report.result.results] == [done]
    assert [e for e in world.requests.entries[sent_before:] if "/activationState" in e] == []


@pytest.mark.parametrize(("before", "after", "seconds"), [("running", "paused", 60.0), ("paused", "running", 120.0)])
def test_a_pause_or_resume_is_seen_the_moment_it_ends(before: str, after: str, seconds: float, tmp_path: Path) -> None:
    world = new_world(50, tmp_path, manifest_text=one_model(before))
    assert world.apply().exit_code == 0
    world.set_manifest(one_model(after))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert report.result is not None
    # The sandbox's pause takes 60 s and its resume 120 s, as the run assumes before it has seen one finish.
    assert [r.elapsed for r in report.result.results] == [seconds]


def test_a_model_left_deploying_by_a_run_that_gave_up_is_waited_for_by_the_next(tmp_path: Path) -> None:
    world = new_world(60, tmp_path, manifest_text=one_model())
    first = world.apply(timeout=60)
    assert first.exit_code == 1
    model_id = live_models(world.sandbox)[0][1]
    assert progress(first) == [
        "deploying",
        f"failed: model {model_id}: still deploying when the timeout ran out (60 s, --timeout); it is left in place "
        "and the next apply waits for it again",
    ]
    assert read_outputs(world.outputs_path)["models"]["chat"]["status"] == "deploying"
    second = world.apply()
    assert second.exit_code == 0 and second.result is None, second.stdout
    assert read_outputs(world.outputs_path)["models"]["chat"] == {
        "id": model_id,
        "status": "healthy",
        "region": "us-east-1",
        "connectionString": f"http://capella.sandbox/ai/{model_id}",
        "headers": {},
    }


def test_of_protected_models_sharing_a_name_the_outputs_record_the_one_managed(tmp_path: Path) -> None:
    world = new_world(
        61, tmp_path, manifest_text=one_model().replace("    state:", "    preventDestroy: true\n    state:")
    )
    assert world.apply(timeout=60).exit_code == 1  # left deploying
    [(_, first, _)] = live_models(world.sandbox)

    async def another() -> None:  # someone makes a second model of the name in the console
        client = CapellaClient(
            base_url=IN_PROCESS_BASE_URL,
            token=Secret(API_TOKEN),
            transport=world.sandbox.transport(),
            clock=world.clock,
        )
        async with client:
            body = {
                "name": "chat",
                "catalogModelName": "mistralai/mistral-7b-instruct-v0.3",
                "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}},
            }
            await client.create_model(world.sandbox.org_id, body)

    asyncio.run(another())
    assert len(live_models(world.sandbox)) == 2
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    recorded = read_outputs(world.outputs_path)["models"]["chat"]
    # Both healthy by now: the older one is managed, as runs racing to create a name agree.
    assert (recorded["id"], recorded["status"]) == (first, "healthy")


def test_a_deployment_that_fails_fails_its_change_when_it_fails(tmp_path: Path) -> None:
    world = new_world(62, tmp_path, manifest_text=one_model())
    world.sandbox.faults = Faults(deploy_fail_rate=1.0)
    started = world.clock.now()
    report = world.apply()
    assert report.exit_code == 1
    [(_, model_id, _)] = [(n, i, s) for n, i, s in live_models(world.sandbox)]
    assert report.result is not None
    assert [r.detail for r in report.result.failed] == [f"model {model_id}: status became deployFailed"]
    assert world.clock.now() - started < 3600, "not waited for until the timeout"


def test_a_renamed_model_is_recorded_in_the_outputs_under_its_new_name_only(tmp_path: Path) -> None:
    world = new_world(63, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    model_id = live_models(world.sandbox)[0][1]
    world.set_manifest(one_model().replace("  - name: chat\n", "  - name: chat2\n    renamedFrom: chat\n"))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    models = read_outputs(world.outputs_path)["models"]
    assert list(models) == ["chat2"] and models["chat2"]["id"] == model_id


PAUSED_EMBED = TWO_MODELS + "    state: paused\n"


def test_an_edit_waits_for_its_embedding_model_to_reach_the_paused_state_the_manifest_declares(
    tmp_path: Path,
) -> None:
    world = new_world(64, tmp_path, manifest_text=PAUSED_EMBED.format(cache="{type: standard}"))
    assert world.apply().exit_code == 0
    ids = {name: model_id for name, model_id, _ in live_models(world.sandbox)}
    with world.sandbox.mutate() as state:  # still pausing, as if a pause of it had just been asked for
        lifecycle.begin(state.models[ids["embed"]], lifecycle.PAUSING, lifecycle.PAUSED, world.clock.now(), 60)
    world.set_manifest(PAUSED_EMBED.format(cache="{type: semantic, threshold: 0.8, semantic: {embeddingModel: embed}}"))
    report = world.apply(timeout=600)
    assert report.exit_code == 0, report.stdout
    assert report.plan is not None and [c.address for c in report.plan.pending] == ["model.chat"]
    assert progress(report) == [
        "waiting for model.embed, its embedding model",
        "waiting for model.embed, its embedding model",
        "updating",
        "healthy",
    ]
    caching = world.sandbox.world().models[ids["chat"]].options["caching"]
    assert caching["semantic"]["embeddingModel"] == ids["embed"]


def test_a_create_whose_answers_are_all_lost_and_that_made_nothing_is_tried_five_times(tmp_path: Path) -> None:
    world = new_world(65, tmp_path, manifest_text=one_model())
    world.script.append(Step(f"POST {MODELS}", "drop-before", times=1000))
    report = world.apply()
    assert report.exit_code == 1
    assert [e for e in world.requests.entries if e.startswith("POST ")] == [f"POST {MODELS} -> dropped before"] * 5
    said = progress(report)
    assert said[:-1] == ["create unclear (AmbiguousCreate); nothing was made, retrying"] * 4
    assert said[-1].startswith("failed: create did not go through after 5 attempts: creating model 'chat': ")
    assert live_models(world.sandbox) == []


def test_a_model_made_is_seen_healthy_the_moment_its_deployment_ends(tmp_path: Path) -> None:
    world = new_world(66, tmp_path, manifest_text=one_model())
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert report.result is not None
    # Its deployment is counted from the create's answer, not from when the run began to watch it.
    assert [r.elapsed for r in report.result.results] == [world.sandbox.timings.deploy_seconds]


def another_model(world: Any, created_at: float, status: str = lifecycle.DEPLOYING) -> str:
    """A model of the manifest's name that someone else (another run, the console) made at ``created_at``."""
    with world.sandbox.mutate() as state:
        model = ModelRecord(
            id=str(uuid.uuid4()),
            name="chat",
            catalog_model_name="mistralai/mistral-7b-instruct-v0.3",
            cloud_provider="aws",
            region="us-east-1",
            cpu=4,
            gpu_memory=48,
            options={},
            status=status,
            audit=Audit.new(state.actor_id, created_at),
        )
        target = lifecycle.GONE if status == lifecycle.DESTROYING else lifecycle.HEALTHY
        lifecycle.begin(model, status, target, world.clock.now(), 300)
        state.models[model.id] = model
    return model.id


def test_a_run_that_finds_an_older_model_of_its_name_made_meanwhile_keeps_that_one_and_deletes_its_own(
    tmp_path: Path,
) -> None:
    world = new_world(70, tmp_path, manifest_text=one_model())
    others: list[str] = []

    def two_other_runs_create() -> None:  # one just before this run's create, one just after
        others.append(another_model(world, world.clock.now() - 1))
        others.append(another_model(world, world.clock.now() + 1))

    world.script.append(Step(f"POST {MODELS}", "skip", meanwhile=two_other_runs_create))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    older, newer = others
    assert f"another run made {older} of this name first; keeping that one" in progress(report)
    # Its own model is deleted; the newer one is its maker's to delete, as that run keeps the older one too.
    assert sorted(model_id for _, model_id, _ in live_models(world.sandbox)) == sorted([older, newer])


def test_a_model_of_its_name_on_its_way_out_is_no_rival_to_the_one_a_run_makes(tmp_path: Path) -> None:
    world = new_world(71, tmp_path, manifest_text=one_model())
    going: list[str] = []
    world.script.append(
        Step(
            f"POST {MODELS}",
            "skip",
            meanwhile=lambda: going.append(another_model(world, world.clock.now() - 1, lifecycle.DESTROYING)),
        )
    )
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    [(_, kept, status)] = live_models(world.sandbox)
    assert kept not in going and status == "healthy"
    assert read_outputs(world.outputs_path)["models"]["chat"]["id"] == kept


def test_a_destroy_is_seen_done_the_moment_the_model_is_gone_and_its_outputs_entry_goes(tmp_path: Path) -> None:
    world = new_world(72, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    world.set_manifest(NO_MODELS)
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert report.result is not None
    assert [(r.detail, r.elapsed) for r in report.result.results] == [
        ("destroyed", world.sandbox.timings.destroy_seconds)
    ]
    assert read_outputs(world.outputs_path)["models"] == {}


def test_a_destroy_that_fails_fails_its_change_when_it_fails(tmp_path: Path) -> None:
    world = new_world(73, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    model_id = live_models(world.sandbox)[0][1]
    world.set_manifest(NO_MODELS)

    def fails() -> None:  # its destruction fails as soon as it has begun
        with world.sandbox.mutate() as state:
            model = state.models[model_id]
            if model.status == lifecycle.DESTROYING:
                lifecycle.begin(model, "destroyFailed", None, world.clock.now(), None)

    world.script.append(Step(rf"GET {MODELS}", "skip", times=1000, meanwhile=fails))
    started = world.clock.now()
    report = world.apply(timeout=3600)
    assert report.exit_code == 1
    assert report.result is not None
    assert [r.detail for r in report.result.failed] == [f"model {model_id}: status became destroyFailed"]
    assert world.clock.now() - started < 600


def test_a_replacement_says_it_destroys_the_model_it_replaces(tmp_path: Path) -> None:
    world = new_world(74, tmp_path, manifest_text=one_model())
    assert world.apply().exit_code == 0
    old = live_models(world.sandbox)[0][1]
    report = world.apply(replace=frozenset({"model.chat"}))
    assert report.exit_code == 0, report.stdout
    assert progress(report)[:2] == [f"destroying {old} to replace it", "deploying"]
