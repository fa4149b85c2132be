"""The organization lock's lease, as it is kept in the organization itself: a Model API key.

Capella offers no lock of its own, so a run that changes an organization marks it with a key whose name starts
with ``capella-deploy-lock-`` and whose description says who holds the lock, since when and until when. The key
is useless by construction: it admits a single reserved address, expires on its own within a day, and its token
is thrown away the moment it arrives. ``run/lock.py`` takes, renews and releases leases; this module only says
what a lease key looks like, so that the live state can leave these keys out of every plan, drift report,
export and prune.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

NAME_PREFIX = "capella-deploy-lock-"
# The API's limit on a key description.
DESCRIPTION_MAX = 250
# A documentation address (RFC 5737): nothing can call from it, so the key admits no one.
UNREACHABLE_CIDR = "192.0.2.1/32"
# Days the key itself lives, whatever becomes of the run: a lease outlives no run by more than this.
KEY_EXPIRY_DAYS = 1
_FORMAT = 1


def is_lease_key(raw: Mapping[str, Any]) -> bool:
    """Whether an entry of the key listing is a lease of the organization lock (and so not a managed key)."""
    name = raw.get("name")
    return isinstance(name, str) and name.startswith(NAME_PREFIX)


@dataclass(frozen=True)
class LeaseTerms:
    """What a lease key's description says."""

    lock_id: str
    expires: datetime
    operation: str
    holder: str
    environment: str | None = None
    # The holding process and the machine it runs on, as far as another process can tell them apart (see
    # run/lock.py's node_id): a holder found dead on this machine holds nothing.
    pid: int | None = None
    node: str | None = None
    # When the lock was first taken: the server's createdAt of the lock's first lease key. Renewals are new keys
    # and carry it on, so a renewed lock keeps its place ahead of runs that came after it.
    since: datetime | None = None

    def description(self) -> str:
        doc: dict[str, Any] = {
            "v": _FORMAT,
            "lock": self.lock_id,
            "since": _iso(self.since) if self.since else None,
            "expires": _iso(self.expires),
            "op": self.operation,
            "env": self.environment,
            "pid": self.pid,
            "node": self.node,
            "by": self.holder,
        }
        text = _dump(doc)
        while len(text) > DESCRIPTION_MAX and doc["by"]:
            # The holder is the one free-form field: it gives way first, to a character or more over the limit.
            doc["by"] = doc["by"][: -(len(text) - DESCRIPTION_MAX) - 1] + "…" if len(doc["by"]) > 1 else ""
            text = _dump(doc)
        return text


def parse_terms(text: object) -> LeaseTerms | None:
    """The terms a lease key's description states; None when it is not a description this version wrote."""
    if not isinstance(text, str):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != _FORMAT:
        return None
    lock_id, expires = doc.get("lock"), _time(doc.get("expires"))
    if not isinstance(lock_id, str) or not lock_id or expires is None:
        return None
    env, pid, node = doc.get("env"), doc.get("pid"), doc.get("node")
    return LeaseTerms(
        lock_id=lock_id,
        expires=expires,
        operation=str(doc.get("op") or "unknown"),
        holder=str(doc.get("by") or "unknown"),
        environment=env if isinstance(env, str) and env else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None,
        node=node if isinstance(node, str) and node else None,
        since=_time(doc.get("since")),
    )


def _iso(value: datetime) -> str:
    # Microseconds only when there are any: ``since`` copies a server time, which must compare exactly.
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return None


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
