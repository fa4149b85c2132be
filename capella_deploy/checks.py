"""Post-apply checks: call each deployed model (or external OpenAI-compatible API) the way an application would.

``run_checks`` turns the manifest's ``checks:`` into one request each, sent concurrently with one client per
target, and judges the answers against the check's ``expect``. Besides ``client.py`` this is the only module
that speaks HTTP, and it speaks only to the Model Service API (``{connectionString}/v1/...``) and to the
endpoints a manifest names, never to the Management API: connection strings and key tokens come from the
outputs document ``apply`` wrote.

Latency is measured on the real clock (``time.perf_counter``), not the sandbox's, because what a check reports
is how long a caller waits. A key token never appears in a result, a repr or a message: it travels as a
``Secret`` and is scrubbed from any text an endpoint sends back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from capella_deploy.kinds.model import header_profile
from capella_deploy.manifest import ApiKeySpec, CheckSpec, Manifest, ModelSpec, admits, effective_region
from capella_deploy.net import plain_http_problem
from capella_deploy.secrets import MASK, Secret

__all__ = [
    "CheckReport",
    "CheckResult",
    "Timer",
    "TransportFor",
    "run_checks",
]

TransportFor = Callable[[str], "httpx.AsyncBaseTransport | None"]
Timer = Callable[[], float]
Status = Literal["pass", "fail", "skip"]
JSON_FORMAT_VERSION = "2.0"
_PREVIEW = 60  # characters of an answer quoted in a failure


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str
    target: str  # "model chat" or the endpoint URL: safe to print
    status: Status
    latency_ms: float | None = None
    first_token_ms: float | None = None
    reason: str | None = None  # why it failed or was skipped
    detail: str | None = None  # what a passing answer looked like

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "status": self.status,
            "latency_ms": _rounded(self.latency_ms),
            "first_token_ms": _rounded(self.first_token_ms),
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class CheckReport:
    results: tuple[CheckResult, ...] = ()

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": JSON_FORMAT_VERSION,
            "ok": self.ok,
            "summary": {status: self.count(status) for status in ("pass", "fail", "skip")},
            "checks": [result.to_dict() for result in self.results],
        }


# -- resolving a check to one request ----------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """Everything one check needs to send its request; the token stays wrapped."""

    spec: CheckSpec
    target: str
    base_url: str  # the OpenAI-style base, ending in /v1 for Capella models
    token: Secret
    request_model: str
    headers: Mapping[str, str] = field(default_factory=dict)
    declared_dimensions: int | None = None


class _Unrunnable(Exception):
    """The check cannot be sent: a missing token, connection string, environment variable…"""

    def __init__(self, reason: str, status: Status = "fail") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _resolve(spec: CheckSpec, manifest: Manifest, outputs: Mapping[str, Any], environ: Mapping[str, str]) -> _Call:
    if spec.endpoint is not None:
        assert spec.endpointModel is not None and spec.apiKeyEnv is not None  # the manifest guarantees both
        return _Call(spec, spec.endpoint, spec.endpoint, _env_token(spec.apiKeyEnv, environ), spec.endpointModel)
    model = next(m for m in manifest.models if m.name == spec.model)
    if model.state == "paused":
        raise _Unrunnable(f"model '{model.name}' is declared paused", status="skip")
    entry = _section(outputs, "models").get(model.name)
    connection = entry.get("connectionString") if isinstance(entry, Mapping) else None
    if not isinstance(connection, str) or not connection:
        raise _Unrunnable(f"the outputs have no connection string for model '{model.name}'; run apply first")
    token = _env_token(spec.apiKeyEnv, environ) if spec.apiKeyEnv else _key_token(spec, model, manifest, outputs)
    dimensions = model.dimensions if spec.expect.dimensions == "declared" else None
    return _Call(
        spec,
        f"model {model.name}",
        connection.rstrip("/") + "/v1",
        token,
        model.catalogModel,
        header_profile(model, manifest.defaults),
        dimensions,
    )


def _env_token(variable: str, environ: Mapping[str, str]) -> Secret:
    value = environ.get(variable, "").strip()
    if not value:
        raise _Unrunnable(f"the environment variable {variable} (apiKeyEnv) is not set")
    return Secret(value)


def _key_token(spec: CheckSpec, model: ModelSpec, manifest: Manifest, outputs: Mapping[str, Any]) -> Secret:
    """The named key's token, or that of the first key of the model's region that allows it."""
    keys = _section(outputs, "apiKeys")
    if spec.apiKey is not None:
        candidates = [spec.apiKey]
    else:
        region = effective_region(model, manifest.defaults)
        candidates = [key.name for key in manifest.apiKeys if _admits(key, model.name, region, manifest)]
    for name in candidates:
        entry = keys.get(name)
        token = entry.get("token") if isinstance(entry, Mapping) else None
        if isinstance(token, str) and token:
            return Secret(token)
    names = ", ".join(f"'{name}'" for name in candidates)
    raise _Unrunnable(
        f"the outputs hold no token for key {names}: run apply first, or rotate a key whose token was lost "
        "with apply --replace apiKey.NAME"
    )


def _admits(key: ApiKeySpec, model: str, region: str | None, manifest: Manifest) -> bool:
    return effective_region(key, manifest.defaults) == region and admits(key.allowedModels, model)


def _section(outputs: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = outputs.get(name)
    return section if isinstance(section, Mapping) else {}


# -- sending ------------------------------------------------------------------------------------------


@dataclass
class _Answer:
    text: str = ""
    vector_length: int | None = None
    first_token_ms: float | None = None
    events: int = 0  # server-sent events received, for messages about broken streams


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def run_checks(
    manifest: Manifest,
    outputs: Mapping[str, Any],
    *,
    transport_for: TransportFor = lambda base_url: None,
    environ: Mapping[str, str] | None = None,
    timer: Timer = time.perf_counter,
) -> CheckReport:
    """Run every check of ``manifest`` concurrently against the targets in the ``outputs`` document.

    ``transport_for(base_url)`` may return the transport to reach a base URL through (the embedded sandbox's,
    for its connection strings), or None for the network. ``environ`` (default ``os.environ``) holds the
    ``apiKeyEnv`` variables.
    """
    env = os.environ if environ is None else environ
    results: list[CheckResult | None] = [None] * len(manifest.checks)
    calls: list[tuple[int, _Call]] = []
    transports: dict[str, httpx.AsyncBaseTransport | None] = {}
    for index, spec in enumerate(manifest.checks):
        try:
            call = _resolve(spec, manifest, outputs, env)
            if call.base_url not in transports:
                transports[call.base_url] = transport_for(call.base_url)
            _refuse_plain_http(call.base_url, in_process=transports[call.base_url] is not None)
            calls.append((index, call))
        except _Unrunnable as exc:
            results[index] = CheckResult(spec.name, spec.kind, _target_of(spec), exc.status, reason=exc.reason)
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, httpx.AsyncClient] = {}
        for _, call in calls:
            if call.base_url not in clients:
                client = httpx.AsyncClient(base_url=call.base_url, transport=transports[call.base_url])
                clients[call.base_url] = await stack.enter_async_context(client)
        finished = await asyncio.gather(*(_run(call, clients[call.base_url], timer) for _, call in calls))
    for (index, _), result in zip(calls, finished, strict=True):
        results[index] = result
    return CheckReport(tuple(result for result in results if result is not None))


def _refuse_plain_http(base_url: str, *, in_process: bool) -> None:
    """A key token goes in every request: never over plain http to another machine."""
    problem = None if in_process else plain_http_problem(httpx.URL(base_url), "the key")
    if problem is not None:
        raise _Unrunnable(problem)


def _target_of(spec: CheckSpec) -> str:
    return spec.endpoint if spec.endpoint is not None else f"model {spec.model}"


async def _run(call: _Call, client: httpx.AsyncClient, timer: Timer) -> CheckResult:
    spec = call.spec
    answer = _Answer()
    started = timer()

    def result(status: Status, reason: str | None = None) -> CheckResult:
        latency = (timer() - started) * 1000
        return CheckResult(spec.name, spec.kind, call.target, status, latency, answer.first_token_ms, reason)

    try:
        await asyncio.wait_for(_exchange(call, client, answer, timer, started), spec.timeoutSeconds)
    except _Failed as exc:
        return result("fail", _scrub(exc.reason, call.token))
    except (asyncio.TimeoutError, httpx.TimeoutException):
        return result("fail", f"no complete answer within {spec.timeoutSeconds:g}s (timeoutSeconds)")
    except httpx.HTTPError as exc:
        where = f" after {answer.events} event(s)" if answer.events else ""
        return result("fail", _scrub(f"the connection failed{where}: {_describe_error(exc)}", call.token))
    done = result("pass")
    problems = _judge(call, answer, done.latency_ms or 0.0)
    if problems:
        return dataclasses.replace(done, status="fail", reason=_scrub("; ".join(problems), call.token))
    return dataclasses.replace(done, detail=_detail(spec, answer))


async def _exchange(call: _Call, client: httpx.AsyncClient, answer: _Answer, timer: Timer, started: float) -> None:
    spec = call.spec
    headers = {**call.headers, "Authorization": f"Bearer {call.token.reveal()}"}
    timeout = httpx.Timeout(spec.timeoutSeconds)
    if spec.kind == "chat-stream":
        body = {**_chat_body(call), "stream": True}
        headers["Accept"] = "text/event-stream"
        async with client.stream("POST", "chat/completions", json=body, headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _Failed(_http_failure(response))
            await _read_stream(response, answer, timer, started)
        return
    path, body = {
        "chat": ("chat/completions", _chat_body(call)),
        "completion": (
            "completions",
            {"model": call.request_model, "prompt": spec.prompt, "max_tokens": spec.maxTokens},
        ),
        "embedding": ("embeddings", {"model": call.request_model, "input": spec.prompt}),
    }[spec.kind]
    response = await client.post(path, json=body, headers=headers, timeout=timeout)
    if response.status_code >= 400:
        raise _Failed(_http_failure(response))
    document = _json_of(response)
    try:
        if spec.kind == "embedding":
            vector = document["data"][0]["embedding"]
            if not isinstance(vector, list):
                raise TypeError("the embedding is not a list of numbers")
            answer.vector_length = len(vector)
        else:
            choice = document["choices"][0]
            text = choice["message"]["content"] if spec.kind == "chat" else choice["text"]
            answer.text = text if isinstance(text, str) else ""
    except (KeyError, IndexError, TypeError) as exc:
        raise _Failed(f"the answer is not an OpenAI-style {spec.kind} response ({_describe_error(exc)})") from None


def _chat_body(call: _Call) -> dict[str, Any]:
    messages = [{"role": "user", "content": call.spec.prompt}]
    return {"model": call.request_model, "messages": messages, "max_tokens": call.spec.maxTokens}


async def _read_stream(response: httpx.Response, answer: _Answer, timer: Timer, started: float) -> None:
    """Consume server-sent events until ``data: [DONE]``, timing the first content token."""
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        raise _Failed(
            f"asked for a stream but got {content_type.split(';')[0] or 'an answer without a content type'}, "
            "not server-sent events (text/event-stream)"
        )
    async for data in _sse_data(response.aiter_lines()):
        if data == "[DONE]":
            return
        answer.events += 1
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _Failed(f"event {answer.events} of the stream is not JSON") from None
        if isinstance(chunk, Mapping) and "error" in chunk:
            raise _Failed(f"the stream reported an error after {answer.events - 1} event(s): {_error_text(chunk)}")
        piece = _delta_content(chunk)
        if piece and answer.first_token_ms is None:
            answer.first_token_ms = (timer() - started) * 1000
        answer.text += piece
    raise _Failed(f"the stream ended after {answer.events} event(s) without data: [DONE]")


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each event: ``data:`` lines joined by newlines, dispatched at a blank line."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # a last event without its blank line still counts: servers often omit it before closing
        yield "\n".join(data)


def _delta_content(chunk: Any) -> str:
    try:
        content = chunk["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""  # role-only, usage-only and keep-alive chunks carry no text
    return content if isinstance(content, str) else ""


def _json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "").split(";")[0] or "no content type"
        raise _Failed(f"HTTP {response.status_code} but the answer is not JSON ({kind})") from None


def _http_failure(response: httpx.Response) -> str:
    try:
        message = _error_text(response.json())
    except ValueError:
        message = ""
    return f"HTTP {response.status_code}: {message or response.reason_phrase or 'error'}"


def _error_text(body: Any) -> str:
    """The message of an OpenAI-style ``{"error": {"message"}}`` body, or of a Capella-style ``{"message"}``."""
    if not isinstance(body, Mapping):
        return ""
    error = body.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return str(body["message"]) if isinstance(body.get("message"), str) else ""


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _scrub(text: str, token: Secret) -> str:
    secret = token.reveal()
    return text.replace(secret, MASK) if secret else text


# -- judging ------------------------------------------------------------------------------------------


def _judge(call: _Call, answer: _Answer, latency_ms: float) -> list[str]:
    expect, kind = call.spec.expect, call.spec.kind
    problems: list[str] = []
    if kind == "embedding":
        length = answer.vector_length or 0
        if expect.nonEmpty and length == 0:
            problems.append("the embedding is empty")
        wanted = call.declared_dimensions if expect.dimensions == "declared" else expect.dimensions
        if isinstance(wanted, int) and length != wanted:
            problems.append(f"the embedding has {length} dimensions, expected {wanted}")
    else:
        if expect.nonEmpty and not answer.text.strip():
            problems.append("the answer is empty")
        if expect.contains is not None and expect.contains.lower() not in answer.text.lower():
            problems.append(f"the answer does not contain {expect.contains!r}: {_preview(answer.text)}")
    if expect.maxLatencyMs is not None and latency_ms > expect.maxLatencyMs:
        problems.append(f"took {latency_ms:.0f} ms, more than maxLatencyMs {expect.maxLatencyMs}")
    if expect.maxFirstTokenMs is not None:
        first = answer.first_token_ms
        if first is None:
            problems.append("no token arrived, so maxFirstTokenMs cannot hold")
        elif first > expect.maxFirstTokenMs:
            problems.append(f"the first token took {first:.0f} ms, more than maxFirstTokenMs {expect.maxFirstTokenMs}")
    return problems


def _detail(spec: CheckSpec, answer: _Answer) -> str:
    if spec.kind == "embedding":
        return f"{answer.vector_length} dimensions"
    words = len(answer.text.split())
    if spec.kind == "chat-stream":
        return f"{words} word(s) in {answer.events} event(s)"
    return f"{words} word(s)"


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= _PREVIEW else flat[: _PREVIEW - 1] + "…")


def _rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 1)


# -- rendering ----------------------------------------------------------------------------------------
