"""The sandbox's world, persisted as one JSON document that every process given the same file shares.

Writes are read-modify-write under an exclusive ``flock`` on a sibling ``.lock`` file (the state file itself is
replaced on every write, so it cannot carry the lock), and land by write-to-temp, fsync, ``os.replace``: a
reader never sees half a file, so readers take no lock. Every read checks the file's identity (inode, size,
mtime) and re-loads when another process has written since.

All times in the world are sandbox-clock seconds since the epoch. Secrets are never stored: a key token or a
provider credential is kept as its SHA-256, enough to recognise it again and to tell that it changed.

Schema history: version 1 had ``reject_duplicate_names`` (true: the conflicts world, false: the spec world);
version 2 names the world's rules in ``world`` and adds AI provider integrations. Version 1 files are read.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from capella_deploy.errors import CapellaError
from capella_deploy.sandbox.operations import RULES, SPEC, Rules

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
DEFAULT_SPEED = 100.0
ORG_NAME = "Sandbox Organization"


class StateError(CapellaError):
    """The state file exists but is not a sandbox world this version can read."""


@dataclass
class Audit:
    created_by: str
    created_at: float
    modified_by: str
    modified_at: float
    version: int = 1

    @classmethod
    def new(cls, actor: str, now: float) -> Audit:
        return cls(actor, now, actor, now)

    def touch(self, actor: str, now: float) -> None:
        self.modified_by = actor
        self.modified_at = now
        self.version += 1


@dataclass
class Usage:
    """Inference traffic of one model; the current and previous sandbox hour give the trend."""

    requests: int = 0
    tokens: int = 0
    hour: int = 0
    hour_requests: int = 0
    hour_tokens: int = 0
    previous_requests: int = 0
    previous_tokens: int = 0

    def add(self, now: float, tokens: int) -> None:
        self.roll(now)
        self.requests += 1
        self.tokens += tokens
        self.hour_requests += 1
        self.hour_tokens += tokens

    def roll(self, now: float) -> None:
        hour = int(now // 3600)
        if hour == self.hour:
            return
        adjacent = hour == self.hour + 1
        self.previous_requests = self.hour_requests if adjacent else 0
        self.previous_tokens = self.hour_tokens if adjacent else 0
        self.hour, self.hour_requests, self.hour_tokens = hour, 0, 0


@dataclass
class ModelRecord:
    id: str
    name: str
    catalog_model_name: str
    cloud_provider: str
    region: str
    cpu: int
    gpu_memory: int
    # Optional create-body fields, as sent: quantization, optimization, dimensions, enableBatching,
    # keywordFiltering, caching, guardrails, jailbreak.
    options: dict[str, Any]
    status: str
    audit: Audit
    # The transition under way: it lands on ``target_status`` at ``transition_ends_at``. A target with no end
    # is a deployment that never finishes.
    target_status: str | None = None
    transition_ends_at: float | None = None
    usage: Usage = field(default_factory=Usage)
    # An accepted edit that reads do not show yet (see ``Faults.edit_delay_seconds``): its changes, as PUT sent
    # them, land at ``edit_lands_at``.
    pending_edit: dict[str, Any] = field(default_factory=dict)
    edit_lands_at: float | None = None


@dataclass
class ApiKeyRecord:
    id: str
    name: str
    description: str
    expiry_days: float
    allowed_cidrs: list[str]
    region: str
    allowed_models: list[str]  # model ids, or ["*"]
    token_sha256: str  # the token itself is shown once, in the create response, and never stored
    audit: Audit

    @property
    def expires_at(self) -> float:
        return self.audit.created_at + self.expiry_days * 86400


@dataclass
class ProviderRecord:
    """An AI provider integration: its settings that reads show, and only digests of its credentials."""

    id: str
    name: str
    type: str  # openAI | awsBedrock | awsS3
    settings: dict[str, str]  # what reads return: awsS3's awsRegion, bucket, folderPath; nothing for the others
    credential_sha256: dict[str, str]  # credential field -> SHA-256 of its value
    audit: Audit


@dataclass
class FileRecord:
    id: str
    model_id: str
    filename: str
    purpose: str
    content: str
    created_at: float
    expires_at: float


@dataclass
class BatchRecord:
    id: str
    model_id: str
    endpoint: str
    input_file_id: str
    created_at: float
    expires_at: float
    request_total: int
    cancelled_at: float | None = None


@dataclass
class ClockAnchor:
    """A shared timeline: sandbox time ``start`` at wall time ``wall``, running ``speed`` times faster.

    A ``stepped`` timeline does not follow the wall clock: it stays at ``start``, which only waits and
    ``advance_clock`` move (see ``Sandbox.step_clock``).
    """

    start: float
    wall: float
    speed: float
    stepped: bool = False

    def at(self, wall: float) -> float:
        return self.start if self.stepped else self.start + (wall - self.wall) * self.speed


@dataclass
class World:
    org_id: str
    org_name: str
    org_created_at: float
    actor_id: str  # who the audit fields name as creator/modifier: the sandbox's one Management API key
    clock: ClockAnchor
    rules: Rules = SPEC  # saved as "world": spec (the official spec's rules) or conflicts (duplicates refused)
    models: dict[str, ModelRecord] = field(default_factory=dict)
    api_keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    providers: dict[str, ProviderRecord] = field(default_factory=dict)
    files: dict[str, FileRecord] = field(default_factory=dict)
    batches: dict[str, BatchRecord] = field(default_factory=dict)

    @classmethod
    def new(cls) -> World:
        now = time.time()
        return cls(
            org_id=str(uuid.uuid4()),
            org_name=ORG_NAME,
            org_created_at=now,
            actor_id=str(uuid.uuid4()),
            clock=ClockAnchor(start=now, wall=now, speed=DEFAULT_SPEED),
        )

    def to_json(self) -> dict[str, Any]:
        fields = asdict(self)
        return {"schemaVersion": SCHEMA_VERSION, "world": fields.pop("rules"), **fields}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> World:
        version = data.get("schemaVersion")
        if version not in READABLE_VERSIONS:
            raise StateError(f"unsupported schemaVersion {version!r}")
        fields = {k: v for k, v in data.items() if k != "schemaVersion"}
        if version == 1:
            # Version 1 refused duplicate names unless told otherwise: that is the conflicts world.
            fields["world"] = "conflicts" if fields.pop("reject_duplicate_names", True) else SPEC
            fields["providers"] = {}
        fields["rules"] = fields.pop("world")
        if fields["rules"] not in RULES:
            raise StateError(f"world must be one of {', '.join(RULES)}; got {fields['rules']!r}")
        fields["clock"] = ClockAnchor(**fields["clock"])
        fields["models"] = {
            k: ModelRecord(**{**m, "audit": Audit(**m["audit"]), "usage": Usage(**m["usage"])})
            for k, m in fields["models"].items()
        }
        fields["api_keys"] = {
            k: ApiKeyRecord(**{**a, "audit": Audit(**a["audit"])}) for k, a in fields["api_keys"].items()
        }
        fields["providers"] = {
            k: ProviderRecord(**{**p, "audit": Audit(**p["audit"])}) for k, p in fields["providers"].items()
        }
        fields["files"] = {k: FileRecord(**f) for k, f in fields["files"].items()}
        fields["batches"] = {k: BatchRecord(**b) for k, b in fields["batches"].items()}
        return cls(**fields)


class StateStore:
    """Holds the world in memory and, given a path, keeps it in step with the file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.RLock()  # flock does not exclude threads sharing one open lock file
        self._identity: tuple[int, int, int] | None = None
        if path is None:
            self._world = World.new()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            loaded = self._load_if_changed()
            if loaded is None:
                self._world = World.new()
                self._save()
            else:
                self._world = loaded

    def read(self) -> World:
        """The current world. Callers must not change it: use ``write()`` for that."""
        with self._lock:
            if self.path is not None:
                loaded = self._load_if_changed()
                if loaded is not None:
                    self._world = loaded
            return self._world

    @contextlib.contextmanager
    def write(self) -> Iterator[World]:
        """Read-modify-write: yields the freshest world, saves it when the block ends without an error.

        An error inside the block leaves both the file and the in-memory world as they were.
        """
        with self._locked():
            if self.path is not None:
                loaded = self._load_if_changed()
                if loaded is not None:
                    self._world = loaded
            draft = copy.deepcopy(self._world)
            yield draft
            self._world = draft
            self._save()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self.path is None:
                yield
                return
            lock_path = self.path.with_name(self.path.name + ".lock")
            with open(lock_path, "a+b") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _load_if_changed(self) -> World | None:
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                identity = (st.st_ino, st.st_size, st.st_mtime_ns)
                if identity == self._identity:
                    return None
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            world = World.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{self.path} is not a readable sandbox state file: {exc}") from exc
        self._identity = identity
        return world

    def _save(self) -> None:
        if self.path is None:
            return
        # Insertion order is creation order: lists rely on it to order records created at the same moment.
        data = json.dumps(self._world.to_json(), indent=1).encode()
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)  # make the rename itself durable
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        st = os.stat(self.path)
        self._identity = (st.st_ino, st.st_size, st.st_mtime_ns)
