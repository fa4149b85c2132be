"""The right target, always visible: where every plan, apply, drift, destroy and status acts, and the guards on it.

Each output names the API's URL (or the embedded sandbox's state file), the organization's name and id, and
where the id came from; an organizationId the manifest sets but leaves empty, an organization of another name
than expectOrganizationName, and a saved plan applied somewhere else are refused before any change.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from capella_deploy.sandbox.server import running_server
from capella_deploy.schemas import schema_text
from tests.conftest import World
from tests.test_cli_e2e import manifest

OTHER_ORG = "6af08c0a-8cab-4c1c-b257-b521575c16d0"
SANDBOX_NAME = "Sandbox Organization"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def rename_organization(world: World, name: str) -> None:
    with world.sandbox.mutate() as state:
        state.org_name = name


def sandbox_target(world: World, environment: str | None = None) -> str:
    line = (
        f'Target: embedded sandbox {world.state}, organization "{SANDBOX_NAME}" '
        f"({world.sandbox.org_id}, the sandbox's own organization)"
    )
    return line + (f", environment {environment}" if environment else "")


def nothing_deployed(world: World) -> bool:
    state = world.sandbox.world()
    return not state.models and not state.api_keys


# -- every output says where it acts ----------------------------------------------------------------------


def test_a_plan_against_an_api_names_its_url_the_organization_and_where_the_id_came_from(world: World) -> None:
    path = manifest(world)
    org = world.sandbox.org_id
    rename_organization(world, "Acme Prod")
    with running_server(world.sandbox) as base:
        world.env.update({"CAPELLA_API_URL": base, "CAPELLA_ORG_ID": org})
        human = world.run("plan", "-f", path, "--environment", "production")
        markdown = world.run("plan", "-f", path, "--markdown")
        as_json = world.run("plan", "-f", path, "--json")
        world.env["CAPELLA_ORG_ID"] = ""
        only = world.run("plan", "-f", path)
        pinned = world.write("pinned.yaml", f"organizationId: {org}\n")
        from_manifest = world.run("plan", "-f", path, "-f", str(pinned))
    assert human.exit_code == 0, human.output
    assert human.stdout.splitlines()[0] == (
        f'Target: {base}, organization "Acme Prod" ({org}, from CAPELLA_ORG_ID), environment production'
    )
    lines = markdown.stdout.splitlines()
    assert lines[1] == f"### capella-deploy plan for organization `{org}`"
    assert lines[3] == f"Target: `{base}`, organization **Acme Prod** (`{org}`, from CAPELLA_ORG_ID)"
    doc = json.loads(as_json.stdout)
    jsonschema.validate(doc, json.loads(schema_text("plan")))
    assert doc["target"] == {
        "url": base,
        "sandbox_state": None,
        "organization_id": org,
        "organization_name": "Acme Prod",
        "organization_id_source": "CAPELLA_ORG_ID",
        "environment": None,
        "scope": None,
    }
    assert (
        only.stdout.splitlines()[0]
        == f'Target: {base}, organization "Acme Prod" ({org}, the token\'s only organization)'
    )
    assert from_manifest.stdout.splitlines()[0] == (
        f'Target: {base}, organization "Acme Prod" ({org}, from the manifest\'s organizationId)'
    )


def test_apply_destroy_drift_status_and_show_say_where_they_act(world: World) -> None:
    path = world.write("capella.yaml", "environment: staging\n" + Path(manifest(world)).read_text())
    summary = world.root / "summary.md"
    world.env["GITHUB_STEP_SUMMARY"] = str(summary)
    applied = world.cli("apply", "-f", str(path), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert sandbox_target(world, "staging") in applied.stdout.splitlines()  # the plan it shows, after the lock
    org = world.sandbox.org_id
    assert (
        f"Target: embedded sandbox `{world.state}`, organization **{SANDBOX_NAME}** "
        f"(`{org}`, the sandbox's own organization), environment `staging`"
    ) in summary.read_text()

    drift = world.cli("drift", "-f", str(path), "--report", str(world.root / "drift.json"))
    assert drift.exit_code == 0, drift.output
    assert drift.stdout.splitlines()[0] == sandbox_target(world, "staging")
    report = json.loads((world.root / "drift.json").read_text())
    jsonschema.validate(report, json.loads(schema_text("drift")))
    assert report["target"]["organization_name"] == SANDBOX_NAME
    assert report["target"]["sandbox_state"] == str(world.state) and report["target"]["url"] is None
    assert report["target"]["organization_id_source"] == "sandbox"
    markdown = world.cli("drift", "-f", str(path), "--markdown").stdout.splitlines()
    assert markdown[3].startswith(f"Target: embedded sandbox `{world.state}`, organization **{SANDBOX_NAME}**")

    status = world.cli("status", "-f", str(path))
    assert status.stdout.splitlines()[0] == sandbox_target(world, "staging")
    status_doc = json.loads(world.cli("status", "--json").stdout)
    jsonschema.validate(status_doc, json.loads(schema_text("status")))
    assert status_doc["target"]["organization_id"] == org and status_doc["target"]["environment"] is None

    saved = world.root / "destroy-check.plan"
    assert world.cli("plan", "-f", str(path), "--out", str(saved)).exit_code == 0
    shown = world.run("show", str(saved))
    assert sandbox_target(world, "staging") in shown.stdout.splitlines()
    assert json.loads(saved.read_text())["plan"]["target"]["organization_name"] == SANDBOX_NAME

    destroyed = world.cli("destroy", "-f", str(path), "--auto-approve")
    assert destroyed.exit_code == 0, destroyed.output
    assert sandbox_target(world, "staging") in destroyed.stdout.splitlines()


def test_an_organization_name_that_would_rewrite_the_output_is_shown_harmlessly(world: World) -> None:
    rename_organization(world, "Acme\x1b[2J\nProd " + "x" * 300)
    result = world.cli("plan", "-f", manifest(world))
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert 'organization "Acme?[2J?Prod xxx' in first and "\x1b" not in result.stdout
    shown = first.split('organization "', 1)[1].split('"', 1)[0]
    assert shown.endswith("…") and len(shown) <= 100, "a long name is cut short, whatever else the line says"


# -- --sandbox uses the sandbox's own organization ---------------------------------------------------------


def test_the_sandbox_ignores_a_capella_org_id_left_in_the_shell(world: World) -> None:
    world.env["CAPELLA_ORG_ID"] = OTHER_ORG
    path = manifest(world)
    planned = world.cli("plan", "-f", path)
    assert planned.exit_code == 0, planned.output
    assert planned.stdout.splitlines()[0] == sandbox_target(world)
    applied = world.cli("apply", "-f", path, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert {m.name for m in world.sandbox.world().models.values()} == {"chat", "embed"}
    assert world.cli("drift", "-f", path).exit_code == 0
    assert world.cli("destroy", "-f", path, "--auto-approve").exit_code == 0


def test_an_organization_the_manifest_sets_must_exist_in_the_sandbox(world: World) -> None:
    pinned = world.write("pinned.yaml", f"organizationId: {OTHER_ORG}\n")
    result = world.cli("apply", "-f", manifest(world), "-f", str(pinned), "--auto-approve")
    assert result.exit_code == 1
    assert (
        f"cannot read organization {OTHER_ORG} (from the manifest's organizationId) at the embedded sandbox "
        f"({world.state}): the API answered 403"
    ) in result.stderr
    assert f"Organizations this token can see: {world.sandbox.org_id} ({SANDBOX_NAME})" in result.stderr
    assert nothing_deployed(world)


class _NoSuchOrganization(BaseHTTPRequestHandler):
    """An API whose organization listing names one organization, and which knows no other."""

    def do_GET(self) -> None:
        if self.path.startswith("/v4/organizations/"):
            status, body = 404, {"httpStatusCode": 404, "code": 3000, "message": "Not Found", "hint": "no such org"}
        else:
            status, body = 200, {"data": [{"id": "11111111-2222-3333-4444-555555555555", "name": "Acme"}]}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def unknown_organization_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchOrganization)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_organization_the_api_does_not_know_is_named_with_the_ones_the_token_sees(world: World) -> None:
    with unknown_organization_api() as base:
        world.env.update({"CAPELLA_API_URL": base, "CAPELLA_ORG_ID": OTHER_ORG})
        result = world.run("drift", "-f", manifest(world))
    assert result.exit_code == 1
    assert (
        f"cannot read organization {OTHER_ORG} (from CAPELLA_ORG_ID) at {base}: the API answered 404" in result.stderr
    )
    assert "usually a wrong organization id" in result.stderr
    assert "11111111-2222-3333-4444-555555555555 (Acme); set CAPELLA_ORG_ID to one of them" in result.stderr


# -- an organizationId the manifest sets must not be empty ------------------------------------------------

EU_OVERLAY = """\
apiVersion: capella-deploy/v1
organizationId: ${CAPELLA_EU_ORG_ID:-}
defaults: {region: eu-west-1}
"""


def test_an_organization_id_that_interpolates_to_empty_is_a_manifest_error(world: World) -> None:
    # The trap of the issue: CAPELLA_ORG_ID names the US organization, the EU overlay's variable is unset.
    world.env["CAPELLA_ORG_ID"] = world.sandbox.org_id
    overlay = world.write("eu.yaml", EU_OVERLAY)
    base = manifest(world)
    for command in ("validate", "plan", "apply", "drift"):
        extra = ["--auto-approve"] if command == "apply" else []
        runner = world.run if command == "validate" else world.cli
        result = runner(command, "-f", base, "-f", str(overlay), *extra)
        assert result.exit_code == 1, (command, result.output)
        assert (
            f"{overlay}:2: organizationId: the manifest sets organizationId but it is empty after interpolation: "
            "set CAPELLA_EU_ORG_ID or remove the field"
        ) in result.stderr
    assert nothing_deployed(world)

    world.env["CAPELLA_EU_ORG_ID"] = ""  # set but empty is empty too, with or without a default
    strict = world.write("strict.yaml", EU_OVERLAY.replace(":-}", "}"))
    result = world.cli("plan", "-f", base, "-f", str(strict))
    assert result.exit_code == 1 and "set CAPELLA_EU_ORG_ID or remove the field" in result.stderr

    world.env["CAPELLA_EU_ORG_ID"] = world.sandbox.org_id
    assert world.cli("plan", "-f", base, "-f", str(overlay)).exit_code == 0


def test_an_organization_id_written_empty_is_a_manifest_error_and_left_out_is_the_fallback(world: World) -> None:
    base = manifest(world)
    for written in ('""', "", "~", "'  '"):
        overlay = world.write("overlay.yaml", f"organizationId: {written}\n")
        result = world.cli("plan", "-f", base, "-f", str(overlay))
        assert result.exit_code == 1, (written, result.output)
        assert f"{overlay}:1: organizationId: the manifest sets organizationId but it is empty: " in result.stderr
        assert "1 problem(s) in the manifest." in result.stderr
    assert world.cli("plan", "-f", base).exit_code == 0


def test_the_eu_overlay_example_refuses_to_plan_without_its_organization(world: World) -> None:
    world.env["CAPELLA_ORG_ID"] = world.sandbox.org_id
    files = ["-f", str(EXAMPLES / "overlays" / "base.yaml"), "-f", str(EXAMPLES / "overlays" / "eu.yaml")]
    unset = world.cli("plan", *files)
    assert unset.exit_code == 1 and "variable CAPELLA_EU_ORG_ID is not set" in unset.stderr
    typo = world.cli("plan", *files, "--var", f"CAPELLA_EU_ORGID={world.sandbox.org_id}")
    assert typo.exit_code == 1 and "did you mean CAPELLA_EU_ORG_ID?" in typo.stderr
    assert "Target:" not in unset.stdout + typo.stdout


# -- expectOrganizationName --------------------------------------------------------------------------------


def guarded(world: World, name: str) -> str:
    return str(world.write("guard.yaml", f"expectOrganizationName: {name}\n"))


def test_plan_apply_drift_and_destroy_refuse_an_organization_of_another_name(world: World) -> None:
    path = manifest(world)
    wrong = guarded(world, "Acme Prod")
    org = world.sandbox.org_id
    refusal = (
        f"organization {org} (the sandbox's own organization) at the embedded sandbox ({world.state}) is named "
        f'"{SANDBOX_NAME}", not "Acme Prod" as the manifest\'s expectOrganizationName says; nothing was changed'
    )
    for command in ("plan", "apply", "drift"):
        extra = ["--auto-approve"] if command == "apply" else []
        result = world.cli(command, "-f", path, "-f", wrong, *extra)
        assert result.exit_code == 1, (command, result.output)
        assert refusal in result.stderr
        assert "Target:" not in result.stdout
    assert nothing_deployed(world)

    right = guarded(world, f'"{SANDBOX_NAME}"')
    applied = world.cli("apply", "-f", path, "-f", right, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    wrong = guarded(world, "Acme Prod")
    refused = world.cli("destroy", "-f", path, "-f", wrong, "--auto-approve")
    assert refused.exit_code == 1 and refusal in refused.stderr
    assert {m.name for m in world.sandbox.world().models.values()} == {"chat", "embed"}


def test_an_empty_expected_name_is_no_guard(world: World) -> None:
    guard = world.write("guard.yaml", "expectOrganizationName: ${EXPECTED_ORG_NAME:-}\n")
    assert world.cli("plan", "-f", manifest(world), "-f", str(guard)).exit_code == 0


def test_a_served_organization_of_another_name_is_refused_and_its_own_name_accepted(world: World) -> None:
    rename_organization(world, "Acme EU")
    path = manifest(world)
    org = world.sandbox.org_id
    with running_server(world.sandbox) as base:
        world.env.update({"CAPELLA_API_URL": base, "CAPELLA_ORG_ID": org})
        refused = world.run("plan", "-f", path, "-f", guarded(world, "Acme US"))
        accepted = world.run("plan", "-f", path, "-f", guarded(world, "Acme EU"))
    assert refused.exit_code == 1
    assert (
        f'organization {org} (from CAPELLA_ORG_ID) at {base} is named "Acme EU", not "Acme US" as the manifest\'s '
        "expectOrganizationName says"
    ) in refused.stderr
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.splitlines()[0] == f'Target: {base}, organization "Acme EU" ({org}, from CAPELLA_ORG_ID)'


# -- a saved plan applies where it was made ----------------------------------------------------------------


def test_a_saved_plan_is_refused_against_another_api_or_sandbox(world: World) -> None:
    path = manifest(world)
    in_process = world.root / "sandbox.plan"
    assert world.cli("plan", "-f", path, "--out", str(in_process)).exit_code == 0
    org = world.sandbox.org_id
    with running_server(world.sandbox) as base:
        # The same organization, served over HTTP: another API than the one the plan was made with.
        world.env["CAPELLA_API_URL"] = base
        elsewhere = world.run("apply", str(in_process), "--outputs", str(world.outputs))
        served = world.root / "served.plan"
        assert world.run("plan", "-f", path, "--out", str(served)).exit_code == 0
    assert elsewhere.exit_code == 1
    assert (
        f'{in_process}: the plan was made for embedded sandbox {world.state}, organization "{SANDBOX_NAME}" '
        f'({org}, the sandbox\'s own organization), but this run acts on {base}, organization "{SANDBOX_NAME}" '
        f"({org}, from the saved plan); apply it where it was made"
    ) in elsewhere.stderr
    assert nothing_deployed(world)  # refused before the lock, whose lease would be a key in the organization

    back_home = world.cli("apply", str(served))
    assert back_home.exit_code == 1
    assert f"the plan was made for {base}, " in back_home.stderr
    assert f"but this run acts on embedded sandbox {world.state}, " in back_home.stderr
    assert nothing_deployed(world)

    other_file = world.root / "other-sandbox.json"
    other_file.write_bytes(world.state.read_bytes())  # a copy of the world: same organization, another sandbox
    copied = world.run("apply", str(in_process), f"--sandbox={other_file}", "--outputs", str(world.outputs))
    assert copied.exit_code == 1 and f"but this run acts on embedded sandbox {other_file}, " in copied.stderr

    at_home = world.cli("apply", str(in_process))
    assert at_home.exit_code == 0, at_home.output
    assert {m.name for m in world.sandbox.world().models.values()} == {"chat", "embed"}
