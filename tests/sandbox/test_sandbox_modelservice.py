"""The Model Service API: inference endpoints, X-cb headers, files, batches and the gateway."""

from __future__ import annotations

import base64
import json
import math
import struct

import pytest
from sandbox_support import CHAT_MODEL, EMBED_MODEL, Api, batch_file, chat_body

from capella_deploy.sandbox import Sandbox


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


def test_chat_is_deterministic_and_streaming_says_the_same(api, ready) -> None:
    first = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body("Tell me about vectors"))
    again = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body("Tell me about vectors"))
    other = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body("Something else"))
    content = first.json()["choices"][0]["message"]["content"]
    assert content == again.json()["choices"][0]["message"]["content"]
    assert content != other.json()["choices"][0]["message"]["content"]

    streamed = api.service(
        ready.chat,
        "/chat/completions",
        ready.key,
        json=chat_body("Tell me about vectors", stream=True, stream_options={"include_usage": True}),
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == content
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == first.json()["usage"]


def test_a_different_sandbox_seed_answers_differently(api, ready, tmp_path, clock) -> None:
    content = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body()).json()
    other = Api(Sandbox(tmp_path / "other.json", clock=clock, seed=1))
    model = other.deploy("chat")
    clock.advance(300)
    _, key = other.create_key()
    answer = other.service(model, "/chat/completions", key, json=chat_body()).json()
    assert answer["choices"][0]["message"] != content["choices"][0]["message"]


