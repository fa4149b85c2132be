"""AI provider integrations: credentials Capella uses to reach an outside AI service or storage, by name.

Everything about the kind lives here: reading a provider from the API, the attributes the planner compares, its
plan rule, its request bodies and apply steps, what the outputs record of it, and its export entry.

Credentials are write-only: a read shows a provider's name, type and non-secret configuration (``{}`` or null
for openAI and awsBedrock, ``{awsRegion, bucket, folderPath}`` for awsS3), never a credential. So a change of
credentials cannot be seen, only declared: the manifest's ``credentialsVersion`` is compared with the version the
outputs record for the live provider (``PlanContext.credential_versions``), and a difference is a roll, an
update that sends the credentials again. When the outputs hold no record for it (a fresh checkout, a provider
made by hand) no roll is planned and nothing shows; settling after the next apply records the manifest's
version as the current one, and says so. ``--replace provider.NAME`` rolls the credentials whatever the record.
A change of type cannot be made in place: the provider is replaced (deleted, then created with its name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from capella_deploy.errors import AmbiguousCreate, Conflict, NotFound
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
from capella_deploy.kinds.parsing import as_mapping, as_str, parse_time
from capella_deploy.manifest import PROVIDER_CREDENTIALS, Manifest, ProviderSpec
from capella_deploy.manifest.credentials import provider_credentials
from capella_deploy.outputs import Outputs, env_name
from capella_deploy.secrets import Secret

if TYPE_CHECKING:
    from capella_deploy.api.client import CapellaClient

SECTION = "providers"
S3 = "awsS3"
VERSION = "credentialsVersion"


@dataclass(frozen=True)
class LiveProvider:
    id: str
    name: str
    type: str
    aws_region: str | None
    bucket: str | None
    folder_path: str | None
    created_at: datetime | None

    @property
    def attributes(self) -> dict[str, Any]:
        """The non-secret attributes a read shows, named as in the manifest."""
        attrs: dict[str, Any] = {"type": self.type}
        if self.type == S3:
            # An unset folder is the bucket's root, however the API spells it.
            attrs.update(awsRegion=self.aws_region, bucket=self.bucket, folderPath=self.folder_path or "")
        return attrs


def parse_provider(raw: Mapping[str, Any]) -> LiveProvider:
    provider_id, name, kind = raw.get("id"), raw.get("name"), raw.get("type")
    # Ids are the API's to choose: any text (or a number, written as text) names the provider in its paths.
    if isinstance(provider_id, int) and not isinstance(provider_id, bool):
        provider_id = str(provider_id)
    if not isinstance(provider_id, str) or not provider_id or not isinstance(name, str):
        raise LiveStateError("a provider entry has no id or name")
    if not isinstance(kind, str):
        raise LiveStateError(f"provider {name!r} has no type")
    config = as_mapping(raw.get("configuration"))
    return LiveProvider(
        id=provider_id,
        name=name,
        type=kind,
        aws_region=as_str(config.get("awsRegion")),
        bucket=as_str(config.get("bucket")),
        folder_path=as_str(config.get("folderPath")),
        created_at=parse_time(as_mapping(raw.get("audit")).get("createdAt")),
    )


def provider_attributes(spec: ProviderSpec) -> dict[str, Any]:
    """What the manifest declares: the non-secret attributes a read can show, and the credentials version."""
    attrs: dict[str, Any] = {"type": spec.type}
    if spec.type == S3:
        attrs.update(awsRegion=spec.awsRegion, bucket=spec.bucket, folderPath=spec.folderPath or "")
    attrs[VERSION] = spec.credentialsVersion
    return attrs


def _settings(spec: ProviderSpec) -> dict[str, Any]:
    """The non-secret configuration a create or update sends (awsS3's; the others have none)."""
    if spec.type != S3:
        return {}
    return {"awsRegion": spec.awsRegion, "bucket": spec.bucket, "folderPath": spec.folderPath or ""}


def create_body(spec: ProviderSpec, credentials: Mapping[str, Secret]) -> dict[str, Any]:
    configuration = {field: secret.reveal() for field, secret in credentials.items()}
    return {"name": spec.name, "type": spec.type, "configuration": {**configuration, **_settings(spec)}}


def update_body(spec: ProviderSpec, credentials: Mapping[str, Secret]) -> dict[str, Any]:
    """PUT replaces the fields it names and keeps the others: the settings always, the credentials on a roll."""
    configuration = {field: secret.reveal() for field, secret in credentials.items()}
    return {"configuration": {**configuration, **_settings(spec)}}


def rolls_credentials(change: ResourceChange) -> bool:
    """Whether an update sends the credentials again: a new credentialsVersion, or --replace."""
    return change.cause == "replace_by_request" or any(c.path == VERSION for c in change.attribute_changes)


def credential_variables(name: str, kind: str) -> dict[str, str]:
    """Placeholder variables for a provider's credentials, named after it: OPENAI_API_KEY for openai's apiKey."""
    _, required = PROVIDER_CREDENTIALS[kind]
    return {field: f"{env_name(name)}_{_snake(field)}" for field in required}


def _snake(field: str) -> str:
    return "".join(f"_{ch}" if ch.isupper() else ch.upper() for ch in field)


def export_entry(provider: LiveProvider, notes: ExportNotes) -> dict[str, Any] | None:
    if provider.type not in PROVIDER_CREDENTIALS:
        notes.omitted.append(f"provider {provider.name!r}: its type {provider.type!r} is not one this tool knows")
        return None
    variables = credential_variables(provider.name, provider.type)
    entry: dict[str, Any] = {"name": provider.name, "type": provider.type}
    if provider.type == S3:
        # Required of an awsS3 entry by the manifest's rules (not by the entry's own fields): an entry without
        # them would make the exported manifest fail to load.
        unread = [
            field for field, value in (("awsRegion", provider.aws_region), ("bucket", provider.bucket)) if not value
        ]
        if unread:
            notes.omitted.append(f"provider {provider.name!r}: the API did not report its {' or '.join(unread)}")
            return None
        entry.update(awsRegion=provider.aws_region, bucket=provider.bucket)
        if provider.folder_path:
            entry["folderPath"] = provider.folder_path
    entry["credentials"] = {field: {"env": variable} for field, variable in variables.items()}
    entry = {key: value for key, value in entry.items() if value is not None}
    try:
        ProviderSpec.model_validate(entry)
    except ValidationError as exc:
        notes.omitted.append(f"provider {provider.name!r}: {first_problem(exc)}")
        return None
    notes.omitted.append(
        f"provider {provider.name!r}: its credentials (the API never returns them); the manifest reads them from "
        f"{', '.join(variables.values())}, which apply needs only to create it or roll its credentials"
    )
    return entry


def _age(provider: LiveProvider) -> tuple[float, str]:
    return (provider.created_at.timestamp() if provider.created_at else float("inf"), provider.id)


def _kept(candidates: Sequence[LiveProvider], recorded: Mapping[str, int]) -> LiveProvider:
    """Of live providers sharing a name, the one to manage: one whose credentials the outputs record an apply
    writing (the oldest of those), else the oldest."""
    ordered = sorted(candidates, key=_age)
    return next((p for p in ordered if p.id in recorded), ordered[0])


# -- the kind ---------------------------------------------------------------------------------------------


class Providers:
    """The AI provider integration kind, as the planner, the live reading and export see it."""

    kind = Kind.PROVIDER
    section = SECTION
    noun = "provider"
    resource_type = "capella_ai_provider"
    # Credentials are sent, never shown; the plan shows their version, not them.
    sensitive: tuple[str, ...] = ()
    former_paths: Mapping[str, tuple[str, ...]] = {}

    def specs(self, manifest: Manifest) -> Sequence[ProviderSpec]:
        return manifest.providers

    def refers_to(self, spec: ProviderSpec, ctx: PlanContext) -> tuple[Address, ...]:
        return ()

    async def read(
        self, client: CapellaClient, org_id: str, now: datetime | None
    ) -> tuple[list[LiveProvider], list[str]]:
        providers: list[LiveProvider] = []
        warnings: list[str] = []
        try:
            listed = await client.list_providers(org_id)
        except NotFound as exc:
            # An API without the endpoint (an older or narrower Capella) must not stop plans of models and keys.
            return [], [f"the organization's AI provider integrations cannot be listed, so none are seen: {exc}"]
        for raw in listed:
            try:
                providers.append(parse_provider(raw))
            except LiveStateError as exc:
                warnings.append(f"skipped an unreadable provider entry: {exc}")
        return providers, warnings

    def in_play(self, live: LiveProvider) -> bool:
        return True

    def fingerprint(self, live: LiveProvider, held_tokens: frozenset[str]) -> dict[str, Any]:
        return {"id": live.id, "name": live.name, **live.attributes}

    def pick(
        self, candidates: Sequence[LiveProvider], ctx: PlanContext
    ) -> tuple[LiveProvider | None, list[Extra[LiveProvider]]]:
        if not candidates:
            return None, []
        kept = _kept(candidates, ctx.credential_versions)
        extras = [
            Extra(other, f"another live provider {other.id}", "duplicate of a managed name", "delete_because_duplicate")
            for other in sorted(candidates, key=_age)
            if other is not kept
        ]
        return kept, extras

    def plan(self, spec: ProviderSpec, current: LiveProvider | None, ctx: PlanContext) -> ResourceChange:
        after = provider_attributes(spec)
        if current is None:
            return created(Kind.PROVIDER, spec, after)
        recorded = ctx.credential_versions.get(current.id)
        before = current.attributes
        if recorded is not None:
            before[VERSION] = recorded
        shown = {key: value for key, value in after.items() if key != VERSION}
        diffs = attribute_changes(current.attributes, shown, replace_only=("type",))
        if recorded is not None and recorded != spec.credentialsVersion:
            diffs.append(AttributeChange(VERSION, recorded, spec.credentialsVersion))
        # Found by its former name (renamedFrom): the API cannot rename a provider, so a new one of the new name
        # is made (sending the credentials), then the old one deleted; the names differ, so neither waits.
        renamed = current.name != spec.name
        if renamed:
            before, after = {"name": current.name, **before}, {"name": spec.name, **after}
            diffs.insert(0, AttributeChange("name", current.name, spec.name, forces_replace=True))
        base = unchanged(Kind.PROVIDER, spec, current.id, before, after, tuple(diffs))
        if renamed:
            return replace(
                base,
                action=Action.REPLACE_CREATE_FIRST,
                reason=f"renamed from {current.name}; a provider cannot be renamed in place",
                cause="replace_because_renamed",
            )
        if any(d.forces_replace for d in diffs):
            return replace(
                base,
                action=Action.REPLACE,
                reason="type cannot change in place",
                cause="replace_because_cannot_update",
            )
        settings = sorted(d.path for d in diffs if d.path != VERSION)
        rolled = [d for d in diffs if d.path == VERSION]
        parts = [f"in-place change of {', '.join(settings)}"] if settings else []
        if rolled:
            parts.append(f"{VERSION} {rolled[0].before} -> {rolled[0].after}: the credentials are sent again")
        elif Address(Kind.PROVIDER, spec.name) in ctx.force_replace:
            parts.append("credentials roll requested: they are sent again")
            return replace(base, action=Action.UPDATE, reason="; ".join(parts), cause="replace_by_request")
        if parts:
            return replace(base, action=Action.UPDATE, reason="; ".join(parts))
        return base

    def steps(self, run: ApplyRun) -> ProviderSteps:
        return ProviderSteps(run)

    def transition(self, change: ResourceChange) -> str | None:
        return None  # a provider is there the moment the API answers

    def reads_credentials(self, change: ResourceChange) -> bool:
        if "create" in change.action.steps:
            return True
        return change.action is Action.UPDATE and rolls_credentials(change)

    async def settle(self, run: SettleRun, live: Sequence[LiveProvider]) -> Settled:
        """Record, for each managed provider the outputs hold nothing about, the manifest's credentials version
        as its current one: from then on, raising it rolls the credentials."""
        found = Settled()
        versions = run.outputs.credential_versions()
        live_by_name = by_name(live)
        for spec in run.manifest.providers:
            group = live_by_name.get(spec.name)
            if not group:
                continue
            kept = _kept(group, versions)
            if kept.id in versions:
                continue
            record_provider(run.outputs, spec.name, kept.id, kept.type, spec.credentialsVersion)
            found.warnings.append(
                f"provider.{spec.name}: the outputs held no record of which credentials version live provider "
                f"{kept.id} was given, so {VERSION} {spec.credentialsVersion} is recorded as its current one. If "
                f"its credentials are older, roll them with `capella-deploy apply --replace provider.{spec.name}`"
            )
        return found

    def status(self, live: LiveProvider, now: datetime) -> StatusFacts:
        return StatusFacts(state="active", created_at=live.created_at, region=live.aws_region)

    def export(
        self, live: Sequence[LiveProvider], scope: ExportScope, exported: dict[str, str], notes: ExportNotes
    ) -> list[dict[str, Any]]:
        # Organization-wide: --region does not narrow them.
        entries: list[dict[str, Any]] = []
        for name, group in sorted(by_name(p for p in live if scope.named(p.name)).items()):
            chosen = sorted(group, key=_age)[0]
            if len(group) > 1:
                others = ", ".join(p.id for p in group if p is not chosen)
                notes.warnings.append(
                    f"provider {name!r}: exported the oldest, {chosen.id}; other live providers share the name "
                    f"({others})"
                )
            entry = export_entry(chosen, notes)
            if entry is not None:
                entries.append(entry)
                exported[chosen.id] = chosen.name
        return entries


def record_provider(outputs: Outputs, name: str, provider_id: str, kind: str, version: int | None) -> None:
    """What the outputs hold of a provider: its id, type and the credentials version an apply wrote (None: the
    one recorded for this id stays); no secret."""
    outputs.record(SECTION, name, id=provider_id, type=kind, credentialsVersion=version)


# -- apply ------------------------------------------------------------------------------------------------


class ProviderSteps:
    """The provider kind's apply steps for one run.

    Credentials are read (from the environment or files) when a change sends them, wrapped as secrets at once,
    and go nowhere but into the request body. A create whose answer is lost is never sent blindly again: the
    providers of its name made since the plan are looked for first.
    """

    def __init__(self, run: ApplyRun) -> None:
        self._run = run
        self._specs = {spec.name: spec for spec in run.manifest.providers}

    async def apply(self, step: ApplyStep) -> str:
        change = step.change
        run = self._run
        if change.action is Action.DELETE:
            assert change.live_id is not None
            await run.call(run.client.delete_provider(run.org_id, change.live_id))
            step.sent()
            run.outputs.forget(SECTION, change.name, change.live_id)
            return "deleted"
        spec = self._specs[change.name]
        # Read before anything is deleted: a replacement that cannot send its credentials must not begin.
        credentials = (
            provider_credentials(spec, run.environ)
            if change.action is not Action.UPDATE or rolls_credentials(change)
            else {}
        )
        if change.action is Action.REPLACE:
            assert change.live_id is not None
            await run.call(run.client.delete_provider(run.org_id, change.live_id))
            run.outputs.forget(SECTION, change.name, change.live_id)
            step.progress(f"deleted {change.live_id} to replace it")
        if "create" in change.action.steps:
            provider_id = await self._create(spec, step, create_body(spec, credentials))
            run.found(change.ref, provider_id)
            record_provider(run.outputs, spec.name, provider_id, spec.type, spec.credentialsVersion)
            if change.action is Action.REPLACE_CREATE_FIRST:
                # The successor is in place: the provider it succeeds (of its former name) goes.
                assert change.live_id is not None
                await run.call(run.client.delete_provider(run.org_id, change.live_id))
                run.outputs.forget(SECTION, change.renamed_from or change.name, change.live_id)
            return f"created {provider_id}"
        assert change.live_id is not None
        await run.call(run.client.update_provider(run.org_id, change.live_id, update_body(spec, credentials)))
        step.sent()
        # An update that sends no credentials keeps the version recorded for this provider, if any.
        record_provider(
            run.outputs, spec.name, change.live_id, spec.type, spec.credentialsVersion if credentials else None
        )
        return "updated; credentials sent" if credentials else "updated"

    async def _create(self, spec: ProviderSpec, step: ApplyStep, body: dict[str, Any]) -> str:
        run = self._run
        # Every provider of this name the plan knows of; any other found after a lost answer was made since.
        known = run.known_ids(step.change.ref)
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                provider_id = await run.call(run.client.create_provider(run.org_id, body))
            except Conflict as exc:
                raise ApplyError(
                    f"a provider named {spec.name!r} already exists that this plan did not know of "
                    f"(made by another run?); plan again: {exc}"
                ) from None
            except AmbiguousCreate as exc:
                found = [p.id for p in await self._list() if p.name == spec.name and p.id not in known]
                if len(found) == 1:
                    step.progress(f"found {found[0]} after an unclear create answer; adopting it")
                    step.sent()
                    return found[0]
                if found:
                    raise ApplyError(
                        f"the answer to the create was lost, and providers {', '.join(found)} of this name were "
                        "made since the plan (another run is making it too); this run claims none of them: plan "
                        "again, which keeps one and deletes the others"
                    ) from None
                if attempt == CREATE_ATTEMPTS:
                    raise ApplyError(f"create did not go through after {attempt} attempts: {exc}") from None
                step.progress(f"create unclear ({type(exc).__name__}); nothing was made, retrying")
                await run.clock.sleep(create_pause(attempt))
                continue
            step.sent()
            return provider_id
        raise AssertionError("unreachable")

    async def _list(self) -> list[LiveProvider]:
        providers = []
        for raw in await self._run.client.list_providers(self._run.org_id):
            with contextlib.suppress(LiveStateError):  # an unreadable entry is not the one looked for
                providers.append(parse_provider(raw))
        return providers


PROVIDERS = Providers()
