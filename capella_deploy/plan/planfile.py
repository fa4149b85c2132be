"""Saved plans: ``plan --out FILE`` and ``apply FILE``.

A saved plan holds the plan, the resolved manifest it was made from (so apply needs nothing else),
the tool version, the fingerprint of the live state it was computed against and the plan's
checksum. It holds no secret: tokens only ever reach the outputs, and a plan that holds a known secret's
value (a manifest variable set to the token, say) is refused rather than saved.
Applying re-reads the organization and refuses a plan whose live fingerprint no longer matches,
and a plan that was already applied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from capella_deploy import __version__
from capella_deploy.errors import CapellaError
from capella_deploy.kinds.base import ResourceChange
from capella_deploy.manifest import Manifest
from capella_deploy.outputs import atomic_write
from capella_deploy.plan import Plan, Where, display
from capella_deploy.secrets import redact

FORMAT = "capella-deploy-plan"
# 3: attributes in the manifest's words (cache, not caching), to_default, outputs. 2: snake_case. 1: camelCase.
FORMAT_VERSION = 3


class PlanFileError(CapellaError):
    pass


def manifest_digest(manifest: Manifest) -> str:
    canonical = json.dumps(manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class SavedPlan:
    plan: Plan
    manifest: Manifest
    tool_version: str
    created_at: str
    applied_at: str | None = None
    path: Path | None = None  # where it was saved or loaded from; not part of the document

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": self.tool_version,
            "created_at": self.created_at,
            "applied_at": self.applied_at,
            "checksum": self.plan.checksum(),
            "manifest": self.manifest.model_dump(mode="json", exclude_defaults=True),
            "plan": self.plan.to_dict(),
        }


def save(path: Path, plan: Plan, manifest: Manifest) -> SavedPlan:
    saved = SavedPlan(plan, manifest, __version__, _now(), path=path)
    _write(saved)
    return saved


def load(path: Path) -> SavedPlan:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanFileError(
            f"{path}: no such saved plan; make one with `capella-deploy plan -f MANIFEST -out {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise PlanFileError(f"{path}: cannot read the saved plan ({reason})") from None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        if looks_like_manifest(path, text):
            raise PlanFileError(
                f"{path} looks like a manifest, not a saved plan; to apply a manifest, pass it with -f: "
                f"`capella-deploy apply -f {path}`"
            )
        raise PlanFileError(
            f"{path}: not a capella-deploy saved plan; make one with `capella-deploy plan -f MANIFEST -out FILE`"
        )
    version = doc.get("format_version", doc.get("formatVersion"))
    if version != FORMAT_VERSION:
        raise PlanFileError(
            f"{path}: saved plan format {version} is not the format {FORMAT_VERSION} this capella-deploy "
            f"{__version__} reads; run `capella-deploy plan -out {path}` again"
        )
    try:
        plan = Plan.from_dict(doc["plan"])
        manifest = Manifest.model_validate(doc["manifest"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanFileError(
            f"{path}: the saved plan is damaged ({type(exc).__name__}); run `plan --out` again"
        ) from None
    if plan.checksum() != doc.get("checksum"):
        raise PlanFileError(f"{path}: the saved plan's checksum does not match its content; it was edited or damaged")
    if manifest_digest(manifest) != plan.manifest_digest:
        raise PlanFileError(f"{path}: the saved plan's manifest does not match the plan; it was edited or damaged")
    return SavedPlan(
        plan, manifest, str(doc.get("tool_version")), str(doc.get("created_at")), doc.get("applied_at"), path=path
    )


def looks_like_manifest(path: Path, text: str) -> bool:
    """A YAML file, or text that opens like a manifest: what a user means with `apply manifest.yaml`."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return True
    return any(line.startswith("apiVersion:") for line in text.splitlines()[:50])


