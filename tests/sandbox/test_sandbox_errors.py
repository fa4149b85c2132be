"""Every Management API error status, with Capella's error body and codes."""

from __future__ import annotations

import uuid

import pytest
from sandbox_support import CHAT_MODEL

from capella_deploy.sandbox import Faults, RouteFault

CODES = {400: 1000, 401: 1001, 403: 1002, 404: 3000, 409: 1010, 412: 1012, 422: 1005, 429: 1004, 500: 10000, 503: 1007}


def assert_error(response, status: int, hint_part: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "hint", "httpStatusCode", "message"}
    assert body["httpStatusCode"] == status
    assert body["code"] == CODES[status]
    assert body["message"] and body["hint"]
    assert hint_part in body["hint"]


def model_body(**changes):
    body = {
        "name": "chat",
        "catalogModelName": CHAT_MODEL,
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}},
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        ({"catalogModelName": CHAT_MODEL}, "name is required"),
        (model_body(cloudConfig={"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "ram": 16}}), "ram"),
        (
            model_body(cloudConfig={"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 40}}),
            "gpuMemory must be one of 24, 48, 192",
        ),
        (model_body(cloudConfig={"provider": "ibm", "region": "x", "compute": {"cpu": 4, "gpuMemory": 48}}), "aws"),
        (model_body(quantization="int4"), "quantization must be one of"),
        (model_body(jailbreak={"scoreThreshold": 1}), "strictly between 0 and 1"),
        (model_body(colour="blue"), "unknown field colour"),
        (model_body(name="n" * 129), "128"),
    ],
)
def test_invalid_create_bodies_are_422(api, body, hint) -> None:
    assert_error(api.post(api.models_url, json=body), 422, hint)


def test_a_body_that_cannot_be_decoded_is_400_and_one_that_is_invalid_422(api) -> None:
    # The spec's 400 is "unable to decode the received payload": not JSON, or a field of the wrong JSON type.
    # What decodes but breaks a rule is a validation problem: 422.
    for body, hint in (
        (model_body(enableBatching="yes"), "true or false"),
        (model_body(name=7), "name must be a string"),
        (model_body(dimensions=1.5), "dimensions must be an integer"),
        ([1, 2], "JSON object"),
    ):
        assert_error(api.post(api.models_url, json=body), 400, hint)
    for body, hint in ((model_body(name=""), "name must not be empty"), (model_body(dimensions=0), "at least 1")):
        assert_error(api.post(api.models_url, json=body), 422, hint)


def test_body_that_is_not_json_is_400(api) -> None:
    response = api.post(api.models_url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(response, 400, "not valid JSON")
    assert_error(api.post(api.models_url), 400, "empty")


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (model_body(catalogModelName="openai/gpt-9"), "not offered"),
        (
            model_body(cloudConfig={"provider": "gcp", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}}),
            "aws",
        ),
        (
            model_body(
                cloudConfig={"provider": "azure", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}}
            ),
            "not offered",
        ),
        (
            model_body(cloudConfig={"provider": "aws", "region": "mars-1", "compute": {"cpu": 4, "gpuMemory": 48}}),
            "mars-1",
        ),
        (model_body(dimensions=512), "embedding models only"),
        (model_body(catalogModelName="intfloat/e5-mistral-7b-instruct", dimensions=8192), "at most 4096"),
    ],
)
def test_well_formed_but_unoffered_creates_are_422(api, body, hint) -> None:
    assert_error(api.post(api.models_url, json=body), 422, hint)


def test_put_of_fields_that_force_a_replace_is_422(api, clock) -> None:
    model_id = api.deploy("chat")
    clock.advance(300)
    url = f"{api.models_url}/{model_id}"
    for field, value in (("cloudConfig", {}), ("quantization", "fp8"), ("catalogModelName", "x"), ("dimensions", 8)):
        assert_error(api.put(url, json={field: value}), 422, field)
    assert_error(api.put(url, json={"name": ""}), 422, "name")


def test_put_validation_is_422_because_the_spec_lists_no_400_for_it(api, clock) -> None:
    model_id = api.deploy("chat")
    clock.advance(300)
    url = f"{api.models_url}/{model_id}"
    assert_error(api.put(url, json={"caching": {"enableStandard": True, "ttl": 5}}), 422, "unknown field caching.ttl")
    assert_error(api.put(url, json={"enableBatching": "yes"}), 422, "true or false")
    assert_error(api.put(url, content=b"{not json"), 422, "not valid JSON")
    assert_error(api.put(url, json=[1]), 422, "JSON object")
    assert api.model(model_id)["audit"]["version"] == 1, "a refused PUT changes nothing"


def test_a_put_without_a_body_is_accepted_and_changes_nothing_but_the_audit(api, clock) -> None:
    model_id = api.deploy("chat", enableBatching=True)
    clock.advance(300)
    before = api.model(model_id)
    assert api.put(f"{api.models_url}/{model_id}").status_code == 204
    after = api.model(model_id)
    assert after["config"] == before["config"] and after["name"] == "chat"
    assert after["audit"]["version"] == before["audit"]["version"] + 1


def test_401_without_or_with_a_wrong_token(api) -> None:
    assert_error(api.get("/v4/organizations", token=None), 401, "Bearer")
    assert_error(api.get(api.models_url, token="not-the-token"), 401)
    assert_error(api.get(api.models_url, headers={"Authorization": "Basic c2FuZGJveA=="}, token=None), 401)


def test_403_for_another_organization(api) -> None:
    other = f"/v4/organizations/{uuid.uuid4()}"
    assert_error(api.get(other), 403, "GET /v4/organizations")
    assert_error(api.get(other + "/aiServices/models"), 403)


