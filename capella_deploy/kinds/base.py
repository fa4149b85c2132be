"""The words the generic machinery and every resource kind share.

The planner, the applier, the live reading and export know a resource through these alone: its ``Kind``, its
typed ``Address``, the ``Action`` a change takes (with its replace order), and the ``ResourceChange`` a plan
holds. Each kind module (model.py, api_key.py, provider.py) holds everything else about its kind.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from capella_deploy.errors import CapellaError, Conflict, Unprocessable
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import Outputs

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient
    from capella_deploy.clock import Clock


class Kind(str, Enum):
    """The kinds of resource, in dependency order: a kind may refer only to kinds listed before it."""

    MODEL = "model"
    API_KEY = "apiKey"
    PROVIDER = "provider"


@dataclass(frozen=True, order=True)
class Address:
    """A resource a manifest names: ``model.chat``, ``apiKey.app``, ``provider.openai``."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}.{self.name}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """An address as a user writes it (``--replace``, ``--target``); ValueError says how to write one."""
        kind, dot, name = text.partition(".")
        known = {k.value: k for k in Kind}
        if not dot or not name or kind not in known:
            raise ValueError(f"{text!r} is not a resource address; write {cls.spellings()}")
        return cls(known[kind], name)

    @staticmethod
    def spellings() -> str:
        """How addresses are written: ``model.NAME, apiKey.NAME or ...``."""
        written = [f"{k.value}.NAME" for k in Kind]
        return " or ".join(written) if len(written) < 3 else ", ".join(written[:-1]) + " or " + written[-1]


class Action(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    # The old resource is deleted first, then its successor created (-/+): the old one holds what the new needs
    # (a model's GPU and its name).
    REPLACE = "replace"
    # The successor is created first, then the old one deleted (+/-): whoever uses it switches with no gap.
    REPLACE_CREATE_FIRST = "replace-create-first"
    # A create-first replacement with nothing to change but the resource itself: a key near its expiry.
    ROTATE = "rotate"
    PAUSE = "pause"
    RESUME = "resume"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps in the order the API sees them, as Terraform's JSON plan lists a change's actions."""
        if self is Action.REPLACE:
            return ("delete", "create")
        if self in (Action.REPLACE_CREATE_FIRST, Action.ROTATE):
            return ("create", "delete")
        if self in (Action.PAUSE, Action.RESUME):
            return ("update",)
        return (self.value,)

    @property
    def renews(self) -> bool:
        """Whether the resource gets a new live id, which whoever refers to it must follow."""
        return "create" in self.steps


@dataclass(frozen=True)
class AttributeChange:
    """One attribute, by its manifest path (``cache.expirySeconds``): ``before`` live, ``after`` declared.

    ``to_default``: the manifest leaves the attribute unset, and ``after`` is the API's default it is reset to.
    """

    path: str
    before: Any
    after: Any
    forces_replace: bool = False
    to_default: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "forces_replace": self.forces_replace,
            "to_default": self.to_default,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributeChange:
        return cls(
            data["path"],
            data.get("before"),
            data.get("after"),
            bool(data.get("forces_replace")),
            bool(data.get("to_default")),
        )


@dataclass(frozen=True)
class OutputChange:
    """A value of the outputs file that apply would change: a model's connection string or one header of its
    ``X-cb-*`` profile. ``before`` is what the file holds (None: nothing), ``after`` what apply writes (None:
    the value goes); ``known_after_apply``: a value only apply learns (a new model's connection string)."""

    path: str
    before: Any
    after: Any
    known_after_apply: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "known_after_apply": self.known_after_apply,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputChange:
        return cls(data["path"], data.get("before"), data.get("after"), bool(data.get("known_after_apply")))


