"""Model API keys: immutable, shown once, identified by their name.

Everything about the kind lives here: reading a key from the API (its lifetime, however the API reports it),
the attributes the planner compares, its create body, and its export entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from capella_deploy.errors import AmbiguousCreate, Conflict
from capella_deploy.kinds.base import (
    CREATE_ATTEMPTS,
    Action,
    Address,
    ApplyError,
    ApplyRun,
    ApplyStep,
    AttributeChange,
    ExportNotes,
    ExportScope,
    Extra,
    Kind,
    LiveStateError,
    PlanContext,
    ResourceChange,
    Settled,
    SettleRun,
    StatusFacts,
    by_name,
    create_pause,
    created,
    first_problem,
    unchanged,
)
from capella_deploy.kinds.diff import attribute_changes
from capella_deploy.kinds.parsing import as_list, as_mapping, as_str, parse_time
from capella_deploy.kinds.shared import SharedCall, oldest
from capella_deploy.lease import is_lease_key
from capella_deploy.manifest import ApiKeySpec, Defaults, Manifest, effective_region

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient

# A key's lifetime read as days remaining adds up with its age to whole days, give or take the time between
# the server's reading and ours and the skew of the two clocks.
_EXPIRY_SKEW_DAYS = 5 / (24 * 60)


@dataclass(frozen=True)
class LiveKey:
    id: str
    name: str
    description: str | None
    region: str | None
    expiry_days: float | None  # the lifetime the key was given, however the API reports it (see parse_key)
    allowed_cidrs: tuple[str, ...]
    allowed_models: tuple[tuple[str, str], ...]  # (id, name) pairs; ("*", "*") means every model
    created_at: datetime | None

    @property
    def allows_every_model(self) -> bool:
        return self.allowed_models == (("*", "*"),)

    @property
    def expires_at(self) -> datetime | None:
        if self.created_at is None or self.expiry_days is None:
            return None
        return self.created_at + timedelta(days=self.expiry_days)

    @property
    def attributes(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "region": self.region,
            "expiryDays": whole_days(self.expiry_days),
            "allowedCIDRs": sorted(self.allowed_cidrs),
            "allowedModels": sorted(name for _, name in self.allowed_models),
        }


def key_age(key: LiveKey) -> tuple[float, str]:
    """Sort key: among live keys of one name, the newest (the one to keep) sorts last; one of no known creation
    time first."""
    return (key.created_at.timestamp() if key.created_at else float("-inf"), key.id)


def parse_key(raw: Mapping[str, Any], now: datetime | None = None) -> LiveKey:
    """One key; ``now`` (the time of the reading) lets an ``expiry`` given as days remaining be read as the
    lifetime the key was given, so a key does not look changed as it ages."""
    key_id = raw.get("keyId", raw.get("id"))
    name = raw.get("name")
    if not isinstance(key_id, str) or not isinstance(name, str):
        raise LiveStateError("an API key entry has no keyId or name")
    allowed: list[tuple[str, str]] = []
    for entry in as_list(raw.get("allowedModels")):
        if isinstance(entry, Mapping):
            allowed.append((str(entry.get("id", "")), str(entry.get("name", entry.get("id", "")))))
        elif isinstance(entry, str):
            allowed.append((entry, entry))
    cidrs = as_list(raw.get("allowedCIDRs"))
    created_at = parse_time(as_mapping(raw.get("audit")).get("createdAt"))
    expiry = _expiry(raw.get("expiry"))
    return LiveKey(
        id=key_id,
        name=name,
        description=as_str(raw.get("description")) or None,
        region=as_str(raw.get("region")),
        expiry_days=lifetime_days(expiry, created_at, now) if expiry is not None else None,
        allowed_cidrs=tuple(str(c) for c in cidrs if isinstance(c, str)),
        allowed_models=tuple(allowed) or (("*", "*"),),
        created_at=created_at,
    )


def lifetime_days(expiry: float, created_at: datetime | None, now: datetime | None) -> float:
    """The days a key was given at creation, from an ``expiry`` that may be those days or the days remaining.

    The key's creation time tells them apart: a lifetime in whole days reads back whole, while the days
    remaining are whole only at the moment a whole number of days has passed, and add up with the key's age
    to a whole number. Anything else is taken as read.
    """
    if created_at is None or now is None or _whole(expiry, 1e-6):
        return expiry
    total = expiry + (now - created_at).total_seconds() / 86400
    return float(round(total)) if _whole(total, _EXPIRY_SKEW_DAYS) else expiry


def whole_days(days: float | None) -> float | int | None:
    """A number of days as people write it: 90, not 90.0."""
    return int(days) if days is not None and float(days).is_integer() else days


def _whole(value: float, tolerance: float) -> bool:
    return abs(value - round(value)) <= tolerance


def _expiry(value: Any) -> float | None:
    # A number of days, whole or not. Keys live at most 365 days; a value far outside that is garbage, not a
    # date to compute with.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    days = float(value)
    return days if 0 <= days <= 36_500 else None


def key_attributes(spec: ApiKeySpec, defaults: Defaults) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "description": spec.description,
        "region": effective_region(spec, defaults),
        "expiryDays": spec.expiryDays,
        "allowedCIDRs": sorted(spec.allowedCIDRs),
        "allowedModels": sorted(spec.allowedModels),
    }
    return {key: value for key, value in attrs.items() if value is not None}


def key_create_body(spec: ApiKeySpec, defaults: Defaults, model_ids: dict[str, str]) -> dict[str, Any]:
    """The create body; ``model_ids`` maps manifest model names to the live ids known at apply time."""
    attrs = key_attributes(spec, defaults)
    allowed = ["*"] if "*" in spec.allowedModels else [model_ids[name] for name in spec.allowedModels]
    body: dict[str, Any] = {
        "name": spec.name,
        "expiry": attrs["expiryDays"],
        "allowedCIDRs": list(spec.allowedCIDRs),
        "region": attrs["region"],
        "allowedModels": allowed,
    }
    if spec.description is not None:
        body["description"] = spec.description
    return body


def export_entry(key: LiveKey, exported_ids: Mapping[str, str], notes: ExportNotes) -> dict[str, Any] | None:
    if key.allows_every_model:
        allowed = ["*"]
    else:
        outside = [name or model_id for model_id, name in key.allowed_models if model_id not in exported_ids]
        if outside:
            notes.omitted.append(f"apiKey {key.name!r}: it allows models outside this export ({', '.join(outside)})")
            return None
        allowed = sorted(exported_ids[model_id] for model_id, _ in key.allowed_models)
    if key.region is None:
        notes.omitted.append(f"apiKey {key.name!r}: the API did not report its region")
        return None
    entry: dict[str, Any] = {
        "name": key.name,
        "description": key.description,
        "region": key.region,
        "expiryDays": whole_days(key.expiry_days),
        "allowedCIDRs": list(key.allowed_cidrs),
        "allowedModels": allowed,
    }
    entry = {k: v for k, v in entry.items() if v is not None}
    try:
        ApiKeySpec.model_validate(entry)
    except ValidationError as exc:
        notes.omitted.append(f"apiKey {key.name!r}: {first_problem(exc)}")
        return None
    return entry


# -- the kind ---------------------------------------------------------------------------------------------


class ApiKeys:
    """The Model API key kind, as the planner, the live reading and export see it."""

    kind = Kind.API_KEY
    section = "apiKeys"
    noun = "API key"
    resource_type = "capella_ai_model_api_key"
    # The token exists only in the create answer: a plan names it, never shows it.
    sensitive: tuple[str, ...] = ("token",)
    former_paths: Mapping[str, tuple[str, ...]] = {}

    def specs(self, manifest: Manifest) -> Sequence[ApiKeySpec]:
        return manifest.apiKeys

    def refers_to(self, spec: ApiKeySpec, ctx: PlanContext) -> tuple[Address, ...]:
        return tuple(Address(Kind.MODEL, name) for name in spec.allowedModels if name != "*")

    async def read(self, client: CapellaClient, org_id: str, now: datetime | None) -> tuple[list[LiveKey], list[str]]:
        keys: list[LiveKey] = []
        warnings: list[str] = []
        # The organization lock's leases are keys too, but no manifest's: no plan, drift report or export sees them.
        for raw in await client.list_api_keys(org_id):
            if is_lease_key(raw):
                continue
            try:
                keys.append(parse_key(raw, now))
            except LiveStateError as exc:
                warnings.append(f"skipped an unreadable API key entry: {exc}")
        return keys, warnings

    def in_play(self, live: LiveKey) -> bool:
        return True

    def fingerprint(self, live: LiveKey, held_tokens: frozenset[str]) -> dict[str, Any]:
        # Whether the outputs hold a key's token decides which key of a name a plan keeps. (Its end needs no
        # field: a key's creation time never changes, and its lifetime is among the attributes.)
        return {
            "id": live.id,
            "name": live.name,
            "allowedModelIds": None
            if live.allows_every_model
            else sorted(model_id for model_id, _ in live.allowed_models),
            "tokenHeld": live.id in held_tokens,
            **live.attributes,
        }

    def pick(self, candidates: Sequence[LiveKey], ctx: PlanContext) -> tuple[LiveKey | None, list[Extra[LiveKey]]]:
        """Among live keys sharing a name, the one to keep and the rest.

        The newest key whose token the outputs hold, else the newest: a key nobody holds the token of is of no
        use to anyone, so it never wins over one that applications can use (a rotation or a create cut short
        between the API's answer and the outputs leaves such a key behind).
        """
        if len(candidates) < 2:
            return (candidates[0] if candidates else None), []
        held = ctx.held_tokens
        ordered = sorted(candidates, key=key_age)
        holders = [k for k in ordered if k.id in held]
        kept = holders[-1] if holders else ordered[-1]
        extras = []
        for other in ordered:
            if other is kept:
                continue
            age = "an older" if key_age(other) < key_age(kept) else "a newer"
            reason, cause = _why_key_goes(other, kept, held)
            extras.append(Extra(other, f"{age} live key {other.id}", reason, cause))
        return kept, extras

    def steps(self, run: ApplyRun) -> KeySteps:
        return KeySteps(run)

    def transition(self, change: ResourceChange) -> str | None:
        return None  # a key is usable the moment the API answers

    def reads_credentials(self, change: ResourceChange) -> bool:
        return False

    async def settle(self, run: SettleRun, live: Sequence[LiveKey]) -> Settled:
        """Name each managed key whose token the outputs lack: a token is shown once, to the run that created
        the key, and cannot be fetched again."""
        found = Settled()
        held = run.outputs.held_key_ids()
        live_keys = by_name(live)
        for spec in run.manifest.apiKeys:
            keys = live_keys.get(spec.name)
            if not keys or any(k.id in held for k in keys):
                continue
            key = max(keys, key=key_age)
            found.warnings.append(
                f"apiKey.{spec.name}: the outputs hold no token for live key {key.id}; a token is shown only to "
                f"the run that created the key. Rotate it with `capella-deploy apply --replace apiKey.{spec.name}`"
            )
        return found

    def status(self, live: LiveKey, now: datetime) -> StatusFacts:
        expires = live.expires_at
        return StatusFacts(
            state="expired" if expires is not None and expires <= now else "active",
            created_at=live.created_at,
            region=live.region,
            expires_at=expires,
        )

    def export(
        self, live: Sequence[LiveKey], scope: ExportScope, exported: dict[str, str], notes: ExportNotes
    ) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for name, group in sorted(by_name(k for k in live if scope.wanted(k.name, k.region)).items()):
            newest = sorted(group, key=key_age)[-1]
            if len(group) > 1:
                notes.warnings.append(
                    f"apiKey {name!r}: exported the newest key {newest.id}; older keys share the name"
                )
            entry = export_entry(newest, exported, notes)
            if entry is not None:
                entries.append(entry)
        return entries

    def plan(self, spec: ApiKeySpec, current: LiveKey | None, ctx: PlanContext) -> ResourceChange:
        after = key_attributes(spec, ctx.manifest.defaults)
        if current is None:
            return created(Kind.API_KEY, spec, after)
        renewed_models = ctx.renewed_names[Kind.MODEL]
        names_by_id = ctx.names_by_id[Kind.MODEL]
        before = current.attributes
        # A key's models are compared by id: the API may spell a name differently, and a model of the same name
        # with another id is another model. Shown by manifest name where the id is one of the manifest's models
        # (``names_by_id``: the live model each manifest name manages, renewed or not). An id of no live model,
        # named like a model this plan renews, is that model's former self: the renewal replaces the key anyway.
        if not current.allows_every_model:
            before["allowedModels"] = sorted(
                names_by_id.get(model_id)
                or (
                    name
                    if name in renewed_models and model_id not in names_by_id
                    else f"{name or '(unnamed)'} ({model_id})"
                )
                for model_id, name in current.allowed_models
            )
        # The description is optional on both sides; an unset one in the manifest means "don't care".
        if "description" not in after:
            before = {k: v for k, v in before.items() if k != "description"}
        diffs = tuple(
            AttributeChange(d.path, d.before, d.after, forces_replace=True) for d in attribute_changes(before, after)
        )
        # A key found by its former name (renamedFrom) is succeeded by a key of the new name.
        if current.name != spec.name:
            before, after = {"name": current.name, **before}, {"name": spec.name, **after}
            diffs = (AttributeChange("name", current.name, spec.name, forces_replace=True), *diffs)
        base = unchanged(Kind.API_KEY, spec, current.id, before, after, diffs)
        if current.name != spec.name:
            # A key's attributes are flat (no mapping among them): each difference's path is an attribute's name.
            others = sorted({d.path for d in diffs if d.path != "name"})
            return replace(
                base,
                action=Action.REPLACE_CREATE_FIRST,
                reason=f"renamed from {current.name}"
                + (f", with {', '.join(others)}" if others else "")
                + "; API keys cannot be edited",
                cause="replace_because_renamed",
            )
        # A key cannot be edited: any change is a new key, made before the old one goes so applications switch.
        if diffs:
            attrs = ", ".join(sorted({d.path for d in diffs}))
            return replace(
                base,
                action=Action.REPLACE_CREATE_FIRST,
                reason=f"{attrs} cannot change in place (API keys are immutable)",
                cause="replace_because_cannot_update",
            )
        stale = sorted(renewed_models.intersection(spec.allowedModels))
        if stale:
            return replace(
                base,
                action=Action.REPLACE_CREATE_FIRST,
                reason=f"allowedModels: {', '.join(stale)} will get a new id",
                cause="replace_because_dependency_renewed",
            )
        expires = current.expires_at
        if expires is not None and expires - ctx.now <= timedelta(days=spec.rotateBeforeDays):
            when = "expired" if expires <= ctx.now else f"expires {expires.date().isoformat()}"
            return replace(
                base,
                action=Action.ROTATE,
                reason=f"{when}, within rotateBeforeDays={spec.rotateBeforeDays}",
                cause="rotate_because_expiring",
            )
        if Address(Kind.API_KEY, spec.name) in ctx.force_replace:
            return replace(base, action=Action.ROTATE, reason="rotation requested", cause="replace_by_request")
        return base


# -- apply ------------------------------------------------------------------------------------------------


class KeySteps:
    """The key kind's apply steps for one run.

    A key's token is in the create answer only: it is written to the outputs before anything else happens. A
    key is never edited; a new one is made first and the old one deleted after, so applications can switch.
    """

    def __init__(self, run: ApplyRun) -> None:
        self._run = run
        self._specs = {spec.name: spec for spec in run.manifest.apiKeys}
        # Key creates look for other runs' keys of their name once no key create is under way, all in one listing.
        self._key_listing = SharedCall(self._list_keys, run.clock, 0.0)
        self._key_creates = 0
        import asyncio  # here, not at the top: validate loads the kinds and has no loop to run

        self._keys_quiet = asyncio.Event()
        self._keys_quiet.set()

    async def apply(self, step: ApplyStep) -> str:
        change = step.change
        if change.action is Action.DELETE:
            assert change.live_id is not None
            await self._run.call(self._run.client.delete_api_key(self._run.org_id, change.live_id))
            self._run.outputs.forget_key(change.name, change.live_id)
            return "deleted"
        spec = self._specs[change.name]
        new_id, old_gone = await self._create_key(spec, step)
        if "delete" in change.action.steps and not old_gone:
            assert change.live_id is not None
            # The new key is in the outputs before the old one goes, so applications can switch.
            await self._run.call(self._run.client.delete_api_key(self._run.org_id, change.live_id))
        former = change.renamed_from
        if former is not None:
            # Renamed: the old key and its token are gone; the outputs hold the new one by its new name.
            self._run.outputs.forget_key(former, change.live_id)
        return f"created {new_id}"

    async def _create_key(self, spec: ApiKeySpec, step: ApplyStep) -> tuple[str, bool]:
        """Create the key and record its token; also say whether the key it replaces is already gone."""
        change = step.change
        model_ids = await self._wait_for_models(spec)
        body = key_create_body(spec, self._run.manifest.defaults, model_ids)
        # Every key of this name the plan knows of; any other one found after a lost answer is this run's.
        known = self._run.known_ids(change.ref)
        old_gone = False
        # One pass more than the attempts: deleting the old key after a refusal (below) is no attempt of its own,
        # so a refusal at the last attempt still leaves one to make the new key.
        for attempt in range(1, CREATE_ATTEMPTS + 2):
            try:
                async with self._creating_key():
                    created = await self._run.call(self._run.client.create_api_key(self._run.org_id, body))
            except Conflict as exc:
                if change.live_id is None or old_gone or change.renamed_from is not None:
                    raise ApplyError(
                        f"a key named {spec.name!r} already exists that this plan did not know of "
                        f"(made by another run?); plan again: {exc}"
                    ) from None
                # This API refuses two keys with one name: the old key must go before its successor.
                step.progress("the API refuses a second key of this name; deleting the old one first")
                await self._run.call(self._run.client.delete_api_key(self._run.org_id, change.live_id))
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
                    await self._run.call(self._run.client.delete_api_key(self._run.org_id, orphan))
                    raise ApplyError(
                        f"the new key's token was lost in transit, so that key ({orphan}) was deleted again; "
                        "the old key and its token are kept: run apply again to rotate"
                    ) from None
                if orphan is not None:
                    self._run.outputs.record_key(spec.name, key_id=orphan, token=None, region=body["region"])
                    raise ApplyError(
                        f"key {orphan} was created but its token was lost in transit and cannot be fetched "
                        f"again; run `capella-deploy apply --replace apiKey.{spec.name}` to rotate it"
                    ) from None
                if attempt == CREATE_ATTEMPTS:
                    raise ApplyError(f"create did not go through after {attempt} attempts: {exc}") from None
                await self._run.clock.sleep(create_pause(attempt))
                continue
            expires = datetime.fromtimestamp(self._run.clock.now(), tz=timezone.utc) + timedelta(days=spec.expiryDays)
            self._run.outputs.record_key(
                spec.name,
                key_id=created.id,
                token=created.token,
                region=body["region"],
                expiresAt=expires.replace(microsecond=0).isoformat(),
                # Which models the token may call, by manifest name ("*": every model of its region): for `env`.
                allowedModels=sorted(spec.allowedModels),
            )
            step.sent()
            await self._first_of_its_name(spec.name, created.id, known)
            return created.id, old_gone
        raise ApplyError(f"key {spec.name!r} could not be created after {CREATE_ATTEMPTS} attempts")

    async def _first_of_its_name(self, name: str, key_id: str, known: set[str]) -> None:
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
                    await self._run.call(self._run.client.delete_api_key(self._run.org_id, younger.id))
            return
        if key_id in {k.id for k in rivals}:
            await self._run.call(self._run.client.delete_api_key(self._run.org_id, key_id))
        self._run.outputs.forget_key(name, key_id)
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
        for raw in await self._run.client.list_api_keys(self._run.org_id):
            with contextlib.suppress(LiveStateError):  # as in _list_models
                keys.append(parse_key(raw))
        return keys

    async def _wait_for_models(self, spec: ApiKeySpec) -> dict[str, str]:
        """Manifest model name -> live id for every model the key allows, once each is known."""
        ids: dict[str, str] = {}
        for name in (n for n in spec.allowedModels if n != "*"):
            model_id = await self._run.id_of(Address(Kind.MODEL, name))
            if model_id is None:
                raise ApplyError(f"allowedModels names model {name!r}, which could not be created")
            ids[name] = model_id
        return ids


def _why_key_goes(other: LiveKey, kept: LiveKey, held_tokens: frozenset[str]) -> tuple[str, str]:
    if kept.id not in held_tokens:
        return "superseded by a newer key", "delete_because_duplicate"
    if key_age(other) > key_age(kept) and other.id not in held_tokens:
        return (
            f"a newer key whose token nobody holds (a rotation or create cut short); {kept.id}, whose token "
            "the outputs hold, is kept",
            "delete_because_orphan",
        )
    return f"superseded by {kept.id}, whose token the outputs hold", "delete_because_duplicate"


API_KEYS = ApiKeys()
