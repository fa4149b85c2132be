"""Manifest validation: values, defaults, and every problem reported at once at its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest

from capella_deploy.manifest import (
    ApiKeySpec,
    Manifest,
    ManifestError,
    ManifestIssue,
    load_manifest,
)

HEADER = "apiVersion: capella-deploy/v1\n"


def write(tmp_path: Path, text: str, name: str = "manifest.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(*paths: Path, **kwargs: object) -> list[ManifestIssue]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(list(paths), environ={}, **kwargs)  # type: ignore[arg-type]
    return caught.value.issues


def by_path(issues: list[ManifestIssue]) -> dict[str, ManifestIssue]:
    return {issue.path: issue for issue in issues}


def test_full_manifest_loads_with_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        organizationId: 6af08c0a-8cab-4c1c-b257-b521575c16d0
        defaults:
          provider: aws
          region: us-east-1
          routing: {strategy: prefix-aware, maxRetries: 3, requestTimeoutSeconds: 30}
          cache: {type: semantic, threshold: 0.85, expirySeconds: 3600}
        models:
          - name: chat-prod
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpuMemory: 48
            cpu: 4
            state: paused
            preventDestroy: true
            quantization: fp16
            optimization: latency
            enableBatching: true
            guardrails: [hate speech]
            jailbreak: {scoreThreshold: 0.8}
            keywordFiltering: [secret]
            cache:
              type: semantic
              conversational: false
              semantic: {embeddingModel: embed, dimensions: 1024, distanceMetric: dot_product}
          - name: embed
            catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
            provider: aws
            region: eu-west-1
            gpuMemory: 24
            dimensions: 2048
        apiKeys:
          - name: app-key
            description: the app
            expiryDays: 30
            allowedCIDRs: [10.0.0.0/16, 203.0.113.7]
            allowedModels: [chat-prod]
            rotateBeforeDays: 7
        prune: {match: "team-a-*"}
        outputs: {path: out/keys.env, format: dotenv}
        checks:
          - {name: chat-ok, model: chat-prod, kind: chat}
        """,
    )
    manifest = load_manifest([path], environ={})
    chat, embed = manifest.models
    assert manifest.organizationId == "6af08c0a-8cab-4c1c-b257-b521575c16d0"
    assert manifest.defaults.routing is not None and manifest.defaults.routing.strategy == "prefix-aware"
    assert chat.gpuMemory == 48 and chat.cpu == 4 and chat.state == "paused" and chat.preventDestroy
    assert chat.guardrails == ("hate speech",) and chat.keywordFiltering == ("secret",)
    assert chat.jailbreak is not None and chat.jailbreak.scoreThreshold == 0.8
    assert chat.cache is not None and chat.cache.semantic is not None
    assert chat.cache.semantic.distanceMetric == "dot_product"
    assert chat.region is None and embed.region == "eu-west-1" and embed.dimensions == 2048
    key = manifest.apiKeys[0]
    assert key.allowedCIDRs == ("10.0.0.0/16", "203.0.113.7")
    assert key.allowedModels == ("chat-prod",) and key.rotateBeforeDays == 7
    assert manifest.prune is not None and manifest.prune.match == "team-a-*"
    assert manifest.outputs.format == "dotenv"
    assert [(c.name, c.model, c.kind) for c in manifest.checks] == [("chat-ok", "chat-prod", "chat")]


def test_defaults_fill_what_a_small_manifest_leaves_out(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        models:
          - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 24}
        apiKeys:
          - {name: key, allowedCIDRs: [10.0.0.0/8]}
        """,
    )
    manifest = load_manifest([path], environ={})
    assert manifest.organizationId is None
    assert manifest.defaults.provider == "aws"
    model = manifest.models[0]
    assert (model.provider, model.state, model.preventDestroy, model.cache) == (None, "running", False, None)
    key = manifest.apiKeys[0]
    assert (key.expiryDays, key.allowedModels, key.rotateBeforeDays) == (180, ("*",), 0)
    assert manifest.outputs.path == ".capella/outputs.json" and manifest.outputs.format == "json"


def test_manifest_values_are_frozen(tmp_path: Path) -> None:
    manifest = Manifest.model_validate(
        {"apiVersion": "capella-deploy/v1", "defaults": {"region": "us-east-1"}},
    )
    with pytest.raises(pydantic.ValidationError):
        manifest.organizationId = "x"


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        defaults:
          region: us-east-1
          routing: {strategy: fastest}
        models:
          - name: chat
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpumemory: 48
          - name: chat
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpuMemory: 64
            state: stopped
        apiKeys:
          - name: key
            allowedCIDRs: [10.0.0.0/16, 10.0.0.0/33]
            allowedModels: [ghost]
            expiryDays: 400
        """,
    )
    issues = problems(path)
    found = {(issue.line, issue.path) for issue in issues}
    assert found == {
        (4, "defaults.routing.strategy"),
        (6, "models[0].gpuMemory"),
        (8, "models[0].gpumemory"),
        (9, "models[1].name"),
        (11, "models[1].gpuMemory"),
        (12, "models[1].state"),
        (15, "apiKeys[0].allowedCIDRs[1]"),
        (16, "apiKeys[0].allowedModels[0]"),
        (17, "apiKeys[0].expiryDays"),
    }
    assert all(issue.file == str(path) for issue in issues)
    messages = by_path(issues)
    assert "did you mean 'gpuMemory'?" in messages["models[0].gpumemory"].message
    assert "least-latency" in messages["defaults.routing.strategy"].message
    assert "24, 48 or 192" in messages["models[1].gpuMemory"].message
    assert "24, 48 or 192" in messages["models[0].gpuMemory"].message  # the missing-field hint
    assert "already the name of models[0]" in messages["models[1].name"].message
    assert "ghost" in messages["apiKeys[0].allowedModels[0]"].message


