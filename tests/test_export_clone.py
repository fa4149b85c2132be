"""Export (live -> manifest that plans as no changes) and clone (manifest -> the same in another region)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from capella_deploy.gitops.clone import clone_manifest
from capella_deploy.gitops.export import export_manifest, manifest_yaml
from capella_deploy.kinds.model import cache_block, caching_body
from capella_deploy.live import LiveState
from capella_deploy.manifest import Cache, Manifest, load_manifest
from capella_deploy.plan.planner import plan
from capella_deploy.sandbox import lifecycle
from tests.conftest import World
from tests.test_cli_e2e import manifest
from tests.test_drift import CHAT, NOW, by_hand, live_key, live_model, model_id

ROOT = Path(__file__).resolve().parent.parent
EMBED = "nvidia/llama-3.2-nv-embedqa-1b-v2"

# -- caching back to the manifest's cache block -----------------------------------------------------------

caches = st.builds(
    Cache,
    type=st.sampled_from(["standard", "semantic", "none"]),
    threshold=st.none() | st.floats(0.01, 0.99),
    expirySeconds=st.none() | st.integers(1, 10**6),
    conversational=st.none() | st.booleans(),
    semantic=st.none()
    | st.fixed_dictionaries(
        {},
        optional={
            "embeddingModel": st.just(EMBED),
            "dimensions": st.integers(1, 4096),
            "distanceMetric": st.sampled_from(["dot_product", "cosine", "l2_norm"]),
        },
    ),
)


@given(caches)
def test_every_cache_block_is_recovered_from_its_request_body(cache: Cache) -> None:
    body = caching_body(cache)
    block = cache_block(body)
    assert block is not None
    assert caching_body(Cache.model_validate(block)) == body


@pytest.mark.parametrize(
    "caching",
    [
        {"enableStandard": True},  # no default cache named
        {"enableStandard": True, "defaultCache": "standard", "expiryTTL": 0},  # the manifest needs >= 1
        {"enableStandard": True, "defaultCache": "standard", "semantic": {"scoreThreshold": 0.5}},
        {"enableStandard": False, "enableConversational": True},
        {"enableStandard": True, "defaultCache": "semantic", "semantic": {"scoreThreshold": 0.5, "topK": 3}},
    ],
)
def test_caching_with_no_exact_cache_block_is_not_guessed(caching: dict[str, Any]) -> None:
    assert cache_block(caching) is None


# -- export, pure ------------------------------------------------------------------------------------------


def test_export_plans_as_no_changes_against_the_same_live_state(tmp_path: Path) -> None:
    semantic = {
        "enableStandard": True,
        "defaultCache": "semantic",
        "expiryTTL": 60,
        "semantic": {"scoreThreshold": 0.8},
    }
    live = LiveState(
        org_id="org-1",
        models=(
            live_model("chat", caching=semantic, keyword_filtering=("secret",), quantization="fp16"),
            live_model("paused", status="pausing", gpu_memory=24, enable_batching=True),
            live_model("embed", catalog_model=EMBED, dimensions=2048, region="eu-west-1", optimization="latency"),
            live_model("odd-cache", caching={"enableStandard": True}),
            live_model("leaving", status="destroying"),
        ),
        keys=(
            live_key("app", description="for the app", allowed_models=(("id-chat", "chat"), ("id-paused", "paused"))),
            live_key("eu", region="eu-west-1", allowed_cidrs=("10.2.0.0/16", "10.1.0.0/16")),
        ),
    )
    result = export_manifest(live)
    models = {m["name"]: m for m in result.document["models"]}
    assert sorted(models) == ["chat", "embed", "odd-cache", "paused"]  # not the one being destroyed
    assert models["chat"]["cache"] == {"type": "semantic", "expirySeconds": 60, "threshold": 0.8}
    assert models["paused"]["state"] == "paused"
    # Left unset, its caching would be planned back to the API's default: the export leaves it to be managed by hand.
    assert "cache" not in models["odd-cache"] and models["odd-cache"]["unmanagedAttributes"] == ["cache"]
    assert "unmanagedAttributes" not in models["chat"]
    assert [o for o in result.omitted if "odd-cache" in o and "no exact manifest equivalent" in o]
    keys = {k["name"]: k for k in result.document["apiKeys"]}
    assert keys["app"]["allowedModels"] == ["chat", "paused"] and keys["app"]["description"] == "for the app"
    assert keys["eu"]["allowedModels"] == ["*"]

    path = tmp_path / "exported.yaml"
    path.write_text(manifest_yaml(result.document, ["a comment"]))
    assert path.read_text().startswith("# yaml-language-server: $schema=schemas/manifest.schema.json\n# a comment\n")
    reloaded = load_manifest([path], environ={})
    assert not plan(reloaded, live, now=NOW).has_changes


def test_export_filters_and_what_it_leaves_out() -> None:
    live = LiveState(
        org_id="org-1",
        models=(
            live_model("team-a-chat"),
            live_model("team-a-eu", region="eu-west-1"),
            live_model("team-b-chat"),
            live_model("team-a-dup", status="deployFailed"),
            replace(live_model("team-a-dup"), id="id-healthy"),
            live_model("team-a-huge", gpu_memory=80),
        ),
        keys=(
            live_key("team-a-key", allowed_models=(("id-team-a-chat", "team-a-chat"),)),
            live_key(
                "team-a-wide", allowed_models=(("id-team-a-chat", "team-a-chat"), ("id-team-b-chat", "team-b-chat"))
            ),
        ),
    )
    result = export_manifest(live, match="team-a-*", region="us-east-1")
    names = [m["name"] for m in result.document["models"]]
    assert names == ["team-a-chat", "team-a-dup"]
    assert [k["name"] for k in result.document["apiKeys"]] == ["team-a-key"]
    assert "exported id-healthy" in result.warnings[0]  # the one the planner would manage, not the failed one
    omitted = "\n".join(result.omitted)
    assert "team-a-huge" in omitted and "gpuMemory" in omitted
    assert "team-a-wide" in omitted and "team-b-chat" in omitted
    Manifest.model_validate(result.document)


# -- export, end to end ------------------------------------------------------------------------------------

RICH = """\
apiVersion: capella-deploy/v1
defaults:
  region: us-east-1
  cache: {type: standard, expirySeconds: 600}
