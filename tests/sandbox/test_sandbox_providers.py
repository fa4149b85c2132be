"""AI provider integrations: organization-level credentials that are written, never read back."""

from __future__ import annotations

import hashlib
import json
import uuid

import httpx
import pytest
from sandbox_support import TOKEN, Api
from test_sandbox_errors import assert_error

OPENAI_KEY = "sk-sandbox-openai-5f2e9c"
ACCESS_KEY_ID = "AKIASANDBOX7Q2W"
SECRET_ACCESS_KEY = "sandbox/secret+access+key/9d8e7f"
SESSION_TOKEN = "sandbox-session-token-31c4"
SECRETS = (OPENAI_KEY, ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)

OPENAI = {"name": "openai", "type": "openAI", "configuration": {"apiKey": OPENAI_KEY}}
BEDROCK = {
    "name": "bedrock",
    "type": "awsBedrock",
    "configuration": {"accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY},
}
S3 = {
    "name": "docs",
    "type": "awsS3",
    "configuration": {
        "accessKeyId": ACCESS_KEY_ID,
        "secretAccessKey": SECRET_ACCESS_KEY,
        "sessionToken": SESSION_TOKEN,
        "awsRegion": "eu-west-1",
        "bucket": "team-docs.archive",
        "folderPath": "ingest/2026",
    },
}


def url(api: Api, provider_id: str = "") -> str:
    base = f"/v4/organizations/{api.sandbox.org_id}/aiServices/providers"
    return f"{base}/{provider_id}" if provider_id else base


def create(api: Api, body: dict[str, object]) -> str:
    response = api.post(url(api), json=body)
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"id"}
    provider_id: str = response.json()["id"]
    return provider_id


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (OPENAI, {}),
        (BEDROCK, {}),
        (S3, {"awsRegion": "eu-west-1", "bucket": "team-docs.archive", "folderPath": "ingest/2026"}),
    ],
)
def test_create_then_read_shows_name_type_and_only_what_is_not_secret(api, clock, body, shown) -> None:
    provider_id = create(api, body)
    read = api.get(url(api, provider_id))
    assert read.status_code == 200
    assert read.json() == {
        "name": body["name"],
        "type": body["type"],
        "configuration": shown,
        "audit": {
            "createdBy": api.sandbox.world().actor_id,
            "createdAt": "2026-01-01T00:00:00.000000Z",
            "modifiedBy": api.sandbox.world().actor_id,
            "modifiedAt": "2026-01-01T00:00:00.000000Z",
            "version": 1,
        },
    }
    assert read.headers["ETag"] == "Version: 1"
    [listed] = api.get(url(api)).json()["data"]
    assert listed == {"id": provider_id, **read.json()}


def test_an_s3_provider_without_a_folder_reads_back_the_root_folder(api) -> None:
    config = {k: v for k, v in S3["configuration"].items() if k not in ("folderPath", "sessionToken")}
    provider_id = create(api, {**S3, "configuration": config})
    assert api.get(url(api, provider_id)).json()["configuration"]["folderPath"] == ""


def test_credentials_never_leave_the_sandbox_nor_reach_its_state_in_clear(api, sandbox) -> None:
    ids = [create(api, body) for body in (OPENAI, BEDROCK, S3)]
    answers = [api.get(url(api)).text] + [api.get(url(api, i)).text for i in ids]
    state = sandbox.state_path.read_text()
    for secret in SECRETS:
        assert all(secret not in text for text in answers)
        assert secret not in state
    stored = json.loads(state)["providers"]
    assert stored[ids[0]]["credential_sha256"] == {"apiKey": sha256(OPENAI_KEY)}
    assert stored[ids[2]]["credential_sha256"] == {
        "accessKeyId": sha256(ACCESS_KEY_ID),
        "secretAccessKey": sha256(SECRET_ACCESS_KEY),
        "sessionToken": sha256(SESSION_TOKEN),
    }


