"""Calls whose answer is lost: the organization is read again before anything is repeated.

Each test scripts one lost answer at one exact call (``Step``) on an otherwise calm sandbox, and reads the
request log to see what the applier did next.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from reliability_support import (
    Step,
    duplicates,
    live_keys,
    live_models,
    new_world,
    read_outputs,
    sha256,
    untruths,
    worlds,
)

from capella_deploy.cli import main
from capella_deploy.sandbox import Rules, Sandbox

ORG = "/v4/organizations/#0"
MODELS = ORG + "/aiServices/models"
KEYS = MODELS + "/apiKeys"
ONE_MODEL = """\
apiVersion: capella-deploy/v1
defaults: {{provider: aws, region: us-east-1}}
models:
  - {{name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: {gpu}, state: {state}}}
apiKeys:
  - {{name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}}
"""


def one_model(gpu: int = 48, state: str = "running") -> str:
    return ONE_MODEL.format(gpu=gpu, state=state)


@pytest.mark.parametrize("rules", worlds())
def test_a_create_carried_out_but_unanswered_is_found_by_name_and_not_repeated(rules: Rules, tmp_path: Path) -> None:
    world = new_world(1, tmp_path, manifest_text=one_model(), rules=rules)
    world.script.append(Step(f"POST {MODELS}", "drop-after"))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    log = world.requests.entries
    lost = log.index(f"POST {MODELS} -> dropped after")
    assert log[lost + 1] == f"GET {MODELS} -> 200", "the next call after the lost answer is the re-read by name"
    assert sum(e.startswith(f"POST {MODELS} ->") for e in log) == 1, "the create was never sent again"
    assert "after an unclear create answer; adopting it" in report.stdout
    assert [m[0] for m in live_models(world.sandbox)] == ["chat"]
    assert untruths(world, report) == []


@pytest.mark.parametrize("rules", worlds())
def test_a_create_that_never_happened_is_looked_up_then_sent_again_after_a_pause(rules: Rules, tmp_path: Path) -> None:
    world = new_world(2, tmp_path, manifest_text=one_model(), rules=rules)
    world.script.append(Step(f"POST {MODELS}", "drop-before"))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    log, times = world.requests.entries, world.requests.times
    lost = log.index(f"POST {MODELS} -> dropped before")
    assert log[lost + 1] == f"GET {MODELS} -> 200"
    again = world.requests.index(f"POST {MODELS} -> 202", lost)
    # The client never repeats a create by itself; the applier waits before it does, not to land in the same
    # outage that lost the first answer.
    assert times[again] - times[lost] >= 5
    assert len(live_models(world.sandbox)) == 1
    assert duplicates(world.sandbox) == []


@pytest.mark.parametrize("rules", worlds())
def test_a_server_error_after_the_create_was_carried_out_is_resolved_by_name(rules: Rules, tmp_path: Path) -> None:
    # A 5xx may come from a proxy after the API acted, so it gets the same re-read as a lost answer.
    world = new_world(3, tmp_path, manifest_text=one_model(), rules=rules)
    world.script.append(Step(f"POST {MODELS}", "after:502"))
    report = world.apply()
    assert report.exit_code == 0
    log = world.requests.entries
    assert log[log.index(f"POST {MODELS} -> 502 (scripted)") + 1] == f"GET {MODELS} -> 200"
    assert sum(e.startswith(f"POST {MODELS} ->") for e in log) == 1
    assert len(live_models(world.sandbox)) == 1


@pytest.mark.parametrize("rules", worlds())
def test_a_server_error_before_anything_was_done_is_sent_again_once(rules: Rules, tmp_path: Path) -> None:
    world = new_world(3, tmp_path, manifest_text=one_model(), rules=rules)
    world.script.append(Step(f"POST {MODELS}", "503"))
    report = world.apply()
    assert report.exit_code == 0
    assert [e for e in world.requests.entries if e.startswith(f"POST {MODELS} ->")] == [
        f"POST {MODELS} -> 503 (scripted)",
        f"POST {MODELS} -> 202",
    ]
    assert len(live_models(world.sandbox)) == 1


@pytest.mark.parametrize("rules", worlds())
def test_a_create_that_keeps_failing_gives_up_and_says_so(rules: Rules, tmp_path: Path) -> None:
    world = new_world(4, tmp_path, manifest_text=one_model(), rules=rules)
    world.script.append(Step(f"POST {MODELS}", "drop-before", times=50))
    report = world.apply()
    assert report.exit_code == 1
    assert "model.chat" in report.stdout and "create did not go through after 5 attempts" in report.stdout
    assert "apiKey.app: created" in report.stdout, "a key for every model does not wait for this one"
    assert live_models(world.sandbox) == []
    assert untruths(world, report) == []


@pytest.mark.parametrize("rules", worlds())
def test_a_key_whose_token_was_lost_is_reported_kept_and_offered_for_rotation(rules: Rules, tmp_path: Path) -> None:
    world = new_world(5, tmp_path, manifest_text=one_model(), rules=rules)
    world.script.append(Step(f"POST {KEYS}", "drop-after"))
    first = world.apply()
    assert first.exit_code == 1
    [(_, key_id, _)] = live_keys(world.sandbox)
    assert first.result is not None
    [failed] = first.result.failed
    assert failed.address == "apiKey.app"
    assert f"key {key_id} was created but its token was lost in transit and cannot be fetched again" in failed.detail
    assert "capella-deploy apply --replace apiKey.app" in failed.detail
    assert read_outputs(world.outputs_path)["apiKeys"]["app"] == {"id": key_id, "region": "us-east-1", "token": None}
    assert untruths(world, first) == []

    # Never silently duplicated: the next run leaves the key alone.
    second = world.apply()
    assert second.exit_code == 0 and second.result is None
    assert [k[1] for k in live_keys(world.sandbox)] == [key_id]

    # The remedy offered: rotate it. A new key with a token in the outputs, the old one gone.
    rotated = world.apply(replace=frozenset({"apiKey.app"}))
    assert rotated.exit_code == 0, rotated.stdout
    [(_, new_id, token_hash)] = live_keys(world.sandbox)
    assert new_id != key_id
    entry = read_outputs(world.outputs_path)["apiKeys"]["app"]
    assert entry["id"] == new_id and sha256(entry["token"]) == token_hash


@pytest.mark.parametrize("rules", worlds())
def test_a_key_create_that_never_happened_is_sent_again(rules: Rules, tmp_path: Path) -> None:
    world = new_world(6, tmp_path, manifest_text=one_model(), rules=rules)
    world.script.append(Step(f"POST {KEYS}", "drop-before"))
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    log = world.requests.entries
    assert log[log.index(f"POST {KEYS} -> dropped before") + 1] == f"GET {KEYS} -> 200"
    [(_, key_id, token_hash)] = live_keys(world.sandbox)
    entry = read_outputs(world.outputs_path)["apiKeys"]["app"]
    assert entry["id"] == key_id and sha256(entry["token"]) == token_hash


@pytest.mark.parametrize("rules", worlds())
def test_a_lost_answer_to_a_pause_does_not_wait_for_a_status_that_never_comes(rules: Rules, tmp_path: Path) -> None:
    # The client repeats the pause (it is idempotent), and the repeat is refused with 409 because the model is
    # already pausing. Waiting for it to become healthy before asking again would wait out the whole timeout.
    world = new_world(7, tmp_path, manifest_text=one_model(state="paused"), rules=rules)
    world.script.append(Step(rf"DELETE {MODELS}/#\d+/activationState", "drop-after"))
    started = world.clock.now()
    report = world.apply()
    assert report.exit_code == 0, report.stdout
    assert any(e.endswith("activationState -> 409") for e in world.requests.entries)
    assert [m[2] for m in live_models(world.sandbox)] == ["paused"]
    assert world.clock.now() - started < 1800, "the run waited for a status the model was never going to reach"
    assert untruths(world, report) == []


@pytest.mark.parametrize("rules", worlds())
def test_a_lost_answer_to_a_delete_is_not_a_failure(rules: Rules, tmp_path: Path) -> None:
    world = new_world(8, tmp_path, manifest_text=one_model(gpu=48), rules=rules)
    assert world.apply().exit_code == 0
    world.set_manifest(one_model(gpu=192))
    world.script.append(Step(rf"DELETE {MODELS}/#\d+", "drop-after"))
    report = world.apply()
    # The repeated DELETE is refused (409: already being destroyed): the outcome asked for.
    assert any(e.startswith("DELETE") and e.endswith("-> 409") for e in world.requests.entries)
    assert report.exit_code == 0, report.stdout
    [(_, _, status)] = live_models(world.sandbox)
    assert status == "healthy"
    assert untruths(world, report) == []


@pytest.mark.parametrize("rules", worlds())
def test_an_unreadable_entry_in_the_lookup_fails_nothing(rules: Rules, tmp_path: Path) -> None:
    world = new_world(9, tmp_path, manifest_text=one_model(), rules=rules)

    def with_junk(page: dict[str, object]) -> dict[str, object]:
        data = page["data"]
        assert isinstance(data, list)
        return {**page, "data": [{"model": {"name": 7}}, {"unexpected": True}, *data]}

    world.script += [
        Step(f"POST {MODELS}", "drop-after"),
        Step(f"GET {MODELS}", "skip", times=1),  # the snapshot read at the start
        Step(f"GET {MODELS}", "rewrite", rewrite_body=with_junk),
        Step(f"POST {KEYS}", "drop-after"),
        Step(f"GET {KEYS}", "skip", times=1),
        Step(f"GET {KEYS}", "rewrite", rewrite_body=lambda page: {**page, "data": [{"keyId": 3}, *page["data"]]}),
    ]
    report = world.apply()
    assert "adopting it" in report.stdout
    assert "token was lost in transit" in report.stdout
    assert len(live_models(world.sandbox)) == 1 and len(live_keys(world.sandbox)) == 1


@pytest.mark.parametrize("rules", worlds())
def test_the_cli_reports_a_lost_token_plainly(rules: Rules, tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text(
        json.dumps({"routes": [{"match": "POST /v4/organizations/*/aiServices/models/apiKeys", "drop_after": 1.0}]})
    )
    manifest = tmp_path / "capella.yaml"
    manifest.write_text(one_model())
    Sandbox(tmp_path / "s.json", token="cbrel-cli-token-1", rules=rules).set_speed(20_000)
    env = {"CAPELLA_API_TOKEN": "cbrel-cli-token-1", "CAPELLA_SANDBOX_FAULTS": str(faults), "CAPELLA_ORG_ID": ""}
    args = ["apply", "-f", str(manifest), "--auto-approve", f"--sandbox={tmp_path / 's.json'}"]
    args += ["--outputs", str(tmp_path / "out.json")]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1
    assert "token was lost in transit and cannot be fetched again" in result.stdout
    assert "capella-deploy apply --replace apiKey.app" in result.stdout
    assert "Traceback" not in result.output
