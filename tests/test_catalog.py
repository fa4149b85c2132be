"""The catalog of what Capella offers: validate warns, plan, apply and clone refuse, and the sandbox agrees."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capella_deploy.api.client import CapellaClient
from capella_deploy.catalog import CATALOG, EMBEDDING_GENERATION, MODEL_KINDS, Catalog, load, parse
from capella_deploy.clock import ManualClock
from capella_deploy.errors import Unprocessable
from capella_deploy.kinds.api_key import key_create_body
from capella_deploy.kinds.base import Action, Kind, ResourceChange
from capella_deploy.kinds.model import model_create_body
from capella_deploy.manifest import Manifest, read_manifest
from capella_deploy.manifest.offered import CatalogCheck, CatalogFinding, check_catalog, unoffered
from capella_deploy.plan import Plan
from capella_deploy.run.planning import with_catalog
from capella_deploy.sandbox import IN_PROCESS_BASE_URL, Sandbox
from capella_deploy.secrets import Secret
from tests.conftest import World

CHAT = "mistralai/mistral-7b-instruct-v0.3"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
EMBED = "nvidia/llama-3.2-nv-embedqa-1b-v2"

# The manifest: one model and the key are fine, three models ask for what Capella does not offer.
MIXED = f"""\
apiVersion: capella-deploy/v1
defaults:
  region: us-east-1
models:
  - name: chat
    catalogModel: {CHAT}
    gpuMemory: 48
  - name: typo
    catalogModel: mistralai/mistral-7b-instruct
    gpuMemory: 24
  - name: far
    catalogModel: {LLAMA}
    gpuMemory: 48
    region: us-east-7
  - name: elsewhere
    catalogModel: {LLAMA}
    gpuMemory: 48
    provider: gcp
apiKeys:
  - name: app
    allowedCIDRs: [10.0.0.0/16]
