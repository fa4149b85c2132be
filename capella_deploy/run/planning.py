"""One plan against the organization as it is now: read the live state, run the pure planner, then add what
the catalog check found (errors for what the plan would create, unless the user skipped the check) and the
credentials that cannot be read now (errors for what the plan would create or roll)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capella_deploy.manifest import Manifest
    from capella_deploy.manifest.credentials import CredentialFinding
    from capella_deploy.manifest.offered import CatalogCheck
    from capella_deploy.plan import Plan
    from capella_deploy.run.session import Session

SKIP_FLAG = "--skip-catalog-check"


async def make_plan(
    session: Session,
    manifest: Manifest,
    replace: Sequence[str],
    *,
    destroy: bool = False,
    targets: Sequence[str] = (),
    catalog: CatalogCheck | None = None,
    credentials: Sequence[CredentialFinding] = (),
    held_tokens: frozenset[str] = frozenset(),
    outputs: Mapping[str, Any] | None = None,
) -> Plan:
    """The plan, saying where it was made; with ``targets`` (--target), narrowed to them and what they need.
    ``held_tokens``: the live key ids whose token the outputs hold; ``outputs``: the outputs document (None: no
    file), for the plan's changes to outputs."""
    from capella_deploy.live import read_live
    from capella_deploy.plan.planfile import manifest_digest
    from capella_deploy.plan.planner import plan as make_plan
    from capella_deploy.plan.planner import plan_destroy
    from capella_deploy.plan.target import check_targets, restrict

    now = session_now(session)
    live = await read_live(session.client, session.org_id, now=now)
    if destroy:
        whole = plan_destroy(manifest, live)
    else:
        whole = make_plan(
            manifest,
            live,
            now=now,
            manifest_digest=manifest_digest(manifest),
            force_replace=frozenset(replace),
            held_tokens=held_tokens,
            outputs=outputs,
        )
    # The planner sees no API; where the plan was made is the session's to say.
    scope = manifest.scope.patterns if manifest.scope is not None else ()
    whole = dataclasses.replace(whole, where=session.where(manifest.environment, scope))
    planned = (
        whole if not targets else restrict(whole, manifest, check_targets(targets, manifest, whole), destroy=destroy)
    )
    planned = planned if catalog is None else with_catalog(planned, catalog)
    return with_credentials(planned, credentials)


def credential_errors(plan: Plan, findings: Sequence[CredentialFinding]) -> list[str]:
    """The findings about credentials a change of ``plan`` reads (a create, a roll), and what to do about them."""
    from capella_deploy.kinds import kind_of

    needed = {str(c.ref) for c in plan.pending if kind_of(c.kind).reads_credentials(c)}
    errors = [finding.text for finding in findings if finding.address in needed]
    if errors:
        errors.append(
            "apply reads these credentials when it sends them (to create a provider or roll its credentials): "
            "set the variables or make the files readable, then plan again"
        )
    return errors


def with_credentials(plan: Plan, findings: Sequence[CredentialFinding]) -> Plan:
    errors = credential_errors(plan, findings)
    return dataclasses.replace(plan, errors=(*plan.errors, *errors)) if errors else plan


def with_catalog(plan: Plan, check: CatalogCheck) -> Plan:
    """The plan with the catalog's findings: an error where the plan creates what Capella does not offer.

    A resource that already exists is left as it is by a no-op or an in-place change, which Capella does not
    check against its catalog, so its finding is a warning. A skipped check is recorded, with what it found.
    """
    creating = {str(change.address) for change in plan.changes if "create" in change.action.steps}
    errors: list[str] = []
    warnings: list[str] = []
    if check.skipped:
        found = (
            f"Capella may refuse the {len(check.findings)} value(s) below, which the {check.catalog} does not list"
            if check.findings
            else f"the {check.catalog} lists everything the manifest asks for"
        )
        warnings.append(f"the catalog check was skipped ({SKIP_FLAG}): {found}")
    for finding in check.findings:
        if check.skipped:
            warnings.append(finding.text)
        elif creating.intersection(finding.addresses):
            errors.append(finding.text)
        else:
            warnings.append(
                f"{finding.text} (not refused now: this plan does not create {', '.join(finding.addresses)}; "
                "Capella would refuse a new one)"
            )
    if errors:
        errors.append(
            f"Capella would refuse to create what the manifest asks for that the {check.catalog} does not list; "
            f"correct the manifest, or pass {SKIP_FLAG} if Capella offers it now"
        )
    if not errors and not warnings:
        return plan
    return dataclasses.replace(plan, errors=(*plan.errors, *errors), warnings=(*plan.warnings, *warnings))


def session_now(session: Session) -> datetime:
    """The session's clock (the sandbox's time in a sandbox), as the planner and the live reading take it."""
    return datetime.fromtimestamp(session.clock.now(), tz=timezone.utc)
