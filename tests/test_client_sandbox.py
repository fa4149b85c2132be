"""The client end to end against the embedded sandbox, through its in-process transport.

The sandbox and the client share one ``ManualClock``: the client's Retry-After and backoff waits move
sandbox time forward, and lifecycles are stepped with ``advance_clock`` instead of waited for.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from capella_deploy.api.client import CapellaClient, ClientStats
from capella_deploy.clock import ManualClock
from capella_deploy.errors import AmbiguousCreate, Conflict, NotFound, ServerError, Unauthorized
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Faults, RouteFault, Sandbox
from capella_deploy.secrets import Secret

TOKEN = "sandbox-mgmt-token-7f3a9c"
T = TypeVar("T")


def model_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "catalogModelName": "mistralai/mistral-7b-instruct-v0.3",
        "cloudConfig": {"provider": "aws", "region": "us-east-1", "compute": {"cpu": 4, "gpuMemory": 48}},
    }


def key_body(name: str) -> dict[str, Any]:
    return {"name": name, "expiry": 30, "allowedCIDRs": ["10.0.0.0/16"], "region": "us-east-1"}


def world(faults: Faults | None = None) -> tuple[Sandbox, ManualClock]:
    clock = ManualClock()
    return Sandbox(token=TOKEN, clock=clock, faults=faults), clock


def run(
    sandbox: Sandbox,
    clock: ManualClock,
    work: Callable[[CapellaClient], Awaitable[T]],
    *,
    token: str = TOKEN,
    **options: Any,
) -> tuple[T, ClientStats]:
    async def main() -> tuple[T, ClientStats]:
        client = CapellaClient(
            base_url=IN_PROCESS_BASE_URL,
            token=Secret(token),
            transport=sandbox.transport(),
            clock=clock,
            backoff_base=0.01,
            **options,
        )
        async with client:
            return await work(client), client.stats

    return asyncio.run(main())


def test_a_model_lives_its_whole_life_through_the_client() -> None:
    sandbox, clock = world()
    org = sandbox.org_id

    async def work(client: CapellaClient) -> list[str]:
        statuses: list[str] = []
        model_id = await client.create_model(org, model_body("chat-prod"))
        statuses.append((await client.get_model(org, model_id))["status"])
        listed = await client.list_models(org)
        assert [(m["id"], m["name"]) for m in listed] == [(model_id, "chat-prod")]
        with pytest.raises(Conflict):
            await client.pause_model(org, model_id)  # still deploying
        sandbox.advance_clock(sandbox.timings.deploy_seconds)
        statuses.append((await client.get_model(org, model_id))["status"])
        assert (await client.get_connection_string(org, model_id)).endswith(model_id)
        await client.update_model(org, model_id, {"name": "chat-prod", "enableBatching": True})
        await client.pause_model(org, model_id)
        statuses.append((await client.get_model(org, model_id))["status"])
        sandbox.advance_clock(sandbox.timings.pause_seconds)
        statuses.append((await client.get_model(org, model_id))["status"])
        await client.resume_model(org, model_id)
        statuses.append((await client.get_model(org, model_id))["status"])
        sandbox.advance_clock(sandbox.timings.resume_seconds)
        statuses.append((await client.get_model(org, model_id))["status"])
        await client.delete_model(org, model_id)
        statuses.append((await client.get_model(org, model_id))["status"])
        sandbox.advance_clock(sandbox.timings.destroy_seconds)
        with pytest.raises(NotFound):
            await client.get_model(org, model_id)
        await client.delete_model(org, model_id)  # already gone: fine
        assert await client.list_models(org) == []
        return statuses

    statuses, stats = run(sandbox, clock, work)
    assert statuses == ["deploying", "healthy", "pausing", "paused", "resuming", "healthy", "destroying"]
    assert stats.retries == 0 and stats.rate_limited == 0


def test_api_keys_are_created_listed_and_deleted() -> None:
    sandbox, clock = world()
    org = sandbox.org_id

    async def work(client: CapellaClient) -> None:
        created = await client.create_api_key(org, key_body("app-key"))
        assert created.token.reveal() and created.token.reveal() not in repr(created)
        keys = await client.list_api_keys(org)
        assert [(k["keyId"], k["name"]) for k in keys] == [(created.id, "app-key")]
        await client.delete_api_key(org, created.id)
        assert await client.list_api_keys(org) == []
        await client.delete_api_key(org, created.id)  # a 404 is success

    run(sandbox, clock, work)


def test_the_organization_is_found() -> None:
    sandbox, clock = world()

    async def work(client: CapellaClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return await client.list_organizations(), await client.get_organization(sandbox.org_id)

    (orgs, org), _ = run(sandbox, clock, work)
    assert [o["id"] for o in orgs] == [sandbox.org_id]
    assert org["id"] == sandbox.org_id


def test_a_long_listing_reads_every_page_once() -> None:
    sandbox, clock = world()
    org = sandbox.org_id

    async def work(client: CapellaClient) -> tuple[set[str], list[dict[str, Any]]]:
        ids = await asyncio.gather(*(client.create_model(org, model_body(f"m-{n:03d}")) for n in range(230)))
        return set(ids), await client.list_models(org)

    (ids, listed), stats = run(sandbox, clock, work)
    assert len(listed) == 230 and {m["id"] for m in listed} == ids
    assert stats.requests == 230 + 3  # 100 a page: three pages


def test_a_wrong_token_is_unauthorized_and_never_shown() -> None:
    sandbox, clock = world()
    wrong = "not-the-sandbox-token-123"
    with pytest.raises(Unauthorized) as caught:
        run(sandbox, clock, lambda c: c.list_models(sandbox.org_id), token=wrong)
    error = caught.value
    assert error.status == 401 and error.code == 1001 and error.message
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert wrong not in text and TOKEN not in text


def test_the_sandbox_rate_limit_is_waited_out() -> None:
    sandbox, clock = world(Faults(rate_limit_per_minute=5))
    org = sandbox.org_id

    async def work(client: CapellaClient) -> int:
        results = await asyncio.gather(*(client.list_models(org) for _ in range(12)))
        return len(results)

    done, stats = run(sandbox, clock, work)
    assert done == 12
    assert stats.rate_limited > 0 and stats.requests == 12 + stats.rate_limited


def test_a_client_side_rate_limit_keeps_clear_of_the_sandbox_limit() -> None:
    sandbox, clock = world(Faults(rate_limit_per_minute=5))
    org = sandbox.org_id

    async def work(client: CapellaClient) -> None:
        await asyncio.gather(*(client.list_models(org) for _ in range(12)))

    _, stats = run(sandbox, clock, work, requests_per_minute=5, burst=1)
    assert stats == ClientStats(requests=12, retries=0, rate_limited=0)


def test_a_client_side_rate_limit_with_a_burst_stays_within_the_limit_in_every_minute() -> None:
    # A full bucket of 10 plus a minute's refill of 30 would be 40 requests in the first minute.
    sandbox, clock = world(Faults(rate_limit_per_minute=30))
    org = sandbox.org_id

    async def work(client: CapellaClient) -> None:
        await asyncio.gather(*(client.list_api_keys(org) for _ in range(70)))

    _, stats = run(sandbox, clock, work, requests_per_minute=30, burst=10)
    assert stats == ClientStats(requests=70, retries=0, rate_limited=0)


def test_flaky_reads_are_retried_until_they_succeed() -> None:
    faults = Faults(seed=3, routes=[RouteFault(match="GET /v4/organizations/**", error_rate=0.5, error_status=503)])
    sandbox, clock = world(faults)

    async def work(client: CapellaClient) -> int:
        return len(await asyncio.gather(*(client.list_api_keys(sandbox.org_id) for _ in range(20))))

    done, stats = run(sandbox, clock, work, max_attempts=20)
    assert done == 20 and stats.retries > 0


def test_a_server_that_stays_down_gives_a_server_error_after_the_attempts() -> None:
    faults = Faults(routes=[RouteFault(match="GET /**", error_rate=1.0, error_status=503, retry_after=4)])
    sandbox, clock = world(faults)
    with pytest.raises(ServerError) as caught:
        run(sandbox, clock, lambda c: c.list_models(sandbox.org_id), max_attempts=3)
    assert caught.value.status == 503 and caught.value.retry_after == 4.0


def test_a_create_whose_answer_is_lost_is_ambiguous_and_the_model_exists() -> None:
    route = "POST /v4/organizations/*/aiServices/models"
    sandbox, clock = world(Faults(routes=[RouteFault(match=route, drop_after=1.0)]))
    org = sandbox.org_id

    with pytest.raises(AmbiguousCreate) as caught:
        run(sandbox, clock, lambda c: c.create_model(org, model_body("chat-prod")))
    assert (caught.value.kind, caught.value.name) == ("model", "chat-prod")

    sandbox.faults = Faults()
    listed, _ = run(sandbox, clock, lambda c: c.list_models(org))
    # Exactly one: the client sent the create once and did not repeat it.
    assert [m["name"] for m in listed] == ["chat-prod"]


def test_a_key_create_whose_answer_is_lost_is_ambiguous_and_leaks_nothing() -> None:
    route = "POST /v4/organizations/*/aiServices/models/apiKeys"
    sandbox, clock = world(Faults(routes=[RouteFault(match=route, error_rate=1.0, error_status=504)]))
    with pytest.raises(AmbiguousCreate) as caught:
        run(sandbox, clock, lambda c: c.create_api_key(sandbox.org_id, key_body("app-key")))
    assert caught.value.kind == "apiKey" and "504" in str(caught.value)
    assert TOKEN not in str(caught.value)
