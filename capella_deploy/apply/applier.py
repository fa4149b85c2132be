"""Executes a Plan: concurrently, in dependency order, waiting for models to settle.

The applier decides nothing about *what* changes; it carries out the plan's changes, each in its
own task under a parallelism bound. A failure ends that resource's task only. Creates are never
retried blindly: when the answer to a create is lost, the organization is re-read by name first.
Key tokens go to the outputs the moment the API returns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from capella_deploy.api.client import CapellaClient
from capella_deploy.api.ratelimit import API_REQUESTS_PER_MINUTE
from capella_deploy.apply.eta import remaining_seconds
from capella_deploy.apply.watcher import PollSchedule, StatusWatcher, WaitFailed, WaitTimedOut
from capella_deploy.clock import Clock
from capella_deploy.errors import AmbiguousCreate, CapellaError, Conflict
from capella_deploy.kinds.desired import header_profile, key_create_body, model_create_body, model_update_body
from capella_deploy.live import FAILED_STATUSES, LiveModel, LiveStateError, parse_key, parse_model
from capella_deploy.manifest import ApiKeySpec, Manifest, ModelSpec
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Action, Kind, Plan, ResourceChange

log = logging.getLogger("capella_deploy.apply")

# How often a create whose answer was lost, and that left nothing behind, is tried again. Each repeat follows a
# re-read by name, so more attempts cannot make a duplicate; with one in four calls failing (tests/reliability's
# chaos weather), three attempts left about one create in sixty undone, five leave about one in a thousand.
_CREATE_ATTEMPTS = 5
_DEPLOY_FAILED = FAILED_STATUSES - {"unhealthy"}
_DEPLOYING = "deploying"


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
        # Model ids known so far, by manifest name; keys naming a model wait until its id is known.
        self._model_ids: dict[str, str] = {}
        self._id_known: dict[str, asyncio.Event] = {}

    async def run(self) -> ApplyResult:
        for change in self._plan.changes:
            if change.kind is Kind.MODEL and change.after is not None:
                event = self._id_known.setdefault(change.name, asyncio.Event())
                if change.action not in (Action.CREATE, Action.REPLACE) and change.live_id:
                    self._model_ids[change.name] = change.live_id
                    event.set()
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
        try:
            return await self._run_one_tracked(change, started)
        finally:
            del self.active[change.address]
            self._sent(change.address)

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
        self._progress(change.address, detail)
        return ResourceResult(change.address, change.action, True, detail, self._clock.now() - started)

    # -- models -----------------------------------------------------------------------------------

    async def _apply_model(self, change: ResourceChange) -> str:
        action = change.action
        if action is Action.DELETE:
            assert change.live_id is not None
            await self._delete_model(change.live_id)
            self._sent(change.address)
            self._progress(change.address, "destroying")
            try:
                await self._watcher.wait(
                    change.live_id,
                    until=set(),
                    failing={"destroyFailed"},
                    gone_ok=True,
                    timeout=self._options.timeout,
                    transition="destroying",
                )
            except WaitFailed as exc:
                raise ApplyError(f"model {change.live_id}: {exc}") from None
            self._outputs.forget_model(change.name, change.live_id)
            return "destroyed"
        spec = self._models[change.name]
        if action is Action.REPLACE:
            assert change.live_id is not None
            await self._delete_model(change.live_id)
            self._progress(change.address, f"destroying {change.live_id} to replace it")
        if action in (Action.CREATE, Action.REPLACE):
            model_id = await self._create_model(spec, change)
            self._sent(change.address)
            wanted = "paused" if spec.state == "paused" else "healthy"
            # A model adopted from another run of this manifest may already have been paused by that run.
            model = await self._settle(change, model_id, "deploying", "healthy", wanted, transition=_DEPLOYING)
            if model.status != wanted:
                model = await self._set_state(change, model_id, wanted)
            return self._record_model(spec, model)
        assert change.live_id is not None
        model_id = change.live_id
        if action is Action.UPDATE:
            update = model_update_body(spec, self._manifest.defaults)
            try:
                await self._call(self._client.update_model(self._org, model_id, update))
                self._sent(change.address)
            except Conflict:
                # Still deploying, pausing or resuming (an earlier run may have timed out waiting): an edit is
                # taken only when healthy or paused, so let it settle and ask again.
                await self._settle(change, model_id, "waiting to settle before the edit", "healthy", "paused")
                await self._call(self._client.update_model(self._org, model_id, update))
        wanted = "paused" if spec.state == "paused" else "healthy"
        state_changed = any(c.path == "state" for c in change.attribute_changes)
        if state_changed:
            model = await self._set_state(change, model_id, wanted)
        else:
            model = await self._settle(change, model_id, "updating", wanted)
        return self._record_model(spec, model)

    async def _create_model(self, spec: ModelSpec, change: ResourceChange) -> str:
        body = model_create_body(spec, self._manifest.defaults)
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                async with self._semaphore:
                    model_id = await self._client.create_model(self._org, body)
            except (AmbiguousCreate, Conflict) as exc:
                found = await self._find_model(spec.name, exclude=change.live_id)
                if found is not None:
                    self._progress(change.address, f"found {found} after an unclear create answer; adopting it")
                    model_id = found
                elif attempt == _CREATE_ATTEMPTS:
                    raise ApplyError(f"create did not go through after {attempt} attempts: {exc}") from None
                else:
                    self._progress(change.address, f"create unclear ({type(exc).__name__}); nothing was made, retrying")
                    await self._clock.sleep(_create_pause(attempt))
                    continue
            self._model_ids[spec.name] = model_id
            self._id_known[spec.name].set()
            return model_id
        raise AssertionError("unreachable")

    async def _find_model(self, name: str, exclude: str | None) -> str | None:
        for model in await self._list_models():
            if model.name == name and model.id != exclude and model.status != "destroying":
                return model.id
        return None

    async def _list_models(self) -> list[LiveModel]:
        # An entry that cannot be read is not the one looked for; letting its parse error out would end
        # the whole run with a traceback instead of failing one resource.
        models = []
        for raw in await self._client.list_models(self._org):
            with contextlib.suppress(LiveStateError):
                models.append(parse_model(raw))
        return models

    async def _delete_model(self, model_id: str) -> None:
        try:
            await self._call(self._client.delete_model(self._org, model_id))
        except Conflict:
            # When the answer to a DELETE is lost the client sends it again, and the repeat is refused
            # because the model is already being destroyed: the outcome asked for, not a failure.
            if any(m.id == model_id and m.status != "destroying" for m in await self._list_models()):
                raise

    async def _set_state(self, change: ResourceChange, model_id: str, wanted: str) -> LiveModel:
        turn = self._client.pause_model if wanted == "paused" else self._client.resume_model
        transition = "pausing" if wanted == "paused" else "resuming"
        try:
            await self._call(turn(self._org, model_id))
            self._sent(change.address)
        except Conflict:
            # Still deploying, pausing or resuming: let it settle, then ask again. It may also be this very
            # call's own doing: when the answer to the first attempt is lost, the client repeats the call,
            # and the repeat is refused because the model is already pausing. So settling where we want it
            # ends the wait too; waiting only for the other status would wait for ever.
            other = "healthy" if wanted == "paused" else "paused"
            settled = await self._settle(change, model_id, "waiting to settle", other, wanted)
            if settled.status == wanted:
                return settled
            await self._call(turn(self._org, model_id))
        return await self._settle(change, model_id, transition, wanted, transition=transition)

    async def _settle(
        self, change: ResourceChange, model_id: str, doing: str, *statuses: str, transition: str | None = None
    ) -> LiveModel:
        """Wait until the model reaches one of ``statuses``; ``transition``: the one that began just now."""
        self._progress(change.address, doing)
        try:
            model = await self._watcher.wait(
                model_id,
                until=set(statuses),
                failing=_DEPLOY_FAILED,
                timeout=self._options.timeout,
                transition=transition,
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

    def _record_model(self, spec: ModelSpec, model: LiveModel) -> str:
        self._outputs.record_model(
            spec.name,
            id=model.id,
            status=model.status,
            region=model.region,
            connectionString=model.connection_string,
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
        self._sent(change.address)
        if change.action in (Action.REPLACE, Action.ROTATE) and not old_gone:
            assert change.live_id is not None
            # The new key is in the outputs before the old one goes, so applications can switch.
            await self._call(self._client.delete_api_key(self._org, change.live_id))
        return f"created {new_id}"

    async def _create_key(self, spec: ApiKeySpec, change: ResourceChange) -> tuple[str, bool]:
        """Create the key and record its token; also say whether the key it replaces is already gone."""
        model_ids = await self._wait_for_models(spec)
        body = key_create_body(spec, self._manifest.defaults, model_ids)
        # Every key of this name the plan knows of; any other one found after a lost answer is this run's.
        known = {c.live_id for c in self._plan.changes if c.kind is Kind.API_KEY and c.name == spec.name and c.live_id}
        old_gone = False
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                async with self._semaphore:
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
                orphan = await self._find_new_key(spec.name, known)
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
            return created.id, old_gone
        raise ApplyError(f"key {spec.name!r} could not be created after {_CREATE_ATTEMPTS} attempts")

    async def _find_new_key(self, name: str, known: set[str]) -> str | None:
        for raw in await self._client.list_api_keys(self._org):
            try:
                key = parse_key(raw)
            except LiveStateError:
                continue  # as in _list_models: an unreadable entry is not the key looked for
            if key.name == name and key.id not in known:
                return key.id
        return None

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