def test_an_update_rolls_credentials_and_settings_and_bumps_the_version(api, sandbox, clock) -> None:
    provider_id = create(api, S3)
    clock.advance(60)
    rolled = {"secretAccessKey": "rolled-secret-2", "bucket": "team-docs-v2", "folderPath": ""}
    assert api.put(url(api, provider_id), json={"configuration": rolled}).status_code == 204
    read = api.get(url(api, provider_id))
    assert read.json()["configuration"] == {"awsRegion": "eu-west-1", "bucket": "team-docs-v2", "folderPath": ""}
    assert read.json()["audit"]["version"] == 2 and read.json()["audit"]["modifiedAt"].startswith("2026-01-01T00:01")
    assert read.headers["ETag"] == "Version: 2"
    digests = sandbox.world().providers[provider_id].credential_sha256
    assert digests["secretAccessKey"] == sha256("rolled-secret-2"), "a roll is visible to whoever holds the state"
    assert digests["accessKeyId"] == sha256(ACCESS_KEY_ID), "fields not sent stay as they were"
    assert "rolled-secret-2" not in sandbox.state_path.read_text()


def test_if_match_guards_an_update(api) -> None:
    provider_id = create(api, OPENAI)
    target = url(api, provider_id)
    body = {"configuration": {"apiKey": "sk-new-1"}}
    assert api.put(target, json=body, headers={"If-Match": "1"}).status_code == 204
    assert_error(api.put(target, json=body, headers={"If-Match": "1"}), 412, "version 2")
    etag = api.get(target).headers["ETag"]
    assert api.put(target, json=body, headers={"If-Match": etag}).status_code == 204
    assert_error(api.put(target, json=body, headers={"If-Match": "newest"}), 422, "If-Match")
    assert api.get(target).json()["audit"]["version"] == 3


@pytest.mark.parametrize(
    ("body", "status", "hint"),
    [
        ({"configuration": {"bucket": "b-1"}}, 422, "unknown field configuration.bucket"),
        ({"name": "renamed", "configuration": {}}, 422, "unknown field name"),
        ({}, 422, "configuration is required"),
        ({"configuration": {"apiKey": ""}}, 422, "must not be empty"),
        ({"configuration": {"apiKey": 7}}, 400, "apiKey must be a string"),
        ({"configuration": "sk-x"}, 400, "configuration must be a JSON object"),
    ],
)
def test_update_refusals(api, body, status, hint) -> None:
    provider_id = create(api, OPENAI)
    assert_error(api.put(url(api, provider_id), json=body), status, hint)
    assert api.get(url(api, provider_id)).json()["audit"]["version"] == 1


def test_an_update_of_nothing_is_accepted(api) -> None:
    provider_id = create(api, BEDROCK)
    assert api.put(url(api, provider_id), json={"configuration": {}}).status_code == 204
    assert api.get(url(api, provider_id)).json()["configuration"] == {}


@pytest.mark.parametrize(
    ("changes", "status", "hint"),
    [
        ({"type": "azureOpenAI"}, 422, "type must be one of openAI, awsBedrock, awsS3"),
        ({"type": None}, 422, "type is required"),
        ({"name": None}, 422, "name is required"),
        ({"name": "   "}, 422, "must not be empty"),
        ({"name": "n" * 51}, 422, "50"),
        ({"configuration": None}, 422, "configuration is required"),
        ({"configuration": {}}, 422, "configuration.apiKey is required"),
        ({"configuration": {"apiKey": OPENAI_KEY, "sessionToken": "t"}}, 422, "unknown field configuration"),
        ({"configuration": {"apiKey": ""}}, 422, "must not be empty"),
        ({"colour": "blue"}, 422, "unknown field colour"),
        ({"configuration": {"apiKey": 7}}, 400, "must be a string"),
        ({"name": ["a"]}, 400, "must be a string"),
    ],
)
def test_create_refusals(api, changes, status, hint) -> None:
    body = {k: v for k, v in {**OPENAI, **changes}.items() if v is not None}
    assert_error(api.post(url(api), json=body), status, hint)
    assert api.get(url(api)).json()["data"] == []


