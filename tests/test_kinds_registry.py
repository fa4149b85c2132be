"""A kind the registry does not know is caught here, not by a user.

mypy catches a ``Kind`` member without a case in ``kind_of`` or ``LiveState.of`` (``assert_never``). The places
a type checker cannot see are checked here: that every member resolves to a kind module whose declarations
agree with the manifest, the outputs, overlays and the order the planner relies on.
"""

from __future__ import annotations

import typing
from datetime import datetime, timezone

import pytest

from capella_deploy.kinds import REGISTRY, kind_of
from capella_deploy.kinds.base import Address, Kind, PlanContext
from capella_deploy.live import LiveState
from capella_deploy.manifest import Manifest
from capella_deploy.manifest.yamlsource import MERGED_LISTS
from capella_deploy.outputs import SECTIONS


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_every_kind_resolves_to_its_own_module_and_live_state_field(kind: Kind) -> None:
    module = kind_of(kind)
    assert module.kind is kind
    assert LiveState("org").of(kind) == ()
    assert Address.parse(f"{kind.value}.x") == Address(kind, "x")


def test_the_registry_lists_every_kind_once_in_dependency_order() -> None:
    assert [k.kind for k in REGISTRY] == list(Kind)
    sample = _sample_manifest()
    names = {k.kind: frozenset(spec.name for spec in k.specs(sample)) for k in REGISTRY}
    ctx = PlanContext(sample, datetime.now(timezone.utc), declared=names)
    for position, kind in enumerate(REGISTRY):
        assert kind.specs(sample), f"the sample declares no {kind.section}"
        # A kind may refer only to kinds listed before it (or to itself): that is the apply order.
        earlier = {k.kind for k in REGISTRY[: position + 1]}
        for spec in kind.specs(sample):
            assert {a.kind for a in kind.refers_to(spec, ctx)} <= earlier


@pytest.mark.parametrize("kind", REGISTRY, ids=lambda k: k.kind.value)
def test_every_kind_has_a_manifest_list_an_overlay_merge_and_an_outputs_section(kind: typing.Any) -> None:
    assert kind.section in Manifest.model_fields, f"Manifest has no {kind.section!r} list"
    assert kind.section in MERGED_LISTS, f"overlays would replace {kind.section!r} wholesale"
    assert kind.section in {s.key for s in SECTIONS}, f"the outputs cannot hold {kind.section!r}"
    assert kind.noun and kind.resource_type.startswith("capella_ai_")


def _sample_manifest() -> Manifest:
    return Manifest.model_validate(
        {
            "apiVersion": "capella-deploy/v1",
            "defaults": {"region": "us-east-1"},
            "models": [
                {"name": "embed", "catalogModel": "nvidia/llama-3.2-nv-embedqa-1b-v2", "gpuMemory": 24},
                {
                    "name": "chat",
                    "catalogModel": "mistralai/mistral-7b-instruct-v0.3",
                    "gpuMemory": 48,
                    "cache": {"type": "semantic", "semantic": {"embeddingModel": "embed"}},
                },
            ],
            "apiKeys": [{"name": "app", "allowedCIDRs": ["10.0.0.0/8"], "allowedModels": ["chat"]}],
            "providers": [{"name": "openai", "type": "openAI", "credentials": {"apiKey": {"env": "K"}}}],
        }
    )
