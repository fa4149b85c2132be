"""The committed JSON Schema matches the models, and every example satisfies both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from capella_deploy.manifest import load_manifest, main, manifest_json_schema, schema_text

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schemas" / "manifest.schema.json"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/manifest.schema.json"


def committed_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "schemas/manifest.schema.json is out of date; run: python -m capella_deploy.manifest --write-schema"
    )


def test_schema_is_a_valid_draft_2020_12_schema_with_identity() -> None:
    schema = manifest_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    assert schema["required"] == ["apiVersion"]
    assert schema["additionalProperties"] is False


def test_write_schema_entry_point_writes_the_same_text(tmp_path: Path) -> None:
    target = tmp_path / "out" / "schema.json"
    assert main(["--write-schema", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == schema_text()


def test_examples_cover_the_documented_cases() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {"quickstart", "multi-region", "embeddings-chat-caching", "keys-with-cidrs", "providers"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_declares_schema_validates_and_loads_without_environment(example: Path) -> None:
    text = example.read_text(encoding="utf-8")
    assert text.splitlines()[0] == SCHEMA_LINE
    jsonschema.validate(yaml.safe_load(text), committed_schema(), cls=jsonschema.Draft202012Validator)
    manifest = load_manifest([example], environ={})
    assert manifest.models or manifest.apiKeys or manifest.providers


@pytest.mark.parametrize(
    "document",
    [
        {"apiVersion": "capella-deploy/v1", "modles": []},
        {"apiVersion": "capella-deploy/v2"},
        {"apiVersion": "capella-deploy/v1", "models": [{"name": "m", "catalogModel": "c", "gpuMemory": 64}]},
        {"apiVersion": "capella-deploy/v1", "defaults": {"routing": {"strategy": "fastest"}}},
        {"apiVersion": "capella-deploy/v1", "apiKeys": [{"name": "k", "allowedCIDRs": [], "expiryDays": 400}]},
    ],
)
def test_schema_rejects_what_the_models_reject(document: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(committed_schema())
    assert list(validator.iter_errors(document))


def test_quickstart_matches_the_sandbox_defaults() -> None:
    manifest = load_manifest([ROOT / "examples" / "quickstart.yaml"], environ={})
    (model,) = manifest.models
    assert (model.catalogModel, model.gpuMemory) == ("mistralai/mistral-7b-instruct-v0.3", 48)
    assert manifest.defaults.region == "us-east-1" and manifest.organizationId is None