def test_error_text_is_file_line_path_message_sorted(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "defaults: {region: us-east-1, provider: ibm}\nprune: {match: 3}\nextra: 1\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest([path], environ={})
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{path}:2: defaults.provider: 'ibm' is not allowed; use one of ")
    assert lines[1] == f"{path}:3: prune.match: expected text, got 3; put it in quotes"
    assert lines[2].startswith(f"{path}:4: extra: unknown field 'extra'; allowed fields: apiVersion, ")


def test_unknown_field_without_a_close_match_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "outputs: {path: x.json, colour: blue}\n")
    (issue,) = problems(path)
    assert issue.path == "outputs.colour"
    assert issue.message == "unknown field 'colour'; allowed fields: path, format"


def test_missing_api_version_and_wrong_one(tmp_path: Path) -> None:
    (missing,) = problems(write(tmp_path, "models: []\n", "a.yaml"))
    assert missing.path == "apiVersion" and "missing" in missing.message
    (wrong,) = problems(write(tmp_path, "apiVersion: v2\n", "b.yaml"))
    assert wrong.line == 1 and "'capella-deploy/v1'" in wrong.message


@pytest.mark.parametrize(
    ("snippet", "path"),
    [
        ("cache: {threshold: 1.01}", "defaults.cache.threshold"),
        ("cache: {threshold: -0.1}", "defaults.cache.threshold"),
        ("cache: {threshold: .nan}", "defaults.cache.threshold"),
        ("cache: {type: redis}", "defaults.cache.type"),
        ("cache: {expirySeconds: 0}", "defaults.cache.expirySeconds"),
        ("cache: {semantic: {distanceMetric: manhattan}}", "defaults.cache.semantic.distanceMetric"),
        ("routing: {maxRetries: 11}", "defaults.routing.maxRetries"),
        ("routing: {requestTimeoutSeconds: 0}", "defaults.routing.requestTimeoutSeconds"),
    ],
)
def test_defaults_ranges_and_enums_are_enforced(tmp_path: Path, snippet: str, path: str) -> None:
    manifest = write(tmp_path, HEADER + f"defaults:\n  region: us-east-1\n  {snippet}\n")
    (issue,) = problems(manifest)
    assert (issue.path, issue.line) == (path, 4)


def test_cache_threshold_bounds_are_inclusive_for_the_header(tmp_path: Path) -> None:
    # X-cb-cache-threshold takes 0..1; a semantic cache is stricter (test_manifest_checks.py).
    for threshold in (0, 1):
        path = write(tmp_path, HEADER + f"defaults: {{cache: {{type: standard, threshold: {threshold}}}}}\n")
        assert load_manifest([path], environ={}).defaults.cache is not None


@pytest.mark.parametrize("score", ["0", "1", "1.5"])
def test_jailbreak_threshold_is_strictly_between_zero_and_one(tmp_path: Path, score: str) -> None:
    path = write(
        tmp_path,
        HEADER + f"defaults: {{region: us-east-1}}\nmodels:\n  - {{name: m, catalogModel: c, gpuMemory: 24, "
        f"jailbreak: {{scoreThreshold: {score}}}}}\n",
    )
    (issue,) = problems(path)
    assert issue.path == "models[0].jailbreak.scoreThreshold"


@pytest.mark.parametrize("name", ["-chat", "chat prod", "chät", "x" * 129, ""])
def test_bad_model_names_are_rejected(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, HEADER + f"defaults: {{region: us-east-1}}\nmodels:\n  - {{name: '{name}', "
                 "catalogModel: c, gpuMemory: 24}\n")  # fmt: skip
    (issue,) = problems(path)
    assert issue.path == "models[0].name"