def test_404_for_unknown_models_keys_and_paths(api) -> None:
    missing = str(uuid.uuid4())
    assert_error(api.get(f"{api.models_url}/{missing}"), 404, missing)
    assert_error(api.get(f"{api.models_url}/{missing}/connectionString"), 404)
    assert_error(api.delete(f"{api.models_url}/{missing}/activationState"), 404)
    assert_error(api.delete(f"{api.keys_url}/{missing}"), 404)
    assert_error(api.get(f"{api.keys_url}/{missing}"), 404)
    assert_error(api.get("/v4/organizations/x/nothing-here"), 404)


def test_412_when_if_match_names_an_old_version(api, clock) -> None:
    model_id = api.deploy("chat")
    clock.advance(300)
    url = f"{api.models_url}/{model_id}"
    assert api.put(url, json={"enableBatching": True}, headers={"If-Match": "1"}).status_code == 204
    assert_error(api.put(url, json={"enableBatching": False}, headers={"If-Match": "1"}), 412, "version 2")
    assert api.put(url, json={"enableBatching": False}, headers={"If-Match": '"2"'}).status_code == 204
    assert api.put(url, json={"enableBatching": True}, headers={"If-Match": "Version: 3"}).status_code == 204
    assert_error(api.put(url, json={"enableBatching": False}, headers={"If-Match": "Version: 3"}), 412, "version 4")
    for malformed in ("latest", "3.0", "v4", ""):
        assert_error(api.put(url, json={"enableBatching": False}, headers={"If-Match": malformed}), 422, "If-Match")
    assert api.model(model_id)["config"]["enableBatching"] is True


def test_key_body_errors(api) -> None:
    good = {"name": "k", "expiry": 30, "allowedCIDRs": ["10.0.0.0/8"], "region": "us-east-1"}
    for changes, status, hint in (
        ({"expiry": 366}, 422, "expiry"),
        ({"expiry": 0}, 422, "expiry"),
        ({"allowedCIDRs": ["10.0.0.300/8"]}, 422, "10.0.0.300/8"),
        ({"allowedCIDRs": []}, 422, "at least one"),
        ({"name": "n" * 129}, 422, "128"),
        ({"description": "d" * 251}, 422, "250"),
        ({"region": "moon-1"}, 422, "moon-1"),
        ({"allowedModels": [str(uuid.uuid4())]}, 422, "does not exist"),
        ({"allowedModels": ["*", "x"]}, 422, "allowedModels"),
        ({"expiry": "30"}, 400, "expiry must be a number"),
        ({"allowedCIDRs": "10.0.0.0/8"}, 400, "list of strings"),
    ):
        assert_error(api.post(api.keys_url, json={**good, **changes}), status, hint)
    for missing in ("name", "expiry", "allowedCIDRs", "region"):
        body = {k: v for k, v in good.items() if k != missing}
        assert_error(api.post(api.keys_url, json=body), 422, f"{missing} is required")


def test_a_key_may_not_list_a_model_of_another_region(api) -> None:
    model_id = api.deploy("eu", region="eu-west-1")
    body = {"name": "k", "expiry": 1, "allowedCIDRs": ["0.0.0.0/0"], "region": "us-east-1", "allowedModels": [model_id]}
    assert_error(api.post(api.keys_url, json=body), 422, "eu-west-1")


def test_429_carries_retry_after_in_whole_seconds(api, clock) -> None:
    api.sandbox.faults = Faults(rate_limit_per_minute=2)
    assert api.get(api.models_url).status_code == 200
    clock.advance(20.5)
    assert api.get(api.models_url).status_code == 200
    limited = api.get(api.models_url)
    assert_error(limited, 429, "retry after 40 seconds")
    assert limited.headers["Retry-After"] == "40"
    clock.advance(40)
    assert api.get(api.models_url).status_code == 200


@pytest.mark.parametrize("status", [500, 503])
def test_injected_server_errors_use_the_error_body(api, status) -> None:
    api.sandbox.faults = Faults(routes=[RouteFault(match="GET /v4/**", error_rate=1.0, error_status=status)])
    assert_error(api.get(api.models_url), status, "injected")
    assert api.post(api.models_url, json=model_body()).status_code == 202  # other methods unaffected


def test_undocumented_statuses_never_carry_code_zero(api) -> None:
    api.sandbox.faults = Faults(routes=[RouteFault(error_rate=1.0, error_status=504, retry_after=7)])
    response = api.get(api.models_url)
    assert response.status_code == 504
    assert response.json()["code"] == 10000
    assert response.headers["Retry-After"] == "7"
    api.sandbox.faults = Faults()
    wrong_method = api.request("PATCH", api.models_url)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == 1000


def test_an_empty_or_absent_allowed_models_list_means_every_model_of_the_region(ready, api) -> None:
    # The spec's own example sends [] for "all models in the region"; leaving it out or sending ["*"] is the same.
    for allowed in ([], None, ["*"]):
        body: dict[str, object] = {"name": "all", "expiry": 30, "allowedCIDRs": ["127.0.0.1/32"], "region": "us-east-1"}
        if allowed is not None:
            body["allowedModels"] = allowed
        created = api.post(api.keys_url, json=body)
        assert created.status_code == 201, (allowed, created.text)
        read = api.get(f"{api.keys_url}/{created.json()['id']}").json()
        assert read["allowedModels"] == [{"id": "*", "name": "*"}]
        for model_id in (ready.chat, ready.embed, ready.moderation):
            assert api.service(model_id, "/models", created.json()["token"], method="GET").status_code == 200
