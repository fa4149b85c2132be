"""Support code for the sandbox tests: a synchronous in-process client and the names the tests share."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Sandbox

TOKEN = "sandbox-token"
CHAT_MODEL = "mistralai/mistral-7b-instruct-v0.3"
EMBED_MODEL = "nvidia/llama-3.2-nv-embedqa-1b-v2"


class Api:
    """Synchronous calls into an in-process sandbox; each request runs in its own event loop."""

    def __init__(self, sandbox: Sandbox, client_address: str | None = None) -> None:
        self.sandbox = sandbox
        self.client_address = client_address

    @property
    def models_url(self) -> str:
        return f"/v4/organizations/{self.sandbox.org_id}/aiServices/models"

    @property
    def keys_url(self) -> str:
        return self.models_url + "/apiKeys"

    def request(
        self, method: str, url: str, *, token: str | None = TOKEN, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"

        async def go() -> httpx.Response:
            transport = self.sandbox.transport(self.client_address)
            async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_BASE_URL) as client:
                return await client.request(method, url, headers=sent, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    def deploy(
        self,
        name: str,
        catalog_model: str = CHAT_MODEL,
        *,
        region: str = "us-east-1",
        gpu_memory: int = 48,
        **options: Any,
    ) -> str:
        body = {
            "name": name,
            "catalogModelName": catalog_model,
            "cloudConfig": {"provider": "aws", "region": region, "compute": {"cpu": 4, "gpuMemory": gpu_memory}},
            **options,
        }
        response = self.post(self.models_url, json=body)
        assert response.status_code == 202, response.text
        model_id: str = response.json()["id"]
        return model_id

    def model(self, model_id: str) -> dict[str, Any]:
        response = self.get(f"{self.models_url}/{model_id}")
        assert response.status_code == 200, response.text
        model: dict[str, Any] = response.json()["model"]
        return model

    def create_key(self, name: str = "app-key", **fields: Any) -> tuple[str, str]:
        body = {"name": name, "expiry": 30, "allowedCIDRs": ["127.0.0.1/32"], "region": "us-east-1", **fields}
        response = self.post(self.keys_url, json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"], response.json()["token"]

    def service(self, model_id: str, path: str, key: str, method: str = "POST", **kw: Any) -> httpx.Response:
        return self.request(method, f"/ai/{model_id}/v1{path}", token=key, **kw)


@dataclass
class Ready:
    """Healthy models of each kind in us-east-1 and a Model API key for them."""

    chat: str
    embed: str
    moderation: str
    key: str


def batch_file(*bodies: dict[str, Any], url: str = "/v1/chat/completions") -> bytes:
    """A JSONL batch input file with one POST request per body."""
    lines = [
        json.dumps({"custom_id": f"request-{i}", "method": "POST", "url": url, "body": body})
        for i, body in enumerate(bodies, start=1)
    ]
    return ("\n".join(lines) + "\n").encode()


def chat_body(content: str = "hi", model: str = CHAT_MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}
