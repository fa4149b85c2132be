"""A served sandbox (uvicorn on a free port): the official openai SDK works against it unchanged."""

from __future__ import annotations

import httpx
import openai
import pytest
from sandbox_support import CHAT_MODEL, EMBED_MODEL, TOKEN

from capella_deploy.sandbox import Faults, RouteFault


@pytest.fixture
def live(served, ready, api):
    """The served base URL and the ready models' connection strings, read over HTTP."""
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def connection(model_id: str) -> str:
        url = f"{served}{api.models_url}/{model_id}/connectionString"
        return httpx.get(url, headers=headers).json()["connectionString"]

    return served, connection(ready.chat), connection(ready.embed), ready.key


def test_connection_strings_point_at_the_served_host(live) -> None:
    base, chat_url, embed_url, _ = live
    assert base.startswith("http://127.0.0.1:")
    assert chat_url.startswith(base + "/ai/") and embed_url.startswith(base + "/ai/")


def test_openai_chat_streaming_chat_and_embeddings(live) -> None:
    _, chat_url, embed_url, key = live
    client = openai.OpenAI(base_url=chat_url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello"}])
    text = reply.choices[0].message.content
    assert text and reply.usage is not None and reply.usage.total_tokens > 0

    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == text

    embedder = openai.OpenAI(base_url=embed_url + "/v1", api_key=key, max_retries=0)
    vectors = embedder.embeddings.create(model=EMBED_MODEL, input=["one", "two"])
    assert [len(d.embedding) for d in vectors.data] == [2048, 2048]
    floats = embedder.embeddings.create(model=EMBED_MODEL, input="one", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding, rel=1e-6, abs=1e-7)

    assert [m.id for m in client.models.list()] == [CHAT_MODEL]


def test_openai_sdk_raises_its_usual_exceptions(live, api) -> None:
    _, chat_url, _, key = live
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=chat_url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model=CHAT_MODEL, messages=messages
        )
    _, eu_key = api.create_key("eu", region="eu-west-1")
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=chat_url + "/v1", api_key=eu_key, max_retries=0).chat.completions.create(
            model=CHAT_MODEL, messages=messages
        )
    client = openai.OpenAI(base_url=chat_url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no/such-model", messages=messages)
    with pytest.raises(openai.BadRequestError, match="X-cb-cache"):
        client.chat.completions.create(model=CHAT_MODEL, messages=messages, extra_headers={"X-cb-cache": "x"})
    api.sandbox.faults = Faults(rate_limit_per_minute=1)
    client.chat.completions.create(model=CHAT_MODEL, messages=messages)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=CHAT_MODEL, messages=messages)


def test_openai_sdk_through_the_gateway(live) -> None:
    base, _, _, key = live
    gateway = openai.OpenAI(base_url=f"{base}/v1/ai/hunyuan", api_key=key, max_retries=0)
    reply = gateway.chat.completions.create(model="hy3-preview", messages=[{"role": "user", "content": "Hi"}])
    stream = gateway.chat.completions.create(
        model="hy3-preview", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply.choices[0].message.content


def test_dropped_connections_reach_a_real_client_as_transport_errors(served, api) -> None:
    api.sandbox.faults = Faults(routes=[RouteFault(match="GET /v4/**", drop_after=1.0)])
    with pytest.raises(httpx.TransportError):
        httpx.get(served + api.models_url, headers={"Authorization": f"Bearer {TOKEN}"})
    api.sandbox.faults = Faults()
    assert httpx.get(served + api.models_url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