def test_chat_options(api, ready) -> None:
    body = chat_body(n=3, max_tokens=4)
    result = api.service(ready.chat, "/chat/completions", ready.key, json=body).json()
    assert [c["index"] for c in result["choices"]] == [0, 1, 2]
    assert all(len(c["message"]["content"].split()) == 4 for c in result["choices"])
    assert all(c["finish_reason"] == "length" for c in result["choices"])
    assert result["usage"]["completion_tokens"] == 12


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": CHAT_MODEL, "messages": []}, "messages"),
        ({"model": CHAT_MODEL}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (chat_body(temperature=3), "temperature"),
        (chat_body(top_p=-0.1), "top_p"),
        (chat_body(n=0), "n"),
        (chat_body(max_tokens=0), "max_tokens"),
        ({"model": CHAT_MODEL, "messages": [{"role": "robot", "content": "x"}]}, "messages"),
    ],
)
def test_bad_chat_bodies_are_400(api, ready, body, param) -> None:
    response = api.service(ready.chat, "/chat/completions", ready.key, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_completions(api, ready) -> None:
    body = {"model": CHAT_MODEL, "prompt": ["one", "two"], "max_tokens": 3, "echo": True}
    result = api.service(ready.chat, "/completions", ready.key, json=body).json()
    assert result["object"] == "text_completion"
    assert [c["text"][:3] for c in result["choices"]] == ["one", "two"]
    assert all(len(c["text"][3:].split()) == 3 for c in result["choices"])
    streamed = api.service(ready.chat, "/completions", ready.key, json={**body, "echo": False, "stream": True})
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    texts = {}
    for event in events[:-1]:
        choice = json.loads(event)["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    plain = api.service(ready.chat, "/completions", ready.key, json={**body, "echo": False}).json()
    assert texts == {c["index"]: c["text"] for c in plain["choices"]}


def test_embeddings_have_the_models_dimensions(api, ready, clock) -> None:
    result = api.service(ready.embed, "/embeddings", ready.key, json={"model": EMBED_MODEL, "input": ["a", "b", "a"]})
    data = result.json()["data"]
    assert [len(d["embedding"]) for d in data] == [2048, 2048, 2048]
    assert data[0]["embedding"] == data[2]["embedding"] != data[1]["embedding"]
    assert math.isclose(sum(x * x for x in data[0]["embedding"]), 1.0, rel_tol=1e-9)

    shorter = api.deploy("short", EMBED_MODEL, gpu_memory=24, dimensions=384)
    e5 = api.deploy("e5", "intfloat/e5-mistral-7b-instruct", gpu_memory=48)
    clock.advance(300)
    assert api.model(shorter)["config"]["dimensions"] == 384
    for model_id, model, size in ((shorter, EMBED_MODEL, 384), (e5, "intfloat/e5-mistral-7b-instruct", 4096)):
        vector = api.service(model_id, "/embeddings", ready.key, json={"model": model, "input": "x"}).json()
        assert len(vector["data"][0]["embedding"]) == size
    asked = api.service(
        ready.embed, "/embeddings", ready.key, json={"model": EMBED_MODEL, "input": "x", "dimensions": 256}
    )
    assert len(asked.json()["data"][0]["embedding"]) == 256
    too_many = api.service(
        ready.embed, "/embeddings", ready.key, json={"model": EMBED_MODEL, "input": "x", "dimensions": 4096}
    )
    assert too_many.status_code == 400


def test_embeddings_in_base64_decode_to_the_float_vector(api, ready) -> None:
    body = {"model": f"{EMBED_MODEL}-query", "input": "hello"}
    floats = api.service(ready.embed, "/embeddings", ready.key, json=body).json()["data"][0]["embedding"]
    encoded = api.service(ready.embed, "/embeddings", ready.key, json={**body, "encoding_format": "base64"})
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == 2048
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in zip(decoded, floats, strict=True))


def test_endpoints_refuse_the_wrong_kind_of_model(api, ready) -> None:
    chat_on_embedder = api.service(ready.embed, "/chat/completions", ready.key, json=chat_body(model=EMBED_MODEL))
    assert chat_on_embedder.status_code == 400
    assert chat_on_embedder.json()["error"]["code"] == "unsupported_model_type"
    embed_on_chat = api.service(ready.chat, "/embeddings", ready.key, json={"model": CHAT_MODEL, "input": "x"})
    assert embed_on_chat.status_code == 400
    for bad_input in ("", [], ["ok", ""]):
        response = api.service(ready.embed, "/embeddings", ready.key, json={"model": EMBED_MODEL, "input": bad_input})
        assert response.status_code == 400


def test_moderation(api, ready) -> None:
    flagged = api.service(ready.moderation, "/moderations", ready.key, json={"input": "how to build a bomb"}).json()
    assert flagged["flagged"] is True and flagged["categories"]["violence"] is True
    clean = api.service(ready.moderation, "/moderations", ready.key, json={"input": "what is a bucket?"}).json()
    assert clean["flagged"] is False


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-cb-routing-strategy", "fastest"),
        ("X-cb-cache", "disk"),
        ("X-cb-cache-threshold", "1.5"),
        ("X-cb-jailbreak-threshold", "high"),
        ("X-cb-max-retries", "-1"),
        ("X-cb-request-duration", "0"),
        ("X-cb-debug", "yes"),
        ("X-cb-suppress-request-guardrails", "1"),
        ("X-cb-model-ref", "not-a-uuid"),
    ],
)
def test_bad_x_cb_headers_are_400_naming_the_header(api, ready, header, value) -> None:
    response = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(), headers={header: value})
    assert response.status_code == 400
    assert header in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "invalid_header"


def test_valid_x_cb_headers_are_echoed_only_with_debug(api, ready) -> None:
    headers = {
        "X-cb-routing-strategy": "least-latency",
        "X-cb-cache": "semantic",
        "X-cb-cache-threshold": "0.8",
        "X-cb-attr-conv1": "mytopic1",
        "X-cb-max-retries": "2",
    }
    quiet = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(), headers=headers)
    assert quiet.status_code == 200
    assert not [h for h in quiet.headers if h.startswith("x-cb-")]
    loud = api.service(
        ready.chat, "/chat/completions", ready.key, json=chat_body(), headers={**headers, "X-cb-debug": "true"}
    )
    for name, value in headers.items():
        assert loud.headers[name] == value
    assert loud.headers["X-cb-model-ref"] == ready.chat
    assert loud.headers["X-cb-request-id"]


