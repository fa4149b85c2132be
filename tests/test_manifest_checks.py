"""The manifest's `checks:`: values, defaults, cross-field problems at their lines, the schema, and the
defaults-and-overrides of the routing and cache header profile."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pydantic
import pytest

from capella_deploy.kinds.model import (
    caching_body,
    effective_cache,
    header_profile,
    model_attributes,
    model_create_body,
)
from capella_deploy.manifest import (
    DEFAULT_CHECK_PROMPT,
    CheckSpec,
    Manifest,
    ManifestError,
    ManifestIssue,
    load_manifest,
)

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
apiVersion: capella-deploy/v1
defaults: {region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
  - {name: embed, catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2, gpuMemory: 24, dimensions: 2048}
  - {name: chat-eu, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48, region: eu-west-1}
apiKeys:
  - {name: app, allowedCIDRs: [10.0.0.0/16], allowedModels: [chat, embed]}
  - {name: embed-only, allowedCIDRs: [10.0.0.0/16], allowedModels: [embed]}
checks:
"""


def load(tmp_path: Path, checks: str, environ: dict[str, str] | None = None) -> Manifest:
    path = tmp_path / "m.yaml"
    path.write_text(BASE + textwrap.dedent(checks))
    return load_manifest([path], environ=environ or {})


def issues(tmp_path: Path, checks: str) -> dict[str, list[ManifestIssue]]:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, checks)
    found: dict[str, list[ManifestIssue]] = {}
    for issue in caught.value.issues:
        found.setdefault(issue.path, []).append(issue)
    return found


def messages(tmp_path: Path, checks: str) -> dict[str, list[str]]:
    return {path: [i.message for i in group] for path, group in issues(tmp_path, checks).items()}


def test_checks_load_with_their_defaults(tmp_path: Path) -> None:
    manifest = load(
        tmp_path,
        """\
        - {name: chat-ok, model: chat, kind: chat}
        - name: gateway
          endpoint: https://${ENV_ID}.api.tcloudbasegateway.com/v1/ai/hunyuan/
          endpointModel: hy3-preview
          apiKeyEnv: CLOUDBASE_API_KEY
          kind: chat-stream
          timeoutSeconds: 5
          expect: {contains: hello, maxFirstTokenMs: 800, maxLatencyMs: 5000}
        - {name: embed-size, model: embed, kind: embedding, apiKey: app, expect: {dimensions: "${DIMS}"}}
        - {name: embed-declared, model: embed, kind: embedding, expect: {dimensions: declared}}
        """,
        environ={"ENV_ID": "env-1", "DIMS": "2048"},
    )
    chat, gateway, size, declared = manifest.checks
    assert (chat.model, chat.kind, chat.prompt, chat.maxTokens, chat.timeoutSeconds) == (
        "chat",
        "chat",
        DEFAULT_CHECK_PROMPT,
        64,
        30,
    )
    assert chat.expect.nonEmpty and chat.expect.contains is None and chat.endpoint is None
    assert gateway.endpoint == "https://env-1.api.tcloudbasegateway.com/v1/ai/hunyuan"  # interpolated, no "/"
    assert (gateway.endpointModel, gateway.apiKeyEnv, gateway.timeoutSeconds) == ("hy3-preview", "CLOUDBASE_API_KEY", 5)
    assert gateway.expect.maxFirstTokenMs == 800 and gateway.expect.contains == "hello"
    assert size.expect.dimensions == 2048 and size.apiKey == "app"
    assert declared.expect.dimensions == "declared"


