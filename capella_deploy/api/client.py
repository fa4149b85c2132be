"""The only code that speaks HTTP to the Capella Management API.

One ``httpx.AsyncClient`` per ``CapellaClient`` keeps connections alive across calls. Every request
passes a shared gate (closed by a Retry-After) and an optional token bucket before it goes out.
Idempotent calls are retried on 429/502/503/504 and lost connections with full-jitter backoff; a
create is retried only when the API cannot have acted on it, otherwise it fails with
``AmbiguousCreate`` so the caller can look the resource up by name instead of making a duplicate.

Answers are not trusted to be sane: JSON nested deeper than ``MAX_JSON_DEPTH`` is refused before it is
walked, a Retry-After waits at most ``MAX_RETRY_AFTER`` and a long one is announced, a listing stops at
the first page that adds nothing yet points on, and a refused page size falls back to smaller pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from capella_deploy import __version__
from capella_deploy.api.ratelimit import RetryGate, TokenBucket
from capella_deploy.clock import Clock, SystemClock
from capella_deploy.errors import (
    AmbiguousCreate,
    APIError,
    BadRequest,
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
from capella_deploy.net import plain_http_problem
from capella_deploy.secrets import API_TOKEN_VARIABLE, MASK, Secret, redact

DEFAULT_API_URL = "https://cloudapi.cloud.couchbase.com"
USER_AGENT = f"capella-deploy/{__version__} (+python-httpx/{httpx.__version__})"
PER_PAGE = 100
# The page size used for the rest of a run once a server refuses PER_PAGE (the spec states no maximum; the
# official Terraform provider pages with 25).
FALLBACK_PER_PAGE = 25
# A bound on what a listing may claim, so a broken or hostile cursor cannot make the client spin: a million
# resources at the largest page size.
MAX_PAGES = 10_000
# Pages after the first are fetched concurrently, this many at a time per listing.
PAGE_CONCURRENCY = 8
# The longest wait a Retry-After can impose at once, whether it says 60 s or a date in the year 9999.
MAX_RETRY_AFTER = 300.0
# A Retry-After wait longer than this is announced (a warning, shown by default), so a run never hangs silently.
ANNOUNCED_WAIT = 5.0
# Capella's answers nest a few levels; deeper JSON is refused before anything walks it.
MAX_JSON_DEPTH = 64

log = logging.getLogger("capella_deploy.http")

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    422: Unprocessable,
    429: RateLimited,
}
# Failures where the connection never carried the request: safe to retry even for a create.
_NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures a second attempt may cure; anything else (bad scheme, proxy refusal…) fails at once.
_TRANSIENT: tuple[type[Exception], ...] = (
    *_NOT_SENT,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
_UNEXPECTED_HINT = (
    "check that CAPELLA_API_URL points at the Capella Management API; a proxy or gateway may be answering"
)
_EXCERPT_CHARS = 160


@dataclass(frozen=True)
class CreatedKey:
    id: str
    token: Secret


@dataclass(frozen=True)
class ClientStats:
    requests: int
    retries: int
    rate_limited: int


def load_token(*, token_file: str | Path | None, environ: Mapping[str, str]) -> Secret:
    """The Management API token: from ``token_file`` if given, else the environment (CAPELLA_API_TOKEN)."""
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"cannot read the token file {token_file}: {reason}") from None
        token = text.strip()
        if not token:
            raise ConfigError(f"the token file {token_file} is empty")
        source = f"the token file {token_file}"
    else:
        token = environ.get(API_TOKEN_VARIABLE, "").strip()
        if not token:
            raise ConfigError(
                f"no Management API token: set {API_TOKEN_VARIABLE} or pass --token-file FILE "
                "(the token is never accepted on the command line)"
            )
        source = API_TOKEN_VARIABLE
    secret = Secret(token)
    _check_token(secret, source)
    return secret


def _check_token(token: Secret, source: str | None = None) -> None:
    # A control character or space would be refused by the HTTP library with the header value, token and
    # all, in its error message; refuse it here without showing it.
    if not token or not all(33 <= ord(c) <= 126 for c in token.reveal()):
        origin = f" from {source}" if source else ""
        raise ConfigError(f"the API token{origin} is empty or has spaces or non-printable characters")


def _check_base_url(base_url: str, *, custom_transport: bool) -> str:
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise ConfigError(f"CAPELLA_API_URL {base_url!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"CAPELLA_API_URL {base_url!r} must be an http(s) URL with a host")
    if url.userinfo:
        raise ConfigError("CAPELLA_API_URL must not carry credentials; set CAPELLA_API_TOKEN instead")
    if url.query or url.fragment:
        raise ConfigError(f"CAPELLA_API_URL {base_url!r} must not have a query or fragment")
    problem = None if custom_transport else plain_http_problem(url, "the API token")
    if problem is not None:
        raise ConfigError(f"CAPELLA_API_URL: {problem}")
    return base_url.rstrip("/")


class _BearerAuth(httpx.Auth):
    """Adds the token to each request as it leaves, so no long-lived headers object holds it."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Whether repeating the call after an unclear failure is harmless.
    idempotent: bool = True