def check_fresh(saved: SavedPlan, fresh: Plan) -> None:
    """Refuse a plan already applied, made by another version, or made against another organization state than
    ``fresh`` (the saved manifest planned again now) sees; a stale plan's error names what changed."""
    path = saved.path
    if saved.applied_at:
        raise PlanFileError(
            f"{path}: this plan was already applied at {saved.applied_at}; run `capella-deploy plan` again"
        )
    if saved.tool_version != __version__:
        raise PlanFileError(
            f"{path}: the plan was made by capella-deploy {saved.tool_version}, this is {__version__}; plan again"
        )
    if saved.plan.live_fingerprint != fresh.live_fingerprint:
        changed = what_changed(saved.plan, fresh)
        shown = changed[:_CHANGES_SHOWN]
        if len(changed) > len(shown):
            shown.append(f"and {len(changed) - len(shown)} more")
        what = "".join(f"\n  {line}" for line in shown) or (
            " the organization, or which key tokens or credential versions the outputs hold"
        )
        raise PlanFileError(
            f"{path}: the plan is stale: since it was made,{what}\nrun `capella-deploy plan` again, and review it"
        )


# How many changes a stale plan's error lists before it counts the rest.
_CHANGES_SHOWN = 20


def what_changed(saved: Plan, fresh: Plan) -> list[str]:
    """Which live resources appeared, went or changed between two plans of one manifest, by address, with the
    attributes that changed where the plans show them."""
    old, new = saved.live_digests, fresh.live_digests
    lines = [f"{address} appeared" for address in sorted(new.keys() - old.keys())]
    lines += [f"{address} is gone" for address in sorted(old.keys() - new.keys())]
    before = {c.live_id: c for c in saved.changes if c.live_id is not None}
    after = {c.live_id: c for c in fresh.changes if c.live_id is not None}
    for address in sorted(a for a in old.keys() & new.keys() if old[a] != new[a]):
        live_id = address.rpartition("[")[2].rstrip("]")
        details = _differences(before.get(live_id), after.get(live_id))
        lines.append(f"{address} changed" + (f": {details}" if details else ""))
    return lines


def _differences(saved: ResourceChange | None, fresh: ResourceChange | None) -> str:
    """What differs in a live resource as two plans saw it, and what the plan would do with it now."""
    if saved is None or fresh is None:
        return ""
    was, now = saved.before or {}, fresh.before or {}
    found = [
        f"{name} {display(was.get(name))} -> {display(now.get(name))}"
        for name in sorted(was.keys() | now.keys())
        if was.get(name) != now.get(name)
    ]
    if (fresh.action, fresh.reason) != (saved.action, saved.reason):
        why = f" ({fresh.reason})" if fresh.reason else ""
        found.append(f"the plan would now {fresh.action.value} it{why}, not {saved.action.value} it")
    return "; ".join(found)


def check_target(saved: SavedPlan, here: Where) -> None:
    """Refuse a plan made elsewhere: in another organization, against another API or another sandbox."""
    made = saved.plan.where
    if made is None:
        raise PlanFileError(
            f"{saved.path}: the plan, made by capella-deploy {saved.tool_version}, does not say where it was made; "
            f"run `capella-deploy plan -out {saved.path}` again"
        )
    if made.organization_id != here.organization_id or not _same_place(made, here):
        raise PlanFileError(
            f"{saved.path}: the plan was made for {made.place}, {made.organization}, but this run acts on "
            f"{here.place}, {here.organization}; apply it where it was made (CAPELLA_API_URL, --sandbox), "
            "or plan again here"
        )


def _same_place(one: Where, other: Where) -> bool:
    if one.url is not None or other.url is not None:
        return one.url == other.url
    # Sandbox state files: the same file, however the path was written.
    return Path(one.sandbox_state or "").resolve() == Path(other.sandbox_state or "").resolve()


def mark_applied(saved: SavedPlan) -> None:
    _write(replace(saved, applied_at=_now()))


def _write(saved: SavedPlan) -> None:
    assert saved.path is not None
    text = json.dumps(saved.to_dict(), indent=2, sort_keys=True) + "\n"
    if redact(text) != text:
        # Masked, the plan would no longer be the one shown, and apply would refuse it; unmasked, the file leaks.
        raise PlanFileError(
            f"{saved.path}: the plan was not saved: it holds the value of a secret this run knows (the Management "
            "API token or a key token), which a plan file must never carry; take that value out of the manifest"
        )
    atomic_write(saved.path, text)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