@dataclass(frozen=True)
class ResourceChange:
    kind: Kind
    name: str
    action: Action
    live_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    attribute_changes: tuple[AttributeChange, ...] = ()
    reason: str | None = None
    prevent_destroy: bool = False
    # Machine-readable cause, in the style of Terraform's action_reason (see docs/plan-json.md).
    cause: str | None = None
    # The resources this change needs first (a key's models, a semantic cache's embedding model).
    depends_on: tuple[Address, ...] = ()
    # What apply would change in the outputs file for this resource (a change of its own when nothing else is).
    outputs: tuple[OutputChange, ...] = ()

    @property
    def ref(self) -> Address:
        return Address(self.kind, self.name)

    @property
    def address(self) -> str:
        """The address as shown: a live resource the manifest does not declare carries its id."""
        suffix = f"[{self.live_id}]" if self.live_id and self.after is None else ""
        return f"{self.ref}{suffix}"

    @property
    def renamed_from(self) -> str | None:
        """The live resource's former name, when this change renames it (an entry's ``renamedFrom``)."""
        return next((str(c.before) for c in self.attribute_changes if c.path == "name"), None)

    @property
    def destroys(self) -> bool:
        """True when the change deletes something that exists now and nothing takes its place first."""
        return self.action in (Action.DELETE, Action.REPLACE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind.value,
            "name": self.name,
            "action": self.action.value,
            "live_id": self.live_id,
            "before": self.before,
            "after": self.after,
            "attribute_changes": [c.to_dict() for c in self.attribute_changes],
            "reason": self.reason,
            "prevent_destroy": self.prevent_destroy,
            "cause": self.cause,
            "depends_on": [str(a) for a in self.depends_on],
            "outputs": [o.to_dict() for o in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceChange:
        return cls(
            kind=Kind(data["kind"]),
            name=data["name"],
            action=Action(data["action"]),
            live_id=data.get("live_id"),
            before=data.get("before"),
            after=data.get("after"),
            attribute_changes=tuple(AttributeChange.from_dict(c) for c in data.get("attribute_changes", [])),
            reason=data.get("reason"),
            prevent_destroy=bool(data.get("prevent_destroy")),
            cause=data.get("cause"),
            depends_on=tuple(Address.parse(a) for a in data.get("depends_on", ())),
            outputs=tuple(OutputChange.from_dict(o) for o in data.get("outputs", ())),
        )


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)


class LiveStateError(ValueError):
    """An API answer that cannot be read as a resource of its kind."""


def by_name(resources: Iterable[R]) -> dict[str, list[R]]:
    """Live resources grouped by name: a name is the identity, but the API may hold several of one name."""
    grouped: dict[str, list[R]] = defaultdict(list)
    for resource in resources:
        grouped[resource.name].append(resource)
    return grouped


@dataclass
class ExportNotes:
    """What an export leaves out, and why, and what else a reader should know."""

    omitted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportScope:
    """What an export covers: names matching ``match`` (fnmatch), resources of ``region``."""

    match: str | None = None
    region: str | None = None

    def named(self, name: str) -> bool:
        return self.match is None or fnmatch.fnmatchcase(name, self.match)

    def wanted(self, name: str, region: str | None) -> bool:
        """For a resource of a Capella region; one of no region (organization-wide) goes by ``named``."""
        return self.named(name) and (self.region is None or region == self.region)


@dataclass(frozen=True)
class StatusFacts:
    """What `status` shows of one live resource besides its kind, name and id."""

    state: str  # a model's status; "active" or "expired" for a key
    created_at: datetime | None
    region: str | None = None
    gpu_memory: int | None = None
    connection_string: str | None = None
    expires_at: datetime | None = None


@dataclass
class Settled:
    """What settling after an apply found: notes for people, and managed resources not where they should be."""

    warnings: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)

    def add(self, other: Settled) -> None:
        self.warnings += other.warnings
        self.unsettled += other.unsettled


def first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


# -- what a kind is to the generic machinery ---------------------------------------------------------------


class Declared(Protocol):
    """A manifest entry of any kind."""

    @property
    def name(self) -> str: ...

    @property
    def preventDestroy(self) -> bool: ...

    @property
    def renamedFrom(self) -> str | None:
        """The name the resource had before: a live one of that name, and none of this name, is renamed."""