@pytest.mark.parametrize(
    ("config", "hint"),
    [
        ({"awsRegion": "Europe"}, "not an AWS region"),
        ({"bucket": "Team_Docs"}, "not an S3 bucket name"),
        ({"bucket": "ab"}, "not an S3 bucket name"),
        ({"bucket": None}, "configuration.bucket is required"),
        ({"secretAccessKey": None}, "configuration.secretAccessKey is required"),
    ],
)
def test_s3_settings_are_checked(api, config, hint) -> None:
    merged = {k: v for k, v in {**S3["configuration"], **config}.items() if v is not None}
    assert_error(api.post(url(api), json={**S3, "configuration": merged}), 422, hint)


def test_list_filters_by_type_and_pages_with_a_cursor(api) -> None:
    for i in range(3):
        create(api, {**OPENAI, "name": f"openai-{i}"})
    create(api, S3)
    create(api, BEDROCK)
    assert [p["name"] for p in api.get(url(api), params={"providerType": "openAI"}).json()["data"]] == [
        "openai-0",
        "openai-1",
        "openai-2",
    ]
    assert [p["type"] for p in api.get(url(api), params={"providerType": "awsS3"}).json()["data"]] == ["awsS3"]
    first = api.get(url(api), params={"perPage": 2}).json()
    assert first["cursor"]["pages"] == {
        "last": 3,
        "next": 2,
        "page": 1,
        "perPage": 2,
        "previous": 0,
        "totalItems": 5,
    }
    seen, page = [], 1
    while page:
        body = api.get(url(api), params={"perPage": 2, "page": page}).json()
        seen += [p["name"] for p in body["data"]]
        page = body["cursor"]["pages"]["next"]
    assert seen == ["openai-0", "openai-1", "openai-2", "docs", "bedrock"]
    filtered = api.get(url(api), params={"providerType": "openAI", "perPage": 1}).json()["cursor"]["hrefs"]
    assert "providerType=openAI" in filtered["next"]


@pytest.mark.parametrize("params", [{"providerType": "azure"}, {"perPage": "0"}, {"page": "0"}, {"page": "x"}])
def test_bad_list_parameters_are_400_because_listing_providers_lists_no_422(api, params) -> None:
    assert_error(api.get(url(api), params=params), 400)


def test_delete_then_the_provider_is_gone(api) -> None:
    provider_id = create(api, OPENAI)
    keep = create(api, BEDROCK)
    assert api.delete(url(api, provider_id)).status_code == 204
    assert_error(api.get(url(api, provider_id)), 404, provider_id)
    assert_error(api.delete(url(api, provider_id)), 404)
    assert_error(api.put(url(api, provider_id), json={"configuration": {}}), 404)
    assert [p["id"] for p in api.get(url(api)).json()["data"]] == [keep]


def test_authentication_and_organization_are_checked(api) -> None:
    assert_error(api.get(url(api), token=None), 401)
    assert_error(api.post(url(api), json=OPENAI, token="wrong"), 401)
    other = f"/v4/organizations/{uuid.uuid4()}/aiServices/providers"
    assert_error(api.get(other), 403)
    assert_error(api.post(other, json=OPENAI), 403)


def test_reset_forgets_providers(api, sandbox) -> None:
    create(api, OPENAI)
    sandbox.reset()
    assert api.get(url(api)).json()["data"] == []


def test_providers_over_http(served, api) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = served + url(api)
    created = httpx.post(base, json=S3, headers=headers)
    assert created.status_code == 201
    provider_id = created.json()["id"]
    listed = httpx.get(base, params={"providerType": "awsS3"}, headers=headers).json()
    assert [p["id"] for p in listed["data"]] == [provider_id]
    assert listed["cursor"]["hrefs"]["first"].startswith(served)
    put = httpx.put(f"{base}/{provider_id}", json={"configuration": {"bucket": "moved"}}, headers=headers)
    assert put.status_code == 204
    assert httpx.get(f"{base}/{provider_id}", headers=headers).json()["configuration"]["bucket"] == "moved"
    assert httpx.delete(f"{base}/{provider_id}", headers=headers).status_code == 204