@pytest.mark.parametrize("region", ["us-east-1", "us-central1", "europe-west4", "eastus", "westeurope"])
def test_provider_region_styles_are_accepted(tmp_path: Path, region: str) -> None:
    path = write(tmp_path, HEADER + f"defaults: {{region: {region}}}\n")
    assert load_manifest([path], environ={}).defaults.region == region


@pytest.mark.parametrize("region", ["US-EAST-1", "us east 1", "us_east_1", "us-east-1-", "1us", "us--east"])
def test_malformed_regions_are_rejected(tmp_path: Path, region: str) -> None:
    path = write(tmp_path, HEADER + f"defaults: {{region: '{region}'}}\n")
    (issue,) = problems(path)
    assert issue.path == "defaults.region" and "us-east-1" in issue.message


def test_every_model_and_key_needs_a_region(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        models:
          - {name: a, catalogModel: c, gpuMemory: 24, region: us-east-1}
          - {name: b, catalogModel: c, gpuMemory: 24}
        apiKeys:
          - {name: k, allowedCIDRs: [10.0.0.0/8], allowedModels: [a]}
        """,
    )
    issues = problems(path)
    assert {(i.line, i.path) for i in issues} == {(4, "models[1].region"), (6, "apiKeys[0].region")}
    assert all("defaults.region" in i.message for i in issues)


def test_default_region_counts_for_models_and_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + "defaults: {region: us-east-1}\nmodels: [{name: a, catalogModel: c, gpuMemory: 24}]\n"
        "apiKeys: [{name: k, allowedCIDRs: [10.0.0.0/8]}]\n",
    )
    manifest = load_manifest([path], environ={})
    assert manifest.models[0].region is None and manifest.defaults.region == "us-east-1"


def test_key_names_are_unique_and_rotation_comes_before_expiry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        apiKeys:
          - {name: k, allowedCIDRs: [10.0.0.0/8], expiryDays: 30, rotateBeforeDays: 29}
          - name: k
            allowedCIDRs: [10.0.0.0/8]
            expiryDays: 30
            rotateBeforeDays: 30
        """,
    )
    issues = by_path(problems(path))
    assert set(issues) == {"apiKeys[1].name", "apiKeys[1].rotateBeforeDays"}
    assert issues["apiKeys[1].name"].line == 5
    assert issues["apiKeys[1].rotateBeforeDays"].line == 8
    assert "expiryDays (30)" in issues["apiKeys[1].rotateBeforeDays"].message


def test_key_for_a_model_of_another_region_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        models:
          - {name: eu, catalogModel: c, gpuMemory: 24, region: eu-west-1}
          - {name: us, catalogModel: c, gpuMemory: 24}
        apiKeys:
          - {name: k, allowedCIDRs: [10.0.0.0/8], allowedModels: [us, eu]}
        """,
    )
    (issue,) = problems(path)
    assert issue.path == "apiKeys[0].allowedModels[1]" and issue.line == 7
    assert "eu-west-1" in issue.message and "us-east-1" in issue.message


@pytest.mark.parametrize(
    "cidrs",
    [["10.0.0.0/16"], ["203.0.113.7"], ["10.1.2.3/8"], ["2001:db8::/32"], ["::1"], ["0.0.0.0/0"]],
)
def test_valid_cidrs_are_kept_as_written(tmp_path: Path, cidrs: list[str]) -> None:
    quoted = ", ".join(f"'{c}'" for c in cidrs)
    path = write(
        tmp_path, HEADER + f"defaults: {{region: us-east-1}}\napiKeys:\n  - name: k\n    allowedCIDRs: [{quoted}]\n"
    )
    assert load_manifest([path], environ={}).apiKeys[0].allowedCIDRs == tuple(cidrs)


def test_invalid_cidrs_are_each_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        apiKeys:
          - name: k
            allowedCIDRs:
              - 10.0.0.0/16
              - 10.0.0.0/33
              - 300.1.1.1
              - " 10.0.0.1"
              - office
        """,
    )
    issues = problems(path)
    assert [(i.path, i.line) for i in issues] == [
        ("apiKeys[0].allowedCIDRs[1]", 7),
        ("apiKeys[0].allowedCIDRs[2]", 8),
        ("apiKeys[0].allowedCIDRs[3]", 9),
        ("apiKeys[0].allowedCIDRs[4]", 10),
    ]
    assert "'office' is not an IP address or CIDR block" in issues[-1].message


