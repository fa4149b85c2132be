"""Reading the API's answers: both names for a key id, sane expiries, timestamps in any zone, damaged entries."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from capella_deploy.api.client import CapellaClient
from capella_deploy.kinds.api_key import parse_key
from capella_deploy.kinds.base import LiveStateError
from capella_deploy.kinds.model import parse_model, state_of
from capella_deploy.live import LiveState, read_live
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Sandbox
from capella_deploy.secrets import Secret

KEY = {"name": "app", "expiry": 30, "allowedCIDRs": ["10.0.0.0/8"], "audit": {"createdAt": "2026-01-01T00:00:00Z"}}
UTC = timezone.utc


# -- keys -------------------------------------------------------------------------------------------------------


def test_a_key_is_identified_by_key_id_or_else_by_id() -> None:
    assert parse_key({**KEY, "keyId": "k-1"}).id == "k-1"
    assert parse_key({**KEY, "id": "k-2"}).id == "k-2"
    assert parse_key({**KEY, "keyId": "k-1", "id": "other"}).id == "k-1"


@pytest.mark.parametrize(
    "entry",
    [KEY, {**KEY, "keyId": 7}, {**KEY, "keyId": "k-1", "name": None}, {"keyId": "k-1"}],
)
def test_a_key_without_a_string_id_and_name_is_unreadable(entry: dict[str, Any]) -> None:
    with pytest.raises(LiveStateError, match="no keyId or name"):
        parse_key(entry)


def test_a_key_reads_every_field_the_planner_compares() -> None:
    key = parse_key(
        {
            **KEY,
            "keyId": "k-1",
            "description": "for the app",
            "region": "us-east-1",
            "allowedCIDRs": ["10.0.0.0/8", 5, "10.1.0.0/16"],
            "allowedModels": [{"id": "m-1", "name": "chat"}, {"id": "m-2"}, "m-3", 4],
        }
    )
    assert key.name == "app" and key.description == "for the app" and key.region == "us-east-1"
    assert key.allowed_cidrs == ("10.0.0.0/8", "10.1.0.0/16")
    assert key.allowed_models == (("m-1", "chat"), ("m-2", "m-2"), ("m-3", "m-3"))
    assert key.attributes == {
        "description": "for the app",
        "region": "us-east-1",
        "expiryDays": 30,
        "allowedCIDRs": ["10.0.0.0/8", "10.1.0.0/16"],
        "allowedModels": ["chat", "m-2", "m-3"],
    }


def test_a_key_without_allowed_models_or_a_description_reads_as_every_model_and_none() -> None:
    for extra in ({}, {"allowedModels": []}, {"allowedModels": "chat"}, {"description": ""}, {"description": 3}):
        key = parse_key({**KEY, "keyId": "k-1", **extra})
        assert key.allowed_models == (("*", "*"),) and key.description is None
        assert key.region is None


@pytest.mark.parametrize("expiry", [0, 1, 30, 365, 30.0, 30.5, 36_500])
def test_an_expiry_in_days_is_kept(expiry: float) -> None:
    key = parse_key({**KEY, "keyId": "k-1", "expiry": expiry})
    assert key.expiry_days == expiry
    assert key.expires_at == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=expiry)


@pytest.mark.parametrize("expiry", [-1, 36_501, 10**9, 10**30, True, "30", None, float("inf"), float("nan")])
def test_an_expiry_out_of_range_or_not_a_number_reads_as_unknown(expiry: Any) -> None:
    key = parse_key({**KEY, "keyId": "k-1", "expiry": expiry})
    assert key.expiry_days is None and key.expires_at is None


# -- timestamps -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T10:00:00Z", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T10:00:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T10:00:00.5", datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-01-01T12:00:00+02:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T05:00:00.000000001-05:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("  2026-01-01T10:00:00.123456789Z\n", datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_a_timestamp_in_any_zone_or_none_reads_as_that_instant(text: str, expected: datetime) -> None:
    created = parse_key({**KEY, "keyId": "k-1", "audit": {"createdAt": text}}).created_at
    assert created == expected
    assert created is not None and created.utcoffset() is not None, "never a naive datetime"


@pytest.mark.parametrize(
    "text", ["2026-13-01T00:00:00Z", "2026-01-01 10:00:00Z", "2026-01-01T10:00Z", "yesterday", 1767225600, None]
)
def test_a_timestamp_that_is_not_rfc_3339_reads_as_unknown(text: Any) -> None:
    assert parse_key({**KEY, "keyId": "k-1", "audit": {"createdAt": text}}).created_at is None
    assert parse_key({**KEY, "keyId": "k-1", "audit": "2026-01-01T10:00:00Z"}).created_at is None


# -- models -----------------------------------------------------------------------------------------------------

MODEL = {
    "id": "m-1",
    "name": "chat",
    "status": "healthy",
    "actions": ["pause", "destroy", "edit", 3],
    "connectionString": "https://m-1.example",
    "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48.0}},
    "config": {
        "catalogModelName": "mistralai/mistral-7b-instruct-v0.3",
        "type": "text-generation",
        "provider": "mistral",
        "dimensions": 2048,
        "quantization": "fp8",
        "optimization": "latency",
        "caching": {
            "enableStandard": True,
            "defaultCache": "semantic",
            "expiryTTL": 60,
            "semantic": {"scoreThreshold": 0.8},
        },
        "enableBatching": False,
        "keywordFiltering": ["a", 2],
    },
    "audit": {"version": 3},
}


def test_a_model_reads_every_field_the_planner_and_applier_use() -> None:
    for raw in (MODEL, {"model": MODEL}):
        model = parse_model(raw)
        assert (model.id, model.name, model.status, model.version) == ("m-1", "chat", "healthy", 3)
        assert model.actions == {"pause", "delete", "edit"}
        assert model.connection_string == "https://m-1.example"
        assert model.model_type == "text-generation" and model.vendor == "mistral"
        assert model.attributes == {
            "catalogModel": "mistralai/mistral-7b-instruct-v0.3",
            "provider": "aws",
            "region": "us-east-1",
            "cpu": 4,
            "gpuMemory": 48,
            "quantization": "fp8",
            "optimization": "latency",
            "dimensions": 2048,
            "enableBatching": False,
            "keywordFiltering": ["a", "2"],
            # In the manifest's words: plans, drift and ignore rules name cache.expirySeconds, not caching.expiryTTL.
            "cache": {"type": "semantic", "expirySeconds": 60, "threshold": 0.8},
            "state": "running",
        }


def test_fields_of_the_wrong_type_read_as_unset() -> None:
    model = parse_model(
        {
            "id": "m-1",
            "name": "chat",
            "actions": "pause",
            "cloudConfig": {"provider": 1, "compute": {"cpu": True, "gpuMemory": 48.5}},
            "config": {"caching": "on", "enableBatching": "yes", "keywordFiltering": "a", "dimensions": "2048"},
            "audit": [],
        }
    )
    assert model.status == "pending" and model.actions == frozenset()
    assert model.provider is None and model.cpu is None and model.gpu_memory is None
    assert model.caching is None and model.enable_batching is None and model.keyword_filtering is None
    assert model.dimensions is None and model.version is None
    assert model.attributes["keywordFiltering"] is None and model.attributes["cache"] is None


@pytest.mark.parametrize("raw", [{"model": "m-1"}, {"name": "chat"}, {"id": "m-1"}, {"id": 1, "name": "chat"}])
def test_a_model_without_a_string_id_and_name_is_unreadable(raw: dict[str, Any]) -> None:
    with pytest.raises(LiveStateError):
        parse_model(raw)


@pytest.mark.parametrize(
    ("status", "state"),
    [("paused", "paused"), ("pausing", "paused"), ("pauseFailed", "paused"), ("resuming", "running"), ("x", "running")],
)
def test_a_status_maps_onto_running_or_paused(status: str, state: str) -> None:
    assert state_of(status) == state


# -- a whole read -----------------------------------------------------------------------------------------------


def read(transport: httpx.AsyncBaseTransport, base_url: str = "https://api.example") -> LiveState:
    async def run() -> LiveState:
        client = CapellaClient(base_url=base_url, token=Secret("tok"), transport=transport, max_attempts=1)
        async with client:
            return await read_live(client, "org")

    return asyncio.run(run())


def test_a_read_skips_unreadable_entries_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/apiKeys"):
            return httpx.Response(200, json={"data": [{**KEY, "keyId": "k-1"}, {"name": "no-id"}]})
        if request.url.path.endswith("/providers"):
            return httpx.Response(200, json={"data": [{"id": "p-1", "name": "openai", "type": "openAI"}, {"id": 7}]})
        return httpx.Response(200, json={"data": [MODEL, {"name": "no-id"}, {**MODEL, "id": "m-2", "status": "odd"}]})

    caplog.set_level(logging.WARNING, logger="capella_deploy.live")
    live = read(httpx.MockTransport(handler))
    assert [m.id for m in live.models] == ["m-1", "m-2"] and [k.id for k in live.keys] == ["k-1"]
    assert [p.id for p in live.providers] == ["p-1"]
    assert live.org_id == "org"
    assert live.warnings == (
        "skipped an unreadable model entry: a model entry has no id or name",
        "model 'chat' has an unknown status 'odd'; treated as in progress",
        "skipped an unreadable API key entry: an API key entry has no keyId or name",
        "skipped an unreadable provider entry: a provider entry has no id or name",
    )
    assert [r.getMessage() for r in caplog.records if r.name == "capella_deploy.live"] == list(live.warnings)


def test_a_read_of_the_sandbox_finds_what_was_created(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sandbox.json", token="tok")

    async def run() -> LiveState:
        client = CapellaClient(base_url=IN_PROCESS_BASE_URL, token=Secret("tok"), transport=sandbox.transport())
        async with client:
            model_id = await client.create_model(
                sandbox.org_id,
                {
                    "name": "chat",
                    "catalogModelName": "mistralai/mistral-7b-instruct-v0.3",
                    "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}},
                },
            )
            await client.create_api_key(
                sandbox.org_id,
                {
                    "name": "app",
                    "expiry": 30,
                    "allowedCIDRs": ["10.0.0.0/16"],
                    "region": "us-east-1",
                    "allowedModels": [model_id],
                },
            )
            return await read_live(client, sandbox.org_id)

    live = asyncio.run(run())
    assert [(m.name, m.gpu_memory, m.region) for m in live.models] == [("chat", 48, "us-east-1")]
    [key] = live.keys
    assert key.name == "app" and key.allowed_models == ((live.models[0].id, "chat"),)
    assert key.created_at is not None and key.expires_at == key.created_at + timedelta(days=30)
    assert live.warnings == ()
