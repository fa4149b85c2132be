"""Injected faults: what can go wrong, and the seeded dice that decide when it does.

A fault file (YAML or JSON) looks like::

    seed: 7                        # optional; else the sandbox's seed
    world: conflicts               # optional; the world's rules (spec | conflicts), else the state file's
    edit_delay_seconds: 120        # a model edit (PUT, 204) shows in reads only this many sandbox seconds later
    max_per_page: 25               # the largest perPage a list serves (default 100); more is refused as invalid
    rate_limit_per_minute: 100     # per bearer token, in sandbox minutes -> 429 + Retry-After
    deploy_fail_rate: 0.1          # a new deployment ends in deployFailed
    deploy_hang_rate: 0.05         # a new deployment stays deploying forever
    routes:                        # every rule whose pattern matches a request applies, in order
      - match: "POST /v4/organizations/*/aiServices/models"   # [METHOD] path; * = one segment, ** = any
        error_rate: 0.2            # answer error_status (5xx, or 429) without doing anything
        error_status: 503
        retry_after: 5             # optional Retry-After on those errors
        storm_seconds: 30          # optional: once the error hits, every matching request gets it for this
                                   # many sandbox seconds (a 429 storm); Retry-After then defaults to the rest
        drop_before: 0.05          # close the connection before doing anything
        drop_after: 0.05           # do the work, then close the connection instead of answering
        latency_ms: [20, 80]       # real added latency, uniform in the range (or one number)

Each matching rule rolls the dice once per request; its three rates split one roll, so they may sum to at most
1. The same seed and the same sequence of requests give the same faults. With no faults configured the sandbox
is a clean, fast world.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from capella_deploy.sandbox.operations import RULES, Rules

DROP_BEFORE = "before"
DROP_AFTER = "after"
DEPLOY_OK = "healthy"
DEPLOY_FAIL = "deployFailed"
DEPLOY_HANG = "hang"
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


@dataclass
class RouteFault:
    match: str = "**"
    error_rate: float = 0.0
    error_status: int = 503
    retry_after: int | None = None
    drop_before: float = 0.0
    drop_after: float = 0.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    storm_seconds: float = 0.0

    def __post_init__(self) -> None:
        # Every problem at once: a fault file with three mistakes should not take three tries.
        problems: list[str] = []
        method, _, pattern = self.match.strip().rpartition(" ")
        if method and method.upper() not in _METHODS:
            problems.append(f"route match {self.match!r}: unknown method {method!r}")
        if not pattern.startswith("/") and pattern != "**":
            problems.append(f"route match {self.match!r}: the path pattern must start with '/'")
        self._method = method.upper()
        self._segments = [s for s in pattern.split("/") if s]
        problems += _rate_problems(self, "error_rate", "drop_before", "drop_after")
        if self.error_rate + self.drop_before + self.drop_after > 1:
            problems.append(f"route {self.match!r}: error_rate + drop_before + drop_after exceeds 1")
        # 429 is allowed besides 5xx so that rate-limit storms can be aimed at one route (the per-token
        # rate limit counts sandbox minutes, which a fast clock makes too short to ever fill).
        if not (500 <= self.error_status <= 599 or self.error_status == 429):
            problems.append(f"route {self.match!r}: error_status must be a 5xx status or 429")
        if self.storm_seconds < 0:
            problems.append(f"route {self.match!r}: storm_seconds must not be negative")
        if self.retry_after is not None and self.retry_after < 0:
            problems.append(f"route {self.match!r}: retry_after must not be negative")
        low, high = self.latency_ms
        if not 0 <= low <= high:
            problems.append(f"route {self.match!r}: latency_ms needs 0 <= min <= max")
        if problems:
            raise ValueError("; ".join(problems))

    def matches(self, method: str, path: str) -> bool:
        if self._method and self._method != method.upper():
            return False
        return _match_segments(self._segments, [s for s in path.split("/") if s])


@dataclass
class Faults:
    seed: int | None = None
    routes: list[RouteFault] = field(default_factory=list)
    rate_limit_per_minute: int | None = None
    deploy_fail_rate: float = 0.0
    deploy_hang_rate: float = 0.0
    world: Rules | None = None
    # The spec warns that model updates "may take up to a few minutes to take effect"; 0 makes them immediate.
    edit_delay_seconds: float = 0.0
    # The spec states no largest page; the sandbox ASSUMES 100 unless told otherwise.
    max_per_page: int = 100

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.edit_delay_seconds < 0:
            problems.append("edit_delay_seconds must not be negative")
        if self.max_per_page < 1:
            problems.append("max_per_page must be at least 1")
        if self.world is not None and self.world not in RULES:
            problems.append(f"world must be one of {', '.join(RULES)}; got {self.world!r}")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            problems.append("rate_limit_per_minute must be at least 1")
        problems += _rate_problems(self, "deploy_fail_rate", "deploy_hang_rate")
        if self.deploy_fail_rate + self.deploy_hang_rate > 1:
            problems.append("deploy_fail_rate + deploy_hang_rate exceeds 1")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def load(cls, path: Path) -> Faults:
        import yaml  # YAML is a superset of JSON, so one loader reads both kinds of file

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            return cls.from_dict(data)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise ValueError(f"fault file {path}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Any) -> Faults:
        try:
            return cls._from_dict(data)
        except TypeError as exc:  # a value of the wrong type, e.g. a string where a rate belongs
            raise ValueError(f"a value has the wrong type: {exc}") from exc

    @classmethod
    def _from_dict(cls, data: Any) -> Faults:
        problems: list[str] = []
        known = {f.name for f in fields(cls)}
        _require_mapping(data, "faults", known, problems)
        if not isinstance(data, dict):
            raise ValueError("; ".join(problems))
        routes = data.get("routes") or []
        if not isinstance(routes, list):
            problems.append("routes must be a list")
            routes = []
        rules = []
        route_known = {f.name for f in fields(RouteFault)}
        for i, rule in enumerate(routes):
            if not _require_mapping(rule, f"routes[{i}]", route_known, problems):
                continue
            try:
                latency = rule.get("latency_ms", 0)
                span = (latency, latency) if isinstance(latency, (int, float)) else tuple(latency)
                if len(span) != 2:
                    problems.append(f"routes[{i}].latency_ms must be a number or [min, max]")
                    continue
                given = {key: value for key, value in rule.items() if key in route_known}
                rules.append(RouteFault(**{**given, "latency_ms": (float(span[0]), float(span[1]))}))
            except ValueError as exc:
                problems.append(f"routes[{i}]: {exc}")
            except TypeError as exc:  # a value of the wrong type, e.g. a string where a rate belongs
                problems.append(f"routes[{i}]: a value has the wrong type: {exc}")
        try:
            faults = cls(**{key: value for key, value in data.items() if key in known} | {"routes": rules})
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return faults

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for rule in data["routes"]:
            rule["latency_ms"] = list(rule["latency_ms"])
        return data


@dataclass(frozen=True)
class Decision:
    latency_seconds: float = 0.0
    rate_limit_retry_after: int | None = None  # set when the request is over the rate limit
    error_status: int | None = None
    error_retry_after: int | None = None
    drop: str | None = None  # DROP_BEFORE | DROP_AFTER


class FaultInjector:
    """Rolls the dice for one ``Faults``; a new ``Faults`` gets a new injector, re-seeded."""

    def __init__(self, faults: Faults, default_seed: int) -> None:
        self.faults = faults
        self._rng = random.Random(default_seed if faults.seed is None else faults.seed)
        self._recent: dict[str, deque[float]] = {}
        self._storms: dict[int, float] = {}  # route index -> sandbox time its storm ends
        self._lock = threading.Lock()  # a served sandbox may be reconfigured from another thread

    def decide(self, method: str, path: str, client_key: str, now: float) -> Decision:
        with self._lock:
            latency = 0.0
            outcome: RouteFault | None = None
            drop: str | None = None
            storm_left: float | None = None
            for index, rule in enumerate(self.faults.routes):
                if not rule.matches(method, path):
                    continue
                low, high = rule.latency_ms
                if high > 0:
                    latency += (low if low == high else self._rng.uniform(low, high)) / 1000
                if outcome is not None or rule.error_rate + rule.drop_before + rule.drop_after == 0:
                    continue
                # A storm under way answers without a roll, so the dice sequence of other rules is unchanged.
                storm_end = self._storms.get(index)
                if storm_end is not None and now < storm_end:
                    outcome, storm_left = rule, storm_end - now
                    continue
                roll = self._rng.random()
                if roll < rule.drop_before:
                    outcome, drop = rule, DROP_BEFORE
                elif roll < rule.drop_before + rule.error_rate:
                    outcome = rule
                    if rule.storm_seconds > 0:
                        self._storms[index] = now + rule.storm_seconds
                        storm_left = rule.storm_seconds
                elif roll < rule.drop_before + rule.error_rate + rule.drop_after:
                    outcome, drop = rule, DROP_AFTER
            limited = self._over_rate_limit(client_key, now)
            if limited is not None:
                return Decision(latency, rate_limit_retry_after=limited)
            if outcome is None:
                return Decision(latency)
            if drop is not None:
                return Decision(latency, drop=drop)
            retry_after = outcome.retry_after
            if retry_after is None and storm_left is not None:
                # Tell the client when the storm ends, as a real rate limiter would.
                retry_after = max(1, math.ceil(storm_left))
            return Decision(latency, error_status=outcome.error_status, error_retry_after=retry_after)

    def deploy_outcome(self) -> str:
        fail, hang = self.faults.deploy_fail_rate, self.faults.deploy_hang_rate
        if fail + hang == 0:
            return DEPLOY_OK
        with self._lock:
            roll = self._rng.random()
        if roll < fail:
            return DEPLOY_FAIL
        return DEPLOY_HANG if roll < fail + hang else DEPLOY_OK

    def _over_rate_limit(self, client_key: str, now: float) -> int | None:
        limit = self.faults.rate_limit_per_minute
        if limit is None:
            return None
        recent = self._recent.setdefault(client_key, deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= limit:
            return max(1, math.ceil(recent[0] + 60 - now))
        recent.append(now)
        return None


def _match_segments(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_segments(rest, path[i:]) for i in range(len(path) + 1))
    if not path:
        return False
    return (head == "*" or head == path[0]) and _match_segments(rest, path[1:])


def _rate_problems(owner: object, *names: str) -> list[str]:
    return [
        f"{name} must be between 0 and 1, got {getattr(owner, name)}"
        for name in names
        if not 0 <= getattr(owner, name) <= 1
    ]


def _require_mapping(data: Any, where: str, known: set[str], problems: list[str]) -> bool:
    """Whether ``data`` is a mapping; its unknown keys are added to ``problems`` (and later ignored)."""
    if not isinstance(data, dict):
        problems.append(f"{where} must be a mapping")
        return False
    unknown = sorted(set(data) - known)
    if unknown:
        problems.append(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return True
