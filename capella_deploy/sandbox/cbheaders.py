"""The Model Service's ``X-cb-*`` request headers, checked as the Model Service API reference types them.

A value outside its enum or range answers 400 naming the header. Valid headers are echoed back as response
headers when ``X-cb-debug: true`` asks for "more response headers". Unknown ``X-cb-*`` names are ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from capella_deploy.sandbox.errors import ServiceError

ROUTING_STRATEGIES = (
    "round-robin",
    "least-latency",
    "throughput",
    "least-requests",
    "least-cache-usage",
    "prefix-aware",
)
CACHE_TYPES = ("standard", "semantic", "none")

_BOOLEANS = {
    "x-cb-debug",
    "x-cb-suppress-request-keyword-filtering",
    "x-cb-suppress-response-keyword-filtering",
    "x-cb-suppress-request-guardrails",
    "x-cb-suppress-request-jailbreak",
}
_INTEGERS = {  # header -> smallest allowed value
    "x-cb-request-duration": 1,
    "x-cb-max-retries": 0,
    "x-cb-cache-expiry-duration": 0,
    "x-cb-batch-record-expiry": 1,
    "x-cb-file-record-expiry": 1,
}
_UNIT_INTERVAL = {"x-cb-cache-threshold", "x-cb-jailbreak-threshold"}
_ENUMS = {"x-cb-routing-strategy": ROUTING_STRATEGIES, "x-cb-cache": CACHE_TYPES}
_MODEL_REFS = {"x-cb-model-ref", "x-cb-guardrail-model-ref", "x-cb-jailbreak-model-ref"}
_TEXT = {"x-cb-content-filters", "x-cb-jailbreak-model-name"}


@dataclass
class CbHeaders:
    debug: bool = False
    routing_strategy: str = "round-robin"
    model_ref: str | None = None
    content_filters: list[str] = field(default_factory=list)
    suppress_request_filtering: bool = False
    suppress_response_filtering: bool = False
    file_expiry_days: int | None = None
    batch_expiry_days: int | None = None
    given: dict[str, str] = field(default_factory=dict)  # every valid X-cb-* header, for the debug echo

    def debug_headers(self, model_id: str, request_id: str) -> dict[str, str]:
        if not self.debug:
            return {}
        echoed = {_canonical(name): value for name, value in self.given.items()}
        echoed.setdefault("X-cb-routing-strategy", self.routing_strategy)
        echoed["X-cb-model-ref"] = model_id
        echoed["X-cb-request-id"] = request_id
        return echoed


def _canonical(name: str) -> str:
    return "X-cb-" + name[len("x-cb-") :]


def _invalid(name: str, value: str, expected: str) -> ServiceError:
    return ServiceError(
        400, f"Invalid value {value!r} for header {_canonical(name)}: expected {expected}.", "invalid_header"
    )


def parse_cb_headers(headers: Mapping[str, str]) -> CbHeaders:
    parsed = CbHeaders()
    for raw_name, value in headers.items():
        name = raw_name.lower()
        if not name.startswith("x-cb-"):
            continue
        value = value.strip()
        if name in _BOOLEANS:
            if value.lower() not in ("true", "false"):
                raise _invalid(name, value, "true or false")
        elif name in _INTEGERS:
            if not value.isdigit() or int(value) < _INTEGERS[name]:
                raise _invalid(name, value, f"a whole number of at least {_INTEGERS[name]}")
        elif name in _UNIT_INTERVAL:
            try:
                inside = 0 <= float(value) <= 1
            except ValueError:
                inside = False
            if not inside:
                raise _invalid(name, value, "a number from 0 to 1")
        elif name in _ENUMS:
            if value not in _ENUMS[name]:
                raise _invalid(name, value, "one of " + ", ".join(_ENUMS[name]))
        elif name in _MODEL_REFS:
            try:
                uuid.UUID(value)
            except ValueError:
                raise _invalid(name, value, "a deployed model's id (a UUID)") from None
        elif name.startswith("x-cb-attr-"):
            if name == "x-cb-attr-":
                raise _invalid(name, value, "a conversation id after X-cb-attr-")
        elif name not in _TEXT:
            continue
        parsed.given[name] = value
    given = parsed.given
    parsed.debug = _flag(given, "x-cb-debug")
    parsed.routing_strategy = given.get("x-cb-routing-strategy", parsed.routing_strategy)
    parsed.model_ref = given.get("x-cb-model-ref")
    parsed.content_filters = [k.strip() for k in given.get("x-cb-content-filters", "").split(",") if k.strip()]
    parsed.suppress_request_filtering = _flag(given, "x-cb-suppress-request-keyword-filtering")
    parsed.suppress_response_filtering = _flag(given, "x-cb-suppress-response-keyword-filtering")
    if "x-cb-file-record-expiry" in given:
        parsed.file_expiry_days = int(given["x-cb-file-record-expiry"])
    if "x-cb-batch-record-expiry" in given:
        parsed.batch_expiry_days = int(given["x-cb-batch-record-expiry"])
    return parsed


def _flag(given: dict[str, str], name: str) -> bool:
    return given.get(name, "false").lower() == "true"
