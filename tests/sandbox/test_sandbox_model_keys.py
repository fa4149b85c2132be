"""Model API key rules on the Model Service API: existence, expiry, region, allowed models, allowed CIDRs."""

from __future__ import annotations

import hashlib

from sandbox_support import CHAT_MODEL, EMBED_MODEL, TOKEN, Api, chat_body


def assert_openai_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["type"]


def chat(api, model_id: str, key: str):
    return api.service(model_id, "/chat/completions", key, json=chat_body())


def test_a_valid_key_works(api, ready) -> None:
    assert chat(api, ready.chat, ready.key).status_code == 200


def test_unknown_missing_and_management_tokens_are_401(api, ready) -> None:
    assert_openai_error(chat(api, ready.chat, "made-up"), 401, "invalid_api_key")
    assert_openai_error(chat(api, ready.chat, TOKEN), 401, "invalid_api_key")
    response = api.request("POST", f"/ai/{ready.chat}/v1/chat/completions", token=None, json=chat_body())
    assert_openai_error(response, 401, "missing_api_key")


def test_expired_key_is_401(api, ready, clock) -> None:
    _, short = api.create_key("short", expiry=1)
    assert chat(api, ready.chat, short).status_code == 200
    clock.advance(86400 - 1)
    assert chat(api, ready.chat, short).status_code == 200
    clock.advance(1)
    response = chat(api, ready.chat, short)
    assert_openai_error(response, 401, "expired_api_key")
    assert "expired at 2026-01-02T00:05:00" in response.json()["error"]["message"]


def test_key_of_another_region_is_403(api, ready) -> None:
    _, eu_key = api.create_key("eu", region="eu-west-1")
    assert_openai_error(chat(api, ready.chat, eu_key), 403, "region_mismatch")


def test_client_outside_the_allowed_cidrs_is_403(api, ready) -> None:
    _, office = api.create_key("office", allowedCIDRs=["10.20.0.0/16", "192.168.1.7"])
    inside = Api(api.sandbox, client_address="10.20.3.4")
    single = Api(api.sandbox, client_address="192.168.1.7")
    outside = Api(api.sandbox, client_address="10.21.0.1")
    assert chat(inside, ready.chat, office).status_code == 200
    assert chat(single, ready.chat, office).status_code == 200
    assert_openai_error(chat(outside, ready.chat, office), 403, "ip_not_allowed")
    assert_openai_error(chat(api, ready.chat, office), 403, "ip_not_allowed")  # 127.0.0.1


def test_ipv6_clients_and_blocks(api, ready) -> None:
    _, v6 = api.create_key("v6", allowedCIDRs=["2001:db8::/32"])
    assert chat(Api(api.sandbox, client_address="2001:db8::5"), ready.chat, v6).status_code == 200
    assert chat(Api(api.sandbox, client_address="2001:db9::5"), ready.chat, v6).status_code == 403


def test_key_restricted_to_some_models(api, ready) -> None:
    _, only_chat = api.create_key("only-chat", allowedModels=[ready.chat])
    assert chat(api, ready.chat, only_chat).status_code == 200
    response = api.service(ready.embed, "/embeddings", only_chat, json={"model": EMBED_MODEL, "input": "hi"})
    assert_openai_error(response, 403, "model_not_allowed")


def test_deleted_key_stops_working(api, ready) -> None:
    key_id, token = api.create_key("temp")
    assert chat(api, ready.chat, token).status_code == 200
    assert api.delete(f"{api.keys_url}/{key_id}").status_code == 204
    assert_openai_error(chat(api, ready.chat, token), 401, "invalid_api_key")


def test_model_not_healthy_is_503_and_unknown_is_404(api, ready, clock) -> None:
    api.delete(f"{api.models_url}/{ready.chat}/activationState")
    assert_openai_error(chat(api, ready.chat, ready.key), 503, "model_not_ready")
    clock.advance(60)
    response = chat(api, ready.chat, ready.key)
    assert_openai_error(response, 503, "model_not_ready")
    assert "paused" in response.json()["error"]["message"]
    assert_openai_error(chat(api, "00000000-0000-0000-0000-000000000000", ready.key), 404, "model_not_found")


def test_the_token_is_shown_once_and_stored_only_as_a_hash(api, sandbox) -> None:
    key_id, token = api.create_key("secret-key")
    assert token not in api.get(f"{api.keys_url}/{key_id}").text
    assert token not in api.get(api.keys_url).text
    stored = sandbox.state_path.read_text()
    assert token not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert TOKEN not in stored
    assert TOKEN not in repr(sandbox)


def test_model_field_must_name_the_target(api, ready) -> None:
    response = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(model="other/model"))
    assert_openai_error(response, 404, "model_not_found")
    for name in (CHAT_MODEL, ready.chat, "chat"):
        assert api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(model=name)).status_code == 200
