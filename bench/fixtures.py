"""The benchmark's world: a seeded sandbox, matching manifests, and a transport that counts calls."""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import baseline
from capella_deploy.api.client import CapellaClient
from capella_deploy.clock import ScaledClock
from capella_deploy.sandbox import Sandbox, Timings
from capella_deploy.sandbox.faults import Faults, RouteFault
from capella_deploy.sandbox.server import running_server
from capella_deploy.sandbox.state import ApiKeyRecord, Audit, ModelRecord
from capella_deploy.secrets import Secret

# Not a secret: the sandbox accepts whatever token it is started with.
TOKEN = "bench-token"
# As the client's own default pool, which a custom transport would otherwise replace.
POOL = httpx.Limits(max_connections=20, max_keepalive_connections=20)

CATALOG_MODEL = "mistralai/mistral-7b-instruct-v0.3"
PROVIDER = "aws"
REGION = "us-east-1"
GPU_MEMORY = 24
KEY_EXPIRY_DAYS = 365
KEY_CIDRS = ["10.0.0.0/16"]


def faults(latency_ms: float, *, rate_limit_per_minute: int | None = None) -> Faults:
    """A fixed latency on every request, and optionally the sandbox's rate limit (per sandbox minute)."""
    routes = [RouteFault(match="**", latency_ms=(latency_ms, latency_ms))] if latency_ms > 0 else []
    return Faults(routes=routes, rate_limit_per_minute=rate_limit_per_minute)


def seed(sandbox: Sandbox, *, models: int, keys: int) -> None:
    """Put healthy models and valid keys straight into the world: one write instead of 2N slow calls."""
    with sandbox.mutate() as world:
        now = sandbox.now()
        for i in range(models):
            record = ModelRecord(
                id=str(uuid.uuid4()),
                name=model_name(i),
                catalog_model_name=CATALOG_MODEL,
                cloud_provider=PROVIDER,
                region=REGION,
                cpu=4,
                gpu_memory=GPU_MEMORY,
                options={},
                status="healthy",
                # A little apart, so the list order (by creation time) is the order of the names.
                audit=Audit.new(world.actor_id, now - models + i),
            )
            world.models[record.id] = record
        for i in range(keys):
            key = ApiKeyRecord(
                id=str(uuid.uuid4()),
                name=key_name(i),
                description="",
                expiry_days=KEY_EXPIRY_DAYS,
                allowed_cidrs=list(KEY_CIDRS),
                region=REGION,
                allowed_models=["*"],
                token_sha256=hashlib.sha256(f"token-{i}".encode()).hexdigest(),
                audit=Audit.new(world.actor_id, now - keys + i),
            )
            world.api_keys[key.id] = key


def model_name(i: int) -> str:
    return f"model-{i:05d}"


def key_name(i: int) -> str:
    return f"key-{i:05d}"


def manifest_document(*, models: int, keys: int, prefix: str = "") -> dict[str, Any]:
    """A manifest (as parsed YAML) declaring exactly what ``seed`` puts in the world."""
    return {
        "apiVersion": "capella-deploy/v1",
        "defaults": {"provider": PROVIDER, "region": REGION},
        "models": [
            {"name": prefix + model_name(i), "catalogModel": CATALOG_MODEL, "gpuMemory": GPU_MEMORY}
            for i in range(models)
        ],
        "apiKeys": [
            {"name": prefix + key_name(i), "expiryDays": KEY_EXPIRY_DAYS, "allowedCIDRs": list(KEY_CIDRS)}
            for i in range(keys)
        ],
    }


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int  # 0 when no answer came back
    per_page: int | None  # the perPage a list call asked for
    at: float = 0.0  # sandbox time the answer came (or the call failed)