class LiveResource(Protocol):
    """A live resource of any kind, as read from the API."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def attributes(self) -> dict[str, Any]: ...


SpecT = TypeVar("SpecT", bound=Declared)
LiveT = TypeVar("LiveT", bound=LiveResource)


@dataclass(frozen=True)
class Extra(Generic[LiveT]):
    """A live resource sharing a managed name that the plan does not manage: deleted, unless preventDestroy."""

    resource: LiveT
    described: str  # "another live model 4f2c…", "an older live key 9ab1…"
    reason: str
    cause: str


@dataclass(frozen=True)
class PlanContext:
    """What a kind's plan rule may know besides its own entry and live resource. Pure data.

    ``ids`` holds the live id each declared resource is managed by, by address, except those this plan renews
    (their id is known only after apply); ``managed`` every such id, renewed or not, by id, to name it.
    """

    manifest: Manifest
    now: datetime
    force_replace: frozenset[Address] = frozenset()
    held_tokens: frozenset[str] = frozenset()
    credential_versions: Mapping[str, int] = field(default_factory=dict)
    ids: Mapping[Address, str] = field(default_factory=dict)
    managed: Mapping[str, Address] = field(default_factory=dict)
    renewed: frozenset[Address] = frozenset()
    # The outputs document as its file holds it now, tokens masked; None when there is no file to compare with.
    outputs: Mapping[str, Any] | None = None
    # The names the manifest declares, by kind.
    declared: Mapping[Kind, frozenset[str]] = field(default_factory=dict)

    # Lookups every plan rule asks for, built once per context: a rule asking for them per resource would make
    # planning grow with the square of the manifest.
    @cached_property
    def ids_by_name(self) -> dict[Kind, dict[str, str]]:
        """Manifest name -> the live id it will have when the plan runs (a renewed one has none yet), by kind."""
        found: dict[Kind, dict[str, str]] = defaultdict(dict)
        for address, live_id in self.ids.items():
            found[address.kind][address.name] = live_id
        return found

    @cached_property
    def names_by_id(self) -> dict[Kind, dict[str, str]]:
        """Live id -> the manifest name it is managed as, renewed or not, by kind."""
        found: dict[Kind, dict[str, str]] = defaultdict(dict)
        for live_id, address in self.managed.items():
            found[address.kind][live_id] = address.name
        return found

    @cached_property
    def renewed_names(self) -> dict[Kind, frozenset[str]]:
        found: dict[Kind, set[str]] = defaultdict(set)
        for address in self.renewed:
            found[address.kind].add(address.name)
        return defaultdict(frozenset, {kind: frozenset(names) for kind, names in found.items()})


class ResourceKind(Protocol[SpecT, LiveT]):
    """One kind of resource: how it is declared, read, compared, planned, applied and exported."""

    kind: Kind
    section: str  # the manifest's list of this kind, also the outputs' and an export's: "models"
    noun: str  # how counts name it: "3 model(s)"
    resource_type: str  # the type in the JSON plan, Terraform style: capella_ai_model
    sensitive: tuple[str, ...]  # secret values known only after apply (a key's token): named, never shown
    # Attribute paths in the API's words, as plans spelt them before they spoke the manifest's, each with its
    # manifest spelling(s): ignore rules written the old way keep working (``caching.expiryTTL``).
    former_paths: Mapping[str, tuple[str, ...]]

    def specs(self, manifest: Manifest) -> Sequence[SpecT]:
        """The manifest's entries of this kind."""

    def refers_to(self, spec: SpecT, ctx: PlanContext) -> tuple[Address, ...]:
        """The resources of the manifest this entry refers to by id: renewing one of them changes this one."""

    async def read(self, client: CapellaClient, org_id: str, now: datetime | None) -> tuple[list[LiveT], list[str]]:
        """Every live resource of this kind (list calls only), and warnings about entries that cannot be read;
        ``now`` is the time of the reading (None: not known)."""

    def in_play(self, live: LiveT) -> bool:
        """False for a live resource on its way out, which plays no part in any plan."""

    def fingerprint(self, live: LiveT, held_tokens: frozenset[str]) -> dict[str, Any]:
        """What of ``live`` a saved plan depends on: a change here makes the plan stale."""

    def pick(self, candidates: Sequence[LiveT], ctx: PlanContext) -> tuple[LiveT | None, list[Extra[LiveT]]]:
        """Of the live resources named like an entry, the one to manage and the others."""

    def plan(self, spec: SpecT, current: LiveT | None, ctx: PlanContext) -> ResourceChange:
        """The change that makes ``current`` (None: nothing live) what ``spec`` declares. ``current`` bears the
        entry's ``renamedFrom`` name when only a live resource of that name exists: the change renames it."""

    def steps(self, run: ApplyRun) -> KindSteps:
        """The kind's apply steps for one run."""

    def transition(self, change: ResourceChange) -> str | None:
        """The long transition the change's deciding write starts (a model's deployment), for the estimate."""

    def reads_credentials(self, change: ResourceChange) -> bool:
        """Whether carrying out ``change`` reads credentials the manifest refers to (environment variables,
        files): those must be at hand before the first change of an apply."""

    async def settle(self, run: SettleRun, live: Sequence[LiveT]) -> Settled:
        """After an apply: wait for what is still moving, and make the outputs describe every managed resource
        of this kind in ``live`` (read once, after the changes)."""

    def status(self, live: LiveT, now: datetime) -> StatusFacts:
        """What `status` shows of a live resource."""

    def export(
        self, live: Sequence[LiveT], scope: ExportScope, exported: dict[str, str], notes: ExportNotes
    ) -> list[dict[str, Any]]:
        """Manifest entries for the live resources in ``scope``, one per name. ``exported`` maps the live id of
        each resource exported so far (of kinds before this one) to its name, for references; this kind adds
        its own."""


def created(kind: Kind, spec: Declared, after: dict[str, Any], depends_on: tuple[Address, ...] = ()) -> ResourceChange:
    return ResourceChange(
        kind,
        spec.name,
        Action.CREATE,
        after=after,
        reason="not in the organization",
        prevent_destroy=spec.preventDestroy,
        depends_on=depends_on,
    )


