"""The Management API token in a manifest: refused by name, masked by value wherever the tool writes text.

``${CAPELLA_API_TOKEN}`` is a manifest error at its file and line. Another variable that happens to hold
the token's value cannot be told apart by name, so the value itself is masked in everything printed or
saved: validate errors, plans (human, Markdown, JSON), plan files, apply output, drift reports. A plan
file is never written with the value in it, masked or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from capella_deploy.cli import main
from capella_deploy.sandbox import Sandbox
from capella_deploy.secrets import MASK

# Characters that JSON escapes and URLs encode, so every spelling of the token is exercised.
TOKEN = 'cbsecret+"Mgmt"/Token=8d1f5a3c9e7b'
KEY = """\
apiVersion: capella-deploy/v1
defaults: {{provider: aws, region: us-east-1}}
apiKeys:
  - name: app
    description: "{description}"
    expiryDays: 90
    allowedCIDRs: [10.0.0.0/8]
outputs: {{path: outputs.json}}
"""
FAST = 20_000.0


class Run:
    """The CLI in one directory, with the token in the environment and a sandbox that accepts it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        Sandbox(root / "sandbox.json", token=TOKEN).set_speed(FAST)
        self.env = {"CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_SANDBOX_FAULTS": "", "SOME_VAR": TOKEN}

    def manifest(self, description: str, name: str = "capella.yaml") -> str:
        path = self.root / name
        path.write_text(KEY.format(description=description))
        return str(path)

    def __call__(self, *args: str, sandbox: bool = True) -> Result:
        extra = [f"--sandbox={self.root / 'sandbox.json'}"] if sandbox else []
        return CliRunner().invoke(main, [*args, *extra], env=self.env)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.chdir(tmp_path)
    return Run(tmp_path)


def printed(result: Result) -> str:
    return result.stdout + result.stderr


def assert_never_shown(text: str) -> None:
    for spelling in (TOKEN, json.dumps(TOKEN)[1:-1], TOKEN[:12], TOKEN[-12:]):
        assert spelling not in text


@pytest.mark.parametrize(
    "reference", ["${CAPELLA_API_TOKEN}", "${CAPELLA_API_TOKEN:-fallback}", "key of ${CAPELLA_API_TOKEN}"]
)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_interpolating_the_api_token_variable_is_a_manifest_error_at_its_line(
    cli: Run, reference: str, command: str
) -> None:
    path = cli.manifest(reference)
    result = cli(command, "-f", path, sandbox=command == "plan")
    assert result.exit_code == 1
    assert f"{path}:5: apiKeys[0].description: ${{CAPELLA_API_TOKEN}} is the Management API token" in result.stderr
    assert "never goes into a manifest" in result.stderr
    assert_never_shown(printed(result))


def test_the_api_token_variable_is_refused_even_when_set_with_var(cli: Run) -> None:
    result = cli(
        "validate", "-f", cli.manifest("${CAPELLA_API_TOKEN}"), "--var", "CAPELLA_API_TOKEN=other", sandbox=False
    )
    assert result.exit_code == 1 and "is the Management API token" in result.stderr


@pytest.mark.parametrize("suffix", ["", "x" * 100])
def test_a_validate_error_quoting_a_value_that_holds_the_token_masks_it(cli: Run, suffix: str) -> None:
    # The long form is cut short in the message: the cut must not leave a piece of the token behind.
    cli.env["SOME_VAR"] = TOKEN + suffix
    (cli.root / "bad.yaml").write_text(KEY.format(description="ok").replace("[10.0.0.0/8]", '["${SOME_VAR}"]'))
    result = cli("validate", "-f", "bad.yaml", sandbox=False)
    assert result.exit_code == 1
    assert "bad.yaml:7: apiKeys[0].allowedCIDRs[0]: '" + MASK in result.stderr
    assert_never_shown(printed(result))


def test_a_variable_holding_the_token_is_masked_in_every_plan_apply_and_drift_output(cli: Run) -> None:
    path = cli.manifest("${SOME_VAR}")
    outputs: list[str] = []
    for extra in ([], ["--markdown"], ["--json"]):
        result = cli("plan", "-f", path, *extra)
        assert result.exit_code == 0, printed(result)
        outputs.append(printed(result))
        assert MASK in result.stdout, "the value was in the plan, masked"
        if extra == ["--json"]:
            json.loads(result.stdout)  # still a JSON document

    saved = cli("plan", "-f", path, "--out", "plan.json")
    outputs.append(printed(saved))
    assert saved.exit_code == 1
    assert "plan.json: the plan was not saved: it holds the value of a secret" in saved.stderr
    assert not (cli.root / "plan.json").exists()

    applied = cli("apply", "-f", path, "--auto-approve")
    outputs.append(printed(applied))
    assert applied.exit_code == 0, printed(applied)

    # The live key now holds the value; a manifest that asks for another description drifts from it.
    changed = cli.manifest("a plain description", name="changed.yaml")
    for extra in ([], ["--markdown"], ["--report", "drift.json"]):
        drift = cli("drift", "-f", changed, *extra)
        assert drift.exit_code == 2, printed(drift)
        outputs.append(printed(drift))
    assert MASK in outputs[-2], "the live value was in the drift report, masked"
    report = (cli.root / "drift.json").read_text()
    assert MASK in report
    outputs.append(report)
    outputs.append((cli.root / "outputs.json").read_text())
    for text in outputs:
        assert_never_shown(text)


CREDENTIAL = 'sk-proj+"Provider"/Credential=5e1b'
PROVIDER = """\
  - name: openai
    type: openAI
    credentials: {apiKey: {env: OPENAI_API_KEY}}
"""


def test_a_provider_credential_is_masked_wherever_its_value_shows_up(cli: Run) -> None:
    # The credential itself only ever goes into a request body; a variable that happens to hold the same value is
    # masked like the token's, from the moment the credential is read.
    cli.env.update({"OPENAI_API_KEY": CREDENTIAL, "SOME_VAR": CREDENTIAL})
    path = cli.root / "capella.yaml"
    path.write_text(KEY.format(description="${SOME_VAR}").replace("outputs:", "providers:\n" + PROVIDER + "outputs:"))
    shown: list[str] = []
    for extra in ([], ["--markdown"], ["--json"]):
        result = cli("plan", "-f", str(path), *extra)
        assert result.exit_code == 0, printed(result)
        assert MASK in result.stdout
        shown.append(printed(result))
    saved = cli("plan", "-f", str(path), "--out", "plan.json")
    assert saved.exit_code == 1 and "it holds the value of a secret" in saved.stderr
    applied = cli("apply", "-f", str(path), "--auto-approve")
    assert applied.exit_code == 0, printed(applied)
    shown += [printed(saved), printed(applied), (cli.root / "outputs.json").read_text()]
    for text in shown:
        for spelling in (CREDENTIAL, json.dumps(CREDENTIAL)[1:-1], CREDENTIAL[:12], CREDENTIAL[-12:]):
            assert spelling not in text
