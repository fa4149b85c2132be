"""providers: in the manifest: credentials are references, what each type takes, overlays, and the messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from capella_deploy.cli import main
from capella_deploy.manifest import ManifestError, load_manifest, manifest_json_schema
from capella_deploy.manifest.fields import CREDENTIAL_FIELDS
from capella_deploy.manifest.spec import ProviderCredentials

HEAD = "apiVersion: capella-deploy/v1\nproviders:\n"
SECRET = "sk-proj-LiteralSecret-4b1e9f0c2d"


def load(tmp_path: Path, body: str, *, name: str = "m.yaml", environ: dict[str, str] | None = None) -> object:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return load_manifest([path], environ=environ or {})


def problems(tmp_path: Path, body: str, *, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, body, environ=environ)
    return str(caught.value)


def test_each_type_with_its_credentials_as_references_loads(tmp_path: Path) -> None:
    manifest = load(
        tmp_path,
        """\
  - name: openai
    type: openAI
    credentials: {apiKey: {env: OPENAI_API_KEY}}
  - name: bedrock
    type: awsBedrock
    credentials: {accessKeyId: {env: AWS_ACCESS_KEY_ID}, secretAccessKey: {file: secrets/aws}}
    credentialsVersion: "${VERSION}"
  - name: docs
    type: awsS3
    awsRegion: eu-west-1
    bucket: team-docs.archive
    folderPath: ingest/2026
    credentials:
      accessKeyId: {env: AWS_ACCESS_KEY_ID}
      secretAccessKey: {env: AWS_SECRET_ACCESS_KEY}
      sessionToken: {env: AWS_SESSION_TOKEN}
    preventDestroy: true
""",
        environ={"VERSION": "3"},
    )
    openai, bedrock, docs = manifest.providers  # type: ignore[attr-defined]
    assert openai.credentialsVersion == 1 and openai.credentials.apiKey.env == "OPENAI_API_KEY"
    assert bedrock.credentialsVersion == 3 and bedrock.credentials.secretAccessKey.file == "secrets/aws"
    assert (docs.awsRegion, docs.bucket, docs.folderPath, docs.preventDestroy) == (
        "eu-west-1",
        "team-docs.archive",
        "ingest/2026",
        True,
    )


@pytest.mark.parametrize(
    "written",
    [SECRET, "${OPENAI_API_KEY}", "42", "[a, b]"],
    ids=["literal", "interpolated", "number", "list"],
)
def test_a_value_where_a_reference_belongs_is_refused_at_its_line_and_never_quoted(
    tmp_path: Path, written: str
) -> None:
    text = problems(
        tmp_path,
        f"  - name: openai\n    type: openAI\n    credentials:\n      apiKey: {written}\n",
        environ={"OPENAI_API_KEY": SECRET},
    )
    assert f"{tmp_path / 'm.yaml'}:6: providers[0].credentials.apiKey: a credential is never written" in text
    assert "{env: VARIABLE} or {file: PATH}" in text
    assert SECRET not in text and SECRET[:12] not in text


def test_what_each_type_takes_and_requires_is_checked_field_by_field(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        """\
  - name: openai
    type: openAI
    bucket: team-docs
    credentials: {accessKeyId: {env: A}}
  - name: docs
    type: awsS3
    credentials: {accessKeyId: {env: A}, secretAccessKey: {env: B, file: b}, apiKey: {env: C}}
  - name: docs
    type: awsBedrock
    credentials: {accessKeyId: {}, secretAccessKey: {env: CAPELLA_API_TOKEN}}
    credentialsVersion: 0
""",
    )
    expected = [
        "providers[0].bucket: only an awsS3 provider has bucket; this one is openAI",
        "providers[0].credentials.apiKey: required for an openAI provider",
        "providers[0].credentials.accessKeyId: an openAI provider takes no accessKeyId; it takes apiKey",
        "providers[1].awsRegion: required for an awsS3 provider",
        "providers[1].bucket: required for an awsS3 provider",
        "providers[1].credentials.secretAccessKey: give either env: VARIABLE or file: PATH, not both or neither",
        "providers[1].credentials.apiKey: an awsS3 provider takes no apiKey",
        "providers[2].name: 'docs' is already the name of providers[1]",
        "providers[2].credentials.accessKeyId: give either env: VARIABLE or file: PATH",
        "providers[2].credentials.secretAccessKey.env: CAPELLA_API_TOKEN is the Management API token",
        "providers[2].credentialsVersion: must be greater than or equal to 1",
    ]
    for message in expected:
        assert message in text, message


def test_overlays_merge_providers_by_name_and_delete_them(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(
        HEAD
        + "  - {name: openai, type: openAI, credentials: {apiKey: {env: KEY_A}}}\n"
        + "  - {name: docs, type: awsS3, awsRegion: us-east-1, bucket: team-docs,"
        + " credentials: {accessKeyId: {env: A}, secretAccessKey: {env: B}}}\n"
    )
    overlay = tmp_path / "prod.yaml"
    overlay.write_text(
        "providers:\n"
        "  - {name: openai, credentials: {apiKey: {env: KEY_PROD}}, credentialsVersion: 2}\n"
        "  - {name: docs, $delete: true}\n"
        "  - {name: bedrock, type: awsBedrock, credentials: {accessKeyId: {env: A}, secretAccessKey: {env: B}}}\n"
    )
    manifest = load_manifest([base, overlay], environ={})
    assert [p.name for p in manifest.providers] == ["openai", "bedrock"]
    assert manifest.providers[0].credentials.apiKey is not None
    assert manifest.providers[0].credentials.apiKey.env == "KEY_PROD"
    assert manifest.providers[0].credentialsVersion == 2


def test_the_schema_describes_providers_and_a_reference_as_env_or_file() -> None:
    schema = manifest_json_schema()
    spec = schema["$defs"]["ProviderSpec"]
    assert spec["properties"]["type"]["enum"] == ["openAI", "awsBedrock", "awsS3"]
    assert set(spec["required"]) == {"name", "type", "credentials"}
    reference = schema["$defs"]["CredentialRef"]
    assert set(reference["properties"]) == {"env", "file"}
    assert (reference["minProperties"], reference["maxProperties"]) == (1, 1)
    committed = Path(__file__).resolve().parent.parent / "schemas" / "manifest.schema.json"
    assert json.loads(committed.read_text())["$defs"]["ProviderSpec"] == spec


def test_validate_counts_providers(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + "  - {name: openai, type: openAI, credentials: {apiKey: {env: K}}}\n")
    result = CliRunner().invoke(main, ["validate", "-f", str(path)])
    assert result.exit_code == 0 and "The manifest is valid: 1 provider(s)." in result.stdout


def test_the_credential_table_the_rules_read_names_exactly_the_fields_a_provider_takes() -> None:
    # The cross-field rules read the table, the schema and the parser read the model: they must not drift apart.
    assert set(ProviderCredentials.model_fields) == CREDENTIAL_FIELDS