@dataclass
class _Page:
    number: int
    items: list[dict[str, Any]]
    next: int
    last: int
    per_page: int


class _Unreadable(Exception):
    """A body that is not a JSON object this client will read; the message says why."""


class _TooDeep(_Unreadable):
    pass


class CapellaClient:
    def __init__(
        self,
        *,
        base_url: str,
        token: Secret,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        requests_per_minute: float | None = None,
        max_connections: int = 20,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        burst: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``burst``: requests the rate limiter lets through at once (default: a tenth of the per-minute rate,
        between 1 and 10).

        ``clock`` supplies the time and the sleeps for backoff, Retry-After and rate limiting.
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        _check_token(token)
        self._base_url = _check_base_url(base_url, custom_transport=transport is not None)
        self._token = token
        self._clock: Clock = clock or SystemClock()
        self._max_attempts = max_attempts
        # httpx's timeout bounds each read; a server trickling bytes could hold a call for ever, so one
        # attempt as a whole gets twice the per-read limit.
        self._attempt_limit = 2 * timeout
        self._jitter = wait_random_exponential(multiplier=backoff_base, max=backoff_max)
        self._gate = RetryGate(self._clock)
        self._bucket: TokenBucket | None = None
        self._requests_per_minute = requests_per_minute
        if requests_per_minute is not None:
            default_burst = max(1, min(10, int(requests_per_minute / 10)))
            self._bucket = TokenBucket(per_minute=requests_per_minute, burst=burst or default_burst, clock=self._clock)
        self._requests = 0
        self._retries = 0
        self._rate_limited = 0
        self._per_page = PER_PAGE
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            auth=_BearerAuth(token),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            # A redirect would mean CAPELLA_API_URL is wrong; follow none, report it.
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"CapellaClient(base_url={self._base_url!r}, token={self._token!r})"

    async def __aenter__(self) -> CapellaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def requests_per_minute(self) -> float | None:
        """The pace this client keeps to; None when only the API's own 429 answers slow it down."""
        return self._requests_per_minute

    @property
    def stats(self) -> ClientStats:
        return ClientStats(requests=self._requests, retries=self._retries, rate_limited=self._rate_limited)

    # -- organizations -----------------------------------------------------------------------------

    async def list_organizations(self) -> list[dict[str, Any]]:
        # The documented call takes no paging parameters; a cursor in the answer is still followed.
        return await self._list("/v4/organizations", first_params={})

    async def get_organization(self, org_id: str) -> dict[str, Any]:
        return await self._json(_Call("GET", _path("v4", "organizations", org_id)))

    # -- models ------------------------------------------------------------------------------------

    async def list_models(self, org_id: str) -> list[dict[str, Any]]:
        return [_unwrap_model(item) for item in await self._list(_models(org_id))]

    async def get_model(self, org_id: str, model_id: str) -> dict[str, Any]:
        return _unwrap_model(await self._json(_Call("GET", _models(org_id, model_id))))

    async def create_model(self, org_id: str, body: dict[str, Any]) -> str:
        answer = await self._create("model", _Call("POST", _models(org_id), body=body, idempotent=False))
        model_id = answer.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise AmbiguousCreate(kind="model", name=_name_of(body), reason="the answer carried no model id")
        return model_id

    async def update_model(
        self, org_id: str, model_id: str, body: dict[str, Any], *, if_match: int | None = None
    ) -> None:
        headers = {} if if_match is None else {"If-Match": str(if_match)}
        await self._request(_Call("PUT", _models(org_id, model_id), body=body, headers=headers))

    async def delete_model(self, org_id: str, model_id: str) -> None:
        # A 404 means already gone, which is what the caller wanted.
        with contextlib.suppress(NotFound):
            await self._request(_Call("DELETE", _models(org_id, model_id)))

    async def pause_model(self, org_id: str, model_id: str) -> None:
        await self._request(_Call("DELETE", _models(org_id, model_id, "activationState")))

    async def resume_model(self, org_id: str, model_id: str) -> None:
        # A POST, but asking a model to resume twice cannot make a second model.
        await self._request(_Call("POST", _models(org_id, model_id, "activationState")))

    async def get_connection_string(self, org_id: str, model_id: str) -> str:
        call = _Call("GET", _models(org_id, model_id, "connectionString"))
        answer = await self._json(call)
        value = answer.get("connectionString")
        if not isinstance(value, str):
            raise self._unexpected(call, 200, "the answer has no connectionString")
        return value

    # -- model API keys ----------------------------------------------------------------------------

    async def list_api_keys(self, org_id: str) -> list[dict[str, Any]]:
        return await self._list(_models(org_id, "apiKeys"))

    async def create_api_key(self, org_id: str, body: dict[str, Any]) -> CreatedKey:
        call = _Call("POST", _models(org_id, "apiKeys"), body=body, idempotent=False)
        answer = await self._create("apiKey", call)
        key_id, token = answer.get("id"), answer.get("token")
        if not isinstance(key_id, str) or not key_id or not isinstance(token, str) or not token:
            raise AmbiguousCreate(
                kind="apiKey", name=_name_of(body), reason="the answer did not carry both the key id and token"
            )
        return CreatedKey(id=key_id, token=Secret(token))

    async def delete_api_key(self, org_id: str, key_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self._request(_Call("DELETE", _models(org_id, "apiKeys", key_id)))

    # -- AI provider integrations ------------------------------------------------------------------

    async def list_providers(self, org_id: str) -> list[dict[str, Any]]:
        return await self._list(_providers(org_id))

    async def create_provider(self, org_id: str, body: dict[str, Any]) -> str:
        # The body carries credentials: like a key's token, it is never quoted in an error or a log line.
        answer = await self._create("provider", _Call("POST", _providers(org_id), body=body, idempotent=False))
        provider_id = answer.get("id")
        if not isinstance(provider_id, str) or not provider_id:
            raise AmbiguousCreate(kind="provider", name=_name_of(body), reason="the answer carried no provider id")
        return provider_id

    async def update_provider(
        self, org_id: str, provider_id: str, body: dict[str, Any], *, if_match: int | None = None
    ) -> None:
        headers = {} if if_match is None else {"If-Match": str(if_match)}
        await self._request(_Call("PUT", _providers(org_id, provider_id), body=body, headers=headers))

    async def delete_provider(self, org_id: str, provider_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self._request(_Call("DELETE", _providers(org_id, provider_id)))

    # -- pagination --------------------------------------------------------------------------------

    async def _list(self, path: str, *, first_params: Mapping[str, str | int] | None = None) -> list[dict[str, Any]]:
        call = _Call("GET", path)
        first = await self._first_page(path, first_params)
        if first.last > MAX_PAGES:
            raise self._unexpected(call, 200, f"the listing claims {first.last} pages (more than {MAX_PAGES})")
        seen: set[str] = set()
        self._check_progress(call, first, seen)
        pages = [first]
        current = 1
        if first.last > 1 and first.next == 2:
            # The first page told how many there are: fetch the rest side by side, in order.
            async def checked(number: int) -> _Page:
                page = await self._page(path, number, _paging(number, first.per_page))
                self._check_progress(call, page, seen)
                return page

            pages += await self._gather(checked, range(2, first.last + 1))
            current = first.last
        # Without `last`, or when items arrived while listing, walk on one page at a time.
        while pages[-1].next > current:
            if len(pages) >= MAX_PAGES:
                raise self._unexpected(call, 200, f"the listing goes on past {MAX_PAGES} pages")
            current = pages[-1].next
            page = await self._page(path, current, _paging(current, pages[-1].per_page))
            self._check_progress(call, page, seen)
            pages.append(page)
        return _deduplicated(item for page in pages for item in page.items)

    async def _first_page(self, path: str, first_params: Mapping[str, str | int] | None) -> _Page:
        if first_params is not None:
            return await self._page(path, 1, first_params)
        asked = self._per_page
        try:
            return await self._page(path, 1, _paging(1, asked))
        except APIError as exc:
            # A validation refusal of the page size: every later listing of this run asks for smaller pages.
            if exc.status not in (400, 422) or asked <= FALLBACK_PER_PAGE:
                raise
            log.info(
                "GET %s: perPage=%d refused with %d; listing %d a page from now on",
                path,
                asked,
                exc.status,
                FALLBACK_PER_PAGE,
            )
            self._per_page = FALLBACK_PER_PAGE
            return await self._page(path, 1, _paging(1, FALLBACK_PER_PAGE))

    def _check_progress(self, call: _Call, page: _Page, seen: set[str]) -> None:
        """Stop a listing at a page that gives nothing new yet points on: a cursor that would never end."""
        new = {identity for identity in map(_identity, page.items) if identity is not None and identity not in seen}
        seen.update(new)
        if not new and page.next > page.number:
            what = "is empty" if not page.items else "adds no item not listed before"
            raise self._unexpected(
                call, 200, f"page {page.number} {what} yet points to page {page.next}; the listing was stopped there"
            )

    async def _page(self, path: str, number: int, params: Mapping[str, str | int]) -> _Page:
        call = _Call("GET", path, params=params)
        answer = await self._json(call)
        data = answer.get("data")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise self._unexpected(call, 200, f"page {number} has no list of objects under 'data'")
        cursor = answer.get("cursor")
        pages = cursor.get("pages") if isinstance(cursor, dict) else None
        pages = pages if isinstance(pages, dict) else {}
        per_page = _positive_int(pages.get("perPage")) or self._per_page
        return _Page(
            number,
            data,
            next=_positive_int(pages.get("next")),
            last=_positive_int(pages.get("last")),
            per_page=per_page,
        )

    @staticmethod
    async def _gather(fetch: Callable[[int], Awaitable[_Page]], numbers: Iterable[int]) -> list[_Page]:
        semaphore = asyncio.Semaphore(PAGE_CONCURRENCY)
        failed = False

        async def bounded(number: int) -> _Page | None:
            nonlocal failed
            async with semaphore:
                # Pages queued behind a failed one are not fetched: the listing has failed already.
                if failed:
                    return None
                try:
                    return await fetch(number)
                except BaseException:
                    failed = True
                    raise

        tasks = [asyncio.ensure_future(bounded(number)) for number in numbers]
        try:
            pages = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [page for page in pages if page is not None]

    # -- requests ----------------------------------------------------------------------------------

    async def _create(self, kind: str, call: _Call) -> dict[str, Any]:
        """POST a create; any failure that leaves its outcome unknown becomes ``AmbiguousCreate``."""
        name = _name_of(call.body)
        try:
            response = await self._request(call)
        except TransportError as exc:
            if not exc.sent:
                raise
            raise AmbiguousCreate(kind=kind, name=name, reason=f"no answer: {exc.detail}") from exc
        except APIError as exc:
            if exc.status < 500:
                raise
            raise AmbiguousCreate(kind=kind, name=name, reason=f"{exc.status} {exc.message}") from exc
        # The body of a key create holds the key's token: it is read here and never quoted in an error.
        try:
            return _parse_object(response.content)
        except _Unreadable as exc:
            reason = f"{response.status_code} answer with an unreadable body ({exc})"
            raise AmbiguousCreate(kind=kind, name=name, reason=reason) from None

    async def _json(self, call: _Call) -> dict[str, Any]:
        response = await self._request(call)
        answer = _json_object(response)
        if answer is None:
            raise self._unexpected(call, response.status_code, self._describe_body(response))
        return answer

    async def _request(self, call: _Call) -> httpx.Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._backoff,
            retry=retry_if_exception(lambda exc: self._should_retry(call, exc)),
            sleep=self._clock.sleep,
            before_sleep=lambda state: self._note_retry(call, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(call, attempt.retry_state.attempt_number)
        raise AssertionError("tenacity ends with a result or an exception")

    async def _send(self, call: _Call, attempt: int) -> httpx.Response:
        await self._gate.wait()
        bucket = self._bucket
        if bucket is None:
            return await self._send_now(call, attempt)
        ticket = await bucket.acquire()
        # A 429 may have closed the gate while this call queued for a token.
        await self._gate.wait()
        try:
            return await self._send_now(call, attempt)
        finally:
            bucket.answered(ticket)

    async def _send_now(self, call: _Call, attempt: int) -> httpx.Response:
        self._requests += 1
        started = time.perf_counter()
        failure: tuple[str, bool, bool] | None = None
        try:
            # A cancel scope, not asyncio.wait_for: no extra task, so calls keep the order they were made in.
            with anyio.fail_after(self._attempt_limit):
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.body, headers=call.headers
                )
        except TimeoutError:
            failure = (f"no complete answer within {self._attempt_limit:g} s", True, True)
        except httpx.TransportError as exc:
            # Only strings leave this block: the httpx exception holds the request, and its headers the token.
            failure = (
                self._scrub(_describe_exception(exc)),
                not isinstance(exc, _NOT_SENT),
                isinstance(exc, _TRANSIENT),
            )
        except httpx.HTTPError as exc:
            # The rest (an undecodable body, a redirect loop): the request went out, and trying again won't help.
            failure = (self._scrub(_describe_exception(exc)), True, False)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if failure is not None:
            detail, sent, transient = failure
            log.debug(
                "%s %s failed after %.0f ms (attempt %d): %s", call.method, call.path, elapsed_ms, attempt, detail
            )
            raise TransportError(
                method=call.method, path=call.path, detail=detail, sent=sent, transient=transient, attempts=attempt
            )
        log.debug(
            "%s %s -> %d in %.0f ms (attempt %d)", call.method, call.path, response.status_code, elapsed_ms, attempt
        )
        if response.status_code == 429:
            self._rate_limited += 1
        if 200 <= response.status_code < 300:
            return response
        api_error = self._error(call, response)
        wait = api_error.retry_after
        if wait is not None and api_error.status in _RETRY_STATUSES and self._gate.close_for(wait) > ANNOUNCED_WAIT:
            self._announce_wait(call, api_error.status, wait, response.headers.get("Retry-After", ""))
        raise api_error

    def _announce_wait(self, call: _Call, status: int, wait: float, header: str) -> None:
        asked = _retry_after(header, self._clock.now()) or wait
        capped = f", capped at {wait:g} s" if asked > wait else ""
        log.warning(
            "%s %s: the API answered %d and asks to wait %.0f s (Retry-After%s); no call goes out until then",
            call.method,
            call.path,
            status,
            asked,
            capped,
        )

    def _should_retry(self, call: _Call, exc: BaseException) -> bool:
        if isinstance(exc, APIError):
            # A 429 means the API turned the call away without acting on it: safe even for a create.
            return exc.status in _RETRY_STATUSES and (call.idempotent or exc.status == 429)
        if isinstance(exc, TransportError):
            return exc.transient and (call.idempotent or not exc.sent)
        return False

    def _backoff(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._jitter(state))

    def _note_retry(self, call: _Call, state: RetryCallState) -> None:
        self._retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        why = f"{exc.status}" if isinstance(exc, APIError) else type(exc).__name__
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.debug(
            "%s %s: retrying in %.2f s after %s (attempt %d of %d)",
            call.method,
            call.path,
            wait,
            why,
            state.attempt_number,
            self._max_attempts,
        )

    # -- error answers -----------------------------------------------------------------------------

    def _error(self, call: _Call, response: httpx.Response) -> APIError:
        status = response.status_code
        asked = _retry_after(response.headers.get("Retry-After"), self._clock.now())
        retry_after = None if asked is None else min(asked, MAX_RETRY_AFTER)
        answer = _json_object(response)
        code = answer.get("code") if answer is not None else None
        message = answer.get("message") if answer is not None else None
        if isinstance(code, int) and not isinstance(code, bool) and code != 0 and isinstance(message, str):
            hint = answer.get("hint") if answer is not None else None
            cls = _ERRORS_BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
            return cls(
                status=status,
                code=code,
                message=self._scrub(message),
                hint=self._scrub(hint) if isinstance(hint, str) else "",
                method=call.method,
                path=call.path,
                retry_after=retry_after,
            )
        if 300 <= status < 400:
            detail = f"a redirect to {self._scrub(response.headers.get('Location', '(nowhere)'))}"
        elif answer is not None and code == 0:
            detail = "an error answer with code 0" + (
                f": {_excerpt(self._scrub(message))}" if isinstance(message, str) else ""
            )
        else:
            detail = self._describe_body(response)
        return self._unexpected(call, status, detail, retry_after=retry_after)

    def _unexpected(
        self, call: _Call, status: int, detail: str, *, retry_after: float | None = None
    ) -> UnexpectedResponse:
        return UnexpectedResponse(
            status=status,
            code=0,
            message=f"unexpected answer, not the Capella API's: {detail}",
            hint=_UNEXPECTED_HINT,
            method=call.method,
            path=call.path,
            retry_after=retry_after,
        )

    def _describe_body(self, response: httpx.Response) -> str:
        kind = response.headers.get("Content-Type", "no content type").split(";")[0].strip()
        try:
            text = response.text
        except (UnicodeDecodeError, LookupError):
            return f"an undecodable {kind} body"
        if not text.strip():
            return f"an empty body ({kind})"
        try:
            _parse_object(response.content)
        except _TooDeep as exc:
            return f"{exc} ({kind})"
        except _Unreadable:
            pass
        return f"{kind}: {_excerpt(self._scrub(text))}"

    def _scrub(self, text: str) -> str:
        """``text`` with every known secret masked, should a server or proxy ever echo one back."""
        return redact(text.replace(self._token.reveal(), MASK))


# -- internals ---------------------------------------------------------------------------------------


def _path(*segments: str) -> str:
    # Quoting keeps an odd id (a slash, "..") from steering the request to another path.
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


def _models(org_id: str, *rest: str) -> str:
    return _path("v4", "organizations", org_id, "aiServices", "models", *rest)


def _providers(org_id: str, *rest: str) -> str:
    return _path("v4", "organizations", org_id, "aiServices", "providers", *rest)


def _paging(page: int, per_page: int) -> dict[str, str | int]:
    return {"page": page, "perPage": per_page}


def _positive_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _unwrap_model(item: dict[str, Any]) -> dict[str, Any]:
    inner = item.get("model")
    return inner if isinstance(inner, dict) else item


def _identity(item: dict[str, Any]) -> str | None:
    identity = _unwrap_model(item).get("id") or item.get("keyId")
    return identity if isinstance(identity, str) else None


def _deduplicated(items: Any) -> list[dict[str, Any]]:
    """Items in order, each id once: an item can move across a page boundary while pages are read."""
    seen: set[str] = set()
    result: list[dict[str, Any]] = []
    for item in items:
        identity = _identity(item)
        if identity is not None:
            if identity in seen:
                continue
            seen.add(identity)
        result.append(item)
    return result


def _name_of(body: Mapping[str, Any] | None) -> str:
    name = body.get("name") if body is not None else None
    return name if isinstance(name, str) else "(unnamed)"


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        return _parse_object(response.content)
    except _Unreadable:
        return None


def _parse_object(content: bytes) -> dict[str, Any]:
    """The JSON object in ``content``, nested at most MAX_JSON_DEPTH levels; ``_Unreadable`` otherwise."""
    try:
        value = json.loads(content)
    except RecursionError:
        # The parser gives up long before the stack does; what it refused is deeper than any limit here.
        raise _TooDeep(f"a JSON body nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise _Unreadable("not JSON") from None
    if isinstance(value, (dict, list)) and _deeper_than(value, MAX_JSON_DEPTH):
        raise _TooDeep(f"a JSON body nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise _Unreadable("JSON, but not an object")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    # Level by level, not recursively: the depth is the very thing that must not be trusted to the stack.
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return False


def _retry_after(header: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for: whole seconds (what Capella sends) or an HTTP date; not capped."""
    if header is None:
        return None
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    if seconds != seconds or seconds == float("inf"):  # NaN or infinity: not a usable instruction
        return None
    return max(0.0, seconds)


_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def _excerpt(text: str) -> str:
    """A short, single-line, printable rendering of a body, tags removed: enough to recognise a proxy page."""
    plain = _SPACE.sub(" ", _TAGS.sub(" ", text))
    plain = "".join(c if c.isprintable() else "?" for c in plain).strip()
    return plain if len(plain) <= _EXCERPT_CHARS else plain[: _EXCERPT_CHARS - 1] + "…"


def _describe_exception(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