@dataclass
class CallLog:
    clock: ScaledClock | None = None
    calls: list[Call] = field(default_factory=list)

    def count(self, method: str | None = None, path_suffix: str | None = None, status: int | None = None) -> int:
        return len(self.select(method, path_suffix, status))

    def select(
        self, method: str | None = None, path_suffix: str | None = None, status: int | None = None
    ) -> list[Call]:
        return [
            c
            for c in self.calls
            if (method is None or c.method == method)
            and (path_suffix is None or c.path.endswith(path_suffix))
            and (status is None or c.status == status)
        ]

    def record(self, method: str, path: str, per_page: str | None, status: int) -> None:
        at = self.clock.now() if self.clock is not None else 0.0
        self.calls.append(Call(method, path, status, int(per_page) if per_page else None, at))

    def record_request(self, request: httpx.Request, status: int) -> None:
        self.record(request.method, request.url.path, request.url.params.get("perPage"), status)

    def clear(self) -> None:
        self.calls.clear()


class CountingTransport(httpx.AsyncBaseTransport):
    """Records every request that goes on the wire, retries included, with the status it got."""

    def __init__(self, inner: httpx.AsyncBaseTransport, log: CallLog) -> None:
        self._inner = inner
        self._log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError:
            self._log.record_request(request, 0)
            raise
        self._log.record_request(request, response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class CountingSyncTransport(httpx.BaseTransport):
    """The same for the baseline's synchronous client."""

    def __init__(self, inner: httpx.BaseTransport, log: CallLog) -> None:
        self._inner = inner
        self._log = log

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError:
            self._log.record_request(request, 0)
            raise
        self._log.record_request(request, response.status_code)
        return response

    def close(self) -> None:
        self._inner.close()


@dataclass
class Served:
    """A sandbox served over real HTTP from a background thread, and clients that log every call."""

    sandbox: Sandbox
    clock: ScaledClock
    base_url: str
    log: CallLog

    @property
    def org_id(self) -> str:
        return self.sandbox.org_id

    def client(self, *, requests_per_minute: float | None = None) -> CapellaClient:
        """capella-deploy's client, on the sandbox's clock so that its waits pass in sandbox time."""
        return CapellaClient(
            base_url=self.base_url,
            token=Secret(TOKEN),
            transport=CountingTransport(httpx.AsyncHTTPTransport(limits=POOL), self.log),
            clock=self.clock,
            requests_per_minute=requests_per_minute,
        )

    def http(self) -> httpx.Client:
        """The plain synchronous client the baseline script uses."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            transport=CountingSyncTransport(httpx.HTTPTransport(), self.log),
            timeout=60,
        )

    @contextlib.contextmanager
    def in_process_http(self) -> Iterator[baseline.Http]:
        """A synchronous client that calls the app directly: for counting calls without paying for sockets."""
        from starlette.testclient import TestClient

        def record(response: Any) -> None:
            url = response.request.url
            self.log.record(response.request.method, url.path, url.params.get("perPage"), response.status_code)

        with TestClient(
            self.sandbox.app, base_url="http://sandbox", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            client.event_hooks = {"request": [], "response": [record]}
            yield client

    async def round_trip(self, samples: int = 9) -> float:
        """Median real seconds of one request on a warm connection: the configured latency plus overheads."""
        times: list[float] = []
        async with self.client() as client:
            for _ in range(samples + 1):
                started = time.perf_counter()
                await client.get_organization(self.org_id)
                times.append(time.perf_counter() - started)
        del self.log.calls[-(samples + 1) :]
        return statistics.median(times[1:])  # the first call also opens the connection

    def sleep(self, sandbox_seconds: float) -> None:
        """A blocking sleep of sandbox time, for the baseline."""
        time.sleep(sandbox_seconds / self.clock.speed)


@contextlib.contextmanager
def served(
    *, speed: float, deploy_seconds: float, latency_ms: float, rate_limit_per_minute: int | None = None
) -> Iterator[Served]:
    clock = ScaledClock(speed=speed)
    sandbox = Sandbox(
        None,
        token=TOKEN,
        clock=clock,
        faults=faults(latency_ms, rate_limit_per_minute=rate_limit_per_minute),
        timings=Timings(deploy_seconds=deploy_seconds),
        seed=7,
    )
    with running_server(sandbox) as base_url:
        yield Served(sandbox, clock, base_url, CallLog(clock))