"""


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if line.strip() == needle)


def manifest_of(document: dict[str, Any]) -> Manifest:
    return Manifest.model_validate({"apiVersion": "capella-deploy/v1", **document})


# -- the data --------------------------------------------------------------------------------------------


def test_the_catalog_is_versioned_dated_and_names_every_model_kind() -> None:
    assert CATALOG.version >= 1 and CATALOG.checked <= date.today()
    assert CATALOG.label == f"catalog version {CATALOG.version}, checked {CATALOG.checked.isoformat()}"
    assert CATALOG.providers == ("aws",)  # gcp and azure are in the API's enum, not on offer
    assert {model.kind for model in CATALOG.models.values()} == set(MODEL_KINDS)
    for model in CATALOG.models.values():
        assert (model.dimensions is not None) == (model.kind == EMBEDDING_GENERATION), model.name


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d.pop("version"), "the field 'version' is missing"),
        (lambda d: d.update(version="1"), "version must be a whole number"),
        (lambda d: d.update(checked="last week"), "Invalid isoformat"),
        (lambda d: d.update(regions=[]), "regions must be a non-empty list of str"),
        (lambda d: d.update(gpu_memory=[24, 24]), "gpu_memory lists a value twice"),
        (lambda d: d["models"][0].update(kind="chat"), "kind must be one of"),
        (lambda d: d["models"][0].update(dimensions=1024), "an embedding model, and only one, has dimensions"),
        (lambda d: d["models"].append(dict(d["models"][0])), "is listed twice"),
    ],
)
def test_a_malformed_catalog_file_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, change: Any, complaint: str
) -> None:
    from capella_deploy.catalog import DATA_FILE

    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    change(data)
    broken = tmp_path / "catalog.json"
    broken.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid catalog") as refused:
        load(broken)
    assert str(broken) in str(refused.value) and complaint in str(refused.value)


def test_the_manifest_accepts_every_value_the_catalog_offers() -> None:
    # A catalog update that adds a size or a provider must not be refused by the manifest's own types first.
    for provider, gpu, cpu in itertools.product(CATALOG.providers, CATALOG.gpu_memory, CATALOG.cpu):
        model = {"name": "m", "catalogModel": CHAT, "provider": provider, "gpuMemory": gpu, "cpu": cpu}
        manifest = manifest_of({"defaults": {"region": CATALOG.regions[0]}, "models": [model]})
        assert unoffered(manifest, CATALOG) == []


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "files",
    [[path] for path in sorted(EXAMPLES.glob("*.yaml"))]
    + [[EXAMPLES / "overlays/base.yaml", EXAMPLES / "overlays/eu.yaml"]],
    ids=lambda files: "+".join(path.name for path in files),
)
def test_the_examples_ask_only_for_what_the_catalog_offers(files: list[Path]) -> None:
    loaded = read_manifest(files, environ={"CAPELLA_EU_ORG_ID": "org-eu"})
    assert check_catalog(loaded, CATALOG).findings == ()


# -- the check, pure --------------------------------------------------------------------------------------


def test_each_problem_is_reported_once_where_it_is_written_with_the_resources_it_stops() -> None:
    manifest = manifest_of(
        {
            "defaults": {"region": "us-east-7"},
            "models": [
                {"name": "a", "catalogModel": CHAT, "gpuMemory": 24},
                {"name": "b", "catalogModel": CHAT, "gpuMemory": 24, "region": "eu-west-9", "provider": "azure"},
            ],
            "apiKeys": [
                {"name": "k", "allowedCIDRs": ["10.0.0.0/8"]},
                {"name": "eu", "region": "eu-west-1", "allowedCIDRs": ["10.0.0.0/8"]},
            ],
        }
    )
    found = {(problem.loc, problem.addresses): problem.message for problem in unoffered(manifest, CATALOG)}
    offered = ", ".join(CATALOG.regions)
    assert found == {
        (("defaults", "region"), ("model.a", "apiKey.k")): (
            f"region 'us-east-7' is not offered (did you mean 'us-east-1' or 'us-east-2'?); offered: {offered}"
        ),
        (("models", 1, "provider"), ("model.b",)): "cloud provider 'azure' is not offered; offered: aws",
        (("models", 1, "region"), ("model.b",)): (
            f"region 'eu-west-9' is not offered (did you mean 'eu-west-1'?); offered: {offered}"
        ),
    }


def test_catalog_models_and_dimensions_are_checked_against_the_model_they_name() -> None:
    models = [
        {"name": "typo", "catalogModel": "Mistralai/Mistral-7B-Instruct-v0.3", "gpuMemory": 24},
        {"name": "unknown", "catalogModel": "acme/rocket-1", "gpuMemory": 24},
        {"name": "text-dims", "catalogModel": CHAT, "gpuMemory": 24, "dimensions": 512},
        {"name": "too-many", "catalogModel": EMBED, "gpuMemory": 24, "dimensions": 4096},
        {"name": "fewer", "catalogModel": EMBED, "gpuMemory": 24, "dimensions": 512},
        {"name": "all", "catalogModel": EMBED, "gpuMemory": 24, "dimensions": 2048},
    ]
    manifest = manifest_of({"defaults": {"region": "us-east-1"}, "models": models})
    found = {problem.addresses[0]: problem.message for problem in unoffered(manifest, CATALOG)}
    assert set(found) == {"model.typo", "model.unknown", "model.text-dims", "model.too-many"}
    assert found["model.typo"].startswith(
        f"catalog model 'Mistralai/Mistral-7B-Instruct-v0.3' is not offered (did you mean '{CHAT}'?); offered: "
    )
    assert "did you mean" not in found["model.unknown"] and ", ".join(CATALOG.models) in found["model.unknown"]
    assert found["model.text-dims"] == f"dimensions applies to embedding models only; {CHAT} is a text-generation model"
    assert found["model.too-many"] == f"{EMBED} produces at most 2048 dimensions; got 4096"


def test_a_long_catalog_model_name_is_quoted_in_part() -> None:
    long = "acme/" + "x" * 5000
    manifest = manifest_of(
        {"defaults": {"region": "us-east-1"}, "models": [{"name": "m", "catalogModel": long, "gpuMemory": 24}]}
    )
    (problem,) = unoffered(manifest, CATALOG)
    assert len(problem.message) < 1000 and "(5005 characters)" in problem.message


def test_sizes_are_checked_against_the_catalog_not_only_the_manifest_types() -> None:
    narrow = parse(
        {
            "version": 7,
            "checked": "2026-01-01",
            "providers": ["aws"],
            "regions": ["us-east-1"],
            "gpu_memory": [48],
            "cpu": [4],
            "models": [{"name": CHAT, "kind": "text-generation", "vendor": "mistral"}],
        }
    )
    model = {"name": "big", "catalogModel": CHAT, "gpuMemory": 192, "cpu": 32}
    manifest = manifest_of({"defaults": {"region": "us-east-1"}, "models": [model]})
    assert [(p.loc[-1], p.message) for p in unoffered(manifest, narrow)] == [
        ("gpuMemory", "gpuMemory 192 is not offered; offered: 48"),
        ("cpu", "cpu 32 is not offered; offered: 4"),
    ]
    assert narrow.label == "catalog version 7, checked 2026-01-01"


def test_findings_are_located_in_the_file_that_wrote_the_value(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(MIXED)
    overlay = tmp_path / "prod.yaml"
    overlay.write_text("models:\n  - name: chat\n    region: eu-west-7\n")
    check = check_catalog(read_manifest([base, overlay], environ={}), CATALOG)
    texts = [finding.text for finding in check.findings]
    assert any(text.startswith(f"{overlay}:3: models[0].region: region 'eu-west-7'") for text in texts)
    typo = line_of(MIXED, "catalogModel: mistralai/mistral-7b-instruct")
    assert any(text.startswith(f"{base}:{typo}: models[1].catalogModel: ") for text in texts)
    assert check.catalog == CATALOG.label and not check.skipped


def change(action: Action, name: str) -> ResourceChange:
    live_id = None if action is Action.CREATE else "id-1"
    return ResourceChange(Kind.MODEL, name, action, live_id=live_id, after={"catalogModel": CHAT})


def test_a_plan_refuses_what_it_creates_and_warns_of_what_already_exists() -> None:
    plan = Plan("org", (change(Action.CREATE, "new"), change(Action.NOOP, "old"), change(Action.REPLACE, "moved")))
    findings = (
        CatalogFinding("m.yaml:5: models[0].region: region 'x' is not offered", ("model.new",)),
        CatalogFinding("m.yaml:9: models[1].region: region 'y' is not offered", ("model.old",)),
        CatalogFinding("m.yaml:3: defaults.region: region 'z' is not offered", ("model.old", "model.moved")),
    )
    checked = with_catalog(plan, CatalogCheck("catalog version 1, checked 2026-01-01", findings))
    assert checked.errors[:2] == (findings[0].text, findings[2].text)
    assert "pass --skip-catalog-check if Capella offers it now" in checked.errors[2]
    assert checked.warnings == (
        f"{findings[1].text} (not refused now: this plan does not create model.old; Capella would refuse a new one)",
    )

    skipped = with_catalog(plan, CatalogCheck("catalog version 1, checked 2026-01-01", findings, skipped=True))
    assert skipped.errors == ()
    assert skipped.warnings[0].startswith("the catalog check was skipped (--skip-catalog-check): Capella may refuse")
    assert skipped.warnings[1:] == tuple(finding.text for finding in findings)
    clean = with_catalog(plan, CatalogCheck("catalog version 1, checked 2026-01-01", (), skipped=True))
    assert clean.warnings == (
        "the catalog check was skipped (--skip-catalog-check): "
        "the catalog version 1, checked 2026-01-01 lists everything the manifest asks for",
    )
    assert with_catalog(plan, CatalogCheck("catalog version 1, checked 2026-01-01")) == plan


# -- the commands ------------------------------------------------------------------------------------------


def test_validate_warns_and_passes(world: World) -> None:
    path = world.write("capella.yaml", MIXED)
    result = world.run("validate", "-f", str(path))
    assert result.exit_code == 0, result.output
    assert "The manifest is valid: 4 model(s), 1 API key(s)." in result.stdout
    far = line_of(MIXED, "region: us-east-7")
    assert f"Warning: {path}:{far}: models[2].region: region 'us-east-7' is not offered (did you mean" in result.stderr
    assert "models[3].provider: cloud provider 'gcp' is not offered; offered: aws" in result.stderr
    assert f"did you mean '{CHAT}'?" in result.stderr
    assert f"3 value(s) above are not in the {CATALOG.label}" in result.stderr

    clean = world.write("clean.yaml", MIXED.split("  - name: typo")[0] + "apiKeys: []\n")
    assert world.run("validate", "-f", str(clean)).stderr == ""


def test_plan_refuses_in_every_rendering_and_saves_nothing(world: World) -> None:
    path = str(world.write("capella.yaml", MIXED))
    planfile = world.root / "capella.plan.json"
    human = world.cli("plan", "-f", path, "-out", str(planfile))
    assert human.exit_code == 1 and not planfile.exists()
    assert f"Error: {path}:{line_of(MIXED, 'region: us-east-7')}: models[2].region: " in human.stdout

    as_json = world.cli("plan", "-f", path, "--json")
    assert as_json.exit_code == 1
    errors = json.loads(as_json.stdout)["errors"]
    assert [error.split(": ")[1] for error in errors[:3]] == [
        "models[1].catalogModel",
        "models[2].region",
        "models[3].provider",
    ]
    assert CATALOG.label in errors[3] and "--skip-catalog-check" in errors[3]
    markdown = world.cli("plan", "-f", path, "--markdown")
    assert markdown.exit_code == 1 and "> [!CAUTION]" in markdown.stdout
    assert "models[3].provider: cloud provider 'gcp' is not offered" in markdown.stdout
    assert "Plan checksum" not in markdown.stdout


def test_apply_refuses_before_creating_anything(world: World) -> None:
    path = str(world.write("capella.yaml", MIXED))
    result = world.cli("apply", "-f", path, "--auto-approve")
    assert result.exit_code == 1
    assert "models[1].catalogModel: catalog model 'mistralai/mistral-7b-instruct' is not offered" in result.output
    live = world.sandbox.world()
    assert live.models == {} and live.api_keys == {}  # not even the model and key that were fine


def test_skipping_the_check_lets_apply_reach_the_api_which_refuses(world: World) -> None:
    path = str(world.write("capella.yaml", MIXED))
    result = world.cli("apply", "-f", path, "--auto-approve", "--skip-catalog-check")
    assert result.exit_code == 1
    assert "the catalog check was skipped (--skip-catalog-check)" in result.output
    assert result.output.count("422 Unprocessable Entity") >= 3
    live = world.sandbox.world()
    assert sorted(m.name for m in live.models.values()) == ["chat"]
    assert [k.name for k in live.api_keys.values()] == ["app"]


def test_a_saved_plan_made_with_the_check_skipped_says_so(world: World) -> None:
    path = str(world.write("capella.yaml", MIXED))
    planfile = world.root / "capella.plan.json"
    planned = world.cli("plan", "-f", path, "-out", str(planfile), "--skip-catalog-check")
    assert planned.exit_code == 0, planned.output
    saved = json.loads(planfile.read_text())
    assert saved["plan"]["errors"] == []
    assert saved["plan"]["warnings"][0].startswith("the catalog check was skipped (--skip-catalog-check)")
    assert any("models[2].region: region 'us-east-7'" in w for w in saved["plan"]["warnings"])
    assert "the catalog check was skipped" in world.run("show", str(planfile), "--markdown").stdout

    again = world.cli("apply", str(planfile), "--skip-catalog-check")
    assert again.exit_code == 1 and "catalog check" in again.stderr  # a saved plan already carries its verdict
    applied = world.cli("apply", str(planfile))
    assert applied.exit_code == 1 and "422 Unprocessable Entity" in applied.output
    assert sorted(m.name for m in world.sandbox.world().models.values()) == ["chat"]


def test_clone_to_a_region_capella_does_not_offer_is_refused(world: World) -> None:
    path = str(world.write("capella.yaml", MIXED.split("  - name: typo")[0] + "apiKeys: []\n"))
    target = world.root / "clone.yaml"
    refused = world.run("clone", "-f", path, "--to-region", "eu-west-9", "-o", str(target))
    assert refused.exit_code == 1 and not target.exists()
    assert f"Capella would refuse to create this clone ({CATALOG.label}):" in refused.stderr
    assert "--to-region eu-west-9: region 'eu-west-9' is not offered (did you mean 'eu-west-1'?)" in refused.stderr
    assert refused.stderr.count("--to-region eu-west-9:") == 1

    written = world.run("clone", "-f", path, "--to-region", "eu-west-9", "-o", str(target), "--skip-catalog-check")
    assert written.exit_code == 0, written.output
    assert "--skip-catalog-check: written anyway" in written.stderr
    text = target.read_text()
    assert "--to-region eu-west-9 --skip-catalog-check" in text and f"Not in the {CATALOG.label}" in text


def test_clone_locates_what_it_took_from_the_source(world: World) -> None:
    path = str(world.write("capella.yaml", MIXED))
    refused = world.run("clone", "-f", path, "--to-region", "eu-west-1")
    assert refused.exit_code == 1
    typo = line_of(MIXED, "catalogModel: mistralai/mistral-7b-instruct")
    assert f"{path}:{typo}: models[1].catalogModel: catalog model 'mistralai/mistral-7b-instruct'" in refused.stderr
    assert f"{path}:{line_of(MIXED, 'provider: gcp')}: models[3].provider: " in refused.stderr
    assert "region" not in refused.stderr.split("):", 1)[1]  # the clone's region is offered


# -- the sandbox agrees ---------------------------------------------------------------------------------


def test_every_catalog_entry_deploys_in_the_sandbox(world: World) -> None:
    regions = itertools.cycle(CATALOG.regions)
    sizes = itertools.cycle(itertools.product(CATALOG.gpu_memory, CATALOG.cpu))
    models = []
    for index, entry in enumerate(CATALOG.models.values()):
        gpu, cpu = next(sizes)
        models.append(
            {"name": f"m{index}", "catalogModel": entry.name, "region": next(regions), "gpuMemory": gpu, "cpu": cpu}
            | ({"dimensions": entry.dimensions} if entry.dimensions else {})
        )
    keys = [{"name": f"k-{region}", "region": region, "allowedCIDRs": ["10.0.0.0/8"]} for region in CATALOG.regions]
    document = {"apiVersion": "capella-deploy/v1", "defaults": {"region": "us-east-1"}}
    document |= {"models": models, "apiKeys": keys}
    assert len(models) >= len(CATALOG.regions) and len(models) >= len(CATALOG.gpu_memory) * len(CATALOG.cpu)
    path = world.write("everything.yaml", json.dumps(document))

    result = world.cli("apply", "-f", str(path), "--auto-approve")
    assert result.exit_code == 0, result.output
    live = world.sandbox.world()
    deployed = {(m.catalog_model_name, m.region, m.gpu_memory, m.cpu) for m in live.models.values()}
    assert deployed == {(m["catalogModel"], m["region"], m["gpuMemory"], m["cpu"]) for m in models}
    assert {k.region for k in live.api_keys.values()} == set(CATALOG.regions)


TOKEN = "catalog-agreement-token"
_NAMES = itertools.count()


@functools.cache
def agreement_sandbox() -> Sandbox:
    """One sandbox for every generated example: each create has a name of its own."""
    return Sandbox(token=TOKEN, clock=ManualClock())


async def _create(kind: str, body: dict[str, Any]) -> str | None:
    """The API's refusal of a create body, or None when it was accepted."""
    sandbox = agreement_sandbox()
    client = CapellaClient(
        base_url=IN_PROCESS_BASE_URL, token=Secret(TOKEN), transport=sandbox.transport(), clock=ManualClock()
    )
    async with client:
        try:
            if kind == "model":
                await client.create_model(sandbox.org_id, body)
            else:
                await client.create_api_key(sandbox.org_id, body)
        except Unprocessable as refusal:
            return f"{refusal.message} {refusal.hint}"
    return None


