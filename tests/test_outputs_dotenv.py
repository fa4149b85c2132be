"""The dotenv outputs file: shell-safe variable names, values read back exactly, whatever characters they hold."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from capella_deploy.outputs import Outputs, env_name, format_for
from capella_deploy.outputs.github import publish_to_github
from capella_deploy.secrets import Secret

# Key tokens are URL-safe base64 and may end in '='; URLs carry query strings; header profiles are JSON.
TOKEN = "cb.AbC-_x==tail=="
URL = "https://m-1.ai.example.com/v1?a=b&c=d=e"
HEADERS = {"X-cb-cache": "semantic", "X-cb-cache-threshold": "0.85", "X-cb-note": "a=b 'quoted' \"too\""}


def write(path: Path) -> Outputs:
    store = Outputs(path, "dotenv", org_id="org-1")
    store.record_model("chat-prod.v2", id="m-1", status="healthy", region="us-east-1", connectionString=URL)
    store.record_model("chat-prod.v2", headers=HEADERS)
    store.record_key("app_key-1", key_id="k-1", token=Secret(TOKEN), region="us-east-1", expiresAt="2026-09-01")
    return store


def test_values_holding_equals_signs_quotes_and_spaces_read_back_intact(tmp_path: Path) -> None:
    write(tmp_path / "outputs.env")
    again = Outputs(tmp_path / "outputs.env", "dotenv")
    assert again.document() == {
        "version": 1,
        "organizationId": "org-1",
        "models": {
            "chat-prod.v2": {
                "id": "m-1",
                "status": "healthy",
                "region": "us-east-1",
                "connectionString": URL,
                "headers": HEADERS,
            }
        },
        "apiKeys": {
            "app_key-1": {"id": "k-1", "token": TOKEN, "region": "us-east-1", "expiresAt": "2026-09-01"},
        },
    }


def test_variable_names_are_upper_case_with_every_other_character_an_underscore(tmp_path: Path) -> None:
    write(tmp_path / "outputs.env")
    names = [line.split("=", 1)[0] for line in (tmp_path / "outputs.env").read_text().splitlines() if "=" in line]
    names = [n for n in names if not n.startswith("#")]
    assert names == [
        "CAPELLA_ORG_ID",
        "CAPELLA_MODEL_CHAT_PROD_V2_ID",
        "CAPELLA_MODEL_CHAT_PROD_V2_STATUS",
        "CAPELLA_MODEL_CHAT_PROD_V2_REGION",
        "CAPELLA_MODEL_CHAT_PROD_V2_URL",
        "CAPELLA_MODEL_CHAT_PROD_V2_HEADERS",
        "CAPELLA_KEY_APP_KEY_1_ID",
        "CAPELLA_KEY_APP_KEY_1_REGION",
        "CAPELLA_KEY_APP_KEY_1_EXPIRES_AT",
        "CAPELLA_KEY_APP_KEY_1_TOKEN",
    ]
    assert env_name("a.b-c_d9") == "A_B_C_D9"


def test_a_shell_that_sources_the_file_sees_every_value_exactly(tmp_path: Path) -> None:
    write(tmp_path / "outputs.env")
    shown = subprocess.run(
        [
            "sh",
            "-c",
            f'. "{tmp_path / "outputs.env"}" && printf "%s\\n%s\\n%s" "$CAPELLA_KEY_APP_KEY_1_TOKEN" '
            '"$CAPELLA_MODEL_CHAT_PROD_V2_URL" "$CAPELLA_ORG_ID"',
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert shown.stdout.splitlines() == [TOKEN, URL, "org-1"]


def test_lines_a_person_added_are_ignored_when_the_file_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    write(path)
    text = path.read_text()
    note = "# a note = with an equals sign\n#  models below are managed by capella-deploy\nUNRELATED=x\n"
    edited = text.replace("CAPELLA_ORG_ID=", note + "CAPELLA_ORG_ID=")
    path.write_text(edited + "# trailing remark=1\n")
    again = Outputs(path, "dotenv")
    assert again.token("app_key-1") == Secret(TOKEN)
    assert again.models["chat-prod.v2"]["connectionString"] == URL and list(again.models) == ["chat-prod.v2"]
    assert again.document()["organizationId"] == "org-1"


def test_an_empty_organization_reads_back_as_none(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    Outputs(path, "dotenv").record_model("chat", id="m-1")
    assert "CAPELLA_ORG_ID=''" in path.read_text()
    assert Outputs(path, "dotenv").document()["organizationId"] is None


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [
        ("out.env", None, "dotenv"),
        ("out.json", None, "json"),
        ("out", None, "json"),
        ("out.env", "json", "json"),
        ("out.json", "dotenv", "dotenv"),
        ("out.env", "yaml", "dotenv"),
    ],
)
def test_the_format_is_the_one_asked_for_else_the_file_name_says(name: str, explicit: str, expected: str) -> None:
    assert format_for(Path(name), explicit) == expected


def test_github_outputs_mask_every_token_first_and_use_lower_case_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = write(tmp_path / "outputs.json")
    target = tmp_path / "github_output"
    publish_to_github(store.document(), {"GITHUB_OUTPUT": str(target)})
    assert capsys.readouterr().out == f"::add-mask::{TOKEN}\n"
    lines = target.read_text().splitlines()
    assert f"model_chat_prod_v2_url={URL}" in lines
    assert f"key_app_key_1_token={TOKEN}" in lines
    assert "model_chat_prod_v2_id=m-1" in lines and "key_app_key_1_expires_at=2026-09-01" in lines


def test_providers_read_back_from_dotenv_with_their_credentials_version_a_number(tmp_path: Path) -> None:
    store = Outputs(tmp_path / "outputs.env", "dotenv", org_id="org-1")
    store.record("providers", "docs-bucket", id="arn:provider/7", type="awsS3", credentialsVersion=3)
    text = (tmp_path / "outputs.env").read_text()
    assert "# providers docs-bucket\nCAPELLA_PROVIDER_DOCS_BUCKET_ID='arn:provider/7'\n" in text
    assert "CAPELLA_PROVIDER_DOCS_BUCKET_CREDENTIALS_VERSION='3'" in text
    again = Outputs(tmp_path / "outputs.env", "dotenv")
    assert again.section("providers") == {
        "docs-bucket": {"id": "arn:provider/7", "type": "awsS3", "credentialsVersion": 3}
    }
    assert again.credential_versions() == {"arn:provider/7": 3}
    # A replacement's entry starts afresh: nothing of the old provider stays with the new id.
    again.record("providers", "docs-bucket", id="p-new", type="awsBedrock")
    assert again.section("providers")["docs-bucket"] == {"id": "p-new", "type": "awsBedrock"}
    assert again.credential_versions() == {}


def test_a_header_profile_is_one_line_of_compact_json_with_sorted_names(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    Outputs(path, "dotenv").record_model("chat", id="m-1", headers={"X-cb-z": "1", "X-cb-a": "two words"})
    assert 'CAPELLA_MODEL_CHAT_HEADERS=\'{"X-cb-a":"two words","X-cb-z":"1"}\'\n' in path.read_text()


def test_a_commented_out_variable_inside_a_group_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    write(path)
    text = path.read_text().replace(
        f"CAPELLA_KEY_APP_KEY_1_TOKEN='{TOKEN}'\n",
        f"CAPELLA_KEY_APP_KEY_1_TOKEN='{TOKEN}'\n# CAPELLA_KEY_APP_KEY_1_TOKEN='an-old-token'\n",
    )
    path.write_text(text)
    assert Outputs(path, "dotenv").token("app_key-1") == Secret(TOKEN)


def test_a_value_left_empty_by_hand_reads_back_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "outputs.env"
    write(path)
    path.write_text(path.read_text().replace("CAPELLA_ORG_ID='org-1'", "CAPELLA_ORG_ID="))
    assert Outputs(path, "dotenv").document()["organizationId"] is None
