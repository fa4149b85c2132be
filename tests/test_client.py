"""The Management API client against fake servers played by ``httpx.MockTransport`` handlers.

Time is a ``ManualClock`` that records every sleep the client asks for, so backoff, Retry-After and
rate limiting are checked by the waits requested, and nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from capella_deploy import __version__
from capella_deploy.api.client import (
    DEFAULT_API_URL,
    PAGE_CONCURRENCY,
    CapellaClient,
    ClientStats,
    CreatedKey,
    load_token,
)
from capella_deploy.clock import ManualClock
from capella_deploy.errors import (
    AmbiguousCreate,
    APIError,
    BadRequest,
    CapellaError,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
)
from capella_deploy.secrets import Secret

ORG = "6af08c0a-8cab-4c1c-b257-b521575c16d0"
TOKEN = "cbmgmt-0123456789abcdefSECRET"
KEY_TOKEN = "modelkey-fedcba9876543210SECRET"
BASE = "https://api.test"
MODELS = f"/v4/organizations/{ORG}/aiServices/models"
KEYS = f"{MODELS}/apiKeys"

T = TypeVar("T")
Handler = Callable[[httpx.Request], Any]  # sync or async, as MockTransport takes either


class RecordingClock(ManualClock):
    """Manual time that remembers each sleep asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def make_client(handler: Handler, clock: ManualClock | None = None, **options: Any) -> CapellaClient:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("backoff_max", 0.1)
    return CapellaClient(
        base_url=options.pop("base_url", BASE),
        token=Secret(TOKEN),
        transport=httpx.MockTransport(handler),
        clock=clock or RecordingClock(),
        **options,
    )