def test_keys_need_at_least_one_cidr(tmp_path: Path) -> None:
    base = HEADER + "defaults: {region: us-east-1}\napiKeys:\n  - name: k\n"
    (empty,) = problems(write(tmp_path, base + "    allowedCIDRs: []\n", "a.yaml"))
    assert empty.path == "apiKeys[0].allowedCIDRs" and empty.message == "needs at least 1 item(s)"
    (missing,) = problems(write(tmp_path, base + "    expiryDays: 5\n", "b.yaml"))
    assert missing.path == "apiKeys[0].allowedCIDRs" and missing.line == 4


def test_direct_construction_runs_the_cross_field_checks() -> None:
    with pytest.raises(pydantic.ValidationError, match="names must be unique"):
        Manifest.model_validate(
            {
                "apiVersion": "capella-deploy/v1",
                "defaults": {"region": "us-east-1"},
                "models": [
                    {"name": "a", "catalogModel": "c", "gpuMemory": 24},
                    {"name": "a", "catalogModel": "c", "gpuMemory": 24},
                ],
            }
        )
    with pytest.raises(pydantic.ValidationError, match="allowedCIDRs"):
        ApiKeySpec.model_validate({"name": "k", "allowedCIDRs": ["nope"]})


def test_missing_and_unreadable_files_are_issues(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    (issue,) = problems(missing)
    assert issue.file == str(missing) and issue.line is None and "not found" in issue.message
    (directory,) = problems(tmp_path)
    assert "directory" in directory.message
    assert str(directory) == f"{tmp_path}: is a directory; pass a manifest file with -f"


def test_no_files_is_an_issue_too() -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest([], environ={})
    assert "-f" in str(caught.value)


def test_numbers_where_text_is_expected_say_to_quote(tmp_path: Path) -> None:
    path = write(
        tmp_path, HEADER + "defaults: {region: us-east-1}\nmodels:\n  - {name: 2024, catalogModel: c, gpuMemory: 24}\n"
    )
    (issue,) = problems(path)
    assert issue.path == "models[0].name" and "quotes" in issue.message


def test_length_limits_are_explained(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + "defaults: {region: us-east-1}\napiKeys:\n  - name: k\n    allowedCIDRs: [10.0.0.0/8]\n"
        f"    description: {'d' * 251}\nprune: {{match: ''}}\n",
    )
    issues = by_path(problems(path))
    assert issues["apiKeys[0].description"].message == "is longer than 250 characters"
    assert issues["prune.match"].message == "must not be empty"


def test_a_semantic_cache_embeds_with_a_deployed_model_not_a_catalog_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        models:
          - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24, cache: {type: none}}
          - name: chat
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpuMemory: 48
            cache:
              type: semantic
              semantic: {embeddingModel: nvidia/llama-3.2-nv-embedqa-1b-v2}
          - name: by-id
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpuMemory: 48
            cache: {type: semantic, semantic: {embeddingModel: 6af08c0a-8cab-4c1c-b257-b521575c16d0}}
          - name: by-name
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpuMemory: 48
            cache: {type: semantic, semantic: {embeddingModel: embed}}
          - name: unknown
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpuMemory: 48
            cache: {type: semantic, semantic: {embeddingModel: embedder}}
        """,
    )
    found = by_path(problems(path))
    assert set(found) == {"models[1].cache.semantic.embeddingModel", "models[4].cache.semantic.embeddingModel"}
    catalog = found["models[1].cache.semantic.embeddingModel"]
    assert catalog.line == 10 and catalog.file == str(path)
    assert "is a catalog model name" in catalog.message
    assert "name 'embed', the model of this manifest that deploys it" in catalog.message
    assert "no model named 'embedder'" in found["models[4].cache.semantic.embeddingModel"].message
    assert found["models[4].cache.semantic.embeddingModel"].line == 22


def test_no_model_caches_with_itself_directly_or_through_others(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        apiVersion: capella-deploy/v1
        defaults:
          region: us-east-1
          cache: {type: semantic, semantic: {embeddingModel: embed}}
        models:
          - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24}
          - {name: a, catalogModel: c, gpuMemory: 24, cache: {semantic: {embeddingModel: b}}}
          - {name: b, catalogModel: c, gpuMemory: 24, cache: {semantic: {embeddingModel: a}}}
          - {name: fine, catalogModel: c, gpuMemory: 24}
        """,
    )
    issues = problems(path)
    messages = {(issue.path, issue.line): issue.message for issue in issues}
    assert set(messages) == {
        ("defaults.cache.semantic.embeddingModel", 4),
        ("models[1].cache.semantic.embeddingModel", 7),
        ("models[2].cache.semantic.embeddingModel", 8),
    }
    assert "model 'embed' would cache with itself" in messages[("defaults.cache.semantic.embeddingModel", 4)]
    assert "a loop of semantic caches (a -> b -> a)" in messages[("models[1].cache.semantic.embeddingModel", 7)]
