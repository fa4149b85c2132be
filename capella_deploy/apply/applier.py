"""Executes a Plan: concurrently, in dependency order, waiting for models to settle.

The applier decides nothing about *what* changes; it carries out the plan's changes, each in its
own task under a parallelism bound. A failure ends that resource's task only. Creates are never
retried blindly: when the answer to a create is lost, the organization is re-read by name first.
Key tokens go to the outputs the moment the API returns them.

No status code is taken as proof of anything: the API may accept two resources of one name, and may
refuse a call during a transition with 409 or 422. So a model is edited, paused or resumed only once it
allows it, and a refusal is judged by reading the model again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from capella_deploy.api.client import CapellaClient
from capella_deploy.api.ratelimit import API_REQUESTS_PER_MINUTE
from capella_deploy.apply.eta import remaining_seconds
from capella_deploy.apply.shared import SharedCall, oldest
from capella_deploy.apply.watcher import PollSchedule, Ready, StatusWatcher, WaitFailed, WaitTimedOut
from capella_deploy.clock import Clock
from capella_deploy.errors import AmbiguousCreate, CapellaError, Conflict, NotFound, Unprocessable
from capella_deploy.kinds.api_key import LiveKey, key_create_body, parse_key
from capella_deploy.kinds.base import Action, Kind, LiveStateError, ResourceChange
from capella_deploy.kinds.diff import attribute_changes
from capella_deploy.kinds.model import (
    FAILED_STATUSES,
    TRANSITIONAL_STATUSES,
    UPDATE_ATTRIBUTES,
    LiveModel,
    allows,
    connection_string,
    embedding_dependency,
    header_profile,
    model_attributes,
    model_create_body,
    model_update_body,
    parse_model,
)
from capella_deploy.manifest import ApiKeySpec, Manifest, ModelSpec
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan

log = logging.getLogger("capella_deploy.apply")

# How often a create whose answer was lost, and that left nothing behind, is tried again. Each repeat follows a
# re-read by name, so more attempts cannot make a duplicate; with one in four calls failing (tests/reliability's
# chaos weather), three attempts left about one create in sixty undone, five leave about one in a thousand.
_CREATE_ATTEMPTS = 5
_DEPLOY_FAILED = FAILED_STATUSES - {"unhealthy"}
_DEPLOYING = "deploying"
# Seconds a create waits for the listing that shows which models of its name exist: creates that finish
# within that time share one list call.
_LISTING_GATHER = 2.0
# What the API may answer when a call comes at the wrong moment: 409 in some worlds, 422 in the spec's.
_REFUSED = (Conflict, Unprocessable)


@dataclass(frozen=True)
class ApplyOptions:
    parallelism: int = 10
    timeout: float = 3600.0  # per resource, in the clock's seconds
    schedule: PollSchedule = field(default_factory=PollSchedule)


@dataclass(frozen=True)
class ResourceResult:
    address: str
    action: Action
    ok: bool
    detail: str
    elapsed: float
    warning: str | None = None  # done, with something the user should know


@dataclass(frozen=True)
class ApplyResult:
    results: tuple[ResourceResult, ...]
    list_calls: int

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[ResourceResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"{r.address}: {r.warning}" for r in self.results if r.warning)


class ApplyError(CapellaError):
    pass


Progress = Callable[[str, str], None]


class Applier:
    def __init__(
        self,
        client: CapellaClient,
        manifest: Manifest,
        plan: Plan,
        outputs: Outputs,
        *,
        clock: Clock,
        options: ApplyOptions = ApplyOptions(),
        progress: Progress | None = None,
    ) -> None:
        self._client = client
        self._manifest = manifest
        self._plan = plan
        self._org = plan.org_id
        self._outputs = outputs
        self._clock = clock
        self._options = options
        self._progress = progress or (lambda address, message: None)
        self._models = {spec.name: spec for spec in manifest.models}
        self._keys = {spec.name: spec for spec in manifest.apiKeys}
        self._semaphore = asyncio.Semaphore(max(1, options.parallelism))
        self._watcher = StatusWatcher(
            lambda: client.list_models(self._org),
            clock,
            options.schedule,
            requests_per_minute=client.requests_per_minute,
        )
        # The changes under way, by address, with the clock time each started: for a live progress display.
        self.active: dict[str, float] = {}
        # The changes whose deciding write (the create of a model, else the first call) has not gone out yet,
        # and whether it starts a deployment: what the estimate of the time left still has to send.
        self._unsent = {
            c.address: c.kind is Kind.MODEL and c.action in (Action.CREATE, Action.REPLACE) for c in plan.pending
        }
        self._started = clock.now()
        self._writes_done = 0
        self._deadlines: dict[str, float] = {}
        self._warnings: dict[str, str] = {}
        # Model ids known so far, by manifest name; keys naming a model wait until its id is known.
        self._model_ids: dict[str, str] = {}
        self._id_known: dict[str, asyncio.Event] = {}
        # Models with a change in this plan: set when that change ends; ``_ready`` names those that succeeded.
        self._finished: dict[str, asyncio.Event] = {}
        self._ready: set[str] = set()
        # Key creates look for other runs' keys of their name once no key create is under way, all in one listing.
        self._key_listing = SharedCall(self._list_keys, clock, 0.0)
        self._key_creates = 0
        self._keys_quiet = asyncio.Event()
        self._keys_quiet.set()

    async def run(self) -> ApplyResult:
        for change in self._plan.changes:
            if change.kind is Kind.MODEL and change.after is not None:
                event = self._id_known.setdefault(change.name, asyncio.Event())
                if change.action not in (Action.CREATE, Action.REPLACE) and change.live_id:
                    self._model_ids[change.name] = change.live_id
                    event.set()
                if change.action is not Action.NOOP:
                    self._finished[change.name] = asyncio.Event()
        try:
            results = await asyncio.gather(*(self._run_one(c) for c in self._plan.pending))
        finally:
            await self._watcher.close()
        return ApplyResult(tuple(results), self._watcher.list_calls)

    def remaining(self) -> float:
        """Seconds (of the clock) this run is expected to take still."""
        now = self._clock.now()
        writes_left = len(self._unsent)
        # Writes so far went out at this pace; before the first, assume the API's (or the client's) rate.
        pace = (self._client.requests_per_minute or API_REQUESTS_PER_MINUTE) / 60
        elapsed = now - self._started
        if self._writes_done and writes_left and elapsed > 0:
            pace = self._writes_done / elapsed
        return remaining_seconds(
            now,
            completions=self._watcher.completions(),
            writes_left=writes_left,
            deploys_left=sum(self._unsent.values()),
            writes_per_second=pace,
            deploy_seconds=self._watcher.durations.expected(_DEPLOYING),
            notice_seconds=self._watcher.notice_seconds(),
        )

    def _sent(self, address: str) -> None:
        if self._unsent.pop(address, None) is not None:
            self._writes_done += 1

    async def _run_one(self, change: ResourceChange) -> ResourceResult:
        started = self._clock.now()
        self.active[change.address] = started
        self._deadlines[change.address] = started + self._options.timeout
        try:
            return await self._run_one_tracked(change, started)
        finally:
            del self.active[change.address]
            self._sent(change.address)
            if change.kind is Kind.MODEL and change.after is not None and change.name in self._finished:
                self._finished[change.name].set()

    async def _run_one_tracked(self, change: ResourceChange, started: float) -> ResourceResult:
        try:
            if change.kind is Kind.MODEL:
                detail = await self._apply_model(change)
            else:
                detail = await self._apply_key(change)
        except (CapellaError, KeyError, OSError) as exc:
            message = str(exc) if not isinstance(exc, KeyError) else f"missing manifest entry {exc}"
            self._progress(change.address, f"failed: {message}")
            if change.kind is Kind.MODEL and change.after is not None and change.name in self._id_known:
                self._id_known[change.name].set()  # let dependants fail fast instead of waiting
            return ResourceResult(change.address, change.action, False, message, self._clock.now() - started)
        if change.kind is Kind.MODEL and change.after is not None:
            self._ready.add(change.name)
        self._progress(change.address, detail)
        warning = self._warnings.get(change.address)
        return ResourceResult(change.address, change.action, True, detail, self._clock.now() - started, warning)

    # -- models -----------------------------------------------------------------------------------

    async def _apply_model(self, change: ResourceChange) -> str:
        action = change.action
        if action is Action.DELETE:
            assert change.live_id is not None
            await self._delete_model(change, change.live_id)
            self._sent(change.address)
            self._progress(change.address, "destroying")
            try:
                await self._watcher.wait(
                    change.live_id,
                    until=set(),
                    failing={"destroyFailed"},
                    gone_ok=True,
                    timeout=self._left(change),
                    transition="destroying",
                )
            except WaitFailed as exc:
                raise ApplyError(f"model {change.live_id}: {exc}") from None
            self._outputs.forget_model(change.name, change.live_id)
            return "destroyed"
        spec = self._models[change.name]
        wanted = "paused" if spec.state == "paused" else "healthy"
        if action is Action.REPLACE:
            assert change.live_id is not None
            await self._delete_model(change, change.live_id)
            self._progress(change.address, f"destroying {change.live_id} to replace it")
        if action in (Action.CREATE, Action.REPLACE):
            model_ids = await self._embedding_ready(change, spec)
            model_id, deploying_since = await self._create_model(spec, change, model_ids)
            # A model adopted from another run of this manifest may already have been paused by that run.
            model = await self._settle(
                change, model_id, "deploying", "healthy", wanted, transition=_DEPLOYING, since=deploying_since
            )
            if model.status != wanted:
                model = await self._set_state(change, model_id, wanted)
            return await self._record_model(spec, model)
        assert change.live_id is not None
        model_id = change.live_id
        shows_update: Ready | None = None
        if action is Action.UPDATE:
            model_ids = await self._embedding_ready(change, spec)
            body = model_update_body(spec, self._manifest.defaults, model_ids)
            await self._when_allowed(
                change, model_id, "edit", lambda: self._client.update_model(self._org, model_id, body)
            )
            self._sent(change.address)
            shows_update = self._shows(spec, model_ids)
        if any(c.path == "state" for c in change.attribute_changes):
            model = await self._set_state(change, model_id, wanted)
        else:
            model = await self._settle(change, model_id, "updating", wanted)
        if shows_update is not None and not shows_update(model):
            model = await self._until_visible(change, model, shows_update)
        return await self._record_model(spec, model)

    def _shows(self, spec: ModelSpec, model_ids: dict[str, str]) -> Ready:
        """Whether a read of the model shows the in-place attributes the manifest sets."""
        declared = model_attributes(spec, self._manifest.defaults, model_ids)
        wanted = {name: value for name, value in declared.items() if name in UPDATE_ATTRIBUTES}
        return lambda model: not attribute_changes(model.attributes, wanted)

    async def _until_visible(self, change: ResourceChange, model: LiveModel, shows: Ready) -> LiveModel:
        """Wait until a read shows the update: "updates may take up to a few minutes to take effect", and a plan
        made before then would show the same update again. Past the bound, the update stands as accepted."""
        self._progress(change.address, "update accepted; waiting until a read shows it")
        try:
            seen = await self._watcher.wait(model.id, ready=shows, failing=_DEPLOY_FAILED, timeout=self._left(change))
        except WaitTimedOut:
            self._warnings[change.address] = (
                f"the update was accepted but is not yet visible after {self._options.timeout:g} s (--timeout); "
                "a plan made before it shows will list it again: wait and plan again rather than apply it twice"
            )
            return model
        except WaitFailed as exc:
            raise ApplyError(f"model {model.id}: {exc}") from None
        assert seen is not None
        return seen

    async def _embedding_ready(self, change: ResourceChange, spec: ModelSpec) -> dict[str, str]:
        """The model ids known so far, once the model ``spec``'s semantic cache embeds with (if one of the
        manifest's) exists and is in its declared state."""
        name = embedding_dependency(spec, self._manifest.defaults, self._models)
        if name is None:
            return dict(self._model_ids)
        finished = self._finished.get(name)
        if finished is not None:
            self._progress(change.address, f"waiting for model.{name}, its embedding model")
            await finished.wait()
            if name not in self._ready:
                raise ApplyError(f"its semantic cache embeds with model.{name}, which could not be made ready")
            return dict(self._model_ids)
        model_id = self._model_ids.get(name)
        if model_id is None:
            raise ApplyError(f"its semantic cache embeds with model.{name}, which does not exist")
        wanted = "paused" if self._models[name].state == "paused" else "healthy"
        if (await self._read_model(model_id)).status != wanted:
            await self._settle(change, model_id, f"waiting for model.{name}, its embedding model", wanted)
        return dict(self._model_ids)

    async def _create_model(
        self, spec: ModelSpec, change: ResourceChange, model_ids: dict[str, str]
    ) -> tuple[str, float]:
        """The id of the model made (or adopted), and when its deployment began, as near as can be told."""
        body = model_create_body(spec, self._manifest.defaults, model_ids)
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            made: str | None = None
            try:
                async with self._semaphore:
                    made = await self._client.create_model(self._org, body)
            except (AmbiguousCreate, Conflict) as exc:
                # A lost answer, or (where the API refuses a second model of one name) one made by another run.
                unclear: CapellaError = exc
            answered = self._clock.now()
            if made is not None:
                self._sent(change.address)
                # Known at once: keys naming the model need not wait for the look at other runs' models.
                self._model_ids[spec.name] = made
                self._id_known[spec.name].set()
            model_id = await self._one_of_its_name(change, made)
            if model_id is None:
                if attempt == _CREATE_ATTEMPTS:
                    raise ApplyError(f"create did not go through after {attempt} attempts: {unclear}") from None
                self._progress(change.address, f"create unclear ({type(unclear).__name__}); nothing was made, retrying")
                await self._clock.sleep(_create_pause(attempt))
                continue
            if made is None:
                self._progress(change.address, f"found {model_id} after an unclear create answer; adopting it")
            elif model_id != made and any(spec.name in key.allowedModels for key in self._manifest.apiKeys):
                self._warnings[change.address] = (
                    f"a key this run made for it before {made} was given up names that model; "
                    "the next plan replaces such a key"
                )
            self._model_ids[spec.name] = model_id
            self._id_known[spec.name].set()
            return model_id, answered if model_id == made else self._clock.now()
        raise AssertionError("unreachable")

    async def _one_of_its_name(self, change: ResourceChange, made: str | None) -> str | None:
        """The model to keep of those made since the plan under this name: ``made`` by this run (None when the
        answer was lost) and any other run's (an API may accept several of one name). None when there is none.

        Every run keeps the oldest, so all agree whatever the order they look in; each deletes the others it
        made. A run whose answer was lost cannot tell which one it made, and deletes every other: their makers,
        looking too, give theirs up anyway. Creation times that tie go by the listing's order, which is the
        order of creation: the first maker, which may have looked before the others existed, then keeps what
        everyone else keeps.
        """
        known = self._known_ids(Kind.MODEL, change.name)
        if made is None:
            listed = await self._list_models()  # read by name before anything is sent again
        else:
            listed = await self._watcher.listing(within=_LISTING_GATHER, timeout=self._left(change))
        rivals = [m for m in listed if m.name == change.name and m.id not in known and m.status != "destroying"]
        if not rivals:
            return made  # not listed yet, or (after a lost answer) nothing was made
        keep = rivals[oldest(m.created_at for m in rivals)]
        for other in rivals:
            if other.id != keep.id and (other.id == made or made is None):
                await self._delete_model(change, other.id)
        if made is not None and keep.id != made:
            self._progress(change.address, f"another run made {keep.id} of this name first; keeping that one")
        return keep.id

    def _known_ids(self, kind: Kind, name: str) -> set[str]:
        """The ids of the live resources of this kind and name the plan knows of."""
        return {c.live_id for c in self._plan.changes if c.kind is kind and c.name == name and c.live_id}

    async def _list_models(self) -> list[LiveModel]:
        # An entry that cannot be read is not the one looked for; letting its parse error out would end
        # the whole run with a traceback instead of failing one resource.
        models = []
        for raw in await self._client.list_models(self._org):
            with contextlib.suppress(LiveStateError):
                models.append(parse_model(raw))
        return models

    async def _read_model(self, model_id: str) -> LiveModel:
        try:
            raw = await self._client.get_model(self._org, model_id)
        except NotFound:
            raise ApplyError(f"model {model_id} no longer exists") from None
        try:
            return parse_model(raw)
        except LiveStateError as exc:
            raise ApplyError(f"model {model_id}: the API's answer cannot be read: {exc}") from None

    async def _delete_model(self, change: ResourceChange, model_id: str) -> None:
        """Ask for the model's deletion; a model already on its way out is what was asked for.

        When the answer to a DELETE is lost the client sends it again, and the repeat is refused because
        the model is already being destroyed: the outcome asked for, not a failure.
        """
        while True:
            try:
                await self._call(self._client.delete_model(self._org, model_id))
                return
            except _REFUSED as exc:
                try:
                    model = await self._read_model(model_id)
                except ApplyError:
                    return  # gone already
                if model.status == "destroying":
                    return
                await self._wait_out_refusal(change, model, exc, lambda m: m.status not in TRANSITIONAL_STATUSES)

    async def _set_state(self, change: ResourceChange, model_id: str, wanted: str) -> LiveModel:
        pause = wanted == "paused"
        turn = self._client.pause_model if pause else self._client.resume_model
        # A model already on its way is not asked again. It may be this very call's own doing: when the answer
        # to the first attempt is lost, the client repeats the call, and the repeat is refused.
        on_its_way = {"pausing", "paused"} if pause else {"resuming", "healthy"}
        await self._when_allowed(
            change, model_id, "pause" if pause else "resume", lambda: turn(self._org, model_id), arrived=on_its_way
        )
        self._sent(change.address)
        # The transition began with this call, unless it was under way already (another run's, or a repeat's).
        transition = "pausing" if pause else "resuming"
        return await self._settle(change, model_id, transition, wanted, transition=transition)

    async def _when_allowed(
        self,
        change: ResourceChange,
        model_id: str,
        action: str,
        call: Callable[[], Awaitable[None]],
        *,
        arrived: Collection[str] = (),
    ) -> None:
        """Make ``call`` once the model allows ``action`` (edit, pause, resume), or stop when its status is in
        ``arrived``. A refusal while the model is in transition is waited out and the call made again; one
        while it is settled and allows the call is an answer, and fails the change."""

        def done_or_allowed(model: LiveModel) -> bool:
            return model.status in arrived or allows(model, action)

        model = await self._read_model(model_id)
        while True:
            if model.status in arrived:
                return
            if not allows(model, action):
                doing = f"waiting until it can {action} ({model.status})"
                model = await self._wait(change, model_id, doing, done_or_allowed)
                continue
            try:
                await self._call(call())
                return
            except _REFUSED as exc:
                model = await self._read_model(model_id)
                if model.status in arrived:
                    return
                model = await self._wait_out_refusal(
                    change,
                    model,
                    exc,
                    lambda m: m.status in arrived or (allows(m, action) and m.status not in TRANSITIONAL_STATUSES),
                    action=action,
                )

    async def _wait_out_refusal(
        self, change: ResourceChange, model: LiveModel, exc: CapellaError, ready: Ready, *, action: str | None = None
    ) -> LiveModel:
        """After a refusal: fail when nothing explains it (the model is settled and takes the call), else wait
        until ``ready``."""
        settled = model.status not in TRANSITIONAL_STATUSES
        if settled and (action is None or allows(model, action)):
            raise ApplyError(f"model {model.id}: refused while {model.status}: {exc}") from None
        self._progress(change.address, f"refused while {model.status}; waiting for it to settle")
        return await self._wait(change, model.id, "waiting to settle", ready)

    async def _wait(self, change: ResourceChange, model_id: str, doing: str, ready: Ready) -> LiveModel:
        self._progress(change.address, doing)
        return await self._watch(change, model_id, ready=ready)

    async def _settle(
        self,
        change: ResourceChange,
        model_id: str,
        doing: str,
        *statuses: str,
        transition: str | None = None,
        since: float | None = None,
    ) -> LiveModel:
        """Wait until the model reaches one of ``statuses``; ``transition``: the one that began just now, or at
        ``since``."""
        self._progress(change.address, doing)
        return await self._watch(change, model_id, until=set(statuses), transition=transition, since=since)

    async def _watch(
        self,
        change: ResourceChange,
        model_id: str,
        *,
        until: Collection[str] = (),
        ready: Ready | None = None,
        transition: str | None = None,
        since: float | None = None,
    ) -> LiveModel:
        try:
            model = await self._watcher.wait(
                model_id,
                until=until,
                ready=ready,
                failing=_DEPLOY_FAILED,
                timeout=self._left(change),
                transition=transition,
                since=since,
            )
        except WaitTimedOut as exc:
            # Say what happens next: nothing is deleted or made again, the next apply waits for it.
            raise ApplyError(
                f"model {model_id}: {exc} ({self._options.timeout:g} s, --timeout); it is left in place "
                "and the next apply waits for it again"
            ) from None
        except WaitFailed as exc:
            raise ApplyError(f"model {model_id}: {exc}") from None
        assert model is not None
        return model

    def _left(self, change: ResourceChange) -> float:
        """What is left of the change's --timeout."""
        return max(0.0, self._deadlines[change.address] - self._clock.now())

    async def _record_model(self, spec: ModelSpec, model: LiveModel) -> str:
        self._outputs.record_model(
            spec.name,
            id=model.id,
            status=model.status,
            region=model.region,
            connectionString=await connection_string(self._client, self._org, model),
            headers=header_profile(spec, self._manifest.defaults),
        )
        return model.status

    # -- API keys ---------------------------------------------------------------------------------

    async def _apply_key(self, change: ResourceChange) -> str:
        if change.action is Action.DELETE:
            assert change.live_id is not None
            await self._call(self._client.delete_api_key(self._org, change.live_id))
            self._outputs.forget_key(change.name, change.live_id)
            return "deleted"
        spec = self._keys[change.name]
        new_id, old_gone = await self._create_key(spec, change)
        if "delete" in change.action.steps and not old_gone:
            assert change.live_id is not None
            # The new key is in the outputs before the old one goes, so applications can switch.
            await self._call(self._client.delete_api_key(self._org, change.live_id))
        return f"created {new_id}"

    async def _create_key(self, spec: ApiKeySpec, change: ResourceChange) -> tuple[str, bool]:
        """Create the key and record its token; also say whether the key it replaces is already gone."""
        model_ids = await self._wait_for_models(spec)
        body = key_create_body(spec, self._manifest.defaults, model_ids)
        # Every key of this name the plan knows of; any other one found after a lost answer is this run's.
        known = self._known_ids(Kind.API_KEY, spec.name)
        old_gone = False
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                async with self._semaphore, self._creating_key():
                    created = await self._client.create_api_key(self._org, body)
            except Conflict as exc:
                if change.live_id is None or old_gone:
                    raise ApplyError(
                        f"a key named {spec.name!r} already exists that this plan did not know of "
                        f"(made by another run?); plan again: {exc}"
                    ) from None
                # This API refuses two keys with one name: the old key must go before its successor.
                self._progress(change.address, "the API refuses a second key of this name; deleting the old one first")
                await self._call(self._client.delete_api_key(self._org, change.live_id))
                old_gone = True
                continue
            except AmbiguousCreate as exc:
                found = await self._find_new_keys(spec.name, known)
                if len(found) > 1:
                    # Another run is making this key too (an API may accept several of one name): which one is
                    # this run's cannot be told, so none is claimed, kept or deleted here.
                    raise ApplyError(
                        f"the answer to the create was lost, and keys {', '.join(found)} of this name were made "
                        "since the plan (another run is making this key too); this run claims none of them: run "
                        "apply again, which keeps the key whose token the outputs hold"
                    ) from None
                orphan = found[0] if found else None
                if orphan is not None and change.live_id is not None and not old_gone:
                    # A rotation whose new key came back without its token: that key is of no use to anyone,
                    # while the old one still works and its token is in the outputs. Keep the old, drop the new.
                    await self._call(self._client.delete_api_key(self._org, orphan))
                    raise ApplyError(
                        f"the new key's token was lost in transit, so that key ({orphan}) was deleted again; "
                        "the old key and its token are kept: run apply again to rotate"
                    ) from None
                if orphan is not None:
                    self._outputs.record_key(spec.name, key_id=orphan, token=None, region=body["region"])
                    raise ApplyError(
                        f"key {orphan} was created but its token was lost in transit and cannot be fetched "
                        f"again; run `capella-deploy apply --replace apiKey.{spec.name}` to rotate it"
                    ) from None
                if attempt == _CREATE_ATTEMPTS:
                    raise ApplyError(f"create did not go through after {attempt} attempts: {exc}") from None
                await self._clock.sleep(_create_pause(attempt))
                continue
            expires = datetime.fromtimestamp(self._clock.now(), tz=timezone.utc) + timedelta(days=spec.expiryDays)
            self._outputs.record_key(
                spec.name,
                key_id=created.id,
                token=created.token,
                region=body["region"],
                expiresAt=expires.replace(microsecond=0).isoformat(),
                # Which models the token may call, by manifest name ("*": every model of its region): for `env`.
                allowedModels=sorted(spec.allowedModels),
            )
            self._sent(change.address)
            await self._first_of_its_name(change, spec.name, created.id, known)
            return created.id, old_gone
        raise ApplyError(f"key {spec.name!r} could not be created after {_CREATE_ATTEMPTS} attempts")

    async def _first_of_its_name(self, change: ResourceChange, name: str, key_id: str, known: set[str]) -> None:
        """Keep the key just made only if no other run made one of this name first (an API may accept several).

        As for models, the oldest stays. The run that made it deletes the younger ones: their makers give them up
        anyway, and one whose answer was lost cannot tell which is its own. A run gives up its own key when it
        is younger, and says so when another run deleted it first.
        """
        await self._keys_quiet.wait()
        rivals = [k for k in await self._key_listing.get() if k.name == name and k.id not in known]
        if not rivals:
            return  # not listed yet
        first = rivals[oldest(k.created_at for k in rivals)]
        if first.id == key_id:
            for younger in rivals:
                if younger.id != key_id:
                    await self._call(self._client.delete_api_key(self._org, younger.id))
            return
        if key_id in {k.id for k in rivals}:
            await self._call(self._client.delete_api_key(self._org, key_id))
        self._outputs.forget_key(name, key_id)
        raise ApplyError(
            f"another run made key {first.id} of this name first, so this run's key {key_id} was deleted again; "
            f"the token of {first.id} is with the run that made it"
        )

    async def _find_new_keys(self, name: str, known: set[str]) -> list[str]:
        return [key.id for key in await self._list_keys() if key.name == name and key.id not in known]

    @contextlib.asynccontextmanager
    async def _creating_key(self) -> AsyncIterator[None]:
        self._key_creates += 1
        self._keys_quiet.clear()
        try:
            yield
        finally:
            self._key_creates -= 1
            if not self._key_creates:
                self._keys_quiet.set()

    async def _list_keys(self) -> list[LiveKey]:
        keys = []
        for raw in await self._client.list_api_keys(self._org):
            with contextlib.suppress(LiveStateError):  # as in _list_models
                keys.append(parse_key(raw))
        return keys

    async def _wait_for_models(self, spec: ApiKeySpec) -> dict[str, str]:
        names = [n for n in spec.allowedModels if n != "*"]
        for name in names:
            event = self._id_known.get(name)
            if event is None:
                continue
            await event.wait()
            if name not in self._model_ids:
                raise ApplyError(f"allowedModels names model {name!r}, which could not be created")
        missing = [n for n in names if n not in self._model_ids]
        if missing:
            raise ApplyError(f"allowedModels names {', '.join(missing)}, not known in the organization")
        return dict(self._model_ids)

    async def _call(self, call: Awaitable[None]) -> None:
        async with self._semaphore:
            await call


def _create_pause(attempt: int) -> float:
    """Seconds to wait before create attempt ``attempt + 1``.

    The client does not repeat a create on its own, so this is the only backoff a create gets; trying
    again at once would land in the same outage or rate-limit storm that lost the first answer.
    """
    return float(min(5 * 2 ** (attempt - 1), 60))