def run(client: CapellaClient, work: Callable[[CapellaClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with client:
            return await work(client)

    return asyncio.run(main())


def api_error(status: int, code: int, message: str, hint: str = "", **headers: str) -> httpx.Response:
    body = {"httpStatusCode": status, "code": code, "message": message, "hint": hint}
    return httpx.Response(status, json=body, headers=headers)


def model(model_id: str, name: str | None = None) -> dict[str, Any]:
    return {"id": model_id, "name": name or f"name-{model_id}", "status": "healthy"}


def sequence(*answers: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A server that gives these answers in turn (raising the exceptions), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise type(answer)(str(answer), request=request)  # type: ignore[call-arg]
        return answer

    return handler, seen


def traceback_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


# -- requests on the wire ---------------------------------------------------------------------------


def test_every_call_uses_the_documented_method_path_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path, method = request.url.path, request.method
        if method == "POST" and path == MODELS:
            return httpx.Response(202, json={"id": "m-new"})
        if method == "POST" and path == KEYS:
            return httpx.Response(201, json={"id": "k-new", "token": KEY_TOKEN})
        if method == "GET" and path in (MODELS, KEYS, "/v4/organizations"):
            return httpx.Response(200, json={"data": []})
        if path.endswith("/connectionString"):
            return httpx.Response(200, json={"connectionString": "https://m1.ai.couchbase.com"})
        if method == "GET":
            return httpx.Response(200, json={"model": model("m1")} if "models" in path else {"id": ORG})
        return httpx.Response({"PUT": 204, "DELETE": 202, "POST": 202}[method])

    async def work(client: CapellaClient) -> None:
        await client.list_organizations()
        await client.get_organization(ORG)
        await client.list_models(ORG)
        await client.get_model(ORG, "m1")
        assert await client.create_model(ORG, {"name": "chat"}) == "m-new"
        await client.update_model(ORG, "m1", {"name": "chat2"}, if_match=3)
        await client.update_model(ORG, "m1", {"name": "chat3"})
        await client.delete_model(ORG, "m1")
        await client.pause_model(ORG, "m1")
        await client.resume_model(ORG, "m1")
        assert await client.get_connection_string(ORG, "m1") == "https://m1.ai.couchbase.com"
        await client.list_api_keys(ORG)
        created = await client.create_api_key(ORG, {"name": "app"})
        assert created == CreatedKey(id="k-new", token=Secret(KEY_TOKEN))
        await client.delete_api_key(ORG, "k1")

    run(make_client(handler), work)
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/v4/organizations"),
        ("GET", f"/v4/organizations/{ORG}"),
        ("GET", MODELS),
        ("GET", f"{MODELS}/m1"),
        ("POST", MODELS),
        ("PUT", f"{MODELS}/m1"),
        ("PUT", f"{MODELS}/m1"),
        ("DELETE", f"{MODELS}/m1"),
        ("DELETE", f"{MODELS}/m1/activationState"),
        ("POST", f"{MODELS}/m1/activationState"),
        ("GET", f"{MODELS}/m1/connectionString"),
        ("GET", KEYS),
        ("POST", KEYS),
        ("DELETE", f"{KEYS}/k1"),
    ]
    for request in seen:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["User-Agent"] == f"capella-deploy/{__version__} (+python-httpx/{httpx.__version__})"
        assert request.headers["Accept"] == "application/json"
    assert seen[5].headers["If-Match"] == "3"
    assert "If-Match" not in seen[6].headers
    assert json.loads(seen[4].content) == {"name": "chat"}
    assert seen[4].headers["Content-Type"] == "application/json"
    assert seen[2].url.params["page"] == "1" and seen[2].url.params["perPage"] == "100"
    # The documented organizations call takes no paging parameters.
    assert not seen[0].url.params


def test_ids_are_quoted_so_they_cannot_steer_the_path() -> None:
    handler, seen = sequence(httpx.Response(200, json={"model": model("x")}))
    run(make_client(handler), lambda c: c.get_model(ORG, "../apiKeys"))
    assert seen[0].url.raw_path.decode() == f"{MODELS}/..%2FapiKeys"


def test_a_base_url_with_a_path_prefix_keeps_it() -> None:
    handler, seen = sequence(httpx.Response(200, json={"data": []}))
    run(make_client(handler, base_url="https://proxy.test/capella/"), lambda c: c.list_models(ORG))
    assert seen[0].url.path == f"/capella{MODELS}"


def test_models_are_unwrapped_wherever_they_come_from() -> None:
    handler, _ = sequence(
        httpx.Response(200, json={"data": [{"model": model("a")}, model("b")]}),
        httpx.Response(200, json={"model": model("c")}),
        httpx.Response(200, json=model("d")),
    )

    async def work(client: CapellaClient) -> list[dict[str, Any]]:
        return [*await client.list_models(ORG), await client.get_model(ORG, "c"), await client.get_model(ORG, "d")]

    assert [m["id"] for m in run(make_client(handler), work)] == ["a", "b", "c", "d"]


# -- pagination -------------------------------------------------------------------------------------


def paged_server(
    total: int, *, style: str, cap: int = 20, wrap: bool = True, delays: dict[int, int] | None = None
) -> tuple[Handler, list[httpx.Request], dict[str, int]]:
    """A list endpoint over ``total`` models that pages at most ``cap`` at a time.

    style "seed": ends marked by next/previous 0 and "" hrefs; "spec": those fields absent at the ends;
    "no-last": the cursor never says how many pages there are.
    """
    seen: list[httpx.Request] = []
    flight = {"now": 0, "max": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        flight["now"] += 1
        flight["max"] = max(flight["max"], flight["now"])
        page = int(request.url.params.get("page", "1"))
        for _ in range((delays or {}).get(page, 0)):
            await asyncio.sleep(0)
        flight["now"] -= 1
        per_page = min(cap, int(request.url.params.get("perPage", str(cap))))
        last = max(1, math.ceil(total / per_page))
        rows = [model(f"m{i:03d}") for i in range((page - 1) * per_page, min(total, page * per_page))]
        data = [{"model": row} if wrap else row for row in rows]
        pages: dict[str, int] = {"page": page, "perPage": per_page, "totalItems": total}
        hrefs = {"first": f"{BASE}{MODELS}?page=1", "last": f"{BASE}{MODELS}?page={last}"}
        if style == "seed":
            pages.update(last=last, next=page + 1 if page < last else 0, previous=page - 1)
            hrefs.update(next=f"{BASE}{MODELS}?page={page + 1}" if page < last else "", previous="")
        else:
            if style == "spec":
                pages["last"] = last
            if page < last:
                pages["next"] = page + 1
            if page > 1:
                pages["previous"] = page - 1
        return httpx.Response(200, json={"data": data, "cursor": {"pages": pages, "hrefs": hrefs}})

    return handler, seen, flight


@pytest.mark.parametrize("style", ["seed", "spec", "no-last"])
def test_every_page_is_read_in_order_whatever_marks_the_end(style: str) -> None:
    handler, seen, _ = paged_server(95, style=style)
    models = run(make_client(handler), lambda c: c.list_models(ORG))
    assert [m["id"] for m in models] == [f"m{i:03d}" for i in range(95)]
    assert sorted(int(r.url.params["page"]) for r in seen) == [1, 2, 3, 4, 5]
    assert seen[0].url.params["perPage"] == "100"
    # Later pages ask for the page size the server settled on.
    assert {r.url.params["perPage"] for r in seen[1:]} == {"20"}


def test_a_single_page_is_one_request() -> None:
    handler, seen, _ = paged_server(3, style="seed")
    assert len(run(make_client(handler), lambda c: c.list_models(ORG))) == 3
    assert len(seen) == 1


def test_pages_after_the_first_are_fetched_concurrently_and_kept_in_order() -> None:
    # Later pages answer first, so an order kept by arrival would come out reversed.
    handler, _, flight = paged_server(100, style="seed", delays={2: 40, 3: 30, 4: 20, 5: 10})
    models = run(make_client(handler), lambda c: c.list_models(ORG))
    assert [m["id"] for m in models] == [f"m{i:03d}" for i in range(100)]
    assert flight["max"] == 4


def test_page_concurrency_is_bounded() -> None:
    handler, seen, flight = paged_server(600, style="seed", delays={n: 5 for n in range(2, 31)})
    models = run(make_client(handler), lambda c: c.list_models(ORG))
    assert len(models) == 600 and len(seen) == 30
    assert 1 < flight["max"] <= PAGE_CONCURRENCY


def test_a_page_that_grows_while_listing_is_followed_past_the_announced_last() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        # Page 1 announced two pages; by the time page 2 is read a third has appeared.
        cursor = {1: {"page": 1, "last": 2, "next": 2}, 2: {"page": 2, "last": 3, "next": 3}}.get(
            page, {"page": 3, "last": 3, "next": 0}
        )
        return httpx.Response(200, json={"data": [model(f"p{page}")], "cursor": {"pages": cursor}})

    models = run(make_client(handler), lambda c: c.list_models(ORG))
    assert [m["id"] for m in models] == ["p1", "p2", "p3"]


def test_an_item_that_slides_across_a_page_boundary_is_listed_once() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        rows = {1: [{"keyId": "a"}, {"keyId": "b"}], 2: [{"keyId": "b"}, {"keyId": "c"}]}[page]
        cursor = {"page": page, "last": 2, "next": 2 if page == 1 else 0}
        return httpx.Response(200, json={"data": rows, "cursor": {"pages": cursor}})

    keys = run(make_client(handler), lambda c: c.list_api_keys(ORG))
    assert [k["keyId"] for k in keys] == ["a", "b", "c"]


def test_a_cursor_that_points_backwards_does_not_loop() -> None:
    handler, seen = sequence(
        httpx.Response(200, json={"data": [model("a")], "cursor": {"pages": {"page": 1, "next": 1}}})
    )
    assert len(run(make_client(handler), lambda c: c.list_models(ORG))) == 1
    assert len(seen) == 1


def test_a_failing_page_fails_the_listing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if page == 3:
            return api_error(400, 1000, "bad page")
        cursor = {"pages": {"page": page, "last": 5, "next": page + 1}}
        return httpx.Response(200, json={"data": [model(f"p{page}")], "cursor": cursor})

    with pytest.raises(BadRequest, match="bad page"):
        run(make_client(handler), lambda c: c.list_models(ORG))


def test_a_list_answer_without_data_is_unexpected() -> None:
    handler, _ = sequence(httpx.Response(200, json={"items": []}))
    with pytest.raises(UnexpectedResponse, match="'data'"):
        run(make_client(handler), lambda c: c.list_api_keys(ORG))


# -- retries ----------------------------------------------------------------------------------------


def test_transient_statuses_are_retried_with_full_jitter_backoff() -> None:
    handler, seen = sequence(
        api_error(503, 1007, "busy"),
        httpx.Response(502, text="bad gateway"),
        api_error(504, 10000, "timeout"),
        httpx.Response(200, json={"model": model("m1")}),
    )
    clock = RecordingClock()
    client = make_client(handler, clock, backoff_base=1.0, backoff_max=3.0)
    assert run(client, lambda c: c.get_model(ORG, "m1"))["id"] == "m1"
    assert len(seen) == 4
    assert client.stats == ClientStats(requests=4, retries=3, rate_limited=0)
    # Full jitter: each wait is drawn from [0, min(max, base * 2**(n-1))].
    assert len(clock.sleeps) == 3
    for n, wait in enumerate(clock.sleeps, start=1):
        assert 0 <= wait <= min(3.0, 2 ** (n - 1))


def test_the_waits_are_random_and_capped() -> None:
    handler, seen = sequence(api_error(503, 1007, "busy"))
    clock = RecordingClock()
    client = make_client(handler, clock, max_attempts=8, backoff_base=1.0, backoff_max=2.0)
    with pytest.raises(ServerError):
        run(client, lambda c: c.get_model(ORG, "m1"))
    assert len(seen) == 8 and len(clock.sleeps) == 7
    assert all(0 <= w <= 2.0 for w in clock.sleeps)
    assert len(set(clock.sleeps)) > 1


def test_retry_after_is_honoured_instead_of_the_backoff() -> None:
    handler, _ = sequence(
        api_error(429, 1004, "slow down", "wait", **{"Retry-After": "7"}),
        httpx.Response(200, json={"model": model("m1")}),
    )
    clock = RecordingClock()
    client = make_client(handler, clock)
    run(client, lambda c: c.get_model(ORG, "m1"))
    assert clock.sleeps == [7.0]
    assert client.stats == ClientStats(requests=2, retries=1, rate_limited=1)


def test_retry_after_as_an_http_date_is_understood() -> None:
    clock = RecordingClock()
    when = email.utils.formatdate(clock.now() + 30, usegmt=True)
    handler, _ = sequence(
        api_error(503, 1007, "maintenance", **{"Retry-After": when}),
        httpx.Response(200, json={"model": model("m1")}),
    )
    run(make_client(handler, clock), lambda c: c.get_model(ORG, "m1"))
    assert clock.sleeps == [pytest.approx(30.0)]


def test_rate_limiting_that_never_ends_raises_rate_limited_with_the_api_words() -> None:
    handler, seen = sequence(api_error(429, 1004, "Too many requests", "Slow down", **{"Retry-After": "60"}))
    clock = RecordingClock()
    client = make_client(handler, clock, max_attempts=3)
    with pytest.raises(RateLimited) as caught:
        run(client, lambda c: c.list_models(ORG))
    assert len(seen) == 3
    assert clock.sleeps == [60.0, 60.0]
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (429, 1004, 60.0)
    assert str(error) == f"GET {MODELS}: 429 Too many requests (hint: Slow down)"
    assert client.stats.rate_limited == 3


@pytest.mark.parametrize("status", [500, 400, 401, 403, 404, 409, 412, 422])
def test_other_errors_are_not_retried(status: int) -> None:
    handler, seen = sequence(api_error(status, 1, "no"))
    with pytest.raises(APIError):
        run(make_client(handler), lambda c: c.get_model(ORG, "m1"))
    assert len(seen) == 1


def test_idempotent_writes_are_retried_too() -> None:
    handler, seen = sequence(
        api_error(503, 1007, "busy"),
        httpx.Response(204),
        api_error(504, 1, "gateway"),
        httpx.Response(202),
        httpx.ReadTimeout("slow"),
        httpx.Response(202),
    )

    async def work(client: CapellaClient) -> None:
        await client.update_model(ORG, "m1", {"name": "n"})
        await client.resume_model(ORG, "m1")
        await client.pause_model(ORG, "m1")

    run(make_client(handler), work)
    assert [r.method for r in seen] == ["PUT", "PUT", "POST", "POST", "DELETE", "DELETE"]


def test_connection_failures_of_reads_are_retried() -> None:
    handler, seen = sequence(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        httpx.Response(200, json={"data": []}),
    )
    client = make_client(handler)
    assert run(client, lambda c: c.list_api_keys(ORG)) == []
    assert len(seen) == 4 and client.stats.retries == 3


def test_a_connection_that_never_comes_back_is_a_transport_error_naming_the_call() -> None:
    handler, seen = sequence(httpx.ConnectError("connection refused"))
    with pytest.raises(TransportError) as caught:
        run(make_client(handler, max_attempts=4), lambda c: c.get_model(ORG, "m1"))
    assert len(seen) == 4
    assert str(caught.value) == (
        f"GET {MODELS}/m1: no answer from the API after 4 attempts: ConnectError: connection refused"
    )
    assert isinstance(caught.value, CapellaError)


def test_a_failure_no_retry_can_cure_is_raised_at_once() -> None:
    handler, seen = sequence(httpx.UnsupportedProtocol("no such scheme"))
    with pytest.raises(TransportError):
        run(make_client(handler), lambda c: c.get_model(ORG, "m1"))
    assert len(seen) == 1


# -- the shared Retry-After gate and the rate limiter -----------------------------------------------


class HoldingClock(RecordingClock):
    """Holds the first sleep until released, so another call can start while one waits."""

    def __init__(self) -> None:
        super().__init__()
        self.first_sleep = asyncio.Event()
        self.release = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        if not self.first_sleep.is_set():
            self.first_sleep.set()
            self.sleeps.append(seconds)
            await self.release.wait()
            self.advance(seconds)
            return
        await super().sleep(seconds)


def test_one_calls_retry_after_holds_back_every_call() -> None:
    async def main() -> tuple[list[tuple[str, float]], HoldingClock, CapellaClient]:
        clock = HoldingClock()
        start = clock.now()
        seen: list[tuple[str, float]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append((request.url.path.rsplit("/", 1)[-1], clock.now() - start))
            if len(seen) == 1:
                return api_error(429, 1004, "slow down", **{"Retry-After": "7"})
            return httpx.Response(200, json={"model": model("x")})

        client = make_client(handler, clock)
        async with client:
            first = asyncio.create_task(client.get_model(ORG, "a"))
            await clock.first_sleep.wait()
            # "b" never saw a 429 itself, yet it waits out the 7 s the API asked of "a".
            await client.get_model(ORG, "b")
            clock.release.set()
            await first
        return seen, clock, client

    seen, clock, client = asyncio.run(main())
    assert seen[0] == ("a", 0.0)
    assert seen[1][0] == "b" and seen[1][1] >= 7.0
    assert [name for name, _ in seen] == ["a", "b", "a"]
    assert clock.sleeps == [7.0, 7.0]
    assert client.stats == ClientStats(requests=3, retries=1, rate_limited=1)


def test_the_rate_limiter_spaces_requests_out() -> None:
    clock = RecordingClock()
    start = clock.now()
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(clock.now() - start)
        return httpx.Response(200, json={"model": model("x")})

    async def work(client: CapellaClient) -> None:
        for n in range(4):
            await client.get_model(ORG, f"m{n}")

    run(make_client(handler, clock, requests_per_minute=120, burst=1), work)
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_the_rate_limiter_lets_a_burst_through_then_paces() -> None:
    clock = RecordingClock()
    handler, seen = sequence(httpx.Response(200, json={"model": model("x")}))

    async def work(client: CapellaClient) -> None:
        await asyncio.gather(*(client.get_model(ORG, f"m{n}") for n in range(6)))

    run(make_client(handler, clock, requests_per_minute=60, burst=3), work)
    assert len(seen) == 6
    # Three go at once; the other three queue one second apart.
    assert clock.sleeps == pytest.approx([1.0, 1.0, 1.0])


def test_without_a_rate_limit_nothing_waits() -> None:
    clock = RecordingClock()
    handler, seen = sequence(httpx.Response(200, json={"model": model("x")}))

    async def work(client: CapellaClient) -> None:
        await asyncio.gather(*(client.get_model(ORG, f"m{n}") for n in range(50)))

    run(make_client(handler, clock), work)
    assert len(seen) == 50 and clock.sleeps == []


# -- creates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
        httpx.WriteTimeout("write timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_create_that_may_have_reached_the_api_is_never_resent(failure: Exception) -> None:
    handler, seen = sequence(failure, httpx.Response(202, json={"id": "m-dup"}))
    with pytest.raises(AmbiguousCreate) as caught:
        run(make_client(handler), lambda c: c.create_model(ORG, {"name": "chat-prod"}))
    assert len(seen) == 1
    assert (caught.value.kind, caught.value.name) == ("model", "chat-prod")
    assert type(failure).__name__ in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_create_answered_with_a_server_error_is_ambiguous(status: int) -> None:
    handler, seen = sequence(api_error(status, 10000, "internal"), httpx.Response(201, json={"id": "k"}))
    with pytest.raises(AmbiguousCreate) as caught:
        run(make_client(handler), lambda c: c.create_api_key(ORG, {"name": "app-key"}))
    assert len(seen) == 1
    assert (caught.value.kind, caught.value.name) == ("apiKey", "app-key")
    assert str(status) in str(caught.value)


def test_a_create_turned_away_by_the_rate_limit_is_retried() -> None:
    handler, seen = sequence(
        api_error(429, 1004, "slow down", **{"Retry-After": "2"}), httpx.Response(202, json={"id": "m1"})
    )
    clock = RecordingClock()
    assert run(make_client(handler, clock), lambda c: c.create_model(ORG, {"name": "chat"})) == "m1"
    assert len(seen) == 2 and clock.sleeps == [2.0]


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("connect timeout"), httpx.PoolTimeout("pool")],
    ids=lambda e: type(e).__name__,
)
def test_a_create_that_never_left_is_retried(failure: Exception) -> None:
    handler, seen = sequence(failure, httpx.Response(201, json={"id": "k1", "token": KEY_TOKEN}))
    created = run(make_client(handler), lambda c: c.create_api_key(ORG, {"name": "app"}))
    assert created.id == "k1" and created.token.reveal() == KEY_TOKEN
    assert len(seen) == 2


def test_a_create_that_never_connects_ends_as_a_transport_error_not_an_ambiguous_one() -> None:
    handler, seen = sequence(httpx.ConnectError("refused"))
    with pytest.raises(TransportError) as caught:
        run(make_client(handler, max_attempts=3), lambda c: c.create_model(ORG, {"name": "chat"}))
    assert len(seen) == 3 and not caught.value.sent


def test_a_create_refused_by_the_api_keeps_the_api_error() -> None:
    handler, seen = sequence(api_error(409, 1010, "name taken", "pick another"))
    with pytest.raises(Conflict, match="name taken"):
        run(make_client(handler), lambda c: c.create_model(ORG, {"name": "chat"}))
    assert len(seen) == 1


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, json={"token": KEY_TOKEN}),
        httpx.Response(201, json={"id": "k1"}),
        httpx.Response(201, text=f"<html>{KEY_TOKEN}"),
    ],
    ids=["no-id", "no-token", "not-json"],
)
def test_a_key_create_with_an_unreadable_answer_is_ambiguous_and_quotes_nothing(answer: httpx.Response) -> None:
    handler, _ = sequence(answer)
    with pytest.raises(AmbiguousCreate) as caught:
        run(make_client(handler), lambda c: c.create_api_key(ORG, {"name": "app"}))
    assert KEY_TOKEN not in traceback_text(caught.value)
    assert KEY_TOKEN not in repr(caught.value)


def test_a_model_create_without_an_id_is_ambiguous() -> None:
    handler, _ = sequence(httpx.Response(202, json={}))
    with pytest.raises(AmbiguousCreate, match="no model id"):
        run(make_client(handler), lambda c: c.create_model(ORG, {"name": "chat"}))


# -- deletes ----------------------------------------------------------------------------------------


def test_deleting_what_is_already_gone_succeeds() -> None:
    handler, seen = sequence(api_error(404, 3000, "not found"))

    async def work(client: CapellaClient) -> None:
        await client.delete_model(ORG, "m1")
        await client.delete_api_key(ORG, "k1")

    run(make_client(handler), work)
    assert len(seen) == 2


def test_a_delete_refused_for_another_reason_raises() -> None:
    handler, _ = sequence(api_error(409, 1010, "model is deploying"))
    with pytest.raises(Conflict):
        run(make_client(handler), lambda c: c.delete_model(ORG, "m1"))


# -- error answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, 1000, BadRequest),
        (401, 1001, Unauthorized),
        (403, 1002, Forbidden),
        (404, 3000, NotFound),
        (409, 1010, Conflict),
        (412, 1012, PreconditionFailed),
        (422, 1005, Unprocessable),
        (429, 1004, RateLimited),
        (500, 10000, ServerError),
        (503, 1007, ServerError),
        (418, 1, APIError),
    ],
)
def test_error_answers_become_typed_errors_with_the_api_message_and_hint(
    status: int, code: int, cls: type[APIError]
) -> None:
    handler, _ = sequence(api_error(status, code, "The thing failed.", "Try the other thing."))
    with pytest.raises(cls) as caught:
        run(make_client(handler, max_attempts=1), lambda c: c.get_model(ORG, "m1"))
    error = caught.value
    assert type(error) is cls
    assert (error.status, error.code, error.method, error.path) == (status, code, "GET", f"{MODELS}/m1")
    assert (error.message, error.hint) == ("The thing failed.", "Try the other thing.")
    assert str(error) == f"GET {MODELS}/m1: {status} The thing failed. (hint: Try the other thing.)"


