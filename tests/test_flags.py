"""What Terraform users type: single-dash flags, --var-file, --target, --no-color, --debug anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from capella_deploy.cli import main
from tests.conftest import World
from tests.test_cli_e2e import manifest

ANSI = "\x1b["

VARIABLES = """\
apiVersion: capella-deploy/v1
defaults: {region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: "${GPU}"}
  - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24, dimensions: 2048}
apiKeys:
  - {name: app, allowedCIDRs: ["${CIDR:-10.0.0.0/8}"], allowedModels: [chat], expiryDays: 30}
  - {name: search, allowedCIDRs: [10.0.0.0/8], allowedModels: [embed], expiryDays: 30}
"""


def planned(result: Result) -> dict[str, Any]:
    assert result.exit_code in (0, 2), result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def after_of(doc: dict[str, Any], address: str) -> dict[str, Any]:
    change = next(c for c in doc["resource_changes"] if c["address"] == address)
    after: dict[str, Any] = change["change"]["after"]
    return after


# -- Terraform's single-dash spellings ---------------------------------------------------------------


def test_terraform_spellings_of_shared_flags_work(world: World) -> None:
    path = str(world.write("capella.yaml", VARIABLES))
    planfile = world.root / "tf.plan"
    result = world.cli(
        "plan", "-f", path, "-var", "GPU=48", "-var=CIDR=10.1.0.0/16", "-out", str(planfile), "-detailed-exitcode"
    )
    assert result.exit_code == 2, result.output
    assert planfile.exists()
    targeted = planned(world.cli("plan", "-f", path, "-var", "GPU=48", "-json", "-target", "model.chat"))
    assert [c["address"] for c in targeted["resource_changes"]] == ["model.chat"]

    applied = world.cli("apply", str(planfile), "-parallelism", "3", "-lock-timeout", "5s", "-no-color")
    assert applied.exit_code == 0, applied.output
    keys = {k.name: k for k in world.sandbox.world().api_keys.values()}
    assert list(keys["app"].allowed_cidrs) == ["10.1.0.0/16"]

    gpu = world.write("gpu.env", "GPU=48\n")
    replaced = planned(world.cli("plan", "-f", path, "-var-file", str(gpu), "-replace", "model.embed", "-json"))
    embed = next(c for c in replaced["resource_changes"] if c["address"] == "model.embed")
    assert embed["action_reason"] == "replace_by_request"
    destroyed = world.cli("destroy", "-f", path, "-var-file", str(gpu), "-auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    assert "Destroy complete!" in destroyed.stdout
    assert not world.sandbox.world().api_keys


def test_an_unknown_single_dash_flag_is_answered_with_the_right_spelling(world: World) -> None:
    typo = world.run("plan", "-f", manifest(world), "-jsn")
    assert typo.exit_code == 1 and "No such option: -jsn. Did you mean --json?" in typo.stderr
    terraform_only = world.run("apply", "-f", manifest(world), "-lock=false")
    assert terraform_only.exit_code == 1
    assert "-lock (Terraform's; here apply and destroy always lock the organization" in terraform_only.stderr
    # Short options with their value attached, and values that start with a dash, are left as they are.
    assert world.run("validate", f"-f{manifest(world)}").exit_code == 0
    cloned = world.run("clone", "-f", manifest(world), "--to-region", "eu-west-1", "--name-suffix", "-json")
    assert cloned.exit_code == 0, cloned.output
    assert "name: chat-json" in cloned.stdout


# -- variables ------------------------------------------------------------------------------------------


def test_var_files_in_yaml_and_dotenv_and_what_wins(world: World) -> None:
    path = str(world.write("capella.yaml", VARIABLES))
    yaml_file = world.write("prod.yaml", "GPU: 192\nCIDR: 10.2.0.0/16\n")
    doc = planned(world.cli("plan", "-f", path, "--var-file", str(yaml_file), "--json"))
    assert after_of(doc, "model.chat")["gpuMemory"] == 192
    assert after_of(doc, "apiKey.app")["allowedCIDRs"] == ["10.2.0.0/16"]

    dotenv = world.write("prod.env", "# staging\nexport GPU=24\nCIDR='10.3.0.0/16'  # office\n")
    doc = planned(world.cli("plan", "-f", path, "--var-file", str(dotenv), "--json"))
    assert after_of(doc, "model.chat")["gpuMemory"] == 24
    assert after_of(doc, "apiKey.app")["allowedCIDRs"] == ["10.3.0.0/16"]

    # Later files win over earlier ones, --var over every file.
    doc = planned(
        world.cli(
            "plan", "-f", path, "--var-file", str(yaml_file), "--var-file", str(dotenv), "--var", "GPU=48", "--json"
        )
    )
    assert after_of(doc, "model.chat")["gpuMemory"] == 48
    assert after_of(doc, "apiKey.app")["allowedCIDRs"] == ["10.3.0.0/16"]


def test_an_unknown_var_is_an_error_an_unused_var_file_entry_a_warning(world: World) -> None:
    path = str(world.write("capella.yaml", VARIABLES))
    typo = world.run("validate", "-f", path, "--var", "GPU=48", "--var", "CDIR=10.0.0.0/8")
    assert typo.exit_code == 1
    assert f"--var CDIR: no manifest file ({path}) uses ${{CDIR}}; did you mean CIDR?" in typo.stderr

    extra = world.write("shared.env", "GPU=48\nOTHER_APP_REGION=eu-west-1\n")
    shared = world.run("validate", "-f", path, "--var-file", str(extra))
    assert shared.exit_code == 0, shared.output
    assert f"Warning: {extra} sets OTHER_APP_REGION, which no manifest file uses" in shared.stderr

    broken = world.write("broken.env", "GPU=48\nthis is not a setting\n")
    refused = world.run("validate", "-f", path, "--var-file", str(broken))
    assert refused.exit_code == 1 and f"{broken}:2: expected NAME=value" in refused.stderr
    nested = world.write("nested.yaml", "GPU: {a: 1}\n")
    refused = world.run("validate", "-f", path, "--var-file", str(nested))
    assert refused.exit_code == 1 and "GPU must be a single value" in refused.stderr
    assert "Traceback" not in refused.output


# -- --target ----------------------------------------------------------------------------------------------


def test_target_keeps_what_the_target_needs_and_warns(world: World) -> None:
    path = str(world.write("capella.yaml", VARIABLES.replace('"${GPU}"', "48")))
    doc = planned(world.cli("plan", "-f", path, "--target", "apiKey.app", "--json"))
    # The key is created with the id of the model its allowedModels names: that model comes along.
    assert [c["address"] for c in doc["resource_changes"]] == ["model.chat", "apiKey.app"]
    assert doc["targets"] == ["apiKey.app"]
    assert any(w.startswith("Resource targeting is in effect") for w in doc["warnings"])
    text = world.cli("plan", "-f", path, "--target", "apiKey.app")
    assert "Warning: Resource targeting is in effect" in text.stdout and "Plan: 2 to create" in text.stdout

    applied = world.cli("apply", "-f", path, "--target", "model.embed", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert sorted(m.name for m in world.sandbox.world().models.values()) == ["embed"]
    assert not world.sandbox.world().api_keys
    rest = planned(world.cli("plan", "-f", path, "--json"))
    assert rest["summary"]["create"] == 3 and rest["targets"] == []

    # Destroying a model takes along the keys that name it; they would point at nothing.
    assert world.cli("apply", "-f", path, "--auto-approve").exit_code == 0
    gone = world.cli("destroy", "-f", path, "--target", "model.embed", "--auto-approve")
    assert gone.exit_code == 0, gone.output
    assert sorted(k.name for k in world.sandbox.world().api_keys.values()) == ["app"]


def test_a_target_that_names_nothing_is_refused(world: World) -> None:
    path = manifest(world)
    typo = world.cli("plan", "-f", path, "--target", "model.chta")
    assert typo.exit_code == 1 and "--target model.chta: the manifest declares no such resource" in typo.stderr
    assert "did you mean model.chat?" in typo.stderr
    shape = world.cli("plan", "-f", path, "--target", "chat")
    assert shape.exit_code == 1 and "an address is model.NAME" in shape.stderr


# -- colour ------------------------------------------------------------------------------------------------


def coloured(world: World, *args: str, terminal: bool, **env: str) -> Result:
    """Run as if on a terminal that shows colours (``terminal``) or into a pipe."""
    result = CliRunner().invoke(main, list(args), env={**world.env, **env}, color=terminal)
    assert result.exit_code in (0, 2), result.output
    return result


@pytest.mark.parametrize(
    ("env", "flags", "terminal", "expected"),
    [
        ({}, (), True, True),
        ({"NO_COLOR": "1"}, (), True, False),
        ({}, ("--no-color",), True, False),
        ({}, (), False, False),
        ({"FORCE_COLOR": "1"}, (), False, True),
        ({"FORCE_COLOR": "1"}, ("--no-color",), False, False),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, (), False, False),
    ],
)
def test_colour_follows_no_color_force_color_and_the_flag(
    world: World, env: dict[str, str], flags: tuple[str, ...], terminal: bool, expected: bool
) -> None:
    path = manifest(world)
    for args in (
        ["plan", "-f", path, f"--sandbox={world.state}", *flags],
        [*flags, "plan", "-f", path, f"--sandbox={world.state}"],
    ):
        result = coloured(world, *args, terminal=terminal, **env)
        assert (ANSI in result.stdout) is expected, (args, env, result.stdout[:200])


# -- logging ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_logs_our_request_lines_only(world: World, where: str) -> None:
    path = manifest(world)
    args = ["plan", "-f", path, f"--sandbox={world.state}"]
    if where == "before":
        args = ["--debug", *args]
    elif where == "after":
        args = [*args, "--debug"]
    else:
        world.env["CAPELLA_LOG"] = "debug"
    result = world.run(*args)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("DEBUG capella_deploy.http: GET /v4/organizations/") for line in lines), lines
    assert all(line.startswith("DEBUG capella_deploy.") for line in lines), lines


def test_the_log_goes_to_capella_log_path(world: World) -> None:
    log = world.root / "capella.log"
    world.env["CAPELLA_LOG_PATH"] = str(log)
    result = world.run("plan", "-f", manifest(world), f"--sandbox={world.state}")
    assert result.exit_code == 0, result.output
    assert "DEBUG" not in result.stderr
    written = log.read_text()
    assert "DEBUG capella_deploy.http: GET /v4/organizations/" in written
    assert world.token not in written and "httpcore" not in written
    assert log.stat().st_mode & 0o077 == 0

    world.env["CAPELLA_LOG"] = "chatty"
    refused = world.run("validate", "-f", manifest(world))
    assert refused.exit_code == 1 and "CAPELLA_LOG='chatty' is not a log level" in refused.stderr