@pytest.mark.parametrize(
    ("checks", "path", "message"),
    [
        (
            "- {name: c, kind: chat}",
            "checks[0]",
            "name a model of this manifest (model:) or an external API (endpoint:)",
        ),
        (
            "- {name: c, model: nope, kind: chat}",
            "checks[0].model",
            "no model named 'nope' in the manifest (models: chat, chat-eu, embed)",
        ),
        (
            "- {name: c, model: chat, endpoint: 'https://x.test/v1', endpointModel: m, apiKeyEnv: K, kind: chat}",
            "checks[0].model",
            "give model (of this manifest) or endpoint, not both; name the endpoint's model in endpointModel",
        ),
        (
            "- {name: c, endpoint: 'https://x.test/v1', apiKeyEnv: K, kind: chat}",
            "checks[0]",
            "endpointModel is required with endpoint: the model name to request, e.g. hy3-preview",
        ),
        (
            "- {name: c, endpoint: 'https://x.test/v1', endpointModel: m, kind: chat}",
            "checks[0]",
            "apiKeyEnv is required with endpoint: the environment variable holding its API key",
        ),
        (
            "- {name: c, endpoint: 'https://x.test/v1', endpointModel: m, apiKeyEnv: K, apiKey: app, kind: chat}",
            "checks[0].apiKey",
            "a key of this manifest works only for its own models; use apiKeyEnv",
        ),
        (
            "- {name: c, model: chat, endpointModel: m, kind: chat}",
            "checks[0].endpointModel",
            "only with endpoint; a model of this manifest is called by its catalog name",
        ),
        (
            "- {name: c, model: chat, apiKey: nope, kind: chat}",
            "checks[0].apiKey",
            "no API key named 'nope' in the manifest (apiKeys: app, embed-only)",
        ),
        (
            "- {name: c, model: chat, apiKey: embed-only, kind: chat}",
            "checks[0].apiKey",
            "key 'embed-only' cannot call model 'chat': a key works only for models of its own region "
            "that its allowedModels list",
        ),
        (
            "- {name: c, model: chat, apiKey: app, apiKeyEnv: K, kind: chat}",
            "checks[0].apiKeyEnv",
            "give apiKey (a key of this manifest) or apiKeyEnv, not both",
        ),
        (
            "- {name: c, model: chat-eu, kind: chat}",
            "checks[0]",
            "no API key of this manifest can call model 'chat-eu' (region eu-west-1): add one whose "
            "allowedModels include it, or give apiKeyEnv",
        ),
        (
            "- {name: c, model: chat, kind: embedding, expect: {dimensions: declared}}",
            "checks[0].expect.dimensions",
            "model 'chat' declares no dimensions; declare them or give the number",
        ),
        (
            "- {name: c, endpoint: 'https://x.test/v1', endpointModel: m, apiKeyEnv: K, kind: embedding, "
            "expect: {dimensions: declared}}",
            "checks[0].expect.dimensions",
            '"declared" needs a model of this manifest; give the number',
        ),
        (
            "- {name: c, model: embed, kind: embedding, expect: {contains: x}}",
            "checks[0].expect.contains",
            "does not apply to kind: embedding",
        ),
        (
            "- {name: c, model: chat, kind: chat, expect: {dimensions: 12}}",
            "checks[0].expect.dimensions",
            "does not apply to kind: chat",
        ),
        (
            "- {name: c, model: chat, kind: chat, expect: {maxFirstTokenMs: 100}}",
            "checks[0].expect.maxFirstTokenMs",
            "does not apply to kind: chat",
        ),
        (
            "- {name: c, model: embed, kind: embedding, expect: {dimensions: all}}",
            "checks[0].expect.dimensions",
            "'all' is not allowed; give the expected vector length (e.g. 2048) or \"declared\" for the model's "
            "own dimensions",
        ),
        (
            "- {name: c, endpoint: 'ftp://x.test', endpointModel: m, apiKeyEnv: K, kind: chat}",
            "checks[0].endpoint",
            "'ftp://x.test' is not an http(s) base URL; write e.g. https://ENV_ID.api.tcloudbasegateway.com"
            "/v1/ai/hunyuan",
        ),
        (
            "- {name: c, endpoint: 'https://me:pw@x.test/v1', endpointModel: m, apiKeyEnv: K, kind: chat}",
            "checks[0].endpoint",
            "put no credentials in the URL; name the environment variable holding the key in apiKeyEnv",
        ),
        (
            "- {name: c, endpoint: 'https://x.test/v1?key=1', endpointModel: m, apiKeyEnv: K, kind: chat}",
            "checks[0].endpoint",
            "give the base URL only (no ?query or #fragment); /chat/completions etc. are appended to it",
        ),
        (
            "- {name: c, model: chat, apiKeyEnv: 1KEY, kind: chat}",
            "checks[0].apiKeyEnv",
            "'1KEY' is not valid: the name of an environment variable: letters, digits and '_', e.g. CLOUDBASE_API_KEY",
        ),
        (
            "- {name: c, model: chat, kind: chatty}",
            "checks[0].kind",
            "'chatty' is not allowed; use one of 'chat', 'chat-stream', 'completion' or 'embedding'",
        ),
        ("- {name: c, model: chat, kind: chat, timeoutSeconds: 0}", "checks[0].timeoutSeconds", None),
        (
            "- {name: c, model: chat, kind: chat, promt: hi}",
            "checks[0].promt",
            "unknown field 'promt'; did you mean 'prompt'?",
        ),
    ],
)
def test_each_problem_is_reported_at_its_place(tmp_path: Path, checks: str, path: str, message: str | None) -> None:
    found = messages(tmp_path, checks)
    assert path in found, found
    if message is not None:
        assert message in found[path]


