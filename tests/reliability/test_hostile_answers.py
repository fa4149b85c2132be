"""Hostile Management API answers served over real HTTP, to the CLI as a user runs it.

The server here is written for these tests and knows nothing of the sandbox: a thread serving whatever
the test's function answers. Through it, with CAPELLA_API_URL pointing at it, the CLI meets JSON nested
100,000 deep, listings that never end, a page size refused, a Retry-After of years, and a server that
echoes the token in a response header and in a redirect's Location while ``--debug`` logs every header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from click.testing import CliRunner, Result

from capella_deploy.api.client import FALLBACK_PER_PAGE, MAX_JSON_DEPTH, MAX_RETRY_AFTER, PER_PAGE, CapellaClient
from capella_deploy.cli import main
from capella_deploy.clock import ManualClock
from capella_deploy.kinds import REGISTRY
from capella_deploy.secrets import MASK, Secret

ORG = "5f0c2a7e-8b1d-4c3e-9f6a-1b2c3d4e5f60"
# '+', '/' and '=' are spelled differently inside a URL: the masking must know both spellings.
TOKEN = "cbserved+Mgmt/Token=4b8e1f6a2d"
MODELS = f"/v4/organizations/{ORG}/aiServices/models"
KEYS = f"{MODELS}/apiKeys"
MANIFEST = f"""\
apiVersion: capella-deploy/v1
organizationId: {ORG}
defaults: {{provider: aws, region: us-east-1}}
models:
  - {{name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}}
"""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: Mapping[str, str]


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(value: Any, status: int = 200, **headers: str) -> Answer:
        return Answer(status, json.dumps(value).encode(), {"Content-Type": "application/json", **headers})


def page(data: list[dict[str, Any]], **cursor: int) -> Answer:
    return Answer.json({"data": data, "cursor": {"pages": cursor}})


EMPTY = page([], page=1)


@contextlib.contextmanager
def hostile_server(answer: Callable[[Seen], Answer]) -> Iterator[tuple[str, list[Seen]]]:
    """Serve ``answer`` over HTTP/1.1 on a free local port; yield the base URL and the requests seen."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            url = urlsplit(self.path)
            request = Seen(self.command, url.path, dict(parse_qsl(url.query)))
            seen.append(request)
            reply = answer(request)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_DELETE = serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that hangs up mid-answer (a listing it has given up on) is expected here, and the
            # default would print a traceback into the very output under test.
            pass

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def plan_against(base_url: str, tmp_path: Path, *extra: str) -> Result:
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    env = {"CAPELLA_API_URL": base_url, "CAPELLA_API_TOKEN": TOKEN, "CAPELLA_ORG_ID": "", "CAPELLA_RATE_LIMIT": ""}
    return CliRunner().invoke(main, ["plan", "-f", str(tmp_path / "capella.yaml"), *extra], env=env)


