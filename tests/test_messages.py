"""Messages that say what happened and what to do: the ones a new user met and could not act on."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from capella_deploy.cli import main
from capella_deploy.sandbox import Sandbox
from capella_deploy.sandbox.server import running_server
from tests.conftest import World
from tests.test_cli_e2e import manifest

OTHER_ORG = "6af08c0a-8cab-4c1c-b257-b521575c16d0"


def test_a_bad_lock_timeout_names_its_option(world: World) -> None:
    result = world.cli("apply", "-f", manifest(world), "--auto-approve", "--lock-timeout", "soon")
    assert result.exit_code == 1
    assert "Invalid value for --lock-timeout: 'soon' is not a duration like 90s, 30m or 2h" in result.stderr
    timeout = world.cli("apply", "-f", manifest(world), "--auto-approve", "--timeout", "-5m")
    assert timeout.exit_code == 1 and "Invalid value for --timeout: '-5m'" in timeout.stderr
    assert not world.sandbox.world().models


def test_an_api_that_does_not_answer_is_named_after_the_retries(world: World) -> None:
    faults = world.write("faults.yaml", 'routes:\n  - {match: "GET /v4/**", drop_before: 1.0}\n')
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(faults)
    result = world.cli("plan", "-f", manifest(world))
    assert result.exit_code == 1
    assert f"no answer from the Capella Management API at the embedded sandbox ({world.state})" in result.stderr
    assert "after 6 attempts" in result.stderr and "check CAPELLA_API_URL, the network and any proxy" in result.stderr


def test_a_refused_token_names_where_it_came_from(world: World) -> None:
    served = Sandbox(world.root / "served.json", token="the-served-token")
    with running_server(served) as base:
        world.env.update({"CAPELLA_API_URL": base, "CAPELLA_ORG_ID": served.org_id})
        result = world.run("plan", "-f", manifest(world))
        assert result.exit_code == 1
        assert f"the API at {base} refused the token from CAPELLA_API_TOKEN" in result.stderr
        assert "401" in result.stderr and "Management API key" in result.stderr

        token_file = world.write("token", world.token + "\n")
        result = world.run("plan", "-f", manifest(world), "--token-file", str(token_file))
        assert f"refused the token from --token-file {token_file}" in result.stderr


def test_a_forbidden_organization_lists_the_ones_the_token_can_see(world: World) -> None:
    with running_server(world.sandbox) as base:
        world.env.update({"CAPELLA_API_URL": base, "CAPELLA_ORG_ID": OTHER_ORG})
        result = world.run("plan", "-f", manifest(world))
    assert result.exit_code == 1
    assert (
        f"cannot read organization {OTHER_ORG} (from CAPELLA_ORG_ID) at {base}: the API answered 403" in result.stderr
    )
    assert "usually a wrong organization id, or a token of another organization" in result.stderr
    can_see = f"Organizations this token can see: {world.sandbox.org_id} (Sandbox Organization); set CAPELLA_ORG_ID"
    assert can_see in result.stderr
    pinned = world.write("pinned.yaml", f"organizationId: {OTHER_ORG}\n")
    result = world.cli("plan", "-f", manifest(world), "-f", str(pinned))
    assert f"organization {OTHER_ORG} (from the manifest's organizationId)" in result.stderr
    assert "remove the manifest's organizationId (the sandbox then uses its own)" in result.stderr


def test_the_served_sandbox_says_how_to_set_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-7f3a\n")
    command = [sys.executable, "-c", "from capella_deploy.cli import main; main()", "sandbox", "serve", "--port", "0"]
    cases = {
        "default": ([], {}),
        "env": ([], {"CAPELLA_API_TOKEN": "env-token-9c2d"}),
        "file": (["--token-file", str(token_file)], {}),
    }
    env = {k: v for k, v in os.environ.items() if k != "CAPELLA_API_TOKEN"}
    procs = {
        name: subprocess.Popen(
            [*command, "--state", str(tmp_path / f"{name}.json"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, **extra},
        )
        for name, (args, extra) in cases.items()
    }
    exports = {}
    try:
        for name, proc in procs.items():
            assert proc.stdout is not None
            exports[name] = next(line for line in proc.stdout if line.startswith("export "))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
    assert exports["default"].rstrip().endswith(" CAPELLA_API_TOKEN=sandbox-token")
    assert "# and keep $CAPELLA_API_TOKEN as it is in this shell" in exports["env"]
    assert "env-token-9c2d" not in exports["env"]
    assert f'CAPELLA_API_TOKEN="$(cat {token_file.resolve()})"' in exports["file"]
    assert "file-token-7f3a" not in exports["file"]


def test_sandbox_reset_never_creates_a_world(world: World, tmp_path: Path) -> None:
    missing_dir = tmp_path / "nonexistent-dir" / "x.json"
    result = world.run("sandbox", "reset", "--state", str(missing_dir))
    assert result.exit_code == 1 and "no such directory" in result.stderr
    assert not missing_dir.parent.exists()
    missing_file = tmp_path / "x.json"
    result = world.run("sandbox", "reset", "--state", str(missing_file))
    assert result.exit_code == 0 and "nothing to reset" in result.stdout
    assert not missing_file.exists()


def test_an_ignore_pattern_that_matches_nothing_warns(world: World) -> None:
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    result = world.cli("drift", "-f", path, "--ignore", "modle.*", "--ignore", "model.*.gpuMemory")
    assert result.exit_code == 0, result.output
    assert "the ignore pattern 'modle.*' matches no resource or attribute here" in result.stderr
    assert "model.*.gpuMemory" not in result.stderr


def test_a_fault_file_reports_every_problem(world: World) -> None:
    faults = world.write(
        "faults.yaml",
        "deploy_fail_rate: 3\nrate_limit_per_minute: 0\nroutes:\n  - {match: GET /x, error_status: 200}\n",
    )
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(faults)
    result = world.cli("plan", "-f", manifest(world))
    assert result.exit_code == 1
    for problem in (
        "deploy_fail_rate must be between 0 and 1",
        "rate_limit_per_minute must be at least 1",
        "error_status must be a 5xx status or 429",
    ):
        assert problem in result.stderr, result.stderr


def test_invalid_cidrs_are_reported_without_a_spurious_count(world: World) -> None:
    bad = world.write(
        "bad.yaml",
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\n"
        "apiKeys:\n  - {name: app, allowedCIDRs: [not-a-cidr, 10.0.0.300/8]}\n",
    )
    result = world.run("validate", "-f", str(bad))
    assert result.exit_code == 1
    assert result.stderr.count("is not an IP address or CIDR block") == 2
    assert "needs at least" not in result.stderr and "2 problem(s)" in result.stderr
    empty = world.write("empty.yaml", bad.read_text().replace("[not-a-cidr, 10.0.0.300/8]", "[]"))
    assert "needs at least 1 item(s)" in world.run("validate", "-f", str(empty)).stderr


def test_a_failed_deployment_says_what_to_do_next(world: World) -> None:
    # With this seed the first deployment rolled (chat) fails.
    world.env["CAPELLA_SANDBOX_FAULTS"] = str(world.write("faults.yaml", "seed: 1\ndeploy_fail_rate: 0.5\n"))
    result = world.cli("apply", "-f", manifest(world), "--auto-approve")
    assert result.exit_code == 1
    assert "status became deployFailed" in result.stdout
    assert "The failed deployment is left in place: the next apply replaces it." in result.stdout
    assert "`capella-deploy status` shows what is deployed" in result.stdout


def test_destroy_speaks_of_destroying(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    path = manifest(world)
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    result = world.cli("destroy", "-f", path, "--auto-approve")
    assert result.exit_code == 0
    assert "Destroy complete! Resources: 3 destroyed." in result.stdout and "Apply complete" not in result.stdout

    from capella_deploy.cli.terminal import TerminalApplyView

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("the-org\n"))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    with click.Context(main):
        assert TerminalApplyView(interactive=True, destroy=True).confirm("destroy", "the-org")
    assert "Do you want to destroy these resources? Only the organization id (the-org) will be accepted." in (
        out.getvalue()
    )


def test_help_has_examples_full_summaries_and_the_environment(world: World) -> None:
    top = world.run("--help")
    commands = " ".join(top.stdout.split("Commands:")[1].split("Environment:")[0].split())
    # Whole summaries, not cut at 45 characters.
    assert "Free the organization lock LOCK_ID from anywhere, e.g. the lock of a run that died holding it." in commands
    assert "..." not in commands.replace("JSON plan, ...", "")
    for variable in ("CAPELLA_API_TOKEN", "CAPELLA_API_URL", "CAPELLA_ORG_ID", "CAPELLA_LOG", "NO_COLOR"):
        assert variable in top.stdout
    assert isinstance(main, click.Group)
    for name in main.list_commands(click.Context(main)):
        text = world.run(name, "--help").stdout
        assert re.search(r"\n  Example:\n    .*capella-deploy \w", text), name
    plan_help = world.run("plan", "--help").stdout
    assert "Environment: CAPELLA_API_TOKEN, CAPELLA_API_URL" in plan_help
    apply_help = " ".join(world.run("apply", "--help").stdout.split())
    assert "--parallelism INTEGER RANGE How many changes run at once" in apply_help