def test_every_problem_of_several_checks_at_once_with_lines(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        """\
        - {name: a, model: chat, kind: chat}
        - {name: a, model: nope, kind: chat}
        - {name: b, model: embed, kind: chat-stream, expect: {dimensions: 3}}
        """,
    )
    first_check_line = BASE.count("\n") + 1
    assert found["checks[1].name"][0].line == first_check_line + 1
    assert "'a' is already the name of checks[0]" in found["checks[1].name"][0].message
    assert found["checks[1].model"][0].line == first_check_line + 1
    assert found["checks[2].expect.dimensions"][0].line == first_check_line + 2


def test_a_key_of_another_manifest_can_be_named_by_variable(tmp_path: Path) -> None:
    (check,) = load(tmp_path, "- {name: c, model: chat-eu, kind: chat, apiKeyEnv: EU_KEY}\n").checks
    assert check.apiKeyEnv == "EU_KEY" and check.apiKey is None


def test_direct_construction_runs_the_check_validation() -> None:
    document: dict[str, Any] = {
        "apiVersion": "capella-deploy/v1",
        "defaults": {"region": "us-east-1"},
        "checks": [{"name": "c", "model": "ghost", "kind": "chat"}],
    }
    with pytest.raises(pydantic.ValidationError, match="no model named 'ghost'"):
        Manifest.model_validate(document)
    spec = CheckSpec(name="c", kind="embedding", model="m", expect={"dimensions": "12"})  # type: ignore[arg-type]
    assert spec.expect.dimensions == 12


def test_the_committed_schema_describes_checks() -> None:
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "apiVersion": "capella-deploy/v1",
        "checks": [
            {"name": "a", "model": "m", "kind": "embedding", "expect": {"dimensions": "declared"}},
            {"name": "b", "model": "m", "kind": "embedding", "expect": {"dimensions": 1024}},
            {"name": "c", "endpoint": "https://x.test/v1", "endpointModel": "m", "apiKeyEnv": "K", "kind": "chat"},
        ],
    }
    assert not list(validator.iter_errors(good))
    for bad in ({"name": "a", "model": "m", "kind": "chatty"}, {"name": "a", "kind": "chat", "expect": {"x": 1}}):
        assert list(validator.iter_errors({"apiVersion": "capella-deploy/v1", "checks": [bad]}))


# -- routing and cache: defaults and per-model overrides ------------------------------------------------

PROFILE = """\
apiVersion: capella-deploy/v1
defaults:
  region: us-east-1
  routing: {strategy: least-latency, maxRetries: 2}
  cache:
    type: semantic
    threshold: 0.85
    expirySeconds: 3600
    semantic: {embeddingModel: 6af08c0a-8cab-4c1c-b257-b521575c16d0, dimensions: 1024}
models:
  - name: inherits
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
  - name: overrides
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    routing: {requestTimeoutSeconds: 20}
    cache: {threshold: 0.00001, semantic: {distanceMetric: cosine}}
  - name: standard
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    routing: {strategy: throughput}
    cache: {type: standard}
  - name: uncached
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 48
    cache: {type: none}
"""


