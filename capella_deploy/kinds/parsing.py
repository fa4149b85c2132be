"""Reading API answers defensively: a field of the wrong type reads as missing, never as a crash."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """A field that should hold a list; anything else reads as empty, like a missing field."""
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


_RFC3339 = re.compile(r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)?")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time of the API (audit fields), or None when it is not one."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    # The documented examples show nanoseconds, which datetime does not take: keep microseconds.
    fraction = (match["fraction"] or "")[:6].ljust(6, "0") if match["fraction"] else ""
    zone = match["zone"] or "Z"
    text = match["base"] + (f".{fraction}" if fraction else "") + ("+00:00" if zone == "Z" else zone)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