def _values(manifest: Manifest, field: str | int) -> set[str]:
    """What a finding about ``field`` is about, as the API would name it."""
    model = manifest.models[0] if manifest.models else None
    return {
        "region": {str(manifest.defaults.region), *(m.region for m in manifest.models if m.region)},
        "provider": {model.provider or manifest.defaults.provider} if model else set(),
        "catalogModel": {model.catalogModel} if model else set(),
        "dimensions": {model.catalogModel} if model else set(),
    }[str(field)] - {"None"}


near_misses = ["mistralai/mistral-7b-instruct", "acme/rocket-1", CHAT.upper()]
models = st.fixed_dictionaries(
    {
        "catalogModel": st.sampled_from([*CATALOG.models, *near_misses]),
        "provider": st.sampled_from(["aws", "aws", "aws", "aws", "gcp", "azure"]),
        "gpuMemory": st.sampled_from(CATALOG.gpu_memory),
        "cpu": st.none() | st.sampled_from(CATALOG.cpu),
        "dimensions": st.none() | st.sampled_from([1, 1024, 2048, 4096, 4097]),
    }
)
regions = st.sampled_from([*CATALOG.regions, "us-east-7", "eu-west-9"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models, region=regions)
def test_the_sandbox_refuses_a_model_exactly_when_the_catalog_says_so(model: dict[str, Any], region: str) -> None:
    spec = {"name": f"m{next(_NAMES)}", **{k: v for k, v in model.items() if v is not None}}
    manifest = manifest_of({"defaults": {"region": region}, "models": [spec]})
    findings = unoffered(manifest, CATALOG)
    refusal = asyncio.run(_create("model", model_create_body(manifest.models[0], manifest.defaults, {})))
    assert (refusal is not None) == bool(findings), (findings, refusal)
    if refusal is not None:
        # The sandbox stops at its first problem; it is one the tool found, named by the value in question.
        about = set().union(*(_values(manifest, finding.loc[-1]) for finding in findings))
        assert any(value in refusal for value in about), (findings, refusal)


@pytest.mark.parametrize("region", [*CATALOG.regions, "us-east-7", "ap-south-9"])
def test_the_sandbox_refuses_a_key_exactly_when_the_catalog_says_so(region: str) -> None:
    manifest = manifest_of(
        {"apiKeys": [{"name": f"k{next(_NAMES)}", "region": region, "allowedCIDRs": ["10.0.0.0/8"]}]}
    )
    findings = unoffered(manifest, CATALOG)
    refusal = asyncio.run(_create("key", key_create_body(manifest.apiKeys[0], manifest.defaults, {})))
    assert (refusal is not None) == bool(findings)
    if refusal is not None:
        assert f"region {region!r} is not offered" in refusal and ", ".join(CATALOG.regions) in refusal
        assert findings[0].message.startswith(f"region {region!r} is not offered")


def test_the_sandbox_offers_what_the_catalog_lists() -> None:
    from capella_deploy.sandbox import catalog as sandbox_catalog

    assert isinstance(CATALOG, Catalog)
    assert dict(sandbox_catalog.CATALOG) == dict(CATALOG.models)
    assert CATALOG.regions == sandbox_catalog.REGIONS and CATALOG.providers == sandbox_catalog.OFFERED_PROVIDERS
    assert CATALOG.gpu_memory == sandbox_catalog.GPU_MEMORY_CHOICES and CATALOG.cpu == sandbox_catalog.CPU_CHOICES