def test_models_take_the_defaults_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(PROFILE)
    manifest = load_manifest([path], environ={})
    profiles = {m.name: header_profile(m, manifest.defaults) for m in manifest.models}
    assert profiles["inherits"] == {
        "X-cb-routing-strategy": "least-latency",
        "X-cb-max-retries": "2",
        "X-cb-cache": "semantic",
        "X-cb-cache-threshold": "0.85",
        "X-cb-cache-expiry-duration": "3600",
    }
    assert profiles["overrides"] == {
        "X-cb-routing-strategy": "least-latency",
        "X-cb-max-retries": "2",
        "X-cb-request-duration": "20",
        "X-cb-cache": "semantic",
        "X-cb-cache-threshold": "0.00001",  # a plain decimal, never 1e-05
        "X-cb-cache-expiry-duration": "3600",
    }
    assert profiles["standard"] == {
        "X-cb-routing-strategy": "throughput",
        "X-cb-max-retries": "2",
        "X-cb-cache": "standard",
        "X-cb-cache-expiry-duration": "3600",
    }
    assert profiles["uncached"]["X-cb-cache"] == "none" and "X-cb-cache-expiry-duration" not in profiles["uncached"]

    overrides = manifest.models[1]
    cache = effective_cache(overrides, manifest.defaults)
    assert cache is not None
    assert caching_body(cache) == {
        "enableStandard": True,
        "defaultCache": "semantic",
        "expiryTTL": 3600,
        "semantic": {
            "scoreThreshold": 0.00001,
            "embeddingModel": "6af08c0a-8cab-4c1c-b257-b521575c16d0",
            "dimensions": 1024,
            "distanceMetric": "cosine",
        },
    }
    assert model_create_body(manifest.models[3], manifest.defaults, {})["caching"] == {
        "enableStandard": False,
        "enableConversational": False,
    }
    assert model_attributes(manifest.models[3], manifest.defaults)["cache"] == {"type": "none", "conversational": False}


def test_a_semantic_cache_threshold_must_fit_the_models_score_threshold(tmp_path: Path) -> None:
    path = tmp_path / "cache.yaml"
    path.write_text(
        "apiVersion: capella-deploy/v1\ndefaults:\n  region: us-east-1\n  cache: {type: semantic, threshold: 1}\n"
    )
    with pytest.raises(ManifestError) as caught:
        load_manifest([path], environ={})
    assert f"{path}:4: defaults.cache: threshold 1 is not allowed for a semantic cache" in str(caught.value)
    path.write_text(
        "apiVersion: capella-deploy/v1\ndefaults:\n  region: us-east-1\n  cache: {type: standard, threshold: 1}\n"
    )
    assert load_manifest([path], environ={}).defaults.cache is not None


def test_rotation_and_expiry_are_compared_after_interpolation(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\napiKeys:\n"
        '  - {name: k, allowedCIDRs: [10.0.0.0/8], expiryDays: "${EXP}", rotateBeforeDays: 40}\n'
    )
    with pytest.raises(ManifestError, match=r"rotateBeforeDays: must be less than expiryDays \(30\)"):
        load_manifest([path], environ={}, variables={"EXP": "30"})


def test_a_default_cannot_hold_another_reference(tmp_path: Path) -> None:
    path = tmp_path / "nested.yaml"
    path.write_text('apiVersion: capella-deploy/v1\norganizationId: "${A:-${B}}"\n')
    with pytest.raises(ManifestError, match="a default cannot hold another"):
        load_manifest([path], environ={})


def test_problems_are_listed_in_the_order_the_files_were_given(tmp_path: Path) -> None:
    base = tmp_path / "z-base.yaml"
    overlay = tmp_path / "a-overlay.yaml"
    base.write_text(
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\nmodels:\n  - {name: m, gpuMemory: 24}\n"
    )
    overlay.write_text("bogus: 1\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest([base, overlay], environ={})
    files = [issue.file for issue in caught.value.issues]
    assert files.index(str(base)) < files.index(str(overlay))
