"""An advisory lock per organization, so two applies on one machine never interleave.

The lock is a file created exclusively (``O_CREAT | O_EXCL``) holding who took it, when, and for
what. A second run waits up to ``--lock-timeout`` and then names the holder. A lock left behind by
a killed run stays until ``capella-deploy force-unlock LOCK_ID``, as with Terraform; when the holder
was a process on this host that no longer exists, the message says so. Runs on different machines
must be serialised by the pipeline (a concurrency group), which the shipped workflows do.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from capella_deploy.errors import CapellaError

DEFAULT_LOCK_DIR = Path(".capella/locks")
_POLL_SECONDS = 0.25


class LockHeld(CapellaError):
    pass


@dataclass(frozen=True)
class LockInfo:
    id: str
    organization: str
    operation: str
    owner: str
    host: str
    pid: int
    created_at: str

    def describe(self) -> str:
        alive = "" if self.holder_alive() else " (that process no longer runs on this host)"
        return (
            f"lock {self.id} held by {self.owner} for {self.operation} since {self.created_at}, "
            f"pid {self.pid} on {self.host}{alive}"
        )

    def holder_alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # cannot tell from here; assume the holder is working
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def lock_path(directory: Path, org_id: str) -> Path:
    return directory / f"{org_id}.lock"


def read_lock(directory: Path, org_id: str) -> LockInfo | None:
    try:
        data = json.loads(lock_path(directory, org_id).read_text())
        return LockInfo(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return LockInfo("unreadable", org_id, "unknown", "unknown", "unknown", 0, "unknown")


@contextlib.contextmanager
def org_lock(
    org_id: str, operation: str, *, directory: Path = DEFAULT_LOCK_DIR, timeout: float = 0.0
) -> Iterator[LockInfo]:
    """Hold the organization's lock for the block; wait up to ``timeout`` seconds for it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = lock_path(directory, org_id)
    info = LockInfo(
        id=str(uuid.uuid4()),
        organization=org_id,
        operation=operation,
        owner=_owner(),
        host=socket.gethostname(),
        pid=os.getpid(),
        created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            if time.monotonic() >= deadline:
                holder = read_lock(directory, org_id)
                detail = holder.describe() if holder else "a lock that was just released"
                raise LockHeld(
                    f"organization {org_id} is locked: {detail}. Wait for that run, pass --lock-timeout, "
                    f"or, if it is dead, run `capella-deploy force-unlock {holder.id if holder else 'ID'}`"
                ) from None
            time.sleep(_POLL_SECONDS)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(info), handle)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        yield info
    finally:
        current = read_lock(directory, org_id)
        if current is not None and current.id == info.id:
            path.unlink(missing_ok=True)


def force_unlock(directory: Path, org_id: str, lock_id: str) -> LockInfo:
    holder = read_lock(directory, org_id)
    if holder is None:
        raise LockHeld(f"organization {org_id} is not locked")
    if holder.id != lock_id and holder.id != "unreadable":
        raise LockHeld(f"the lock on {org_id} has id {holder.id}, not {lock_id}; nothing was removed")
    lock_path(directory, org_id).unlink(missing_ok=True)
    return holder


def _owner() -> str:
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or os.environ.get("GITHUB_ACTOR") or "unknown"
    return f"{user}@{socket.gethostname()}"
