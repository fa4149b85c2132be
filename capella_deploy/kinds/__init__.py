"""One module per resource kind, and the registry that lists them.

A kind module holds everything about its kind; the generic machinery reaches it only through ``kind_of`` and
``REGISTRY``. A new ``Kind`` member without a case below is a type error (``assert_never``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from typing_extensions import assert_never

from capella_deploy.kinds.api_key import API_KEYS
from capella_deploy.kinds.base import Kind, ResourceKind
from capella_deploy.kinds.model import MODELS
from capella_deploy.kinds.provider import PROVIDERS


def kind_of(kind: Kind) -> ResourceKind[Any, Any]:
    match kind:
        case Kind.MODEL:
            return MODELS
        case Kind.API_KEY:
            return API_KEYS
        case Kind.PROVIDER:
            return PROVIDERS
        case _:
            assert_never(kind)


# In dependency order (the order of ``Kind``): a kind refers only to kinds before it.
REGISTRY: tuple[ResourceKind[Any, Any], ...] = tuple(kind_of(kind) for kind in Kind)


def tally(counts: Mapping[Kind, int]) -> str:
    """``3 model(s), 2 API key(s)``: the kinds there are any of, in registry order."""
    told = [f"{counts[kind.kind]} {kind.noun}(s)" for kind in REGISTRY if counts.get(kind.kind)]
    return ", ".join(told) or "no resources"
