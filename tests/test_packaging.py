"""What a user gets with the package: schemas inside it, `schema`, `completion`, LICENSE, a pre-commit hook."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from capella_deploy.cli import main
from capella_deploy.manifest import schema_text as generated_manifest_schema
from capella_deploy.schemas import SCHEMAS, schema_path, schema_text
from tests.conftest import World
from tests.test_cli_e2e import manifest

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "schemas"


def test_the_packaged_schemas_are_the_published_ones() -> None:
    published = sorted(p.name for p in PUBLISHED.glob("*.schema.json"))
    assert published == sorted(f"{name}.schema.json" for name in SCHEMAS)
    for name in SCHEMAS:
        assert schema_text(name) == (PUBLISHED / f"{name}.schema.json").read_text(encoding="utf-8"), (
            f"schemas/{name}.schema.json and capella_deploy/schemas/ differ; copy one over the other"
        )
        jsonschema.Draft202012Validator.check_schema(json.loads(schema_text(name)))
    assert schema_text("manifest") == generated_manifest_schema(), (
        "the manifest schema is out of date; run: python -m capella_deploy.manifest --write-schema"
    )


def test_the_wheel_ships_the_schemas_and_the_license(tmp_path: Path) -> None:
    from hatchling.builders.wheel import WheelBuilder

    wheel = Path(next(WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])))
    names = zipfile.ZipFile(wheel).namelist()
    for name in SCHEMAS:
        assert f"capella_deploy/schemas/{name}.schema.json" in names
    assert "capella_deploy/catalog/catalog.json" in names  # the catalog check and the sandbox read it
    licenses = [n for n in names if re.search(r"\.dist-info/(licenses/)?LICENSE$", n)]
    assert licenses, names
    assert "Apache License" in zipfile.ZipFile(wheel).read(licenses[0]).decode()
    assert "Apache License" in (ROOT / "LICENSE").read_text() and (ROOT / "CHANGELOG.md").exists()


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_the_schema_command_prints_the_shipped_schema(world: World, name: str) -> None:
    result = world.run("schema", name)
    assert result.exit_code == 0 and result.stdout == schema_text(name)
    assert world.run("schema").stdout == schema_text("manifest")


@pytest.mark.parametrize(
    ("shell", "marker"), [("bash", "complete -o nosort"), ("zsh", "compdef"), ("fish", "complete")]
)
def test_completion_scripts_and_the_answers_behind_them(world: World, shell: str, marker: str) -> None:
    script = world.run("completion", shell)
    assert script.exit_code == 0 and marker in script.stdout
    assert "_CAPELLA_DEPLOY_COMPLETE" in script.stdout


def test_the_completion_answers_name_commands_and_options() -> None:
    def complete(*words: str) -> list[str]:
        # What the bash script sends: the words so far, the index of the one being completed.
        env = {
            "_CAPELLA_DEPLOY_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(words),
            "COMP_CWORD": str(len(words) - 1),
        }
        output = CliRunner().invoke(main, [], prog_name="capella-deploy", env=env).output
        return [line.partition(",")[2] for line in output.splitlines()]

    assert complete("capella-deploy", "pl") == ["plan"]
    assert "status" in complete("capella-deploy", "st")
    assert complete("capella-deploy", "plan", "--det") == ["--detailed-exitcode"]


def test_the_pre_commit_hook_validates_each_manifest(world: World) -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["entry"] == "capella-deploy validate" and hook["language"] == "python"
    matches = re.compile(hook["files"]).search
    assert matches("capella.yaml") and matches("deploy/capella-prod.yml") and not matches("docker-compose.yaml")
    good = manifest(world)
    bad = world.write("capella-bad.yaml", "apiVersion: capella-deploy/v1\nmodels: [{name: x}]\n")
    # pre-commit appends the file names to the entry.
    result = world.run(*hook["entry"].split()[1:], good, str(bad))
    assert result.exit_code == 1
    assert f"{good}: valid: 2 model(s), 1 API key(s)." in result.stdout
    assert f"{bad}:2: models[0]" in result.stderr and "problem(s) in the manifests." in result.stderr


def test_export_and_clone_name_a_schema_that_exists(world: World, tmp_path: Path) -> None:
    # No schemas/ folder anywhere above the output: the installed copy is named, and the user told.
    out = world.root / "deploy" / "exported.yaml"
    result = world.cli("export", "-o", str(out))
    assert result.exit_code == 0, result.output
    ref = out.read_text().splitlines()[0].removeprefix("# yaml-language-server: $schema=")
    assert (out.parent / ref).resolve() == schema_path("manifest").resolve()
    assert "capella-deploy schema > schemas/manifest.schema.json" in result.stderr

    # A repository's published copy above the output wins, named relative to the file.
    (world.root / "schemas").mkdir()
    (world.root / "schemas" / "manifest.schema.json").write_text(schema_text("manifest"))
    cloned = world.root / "deploy" / "eu" / "clone.yaml"
    result = world.run("clone", "-f", manifest(world), "--to-region", "eu-west-1", "-o", str(cloned))
    assert result.exit_code == 0, result.output
    assert cloned.read_text().startswith("# yaml-language-server: $schema=../../schemas/manifest.schema.json\n")