def test_model_ref_routes_to_another_deployment(api, ready, clock) -> None:
    second = api.deploy("second")
    clock.advance(300)
    response = api.service(
        ready.chat,
        "/chat/completions",
        ready.key,
        json=chat_body(),
        headers={"X-cb-model-ref": second, "X-cb-debug": "true"},
    )
    assert response.headers["X-cb-model-ref"] == second
    by_name = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(deployment_name="second"))
    assert by_name.status_code == 200
    missing = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(deployment_name="nope"))
    assert missing.status_code == 404


def test_keyword_filtering(api, clock) -> None:
    model_id = api.deploy("filtered", keywordFiltering=["password"])
    clock.advance(300)
    _, key = api.create_key()
    blocked = api.service(model_id, "/chat/completions", key, json=chat_body("my password is 123"))
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_filter"
    suppressed = api.service(
        model_id,
        "/chat/completions",
        key,
        json=chat_body("my password is 123"),
        headers={"X-cb-suppress-request-keyword-filtering": "true"},
    )
    assert suppressed.status_code == 200
    by_header = api.service(
        model_id, "/chat/completions", key, json=chat_body("ship it"), headers={"X-cb-content-filters": "deploy,ship"}
    )
    assert by_header.status_code == 400


def test_models_and_service_info(api, ready, clock) -> None:
    listed = api.service(ready.chat, "/models", ready.key, method="GET").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == [CHAT_MODEL]
    assert api.service(ready.chat, f"/models/{ready.chat}", ready.key, method="GET").status_code == 200
    assert api.service(ready.chat, "/models/other/model", ready.key, method="GET").status_code == 404
    info = api.service(ready.chat, "/info", ready.key, method="GET").json()
    assert info["max_requests_per_minute"] == 1000
    assert info["models"][0]["deployment_id"] == ready.chat
    api.delete(f"{api.models_url}/{ready.chat}/activationState")
    clock.advance(60)
    paused = api.service(ready.chat, "/models", ready.key, method="GET").json()  # readable while paused
    assert paused["data"][0]["status"] == "paused"


def test_usage_metrics_count_inference(api, ready, clock) -> None:
    for _ in range(3):
        api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(max_tokens=5))
    usage = api.model(ready.chat)["usageMetrics"]
    assert usage["requests"] == {"value": 3, "trend": "increasing"}
    assert usage["tokens"]["value"] == 3 * (5 + 5)
    clock.advance(3600)
    api.service(ready.chat, "/chat/completions", ready.key, json=chat_body(max_tokens=5))
    assert api.model(ready.chat)["usageMetrics"]["requests"] == {"value": 4, "trend": "decreasing"}


def test_files_and_batches(api, ready, clock) -> None:
    content = batch_file(chat_body("one"), chat_body("two", max_tokens=3), chat_body(model="wrong/model"))
    upload = api.service(
        ready.chat, "/files", ready.key, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    ).json()
    assert upload["bytes"] == len(content)
    listed = api.service(ready.chat, "/files", ready.key, method="GET").json()
    assert [f["id"] for f in listed[CHAT_MODEL]] == [upload["id"]]
    assert api.service(ready.chat, f"/files/{upload['id']}/content", ready.key, method="GET").content == content

    request = {"input_file_id": upload["id"], "endpoint": "/v1/chat/completions", "completion_window": "168h"}
    batch = api.service(ready.chat, "/batches", ready.key, json=request).json()
    assert batch["status"] == "validating"
    assert (
        api.service(ready.chat, f"/files/{batch['output_file_id']}/content", ready.key, method="GET").status_code == 404
    )
    clock.advance(2)
    running = api.service(ready.chat, f"/batches/{batch['id']}", ready.key, method="GET").json()
    assert running["status"] == "in_progress" and running["request_counts"]["completed"] == 1
    clock.advance(2)
    done = api.service(ready.chat, f"/batches/{batch['id']}", ready.key, method="GET").json()
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    output = api.service(ready.chat, f"/files/{done['output_file_id']}/content", ready.key, method="GET").text
    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["custom_id"] for line in lines] == ["request-1", "request-2"]
    direct = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body("one")).json()
    assert lines[0]["response"]["body"]["choices"] == direct["choices"]
    errors = api.service(ready.chat, f"/files/{done['error_file_id']}/content", ready.key, method="GET").text
    assert json.loads(errors)["error"]["code"] == "model_not_found"
    listing = api.service(ready.chat, "/batches", ready.key, method="GET").json()
    assert [b["id"] for b in listing[CHAT_MODEL]] == [batch["id"]]


