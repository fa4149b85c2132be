"""The apply and destroy operations: plan (or load a saved plan), guard, confirm, carry out, settle, publish, check.

No click here: whoever runs the operation (the command line, a test) hands in an ``ApplyHooks`` object, which
shows the plan, asks for confirmation and reports progress. The operation decides; the hooks only show.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from capella_deploy.apply.applier import Applier, ApplyOptions, ApplyResult
from capella_deploy.checks import CheckReport
from capella_deploy.errors import ConfigError
from capella_deploy.kinds import REGISTRY
from capella_deploy.kinds.base import Address
from capella_deploy.live import read_live
from capella_deploy.manifest import Manifest
from capella_deploy.manifest.credentials import CredentialFinding, check_credentials
from capella_deploy.manifest.offered import CatalogCheck
from capella_deploy.outputs import Outputs, format_for
from capella_deploy.outputs.sinks import Entries, Sink, sink_for
from capella_deploy.plan import OrgSource, Plan, Where, planfile, planner
from capella_deploy.plan.planfile import SavedPlan
from capella_deploy.run.lock import LockRequest, org_lock, unlock_command
from capella_deploy.run.planning import credential_errors, make_plan, session_now
from capella_deploy.run.session import Session, Target, open_session
from capella_deploy.run.settle import settle_outputs
from capella_deploy.run.verify import run_manifest_checks
from capella_deploy.secrets import redact
from capella_deploy.views.apply import render_apply_markdown
from capella_deploy.views.checks import render_checks_markdown


@dataclass(frozen=True)
class ApplyRequest:
    """Everything an apply or destroy run was asked to do, as the command line parsed it."""

    target: Target
    auto_approve: bool
    parallelism: int
    timeout: float
    outputs_target: str | None
    output_format: str | None
    allow_mass_change: bool
    lock_timeout: float = 0.0
    checksum: str | None = None
    replace: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    planfile: Path | None = None
    destroy: bool = False
    # What the manifest asks for that the catalog does not offer; a saved plan already carries its verdict.
    catalog: CatalogCheck | None = None
    # The credentials the manifest refers to that cannot be read now, located in its files.
    credentials: tuple[CredentialFinding, ...] = ()
    # The environment the run is for (``--environment``): a saved plan of another environment is refused.
    environment: str | None = None


class ApplyHooks(Protocol):
    """What the operation tells whoever runs it, and the one question it asks."""

    # Seconds between reminders of what is still under way (None: no reminders).
    reminder_seconds: float | None

    def plan_ready(self, plan: Plan) -> None: ...

    def blocked(self, reasons: Sequence[str]) -> None: ...

    def confirm(self, verb: str, org_id: str | None) -> bool: ...

    def declined(self) -> None: ...

    def progress(self, address: str, message: str, elapsed: float) -> None: ...

    def still_working(self, items: Sequence[tuple[str, float]], remaining: float) -> None:
        """(address, seconds since it started) for each change still under way, and the seconds expected left."""

    def applied(self, result: ApplyResult, outputs_path: Path) -> None: ...

    def checks(self, report: CheckReport) -> None: ...

    def note(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


def outputs_store(manifest: Manifest, org_id: str, path: Path | None, fmt: str | None = None) -> Outputs:
    """The outputs file: ``path``, else the manifest's."""
    chosen = path if path is not None else Path(manifest.outputs_path)
    return Outputs(chosen, format_for(chosen, fmt, manifest.outputs.format), org_id=org_id)


def blockers(plan: Plan, allow_mass_change: bool) -> list[str]:
    """Reasons this plan must not be applied."""
    reasons = list(plan.errors)
    mass = None if allow_mass_change else plan.mass_change()
    if mass:
        reasons.append(mass)
    return reasons