def test_the_error_path_carries_no_query() -> None:
    handler, _ = sequence(api_error(403, 1002, "no access"))
    with pytest.raises(Forbidden) as caught:
        run(make_client(handler), lambda c: c.list_models(ORG))
    assert caught.value.path == MODELS


def test_a_proxy_html_page_is_an_unexpected_response_with_a_clean_excerpt() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head>\n<body><h1>nginx</h1>\x07" + "x" * 500
    handler, seen = sequence(httpx.Response(502, text=page, headers={"Content-Type": "text/html"}))
    with pytest.raises(UnexpectedResponse) as caught:
        run(make_client(handler, max_attempts=2), lambda c: c.get_model(ORG, "m1"))
    assert len(seen) == 2  # a 502 is worth retrying, whatever its body
    error = caught.value
    assert error.status == 502 and error.code == 0
    message = error.message
    assert "not the Capella API" in message and "text/html" in message
    assert "502 Bad Gateway nginx" in message
    assert "<" not in message and "\x07" not in message and "\n" not in message
    assert len(message) < 260
    assert "CAPELLA_API_URL" in error.hint


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (httpx.Response(500, content=b""), "empty body"),
        (httpx.Response(400, json={"code": 0, "message": "odd"}), "code 0: odd"),
        (httpx.Response(400, json=["a list"]), "application/json"),
        (httpx.Response(400, json={"error": "other shape"}), "other shape"),
        (httpx.Response(200, text="OK", headers={"Content-Type": "text/plain"}), "text/plain: OK"),
        (httpx.Response(302, headers={"Location": "https://login.test/"}), "redirect to https://login.test/"),
    ],
)
def test_answers_that_are_not_the_api_are_unexpected(answer: httpx.Response, words: str) -> None:
    handler, _ = sequence(answer)
    with pytest.raises(UnexpectedResponse) as caught:
        run(make_client(handler, max_attempts=1), lambda c: c.get_model(ORG, "m1"))
    assert caught.value.status == answer.status_code
    assert words in caught.value.message
    assert str(answer.status_code) in str(caught.value)


