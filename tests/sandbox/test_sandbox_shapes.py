"""Shape conformance: every field the documentation seeds show is there, with the same JSON type."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from sandbox_support import CHAT_MODEL, EMBED_MODEL, batch_file, chat_body

from capella_deploy.sandbox import IN_PROCESS_BASE_URL


def assert_conforms(seed: Any, actual: Any, path: str = "$") -> None:
    """``actual`` has every key of ``seed``, recursively, with values of the same JSON type.

    A seed ``null`` says nothing about the type; a seed list is compared item by item as far as both go.
    """
    if seed is None:
        return
    if isinstance(seed, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in seed.items():
            assert key in actual, f"{path}.{key} is missing"
            assert_conforms(value, actual[key], f"{path}.{key}")
    elif isinstance(seed, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) >= len(seed), f"{path}: expected at least {len(seed)} items"
        for i, (s, a) in enumerate(zip(seed, actual, strict=False)):
            assert_conforms(s, a, f"{path}[{i}]")
    elif isinstance(seed, bool):
        assert isinstance(actual, bool), f"{path}: expected a boolean, got {actual!r}"
    elif isinstance(seed, int):
        assert isinstance(actual, int) and not isinstance(actual, bool), f"{path}: expected an integer"
    elif isinstance(seed, float):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), f"{path}: expected a number"
    else:
        assert isinstance(actual, type(seed)), f"{path}: expected {type(seed).__name__}, got {actual!r}"


def test_the_checker_itself_catches_missing_fields_and_wrong_types() -> None:
    with pytest.raises(AssertionError, match="missing"):
        assert_conforms({"a": {"b": 1}}, {"a": {}})
    with pytest.raises(AssertionError, match="integer"):
        assert_conforms({"a": 1}, {"a": "1"})
    with pytest.raises(AssertionError, match="boolean"):
        assert_conforms({"a": True}, {"a": 1})


def test_organizations_list_and_get(api, seeds) -> None:
    listed = api.get("/v4/organizations").json()
    assert_conforms(seeds["organizations"], listed)
    org = listed["data"][0]
    assert org["id"] == api.sandbox.org_id
    assert org["name"] == "Sandbox Organization"
    assert org["preferences"] == {"sessionDuration": 7200}
    assert api.get(f"/v4/organizations/{org['id']}").json() == org


def test_models_list_matches_the_seed_field_by_field(api, clock, seeds) -> None:
    api.deploy("model-1", CHAT_MODEL, gpu_memory=48)
    api.deploy("model-2", EMBED_MODEL, gpu_memory=24)
    clock.advance(api.sandbox.timings.deploy_seconds)
    listed = api.get(api.models_url).json()
    assert_conforms(seeds["models"], listed)

    # The values the documentation shows for these deployments are the sandbox's too.
    for seed_item, item in zip(seeds["models"]["data"], listed["data"], strict=True):
        seed_model, model = seed_item["model"], item["model"]
        for field in ("actions", "cloudConfig", "config", "name", "status"):
            assert model[field] == seed_model[field], field
        assert model["connectionString"] == f"{IN_PROCESS_BASE_URL}/ai/{model['id']}"
    assert listed["cursor"]["pages"] == seeds["models"]["cursor"]["pages"]
    for name, seed_href in seeds["models"]["cursor"]["hrefs"].items():
        href = listed["cursor"]["hrefs"][name]
        if not seed_href:
            assert href == ""
            continue
        assert urlsplit(href).query == urlsplit(seed_href).query
        assert urlsplit(href).path == api.models_url


def test_model_read_has_the_documented_extras_and_hides_guardrails(api, clock) -> None:
    caching = {"enableStandard": True, "defaultCache": "standard", "expiryTTL": 3600}
    model_id = api.deploy(
        "chat",
        quantization="fp16",
        optimization="latency",
        enableBatching=True,
        keywordFiltering=["secret"],
        caching=caching,
        guardrails=["hate speech"],
        jailbreak={"scoreThreshold": 0.8},
    )
    model = api.model(model_id)
    assert model["config"] == {
        "catalogModelName": CHAT_MODEL,
        "provider": "mistral",
        "type": "text-generation",
        "quantization": "fp16",
        "optimization": "latency",
        "caching": caching,
        "enableBatching": True,
        "keywordFiltering": ["secret"],
    }
    assert model["usageMetrics"] == {
        "tokens": {"value": 0, "trend": "increasing"},
        "requests": {"value": 0, "trend": "increasing"},
    }
    assert set(model["audit"]) == {"createdBy", "createdAt", "modifiedBy", "modifiedAt", "version"}
    assert model["audit"]["createdAt"] == "2026-01-01T00:00:00.000000Z"
    assert model["audit"]["version"] == 1


def test_get_model_wraps_the_same_object_the_list_shows(api) -> None:
    model_id = api.deploy("chat")
    single = api.get(f"{api.models_url}/{model_id}").json()
    assert set(single) == {"model"}
    assert single["model"] == api.get(api.models_url).json()["data"][0]["model"]


def test_connection_string_and_key_creation(api, seeds) -> None:
    model_id = api.deploy("chat")
    got = api.get(f"{api.models_url}/{model_id}/connectionString").json()
    assert_conforms(seeds["connectionString"], got)
    assert got == {"connectionString": f"{IN_PROCESS_BASE_URL}/ai/{model_id}"}

    created = api.post(
        api.keys_url,
        json={
            "name": "model-api-key",
            "description": "API key for LLM",
            "expiry": 180,
            "allowedCIDRs": ["10.0.0.0/16"],
            "region": "us-east-1",
        },
    )
    assert created.status_code == 201
    assert_conforms(seeds["apiKeyCreated"], created.json())
    assert set(created.json()) == {"id", "token"}


def test_key_read_uses_key_id_and_model_pairs(api) -> None:
    model_id = api.deploy("chat")
    key_id, token = api.create_key(description="d", allowedModels=[model_id], allowedCIDRs=["10.1.0.0/16"])
    key = api.get(f"{api.keys_url}/{key_id}").json()
    assert key["keyId"] == key_id and "id" not in key
    assert key["allowedModels"] == [{"id": model_id, "name": "chat"}]
    assert {k: key[k] for k in ("name", "description", "expiry", "allowedCIDRs", "region")} == {
        "name": "app-key",
        "description": "d",
        "expiry": 30,
        "allowedCIDRs": ["10.1.0.0/16"],
        "region": "us-east-1",
    }
    assert type(key["expiry"]) is int  # the number of days reads back as it was sent
    assert token not in api.get(api.keys_url).text
    _, wildcard = api.create_key("all")
    assert wildcard != token


def test_model_service_shapes(api, ready, seeds) -> None:
    chat = api.service(
        ready.chat,
        "/chat/completions",
        ready.key,
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "What is Couchbase?"}], "max_tokens": 5},
    ).json()
    assert_conforms(seeds["chatCompletion"], chat)
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"]["completion_tokens"] == 5

    embedded = api.service(ready.embed, "/embeddings", ready.key, json={"model": EMBED_MODEL, "input": "x"}).json()
    assert set(seeds["embeddingsKeys"]) <= set(embedded)
    completion = api.service(ready.chat, "/completions", ready.key, json={"model": CHAT_MODEL, "prompt": "x"}).json()
    assert set(seeds["completionKeys"]) <= set(completion)
    moderated = api.service(ready.moderation, "/moderations", ready.key, json={"input": "hello"}).json()
    assert set(seeds["moderationKeys"]) <= set(moderated)
    info = api.service(ready.chat, "/info", ready.key, method="GET").json()
    assert set(seeds["serviceInfoKeys"]) <= set(info)
    one = api.service(ready.chat, f"/models/{CHAT_MODEL}", ready.key, method="GET").json()
    assert_conforms(seeds["serviceModel"], one)
    assert one["deployment_id"] == ready.chat and one["status"] == "healthy"


def test_file_and_batch_shapes(api, ready, clock, seeds) -> None:
    upload = {"file": ("batch.jsonl", batch_file(chat_body()))}
    uploaded = api.service(ready.chat, "/files", ready.key, files=upload, data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    assert_conforms(seeds["fileUploaded"], uploaded.json())
    file_id = uploaded.json()["id"]
    assert_conforms(seeds["fileRead"], api.service(ready.chat, f"/files/{file_id}", ready.key, method="GET").json())

    batch = api.service(
        ready.chat,
        "/batches",
        ready.key,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "168h"},
    ).json()
    clock.advance(10)
    done = api.service(ready.chat, f"/batches/{batch['id']}", ready.key, method="GET").json()
    assert_conforms(seeds["batchCompleted"], done)
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}

    deleted = api.service(ready.chat, f"/files/{file_id}", ready.key, method="DELETE").json()
    assert_conforms(seeds["fileDeleted"], deleted)
