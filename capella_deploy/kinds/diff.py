"""The one way declared and live attributes are compared."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from capella_deploy.kinds.base import AttributeChange


def attribute_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], *, replace_only: Collection[str] = ()
) -> list[AttributeChange]:
    """Differences in the attributes the manifest sets; a declared mapping is compared as a subset.

    A difference in a top-level attribute named in ``replace_only`` (or under it) forces a replacement.
    """
    changes: list[AttributeChange] = []
    for name in sorted(after):
        wanted, have = after[name], before.get(name)
        if isinstance(wanted, dict) and isinstance(have, Mapping):
            changes.extend(_mapping_changes(name, have, wanted, name in replace_only))
        elif _differs(have, wanted):
            changes.append(AttributeChange(name, have, wanted, forces_replace=name in replace_only))
    return changes


def _mapping_changes(
    prefix: str, have: Mapping[str, Any], wanted: Mapping[str, Any], forces_replace: bool
) -> list[AttributeChange]:
    changes: list[AttributeChange] = []
    for key in sorted(wanted):
        path = f"{prefix}.{key}"
        if isinstance(wanted[key], dict) and isinstance(have.get(key), Mapping):
            changes.extend(_mapping_changes(path, have[key], wanted[key], forces_replace))
        elif _differs(have.get(key), wanted[key]):
            changes.append(AttributeChange(path, have.get(key), wanted[key], forces_replace=forces_replace))
    return changes


def _differs(have: Any, wanted: Any) -> bool:
    # Equal values of one type are the common case and cheap to see; deepdiff is for the rest, so that
    # 0.85 vs 0.8500000001 from a JSON round trip, or 48 vs 48.0, is not a change.
    if type(have) is type(wanted) and have == wanted:
        return False
    from deepdiff import DeepDiff  # heavy to import; validate and most plans never get here

    return bool(DeepDiff(have, wanted, significant_digits=9, ignore_numeric_type_changes=True))