def assert_clean_failure(result: Result) -> str:
    """The run failed with a message and exit 1: no traceback, no token."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    text = result.stdout + result.stderr
    assert "Traceback" not in text and "RecursionError" not in text
    assert TOKEN not in text
    return text


# -- deeply nested JSON ------------------------------------------------------------------------------------


def test_json_nested_100000_deep_ends_the_plan_with_a_clear_error(tmp_path: Path) -> None:
    abyss = b"[" * 100_000 + b"]" * 100_000

    def answer(request: Seen) -> Answer:
        if request.path == MODELS:
            return Answer(200, b'{"data": [{"model": {"id": "m", "config": ' + abyss + b"}}]}")
        return EMPTY

    with hostile_server(answer) as (base_url, _):
        result = plan_against(base_url, tmp_path)
    text = assert_clean_failure(result)
    assert f"GET {MODELS}: 200 unexpected answer" in text
    assert f"a JSON body nested deeper than {MAX_JSON_DEPTH} levels" in text


# -- listings that never end ----------------------------------------------------------------------------------


def endless_listing(rows: Callable[[int], list[dict[str, Any]]]) -> Callable[[Seen], Answer]:
    """Models listed in pages that always point at a next page (for the first 300 pages: a bound for main)."""

    def answer(request: Seen) -> Answer:
        if request.path != MODELS:
            return EMPTY
        number = int(request.query.get("page", "1"))
        cursor = {"page": number, "perPage": 100}
        if number < 300:
            cursor["next"] = number + 1
        return page(rows(number), **cursor)

    return answer


@pytest.mark.parametrize(
    ("rows", "requests", "words"),
    [
        (lambda n: [], 1, "page 1 is empty yet points to page 2"),
        (lambda n: [{"model": {"id": "m1", "name": "old"}}], 2, "page 2 adds no item not listed before"),
    ],
    ids=["empty pages", "a cursor that repeats"],
)
def test_a_listing_that_never_ends_stops_at_once(
    rows: Callable[[int], list[dict[str, Any]]], requests: int, words: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with hostile_server(endless_listing(rows)) as (base_url, seen):
        result = plan_against(base_url, tmp_path)
    text = assert_clean_failure(result)
    assert words in text and f"GET {MODELS}" in text
    assert sum(r.path == MODELS for r in seen) == requests
    assert time.monotonic() - started < 10


# -- a refused page size --------------------------------------------------------------------------------------


def test_a_server_that_refuses_100_a_page_is_listed_25_at_a_time(tmp_path: Path) -> None:
    names = [f"legacy-{i:02d}" for i in range(40)]

    def answer(request: Seen) -> Answer:
        if request.path == f"/v4/organizations/{ORG}":  # read once for its name: not a listing
            return Answer.json({"id": ORG, "name": "Legacy"})
        per_page, number = int(request.query["perPage"]), int(request.query["page"])
        if per_page > 25:
            body = {"httpStatusCode": 422, "code": 1005, "message": "perPage must be at most 25", "hint": "page less"}
            return Answer.json(body, status=422)
        rows = names if request.path == MODELS else []
        chunk = rows[(number - 1) * per_page : number * per_page]
        last = max(1, -(-len(rows) // per_page))
        data = [{"model": {"id": f"id-{name}", "name": name, "status": "healthy"}} for name in chunk]
        return page(data, page=number, last=last, perPage=per_page, **({"next": number + 1} if number < last else {}))

    with hostile_server(answer) as (base_url, seen):
        result = plan_against(base_url, tmp_path)
    assert result.exit_code == 0, result.output
    assert all(name in result.stdout for name in names)
    listings = [r for r in seen if "perPage" in r.query]
    refused = [r for r in listings if int(r.query["perPage"]) == PER_PAGE]
    # At most one refusal per listing that was already under way (one per kind); everything after asks for 25.
    assert 1 <= len(refused) <= len(REGISTRY)
    assert {int(r.query["perPage"]) for r in listings if r not in refused} == {FALLBACK_PER_PAGE}
    assert sorted(int(r.query["page"]) for r in listings if r.path == MODELS and r not in refused) == [1, 2]


# -- Retry-After ----------------------------------------------------------------------------------------------


class RecordingClock(ManualClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


@pytest.mark.parametrize("header", ["100000000", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_served_retry_after_of_years_is_capped_and_said(header: str, caplog: pytest.LogCaptureFixture) -> None:
    answers = [Answer.json({"code": 1004, "message": "slow", "hint": "", "httpStatusCode": 429}, 429)]
    answers[0].headers["Retry-After"] = header

    def answer(request: Seen) -> Answer:
        return answers.pop() if answers else EMPTY

    clock = RecordingClock()

    async def listing(base_url: str) -> list[dict[str, Any]]:
        async with CapellaClient(base_url=base_url, token=Secret(TOKEN), clock=clock) as client:
            return await client.list_models(ORG)

    with caplog.at_level(logging.WARNING), hostile_server(answer) as (base_url, _):
        assert asyncio.run(listing(base_url)) == []
    assert clock.sleeps == [MAX_RETRY_AFTER]
    said = [r.getMessage() for r in caplog.records if "Retry-After" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"GET {MODELS}: the API answered 429 and asks to wait")


# -- secrets echoed in headers and redirects, with --debug ----------------------------------------------------


# A key token: unknown to a plain `plan`, so it shows (proof the masking is of known values, not a blur).
KEY_TOKEN = "cbserved-key-token-9e4f2a7c1d"


def echoing(request: Seen) -> Answer:
    """Echo the secrets in response headers; send key listings to a Location that carries them."""
    if request.path == KEYS:
        where = f"https://elsewhere.example/login?t={quote(TOKEN, safe='')}&raw={TOKEN}&key={KEY_TOKEN}"
        return Answer(302, headers={"Location": where, "X-Echo": f"Bearer {TOKEN}"})
    reply = page([], page=1)
    reply.headers.update({"X-Echo": f"Bearer {TOKEN}", "X-Key": KEY_TOKEN, "Set-Cookie": f"s={quote(TOKEN)}"})
    return reply


def child_cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPELLA_")}
    return subprocess.run(
        [sys.executable, "-c", "from capella_deploy.cli import main; main()", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_logs_mask_the_token_a_server_echoes_in_headers_and_in_a_location(tmp_path: Path) -> None:
    # A child process, so CAPELLA_LOG configures logging as it does for a user (pytest holds the root logger
    # here). trace, not --debug: --debug shows only the tool's own request lines, trace the HTTP library's too.
    (tmp_path / "capella.yaml").write_text(MANIFEST)
    with hostile_server(echoing) as (base_url, seen):
        env = {"CAPELLA_API_URL": base_url, "CAPELLA_API_TOKEN": TOKEN, "CAPELLA_LOG": "trace"}
        child = child_cli(tmp_path, env, "plan", "-f", "capella.yaml")
    # The two listings go out together; the first redirect may end the run before the second is sent.
    assert {r.path for r in seen} & {MODELS, KEYS}
    assert child.returncode == 1
    printed = child.stdout + child.stderr
    assert "DEBUG httpcore" in printed, "the HTTP library logged the answers' headers"
    assert "Traceback" not in printed
    for secret in (TOKEN, quote(TOKEN, safe=""), quote(TOKEN)):
        assert secret not in printed, secret
    assert f"b'X-Echo', b'Bearer {MASK}'" in printed and f"b'Set-Cookie', b's={MASK}'" in printed
    assert f"b'Location', b'https://elsewhere.example/login?t={MASK}&raw={MASK}&key={KEY_TOKEN}'" in printed
    assert f"a redirect to https://elsewhere.example/login?t={MASK}&raw={MASK}&key={KEY_TOKEN}" in printed


def test_every_log_record_masks_a_key_token_this_process_was_given(caplog: pytest.LogCaptureFixture) -> None:
    # In-process, over real HTTP: the key token becomes known when the API returns it, then a hostile
    # server repeats it in headers; the HTTP libraries' own debug records must not carry it.
    created = [Answer.json({"id": "k1", "token": KEY_TOKEN}, 201)]

    def answer(request: Seen) -> Answer:
        return created.pop() if created else echoing(request)

    async def calls(base_url: str) -> None:
        async with CapellaClient(base_url=base_url, token=Secret(TOKEN), clock=RecordingClock()) as client:
            await client.create_api_key(ORG, {"name": "app"})
            await client.list_models(ORG)
            with contextlib.suppress(Exception):
                await client.list_api_keys(ORG)

    for name in (None, "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    with hostile_server(answer) as (base_url, _):
        asyncio.run(calls(base_url))
    headers = [r.getMessage() for r in caplog.records if "receive_response_headers.complete" in r.getMessage()]
    assert len(headers) == 3
    for record in caplog.records:
        text = record.getMessage()
        assert TOKEN not in text and KEY_TOKEN not in text and quote(TOKEN, safe="") not in text, record.name