async def run_apply(manifest: Manifest | None, request: ApplyRequest, hooks: ApplyHooks) -> bool:
    """Apply (or destroy) under the organization's lock; True when everything asked for was done and checked."""
    saved = planfile.load(request.planfile) if request.planfile is not None else None
    if saved is not None:
        manifest = saved.manifest
    if manifest is None:
        raise ConfigError("give a saved plan or a manifest")
    if saved is not None and request.environment not in (None, manifest.environment):
        planned_for = f"environment {manifest.environment}" if manifest.environment else "no environment"
        raise ConfigError(
            f"{request.planfile} is a plan for {planned_for}, not for environment {request.environment}; "
            "apply the plan made for this environment"
        )
    # Every place the outputs go must take them before the first change: a token has one chance to be kept.
    entries = Entries({kind.section: {spec.name for spec in kind.specs(manifest)} for kind in REGISTRY})
    sink = sink_for(request.outputs_target, request.target.environ, entries)
    if sink is not None:
        sink.check()
    org, source = (saved.plan.org_id, OrgSource.SAVED_PLAN) if saved else (manifest.organizationId, OrgSource.MANIFEST)
    async with open_session(request.target, org, source, expected_name=manifest.expectOrganizationName) as session:
        if saved is not None:
            # Before the lock, whose lease is itself a change in the organization.
            planfile.check_target(saved, session.where(manifest.environment))
        operation = "destroy" if request.destroy else "apply"
        target = request.target
        lock_request = LockRequest(
            operation=operation,
            timeout=request.lock_timeout,
            environment=manifest.environment,
            region=_lease_region(manifest),
            unlock_command=unlock_command(
                session.org_id,
                sandbox_state=str(target.sandbox_state) if target.sandbox_state is not None else None,
                token_file=str(target.token_file) if target.token_file is not None else None,
            ),
        )
        async with org_lock(
            session.client, session.org_id, lock_request, notify=hooks.note, warn=hooks.warning
        ) as lock:
            hooks.note(
                f"Locked organization {session.org_id} for {operation} (lock {lock.id}, taken in {lock.waited:.2f} s)."
            )
            return await _apply_locked(session, manifest, saved, request, hooks, sink)


def _lease_region(manifest: Manifest) -> str:
    """A region the organization uses, for the lock's lease key: the manifest's default, else its first."""
    regions = [manifest.defaults.region, *(m.region for m in manifest.models), *(k.region for k in manifest.apiKeys)]
    return next((region for region in regions if region), "us-east-1")


async def _apply_locked(
    session: Session,
    manifest: Manifest,
    saved: SavedPlan | None,
    request: ApplyRequest,
    hooks: ApplyHooks,
    sink: Sink | None,
) -> bool:
    # The outputs are read before planning: which key tokens they hold decides which key of a name is kept, and
    # the credential versions they record whether a credentials roll is due.
    path = Path(request.outputs_target) if request.outputs_target and sink is None else None
    store = outputs_store(manifest, session.org_id, path, request.output_format)
    held, recorded = store.held_key_ids(), store.recorded()
    if saved is not None:
        planfile.check_fresh(saved, await _plan_again(session, saved, held, recorded))
        plan = saved.plan
    else:
        plan = await make_plan(
            session,
            manifest,
            request.replace,
            destroy=request.destroy,
            targets=request.targets,
            catalog=request.catalog,
            credentials=request.credentials,
            held_tokens=held,
            outputs=recorded,
        )
    hooks.plan_ready(plan)
    if request.checksum is not None and request.checksum != plan.checksum():
        raise ConfigError(
            f"the plan computed now has checksum {plan.checksum()}, not the reviewed {request.checksum}: "
            "the manifest or the organization changed since the review; plan and review again"
        )
    blocked = blockers(plan, request.allow_mass_change)
    if not blocked:
        # Read again now (a saved plan was checked on another day, perhaps elsewhere): nothing is created
        # unless every credential the plan sends can be read.
        blocked = credential_errors(plan, check_credentials(manifest, request.target.environ))
    if blocked:
        hooks.blocked(blocked)
        return False
    if not plan.has_changes:
        # Nothing to change; the declared checks still say whether the deployment answers.
        return await _after_apply(session, manifest, store, request, hooks, sink, result=None)
    verb = "destroy" if request.destroy else "apply"
    if not request.auto_approve and not hooks.confirm(verb, plan.org_id if request.destroy else None):
        hooks.declined()
        return False
    # A token the API returns must have somewhere to go: find out now, before anything is created.
    store.save()
    if saved is not None:
        planfile.mark_applied(saved)
    started = session.clock.now()
    applier = Applier(
        session.client,
        manifest,
        plan,
        store,
        clock=session.clock,
        options=ApplyOptions(parallelism=request.parallelism, timeout=request.timeout),
        progress=lambda address, message: hooks.progress(address, message, session.clock.now() - started),
        environ=request.target.environ,
    )
    async with _reminders(hooks, applier, session):
        result = await applier.run()
    hooks.applied(result, store.path)
    return await _after_apply(session, manifest, store, request, hooks, sink, result=result)