models:
  - name: embed
    catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
    gpuMemory: 24
    dimensions: 2048
    cache: {type: none}
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    quantization: fp16
    optimization: latency
    guardrails: [hate speech]
    keywordFiltering: [internal-only]
    cache:
      type: semantic
      threshold: 0.85
      conversational: true
      semantic: {embeddingModel: embed, dimensions: 2048, distanceMetric: cosine}
  - name: nightly
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 24
    state: paused
    enableBatching: true
apiKeys:
  - name: app
    description: the app's key
    expiryDays: 90
    allowedCIDRs: [10.0.0.0/16, 192.168.1.7]
    allowedModels: [chat, embed]
"""


def test_export_of_a_live_org_plans_as_no_changes(world: World) -> None:
    source = world.write("rich.yaml", RICH)
    assert world.cli("apply", "-f", str(source), "--auto-approve").exit_code == 0
    by_hand(
        world,
        lambda client, org: client.create_model(
            org,
            {
                "name": "console-made",
                "catalogModelName": CHAT,
                "cloudConfig": {"provider": "aws", "region": "us-west-2", "compute": {"cpu": 4, "gpuMemory": 24}},
                "caching": {"enableStandard": True, "defaultCache": "standard", "expiryTTL": 0},
            },
        ),
    )
    exported = world.root / "out" / "exported.yaml"
    result = world.cli("export", "-o", str(exported))
    assert result.exit_code == 0, result.output
    assert "Exported 4 model(s), 1 API key(s)." in result.stderr
    assert "console-made" in result.stderr and "no exact manifest equivalent" in result.stderr
    text = exported.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    assert "# Not exported: model 'console-made'" in text

    doc = yaml.safe_load(text)
    assert doc["organizationId"] == world.sandbox.org_id
    console = next(m for m in doc["models"] if m["name"] == "console-made")
    assert console["region"] == "us-west-2" and "cache" not in console
    assert console["unmanagedAttributes"] == ["cache"]

    planned = world.cli("plan", "-f", str(exported), "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output
    assert "No changes." in planned.stdout and "Unmanaged" not in planned.stdout


def test_export_to_stdout_with_filters(world: World) -> None:
    assert world.cli("apply", "-f", str(world.write("rich.yaml", RICH)), "--auto-approve").exit_code == 0
    result = world.cli("export", "--match", "[ac]*", "--region", "us-east-1")
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert [m["name"] for m in doc["models"]] == ["chat"]
    assert "apiKeys" not in doc  # app also allows embed, which the filter leaves out
    assert "not exported: apiKey 'app': it allows models outside this export (embed)" in result.stderr
    assert "--match [ac]* --region us-east-1" in result.stdout.splitlines()[1]


# -- clone, pure -------------------------------------------------------------------------------------------


def example(name: str) -> dict[str, Any]:
    loaded = load_manifest([ROOT / "examples" / name], environ={})
    return loaded.model_dump(mode="json", exclude_unset=True)


def test_clone_moves_every_region_and_renames_everything_consistently() -> None:
    source = example("multi-region.yaml")
    original = json.dumps(source, sort_keys=True)
    result = clone_manifest(source, region="eu-central-1", name_suffix="-fra")
    assert json.dumps(source, sort_keys=True) == original  # the input is left alone

    doc = result.document
    cloned = Manifest.model_validate(doc)
    assert cloned.defaults.region == "eu-central-1"
    assert {m.region or cloned.defaults.region for m in cloned.models} == {"eu-central-1"}
    assert {k.region or cloned.defaults.region for k in cloned.apiKeys} == {"eu-central-1"}
    assert [m.name for m in cloned.models] == ["chat-us-fra", "chat-eu-fra", "chat-eu-batch-fra"]
    keys = {k.name: k for k in cloned.apiKeys}
    assert keys["app-eu-fra"].allowedModels == ("chat-eu-fra", "chat-eu-batch-fra")
    assert keys["app-us-fra"].rotateBeforeDays == 30 and keys["app-us-fra"].allowedCIDRs == ("10.10.0.0/16",)
    assert cloned.prune is None and any("prune was dropped" in w for w in result.warnings)
    assert cloned.defaults.routing is not None and cloned.defaults.routing.maxRetries == 2
    assert result.renamed_models["chat-us"] == "chat-us-fra"


def test_clone_follows_references_from_checks_and_can_change_provider_and_org() -> None:
    source = {
        "apiVersion": "capella-deploy/v1",
        "organizationId": "org-us",
        "defaults": {"region": "us-east-1"},
        "models": [{"name": "chat", "catalogModel": CHAT, "gpuMemory": 48, "provider": "aws"}],
        "apiKeys": [{"name": "app", "allowedCIDRs": ["10.0.0.0/16"], "allowedModels": ["chat"]}],
        "checks": [{"name": "chat-ok", "kind": "chat", "model": "chat", "apiKey": "app"}],
    }
    doc = clone_manifest(source, region="europe-west4", name_suffix="", provider="gcp", org_id="org-eu").document
    cloned = Manifest.model_validate(doc)
    assert cloned.organizationId == "org-eu" and cloned.defaults.provider == "gcp"
    assert cloned.models[0].provider == "gcp" and cloned.models[0].name == "chat"
    suffixed = Manifest.model_validate(clone_manifest(source, region="eu-west-1", name_suffix="-eu").document)
    assert (suffixed.checks[0].model, suffixed.checks[0].apiKey) == ("chat-eu", "app-eu")
    assert suffixed.organizationId == "org-us"
    with pytest.raises(ValueError, match="name suffix"):
        clone_manifest(source, region="eu-west-1", name_suffix=" eu")


def test_a_clone_caches_with_its_own_embedding_model() -> None:
    doc = clone_manifest(example("embeddings-chat-caching.yaml"), region="eu-west-1", name_suffix="-eu").document
    chat = next(m for m in Manifest.model_validate(doc).models if m.name == "chat-eu")
    assert chat.cache is not None and chat.cache.semantic is not None
    assert chat.cache.semantic.embeddingModel == "embed-eu"
    deployed = {"embeddingModel": "6af08c0a-8cab-4c1c-b257-b521575c16d0"}
    source = {**doc, "defaults": {**doc["defaults"], "cache": {"type": "semantic", "semantic": deployed}}}
    result = clone_manifest(source, region="eu-central-1", name_suffix="-fra")
    assert any("6af08c0a-8cab-4c1c-b257-b521575c16d0, which is not part of the clone" in w for w in result.warnings)


# -- clone, end to end -------------------------------------------------------------------------------------


def shape(world: World, region: str) -> Counter[tuple[str, int, int, str]]:
    now = world.sandbox.now()
    return Counter(
        (m.catalog_model_name, m.gpu_memory, m.cpu, lifecycle.status_at(m, now))
        for m in world.sandbox.world().models.values()
        if m.region == region
    )


def test_clone_then_apply_builds_the_same_shape_in_the_other_region(world: World) -> None:
    source = manifest(world)
    assert world.cli("apply", "-f", source, "--auto-approve").exit_code == 0
    old_token = json.loads(world.outputs.read_text())["apiKeys"]["app"]["token"]

    cloned = world.root / "clone-eu.yaml"
    result = world.run("clone", "-f", source, "--to-region", "eu-west-1", "-o", str(cloned))
    assert result.exit_code == 0, result.output
    text = cloned.read_text()
    assert old_token not in text and "API keys are declared anew" in text

    applied = world.cli("apply", "-f", str(cloned), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert shape(world, "eu-west-1") == shape(world, "us-east-1") and sum(shape(world, "eu-west-1").values()) == 2
    names = sorted(m.name for m in world.sandbox.world().models.values())
    assert names == ["chat", "chat-eu-west-1", "embed", "embed-eu-west-1"]
    keys = {k.name: k for k in world.sandbox.world().api_keys.values()}
    assert keys["app-eu-west-1"].region == "eu-west-1"
    assert keys["app-eu-west-1"].allowed_cidrs == keys["app"].allowed_cidrs
    new_token = json.loads(world.outputs.read_text())["apiKeys"]["app-eu-west-1"]["token"]
    assert new_token and new_token != old_token

    # Both manifests still hold: the clone took nothing from the original.
    assert world.cli("plan", "-f", source, "--detailed-exitcode").exit_code == 0
    assert world.cli("plan", "-f", str(cloned), "--detailed-exitcode").exit_code == 0
    assert model_id(world, "chat") != model_id(world, "chat-eu-west-1")


def test_clone_refuses_what_the_catalog_does_not_offer(world: World) -> None:
    source = manifest(world)
    checked = world.run("clone", "-f", source, "--to-region", "eu-west-1")
    assert checked.exit_code == 0 and "Warning" not in checked.stderr
    assert yaml.safe_load(checked.stdout)["defaults"]["region"] == "eu-west-1"

    refused = world.run("clone", "-f", source, "--to-region", "eu-west-1", "--provider", "gcp")
    assert refused.exit_code == 1 and "--provider gcp: cloud provider 'gcp' is not offered" in refused.stderr
    nowhere = world.run("clone", "-f", source, "--to-region", "ap-south-9")
    assert nowhere.exit_code == 1 and "--to-region ap-south-9: region 'ap-south-9' is not offered" in nowhere.stderr
    invalid = world.run("clone", "-f", source, "--to-region", "EU West")
    assert invalid.exit_code == 1 and "would not be a valid manifest" in invalid.stderr


# -- the examples ------------------------------------------------------------------------------------------


def test_overlay_example_moves_the_base_to_its_region() -> None:
    base = ROOT / "examples" / "overlays" / "base.yaml"
    eu = ROOT / "examples" / "overlays" / "eu.yaml"
    us_only = load_manifest([base], environ={})
    merged = load_manifest([base, eu], environ={"CAPELLA_EU_ORG_ID": "org-eu"})
    assert [m.name for m in merged.models] == [m.name for m in us_only.models]
    assert merged.organizationId == "org-eu" and us_only.organizationId is None
    for loaded, region in ((us_only, "us-east-1"), (merged, "eu-west-1")):
        assert {m.region or loaded.defaults.region for m in loaded.models} == {region}
        assert {k.region or loaded.defaults.region for k in loaded.apiKeys} == {region}
    assert merged.outputs.path != us_only.outputs.path


def test_clone_example_is_a_clone_of_the_quickstart() -> None:
    cloned = load_manifest([ROOT / "examples" / "clone-eu.yaml"], environ={})
    quickstart = load_manifest([ROOT / "examples" / "quickstart.yaml"], environ={})
    assert cloned.defaults.region == "eu-west-1"
    assert [m.name for m in cloned.models] == [f"{m.name}-eu-west-1" for m in quickstart.models]
    assert [(m.catalogModel, m.gpuMemory) for m in cloned.models] == [
        (m.catalogModel, m.gpuMemory) for m in quickstart.models
    ]