# -- secrets ----------------------------------------------------------------------------------------


def echoing_server(kind: str) -> Handler:
    """A misbehaving server or proxy that repeats the Authorization header back."""

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers["Authorization"]
        if kind == "json":
            return api_error(401, 1001, f"bad credentials {auth}", f"check {auth}")
        if kind == "html":
            return httpx.Response(400, text=f"<pre>{auth}</pre>", headers={"Content-Type": "text/html"})
        raise httpx.ConnectError(f"refused while sending {auth}", request=request)

    return handler


@pytest.mark.parametrize("kind", ["json", "html", "connect"])
def test_the_token_never_appears_in_an_error(kind: str) -> None:
    with pytest.raises(CapellaError) as caught:
        run(make_client(echoing_server(kind), max_attempts=2), lambda c: c.get_model(ORG, "m1"))
    error = caught.value
    for text in (str(error), repr(error), traceback_text(error)):
        assert TOKEN not in text
    assert "********" in str(error)


def test_the_token_never_appears_in_the_client_repr() -> None:
    client = make_client(echoing_server("json"))
    assert TOKEN not in repr(client) and TOKEN not in str(client)
    assert TOKEN not in repr(vars(client))
    asyncio.run(client.aclose())


def test_nothing_secret_is_logged_even_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    handler, _ = sequence(
        httpx.Response(201, json={"id": "k1", "token": KEY_TOKEN}),
        api_error(503, 1007, "busy"),
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"data": [{"keyId": "k1"}]}),
        api_error(401, 1001, "bad token"),
    )

    async def work(client: CapellaClient) -> None:
        created = await client.create_api_key(ORG, {"name": "app"})
        assert KEY_TOKEN not in repr(created) and KEY_TOKEN not in str(created)
        await client.list_api_keys(ORG)
        with pytest.raises(Unauthorized):
            await client.get_model(ORG, "m1")

    with caplog.at_level(logging.DEBUG):
        run(make_client(handler), work)
    assert TOKEN not in caplog.text and KEY_TOKEN not in caplog.text
    http_lines = [r.getMessage() for r in caplog.records if r.name == "capella_deploy.http"]
    assert f"POST {KEYS} -> 201" in "\n".join(http_lines)
    assert any("attempt 2" in line for line in http_lines)
    assert any("retrying" in line for line in http_lines)