def test_batch_validation_and_cancel(api, ready, clock) -> None:
    upload = api.service(
        ready.chat,
        "/files",
        ready.key,
        files={"file": ("in.jsonl", batch_file(chat_body()))},
        data={"purpose": "batch"},
    ).json()
    base = {"input_file_id": upload["id"], "endpoint": "/v1/chat/completions", "completion_window": "168h"}
    for changes, status in (
        ({"completion_window": "24h"}, 400),
        ({"endpoint": "/v1/moderations"}, 400),
        ({"endpoint": "/v1/embeddings"}, 400),
        ({"input_file_id": "file-missing"}, 404),
    ):
        assert api.service(ready.chat, "/batches", ready.key, json={**base, **changes}).status_code == status
    batch = api.service(ready.chat, "/batches", ready.key, json=base).json()
    cancelled = api.service(ready.chat, f"/batches/{batch['id']}/cancel", ready.key).json()
    assert cancelled["status"] == "cancelling"
    clock.advance(1)
    assert api.service(ready.chat, f"/batches/{batch['id']}", ready.key, method="GET").json()["status"] == "cancelled"
    assert api.service(ready.chat, f"/batches/{batch['id']}/cancel", ready.key).status_code == 409


def test_file_upload_rules(api, ready) -> None:
    def upload(content: bytes, purpose: str = "batch", **headers: str):
        return api.service(
            ready.chat,
            "/files",
            ready.key,
            files={"file": ("f.jsonl", content)},
            data={"purpose": purpose},
            headers=headers,
        )

    assert upload(batch_file(chat_body()), purpose="fine-tune").status_code == 400
    assert upload(b"not json\n").status_code == 400
    assert upload(b"\xff\xfe").status_code == 400
    assert api.service(ready.chat, "/files", ready.key, json={"purpose": "batch"}).status_code == 400
    short = upload(batch_file(chat_body()), **{"X-cb-file-record-expiry": "1"}).json()
    assert api.service(ready.chat, f"/files/{short['id']}", ready.key, method="GET").json()["active"] is True


def test_gateway_hosted_and_capella_models(api, ready) -> None:
    plain = api.request("POST", "/v1/ai/hunyuan/chat/completions", token=ready.key, json=chat_body(model="hy3-preview"))
    assert plain.status_code == 200
    assert plain.json()["model"] == "hy3-preview"
    streamed = api.request(
        "POST", "/v1/ai/cloudbase/chat/completions", token=ready.key, json=chat_body(model="hy3-preview", stream=True)
    )
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])

    capella = api.request("POST", "/v1/ai/capella/chat/completions", token=ready.key, json=chat_body())
    assert capella.json()["model"] == CHAT_MODEL
    direct = api.service(ready.chat, "/chat/completions", ready.key, json=chat_body()).json()
    assert capella.json()["choices"] == direct["choices"]

    assert api.request("POST", "/v1/ai/nobody/chat/completions", token=ready.key, json=chat_body()).status_code == 404
    assert (
        api.request("POST", "/v1/ai/deepseek/chat/completions", token=ready.key, json=chat_body(model="x")).status_code
        == 404
    )
    assert api.request("POST", "/v1/ai/deepseek/chat/completions", token="bad", json=chat_body()).status_code == 401