def unchanged(
    kind: Kind,
    spec: Declared,
    live_id: str,
    before: dict[str, Any],
    after: dict[str, Any],
    diffs: tuple[AttributeChange, ...],
    depends_on: tuple[Address, ...] = (),
) -> ResourceChange:
    """The no-op change of an existing resource, which a kind's rule turns into the action its diffs need."""
    return ResourceChange(
        kind,
        spec.name,
        Action.NOOP,
        live_id=live_id,
        before=before,
        after=after,
        attribute_changes=diffs,
        prevent_destroy=spec.preventDestroy,
        depends_on=depends_on,
    )


def deleted(kind: Kind, live: LiveResource, reason: str, cause: str) -> ResourceChange:
    return ResourceChange(
        kind, live.name, Action.DELETE, live_id=live.id, before=live.attributes, reason=reason, cause=cause
    )


# -- what a kind's apply steps get from the applier -------------------------------------------------------

T = TypeVar("T")


class Watched(Protocol):
    """What a watcher reads of a resource: which one it is, and its status."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...


W = TypeVar("W", bound=Watched)


class ApplyError(CapellaError):
    """A change that could not be carried out; the message says what is left behind and what to do."""


class Watch(Protocol[W]):
    """Waiting for resources of one kind to reach a status, one shared list call serving every waiter."""

    async def wait(
        self,
        live_id: str,
        *,
        until: Collection[str] = (),
        ready: Callable[[W], bool] | None = None,
        failing: Collection[str] = (),
        gone_ok: bool = False,
        timeout: float,
        transition: str | None = None,
        since: float | None = None,
    ) -> W | None: ...

    async def listing(self, *, within: float, timeout: float) -> list[W]: ...


class ApplyRun(Protocol):
    """What every change of one apply run shares: the API, the outputs, the ids found so far, a rate of work."""

    client: CapellaClient
    org_id: str
    clock: Clock
    outputs: Outputs
    manifest: Manifest
    timeout: float  # per change, in the clock's seconds (--timeout)
    environ: Mapping[str, str]  # where a manifest's {env: NAME} credentials are read

    async def call(self, call: Awaitable[T]) -> T:
        """``call`` under the run's parallelism bound."""

    def watch(self, list_all: Callable[[], Awaitable[list[dict[str, Any]]]], parse: Callable[[Any], W]) -> Watch[W]:
        """A watcher for one kind's resources (one per run and kind)."""

    def known_ids(self, address: Address) -> set[str]:
        """The live ids the plan knows for this address (whatever else has its name now was made since)."""

    def found(self, address: Address, live_id: str) -> None:
        """The live id of a resource of this plan is known now: who refers to it may go on."""

    async def id_of(self, address: Address) -> str | None:
        """The live id of a resource, once a change of this run that makes it has made it; None when none could."""

    def ids_of(self, kind: Kind) -> dict[str, str]:
        """Manifest name -> live id, for every resource of ``kind`` whose id is known so far."""

    async def finished(self, address: Address) -> bool | None:
        """Wait until this run's change of ``address`` ends: whether it succeeded; None when there is none."""


class SettleRun(Protocol):
    """What settling after an apply shares with every kind."""

    client: CapellaClient
    org_id: str
    outputs: Outputs
    manifest: Manifest
    timeout: float  # how long to wait for one resource still moving (--timeout)
    failed: frozenset[Address]  # resources whose change this apply already reported as failed

    def watch(self, list_all: Callable[[], Awaitable[list[dict[str, Any]]]], parse: Callable[[Any], W]) -> Watch[W]:
        """A watcher for one kind's resources."""


class ApplyStep(Protocol):
    """One change under way, as its kind's steps see it."""

    change: ResourceChange

    def progress(self, message: str) -> None: ...

    def warn(self, message: str) -> None:
        """Done, but with something the user should know."""

    def left(self) -> float:
        """What is left of this change's --timeout."""

    def sent(self) -> None:
        """The change's deciding write has gone out (what the estimate of the time left counts)."""


class KindSteps(Protocol):
    """A kind's apply steps for one run, holding what its changes share (a watcher, a shared listing)."""

    async def apply(self, step: ApplyStep) -> str:
        """Carry out ``step.change``; return what was done, for the progress line."""


# How often a create whose answer was lost, and that left nothing behind, is tried again. Each repeat follows a
# re-read by name, so more attempts cannot make a duplicate; with one in four calls failing (tests/reliability's
# chaos weather), three attempts left about one create in sixty undone, five leave about one in a thousand.
CREATE_ATTEMPTS = 5
# What the API may answer when a call comes at the wrong moment: 409 in some worlds, 422 in the spec's.
REFUSED = (Conflict, Unprocessable)


def create_pause(attempt: int) -> float:
    """Seconds to wait before create attempt ``attempt + 1``.

    The client does not repeat a create on its own, so this is the only backoff a create gets; trying
    again at once would land in the same outage or rate-limit storm that lost the first answer.
    """
    return float(min(5 * 2 ** (attempt - 1), 60))
