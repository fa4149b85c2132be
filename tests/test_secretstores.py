"""Outputs published to AWS Secrets Manager, against moto's server on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from capella_deploy.outputs import OutputsError
from capella_deploy.outputs.secretstores import aws_prefix, publish_to_aws_secrets_manager, secret_entries

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra)")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (the aws extra)")
Stubber = pytest.importorskip("botocore.stub").Stubber

TOKEN = "cbak-" + "s3cr3t" * 6
OUTPUTS: dict[str, Any] = {
    "version": 1,
    "organizationId": "org-1",
    "models": {
        "chat": {"id": "m-1", "connectionString": "https://ai.example/ai/m-1"},
        "pending": {"id": "m-2"},
    },
    "apiKeys": {"app": {"id": "k-1", "token": TOKEN}, "lost": {"id": "k-2", "token": None}},
}
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        moto.stop()


@pytest.fixture
def endpoint(server: str) -> str:
    # Every moto server in a process shares one in-memory backend: start each test from an empty one.
    httpx.post(f"{server}/moto-api/reset").raise_for_status()
    return server


@pytest.fixture
def client(endpoint: str) -> Any:
    return boto3.client(
        "secretsmanager",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def value(client: Any, name: str) -> str:
    return str(client.get_secret_value(SecretId=name)["SecretString"])


def test_each_connection_string_and_token_becomes_a_secret(client: Any) -> None:
    written = publish_to_aws_secrets_manager(OUTPUTS, "capella/prod/", client=client)
    assert written == ["capella/prod/models/chat/connection-string", "capella/prod/keys/app/token"]
    assert value(client, "capella/prod/models/chat/connection-string") == "https://ai.example/ai/m-1"
    assert value(client, "capella/prod/keys/app/token") == TOKEN
    described = client.describe_secret(SecretId="capella/prod/keys/app/token")
    assert described["Description"] == "capella-deploy: token of Model API key app"
    listed = {s["Name"] for s in client.list_secrets()["SecretList"]}
    assert listed == set(written)  # nothing for a model without a connection string or a lost token


def test_publishing_again_writes_a_new_version(client: Any) -> None:
    publish_to_aws_secrets_manager(OUTPUTS, "capella", client=client)
    rotated = {**OUTPUTS, "apiKeys": {"app": {"id": "k-3", "token": TOKEN + "-new"}}}
    assert publish_to_aws_secrets_manager(rotated, "capella", client=client) == [
        "capella/models/chat/connection-string",
        "capella/keys/app/token",
    ]
    assert value(client, "capella/keys/app/token") == TOKEN + "-new"
    versions = client.list_secret_version_ids(SecretId="capella/keys/app/token")["Versions"]
    assert len(versions) == 2


def test_a_refusal_names_the_secret_and_code_but_never_the_value(client: Any) -> None:
    # moto does not refuse writes to a secret scheduled for deletion, so the refusal is stubbed in.
    stubber = Stubber(client)
    stubber.add_client_error("create_secret", service_error_code="ResourceExistsException")
    stubber.add_client_error(
        "put_secret_value",
        service_error_code="InvalidRequestException",
        service_message=f"cannot store {TOKEN}: the secret is marked for deletion",
        expected_params={"SecretId": "capella/keys/app/token", "SecretString": TOKEN},
    )
    with stubber, pytest.raises(OutputsError) as caught:
        publish_to_aws_secrets_manager({"models": {}, "apiKeys": OUTPUTS["apiKeys"]}, "capella", client=client)
    message = str(caught.value)
    assert "capella/keys/app/token" in message and "InvalidRequestException" in message
    assert "scheduled for deletion" in message
    assert TOKEN not in message and caught.value.__cause__ is None


def test_the_default_client_takes_its_settings_from_the_environment(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, setting in {**AWS_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, setting)
    assert publish_to_aws_secrets_manager(OUTPUTS, "from-env")[-1] == "from-env/keys/app/token"
    check = boto3.client("secretsmanager")
    assert value(check, "from-env/keys/app/token") == TOKEN


def test_without_a_region_the_error_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    with pytest.raises(OutputsError, match="NoRegionError; set AWS_REGION"):
        publish_to_aws_secrets_manager(OUTPUTS, "capella")


def test_without_boto3_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(OutputsError, match=r"needs boto3: pip install 'capella-deploy\[aws\]'"):
        publish_to_aws_secrets_manager(OUTPUTS, "capella")


def test_names_and_the_outputs_target() -> None:
    assert aws_prefix("aws-secretsmanager:teams/a") == "teams/a"
    assert aws_prefix("github") is None and aws_prefix(".capella/outputs.json") is None and aws_prefix(None) is None
    entries = secret_entries(OUTPUTS, "p")
    assert [e.name for e in entries] == ["p/models/chat/connection-string", "p/keys/app/token"]
    assert TOKEN not in repr(entries)
    with pytest.raises(OutputsError, match="prefix"):
        secret_entries(OUTPUTS, "bad prefix")