async def _plan_again(
    session: Session, saved: SavedPlan, held: frozenset[str], recorded: Mapping[str, Any] | None
) -> Plan:
    """The saved plan's manifest planned against the organization now, as the saved plan was: whether the
    saved plan is still fresh, and if not, what changed."""
    manifest = saved.manifest
    now = session_now(session)
    live = await read_live(session.client, session.org_id, now=now)
    requested = frozenset(str(c.ref) for c in saved.plan.changes if c.cause == "replace_by_request")
    return planner.plan(
        manifest,
        live,
        now=now,
        manifest_digest=saved.plan.manifest_digest,
        force_replace=requested,
        held_tokens=held,
        outputs=recorded,
    )


# How often, in wall seconds, the reminder task looks at the session's clock.
_REMINDER_LOOK_SECONDS = 0.05


@contextlib.asynccontextmanager
async def _reminders(hooks: ApplyHooks, applier: Applier, session: Session) -> AsyncIterator[None]:
    """While the block runs, tell the hooks every ``reminder_seconds`` what is still under way, and how long the
    rest should take.

    The seconds are the session's clock, like the elapsed times: wall time against Capella, sandbox time
    against the embedded sandbox, whose five-minute deployment then shows its reminders too. The task only
    reads that clock, between short wall-clock naps: waiting on it would move a stepped sandbox's time.
    """
    if hooks.reminder_seconds is None:
        yield
        return
    interval = hooks.reminder_seconds

    async def remind() -> None:
        last = session.clock.now()
        while True:
            await asyncio.sleep(_REMINDER_LOOK_SECONDS)
            now = session.clock.now()
            if now - last < interval:
                continue
            last = now
            items = [(address, now - since) for address, since in sorted(applier.active.items())]
            if items:
                hooks.still_working(items, applier.remaining())

    task = asyncio.ensure_future(remind())
    try:
        yield
    finally:
        task.cancel()


async def _after_apply(
    session: Session,
    manifest: Manifest,
    store: Outputs,
    request: ApplyRequest,
    hooks: ApplyHooks,
    sink: Sink | None,
    *,
    result: ApplyResult | None,
) -> bool:
    """Settle and record outputs, publish them, run the checks when all was applied, report to the job summary."""
    applied = result is None or result.ok
    if not request.destroy:
        failed = frozenset(Address.parse(r.address) for r in (result.failed if result else ()))
        settled = await settle_outputs(
            session.client, session.org_id, manifest, store, clock=session.clock, timeout=request.timeout, failed=failed
        )
        for warning in settled.warnings:
            hooks.warning(warning)
        for problem in settled.unsettled:
            hooks.error(problem)
        applied = applied and not settled.unsettled
    if sink is not None:
        hooks.note(sink.publish(store.document()))
    report = None
    if applied and not request.destroy and manifest.checks:
        report = await run_manifest_checks(
            manifest, store.document(), sandbox_state=request.target.sandbox_state, environ=request.target.environ
        )
        hooks.checks(report)
    _write_job_summary(request.target.environ, session.where(manifest.environment), result, report)
    return applied and (report is None or report.ok)


def _write_job_summary(
    environ: Mapping[str, str], where: Where, result: ApplyResult | None, report: CheckReport | None
) -> None:
    summary = environ.get("GITHUB_STEP_SUMMARY")
    if not summary:
        return
    text = render_apply_markdown(result, where) + ("\n" + render_checks_markdown(report) if report is not None else "")
    with open(summary, "a", encoding="utf-8") as handle:
        handle.write(redact(text))