@pytest.mark.parametrize("bad", ["two words", "line\nbreak", "", "caf\u00e9"])
def test_a_token_the_http_layer_would_echo_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CapellaClient(base_url=BASE, token=Secret(bad), transport=httpx.MockTransport(echoing_server("json")))
    if bad:
        assert bad not in str(caught.value)


# -- configuration ----------------------------------------------------------------------------------


def test_the_token_file_wins_over_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    token = load_token(token_file=token_file, environ={"CAPELLA_API_TOKEN": "from-env"})
    assert token.reveal() == TOKEN


def test_the_token_comes_from_the_environment() -> None:
    assert load_token(token_file=None, environ={"CAPELLA_API_TOKEN": f"{TOKEN}\n"}).reveal() == TOKEN


@pytest.mark.parametrize("environ", [{}, {"CAPELLA_API_TOKEN": "  "}])
def test_no_token_says_what_to_set(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="CAPELLA_API_TOKEN") as caught:
        load_token(token_file=None, environ=environ)
    assert "--token-file" in str(caught.value)


def test_an_empty_or_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_token(token_file=empty, environ={"CAPELLA_API_TOKEN": TOKEN})
    with pytest.raises(ConfigError, match="cannot read"):
        load_token(token_file=tmp_path / "absent", environ={})


def test_a_token_file_with_inner_whitespace_is_refused_without_showing_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-half second-half")
    with pytest.raises(ConfigError) as caught:
        load_token(token_file=token_file, environ={})
    assert "half" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://api.test", "not a url", "https://user:pw@api.test", "http://api.example.com", "https://api.test/?x=1"],
)
def test_a_bad_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="CAPELLA_API_URL"):
        CapellaClient(base_url=url, token=Secret(TOKEN))


@pytest.mark.parametrize("url", [DEFAULT_API_URL, "http://127.0.0.1:8080", "http://localhost:9000/"])
def test_good_base_urls_are_accepted(url: str) -> None:
    client = CapellaClient(base_url=url, token=Secret(TOKEN))
    asyncio.run(client.aclose())


def test_the_default_api_url_is_capella() -> None:
    assert DEFAULT_API_URL == "https://cloudapi.cloud.couchbase.com"
