"""The client against answers a hostile or broken server could give, played by ``httpx.MockTransport`` handlers.

Deep JSON, a Retry-After of years, listings that never end, a page size refused, secrets echoed in a
redirect. Time is a ``ManualClock`` that records each sleep asked of it: nothing here waits for real.
The same answers served over real HTTP, through the CLI, are in tests/reliability/test_hostile_answers.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest

from capella_deploy.api.client import (
    ANNOUNCED_WAIT,
    FALLBACK_PER_PAGE,
    MAX_JSON_DEPTH,
    MAX_RETRY_AFTER,
    PAGE_CONCURRENCY,
    PER_PAGE,
    CapellaClient,
)
from capella_deploy.clock import ManualClock
from capella_deploy.errors import (
    AmbiguousCreate,
    APIError,
    RateLimited,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
)
from capella_deploy.secrets import MASK, Secret

ORG = "0b4e7c52-3f1a-4d6e-9a8b-2c5d7e9f1a3b"
TOKEN = "cbhostile+Mgmt/Token=7f3a9c1e5b"
BASE = "https://api.hostile.test"
MODELS = f"/v4/organizations/{ORG}/aiServices/models"
KEYS = f"{MODELS}/apiKeys"

T = TypeVar("T")


class RecordingClock(ManualClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def client_for(handler: Callable[[httpx.Request], httpx.Response], clock: ManualClock | None = None) -> CapellaClient:
    return CapellaClient(
        base_url=BASE,
        token=Secret(TOKEN),
        transport=httpx.MockTransport(handler),
        clock=clock or RecordingClock(),
        backoff_base=0.01,
        backoff_max=0.1,
    )


def run(client: CapellaClient, work: Callable[[CapellaClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with client:
            return await work(client)

    return asyncio.run(main())


def api_error(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    body = {"httpStatusCode": status, "code": code, "message": message, "hint": "h"}
    return httpx.Response(status, json=body, headers=headers)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- deeply nested JSON ---------------------------------------------------------------------------------


def deep_answers(depth: int) -> dict[str, httpx.Response]:
    body = nested(depth)
    return {
        "a listing": httpx.Response(200, content=b'{"data": [{"model": {"id": "m", "config": ' + body + b"}}]}"),
        "a get": httpx.Response(200, content=b'{"model": {"id": "m", "x": ' + body + b"}}"),
        "an error answer": httpx.Response(404, content=b'{"code": 3000, "message": "gone", "hint": ' + body + b"}"),
        "a bare array": httpx.Response(200, content=body),
    }


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
@pytest.mark.parametrize("answer", sorted(deep_answers(1)))
def test_deeply_nested_json_is_a_typed_error_naming_the_call(depth: int, answer: str) -> None:
    response = deep_answers(depth)[answer]
    call: Callable[[CapellaClient], Awaitable[Any]] = (
        (lambda c: c.list_models(ORG)) if answer == "a listing" else (lambda c: c.get_model(ORG, "m"))
    )
    with pytest.raises(UnexpectedResponse) as caught:
        run(client_for(lambda request: response), call)
    message = str(caught.value)
    assert message.startswith(f"GET {MODELS}")
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in message
    assert len(message) < 500


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_a_create_answered_with_deep_json_is_ambiguous_not_a_crash(depth: int) -> None:
    response = httpx.Response(201, content=b'{"id": "k", "token": "t", "x": ' + nested(depth) + b"}")
    with pytest.raises(AmbiguousCreate, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        run(client_for(lambda request: response), lambda c: c.create_api_key(ORG, {"name": "app"}))


def test_the_depth_bound_is_exact() -> None:
    def answer_nested(levels: int) -> httpx.Response:
        inner: Any = "leaf"
        for _ in range(levels - 2):  # under the answer's own two levels: {"model": {"x": ...}}
            inner = [inner]
        return httpx.Response(200, json={"model": {"id": "m", "x": inner}})

    at_bound = answer_nested(MAX_JSON_DEPTH)
    assert run(client_for(lambda request: at_bound), lambda c: c.get_model(ORG, "m"))["id"] == "m"
    past_bound = answer_nested(MAX_JSON_DEPTH + 1)
    with pytest.raises(UnexpectedResponse, match="nested deeper"):
        run(client_for(lambda request: past_bound), lambda c: c.get_model(ORG, "m"))


# -- Retry-After --------------------------------------------------------------------------------------------


FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"


@pytest.mark.parametrize(
    ("status", "header"), [(429, "100000000"), (503, FAR_DATE), (429, "1e300"), (503, str(MAX_RETRY_AFTER + 1))]
)
def test_a_retry_after_of_years_is_capped_and_announced(
    status: int, header: str, caplog: pytest.LogCaptureFixture
) -> None:
    answers = [api_error(status, 1004, "later", **{"Retry-After": header}), httpx.Response(200, json={"model": {}})]
    clock = RecordingClock()
    with caplog.at_level(logging.WARNING, logger="capella_deploy.http"):
        run(client_for(lambda request: answers.pop(0), clock), lambda c: c.get_model(ORG, "m1"))
    assert clock.sleeps == [MAX_RETRY_AFTER]
    [line] = [r.getMessage() for r in caplog.records if r.name == "capella_deploy.http"]
    assert line.startswith(f"GET {MODELS}/m1: the API answered {status} and asks to wait")
    assert f"capped at {MAX_RETRY_AFTER:g} s" in line and "\n" not in line


def test_a_long_retry_after_is_announced_once_and_a_short_one_not_at_all(caplog: pytest.LogCaptureFixture) -> None:
    short = str(int(ANNOUNCED_WAIT))
    answers = [
        api_error(429, 1004, "later", **{"Retry-After": short}),
        httpx.Response(200, json={"model": {}}),
        api_error(429, 1004, "later", **{"Retry-After": "60"}),
        httpx.Response(200, json={"model": {}}),
    ]
    clock = RecordingClock()

    async def work(client: CapellaClient) -> None:
        await client.get_model(ORG, "quiet")
        await client.get_model(ORG, "loud")

    with caplog.at_level(logging.WARNING, logger="capella_deploy.http"):
        run(client_for(lambda request: answers.pop(0), clock), work)
    assert clock.sleeps == [ANNOUNCED_WAIT, 60.0]
    lines = [r.getMessage() for r in caplog.records if r.name == "capella_deploy.http"]
    assert lines == [
        f"GET {MODELS}/loud: the API answered 429 and asks to wait 60 s (Retry-After); no call goes out until then"
    ]


def test_a_retry_after_date_in_the_far_future_holds_other_calls_no_longer_than_the_cap() -> None:
    clock = RecordingClock()
    start = clock.now()
    seen: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path.rsplit("/", 1)[-1], clock.now() - start))
        if len(seen) == 1:
            return api_error(429, 1004, "later", **{"Retry-After": FAR_DATE})
        return httpx.Response(200, json={"model": {}})

    async def work(client: CapellaClient) -> None:
        await asyncio.gather(client.get_model(ORG, "a"), client.get_model(ORG, "b"))

    run(client_for(handler, clock), work)
    assert max(at for _, at in seen) == pytest.approx(MAX_RETRY_AFTER)


def test_rate_limiting_that_never_ends_stops_after_the_attempts_with_capped_waits() -> None:
    clock = RecordingClock()

    def handler(request: httpx.Request) -> httpx.Response:
        return api_error(429, 1004, "slow down", **{"Retry-After": FAR_DATE})

    with pytest.raises(RateLimited) as caught:
        run(client_for(handler, clock), lambda c: c.get_model(ORG, "m1"))
    assert caught.value.retry_after == MAX_RETRY_AFTER
    assert clock.sleeps and set(clock.sleeps) == {MAX_RETRY_AFTER}


# -- listings that never end ----------------------------------------------------------------------------------


def endless(rows: Callable[[int], list[dict[str, Any]]], *, last: int | None = None) -> tuple[Any, list[int]]:
    """A listing whose every page points at the next one, for ever."""
    pages: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        pages.append(page)
        cursor: dict[str, Any] = {"page": page, "next": page + 1, "perPage": 100}
        if last is not None:
            cursor["last"] = last
        return httpx.Response(200, json={"data": rows(page), "cursor": {"pages": cursor}})

    return handler, pages


@pytest.mark.parametrize(
    ("rows", "stops_at", "words"),
    [
        (lambda page: [], 1, "page 1 is empty yet points to page 2"),
        (lambda page: [{"model": {"id": "same"}}], 2, "page 2 adds no item not listed before yet points to page 3"),
        (lambda page: [{"keyId": f"k{min(page, 3)}"}], 4, "page 4 adds no item not listed before yet points to page 5"),
        (lambda page: [{"model": {"name": "no id"}}], 1, "page 1 adds no item not listed before"),
    ],
    ids=["empty pages", "a cursor that repeats", "a cursor that sticks", "items without an id"],
)
def test_a_page_that_adds_nothing_yet_points_on_ends_the_listing_at_once(
    rows: Callable[[int], list[dict[str, Any]]], stops_at: int, words: str
) -> None:
    handler, pages = endless(rows)
    with pytest.raises(UnexpectedResponse) as caught:
        run(client_for(handler), lambda c: c.list_api_keys(ORG))
    assert pages == list(range(1, stops_at + 1))
    assert str(caught.value).startswith(f"GET {KEYS}: 200") and words in str(caught.value)


def test_pages_fetched_side_by_side_stop_at_the_first_that_adds_nothing() -> None:
    # The first page claims 9,999 pages; every later one is empty but points on.
    handler, pages = endless(lambda page: [{"model": {"id": "first"}}] if page == 1 else [], last=9_999)
    with pytest.raises(UnexpectedResponse, match="is empty yet points to page"):
        run(client_for(handler), lambda c: c.list_models(ORG))
    assert len(pages) <= 1 + PAGE_CONCURRENCY

    # An empty page that points nowhere is only the end, emptied while listing: no error.
    def shrinking(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        cursor = {"page": page, "last": 3, "next": page + 1 if page < 3 else 0}
        data = [{"model": {"id": f"m{page}"}}] if page < 3 else []
        return httpx.Response(200, json={"data": data, "cursor": {"pages": cursor}})

    assert [m["id"] for m in run(client_for(shrinking), lambda c: c.list_models(ORG))] == ["m1", "m2"]


# -- a refused page size -----------------------------------------------------------------------------------------


def picky_server(refusal: httpx.Response, *, limit: int = FALLBACK_PER_PAGE) -> tuple[Any, list[int]]:
    """Pages of at most ``limit``; a larger perPage is refused with ``refusal``. 30 models, no keys."""
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        per_page, page = int(request.url.params["perPage"]), int(request.url.params["page"])
        asked.append(per_page)
        if per_page > limit:
            return refusal
        rows = [] if request.url.path.endswith("apiKeys") else [f"m{i:02d}" for i in range(30)]
        chunk = rows[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(rows) // per_page))
        cursor = {"page": page, "last": last, "next": page + 1 if page < last else 0, "perPage": per_page}
        data = [{"keyId": r} if "apiKeys" in request.url.path else {"model": {"id": r}} for r in chunk]
        return httpx.Response(200, json={"data": data, "cursor": {"pages": cursor}})

    return handler, asked


@pytest.mark.parametrize(
    "refusal",
    [
        api_error(422, 1005, "perPage must be between 1 and 25"),
        api_error(400, 1000, "perPage too large"),
        httpx.Response(400, text="perPage too large"),
    ],
    ids=["422", "400", "400 without the error body"],
)
def test_a_refused_page_size_falls_back_to_smaller_pages_for_the_rest_of_the_run(refusal: httpx.Response) -> None:
    handler, asked = picky_server(refusal)

    async def work(client: CapellaClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        models = await client.list_models(ORG)
        return models, await client.list_api_keys(ORG)

    models, keys = run(client_for(handler), work)
    assert [m["id"] for m in models] == [f"m{i:02d}" for i in range(30)] and keys == []
    # One refusal, then every request of the run asks for the smaller size, the next listing included.
    assert asked == [PER_PAGE, FALLBACK_PER_PAGE, FALLBACK_PER_PAGE, FALLBACK_PER_PAGE]


def test_the_smaller_size_is_tried_once_and_only_after_a_validation_refusal() -> None:
    handler, asked = picky_server(api_error(422, 1005, "perPage is not accepted"), limit=10)
    with pytest.raises(Unprocessable, match="perPage is not accepted"):
        run(client_for(handler), lambda c: c.list_models(ORG))
    assert asked == [PER_PAGE, FALLBACK_PER_PAGE]

    handler, asked = picky_server(api_error(401, 1001, "bad token"))
    with pytest.raises(Unauthorized):
        run(client_for(handler), lambda c: c.list_models(ORG))
    assert asked == [PER_PAGE]


# -- secrets echoed back ---------------------------------------------------------------------------------------


def test_a_redirect_to_a_location_holding_known_secrets_is_reported_masked() -> None:
    key_token = "cbhostile-key-token-5d2e8a"
    created = [httpx.Response(201, json={"id": "k1", "token": key_token})]
    location = f"https://elsewhere.example/login?t={quote(TOKEN, safe='')}&raw={TOKEN}&key={key_token}"

    def handler(request: httpx.Request) -> httpx.Response:
        if created:
            return created.pop()
        return httpx.Response(302, headers={"Location": location})

    async def work(client: CapellaClient) -> APIError:
        await client.create_api_key(ORG, {"name": "app"})
        try:
            await client.list_models(ORG)
        except APIError as exc:
            return exc
        raise AssertionError("a redirect is not a listing")

    error = run(client_for(handler), work)
    text = str(error)
    assert "a redirect to https://elsewhere.example/login?t=" in text
    for secret in (TOKEN, quote(TOKEN, safe=""), key_token):
        assert secret not in text
    assert text.count(MASK) == 3
    assert json.dumps(vars(error)).count(MASK) == 3
