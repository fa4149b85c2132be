"""Reading manifest files: interpolation, overlays, YAML errors and hostile documents."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from capella_deploy.manifest import ManifestError, ManifestIssue, load_manifest
from capella_deploy.manifest.yamlsource import MAX_ALIASES, MAX_BYTES, MAX_DEPTH

BASE = """\
apiVersion: capella-deploy/v1
defaults:
  region: us-east-1
  routing: {strategy: least-latency, maxRetries: 2}
models:
  - name: chat
    catalogModel: mistralai/mistral-7b-instruct-v0.3
    gpuMemory: 24
    guardrails: [hate speech, violence]
  - name: embed
    catalogModel: nvidia/llama-3.2-nv-embedqa-1b-v2
    gpuMemory: 24
    dimensions: 2048
apiKeys:
  - name: app
    allowedCIDRs: [10.0.0.0/16]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(*paths: Path, environ: dict[str, str] | None = None) -> list[ManifestIssue]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(list(paths), environ=environ or {})
    return caught.value.issues


# -- interpolation ------------------------------------------------------------------------------------


def test_variables_come_from_environ_and_var_options_win(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """\
        apiVersion: capella-deploy/v1
        organizationId: ${ORG}
        defaults: {region: "${REGION}"}
        outputs: {path: "${DIR:-.capella}/out-${ENV}.json"}
        """,
    )
    environ = {"ORG": "org-from-env", "REGION": "us-east-1", "ENV": "dev"}
    manifest = load_manifest([path], environ=environ)
    assert manifest.organizationId == "org-from-env"
    assert manifest.outputs.path == ".capella/out-dev.json"
    manifest = load_manifest([path], environ=environ, variables={"ORG": "org-from-var", "DIR": "/tmp"})
    assert manifest.organizationId == "org-from-var"
    assert manifest.outputs.path == "/tmp/out-dev.json"


def test_defaults_apply_when_unset_or_empty_and_escapes_stay_literal(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: "${REGION:-eu-west-1}"}
        apiKeys: [{name: k, allowedCIDRs: [10.0.0.0/8], description: "${NOTE:-}"}]
        prune: {match: "$${NOT_A_VAR}-*"}
        """,
    )
    manifest = load_manifest([path], environ={"REGION": ""})
    assert manifest.apiKeys[0].description is None  # an empty value means unset (organizationId aside)
    assert manifest.defaults.region == "eu-west-1"
    assert manifest.prune is not None and manifest.prune.match == "${NOT_A_VAR}-*"


def test_interpolated_text_validates_as_numbers_and_booleans(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        models:
          - {name: chat, catalogModel: c, gpuMemory: "${GPU}", cpu: "${CPU}", preventDestroy: "${KEEP}"}
        apiKeys:
          - {name: k, allowedCIDRs: ["${CIDR}"], expiryDays: "${DAYS}"}
        """,
    )
    variables = {"GPU": "48", "CPU": "32", "KEEP": "true", "CIDR": "10.0.0.0/8", "DAYS": "30"}
    manifest = load_manifest([path], environ={}, variables=variables)
    model = manifest.models[0]
    assert (model.gpuMemory, model.cpu, model.preventDestroy) == (48, 32, True)
    assert manifest.apiKeys[0].expiryDays == 30
    assert manifest.apiKeys[0].allowedCIDRs == ("10.0.0.0/8",)
    (issue,) = problems(path, environ={**variables, "GPU": "64"})
    assert issue.path == "models[0].gpuMemory" and "24, 48 or 192" in issue.message


def test_unknown_variables_are_reported_where_used_and_only_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """\
        apiVersion: capella-deploy/v1
        organizationId: ${CAPELLA_ORG_ID}
        defaults:
          region: ${REGION}
        outputs: {path: "${oops"}
        """,
    )
    issues = problems(path)
    assert [(i.line, i.path) for i in issues] == [(2, "organizationId"), (4, "defaults.region"), (5, "outputs.path")]
    assert "set it in the environment, pass --var CAPELLA_ORG_ID=..." in issues[0].message
    assert "without a closing '}'" in issues[2].message


def test_values_from_variables_are_not_interpolated_again(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "apiVersion: capella-deploy/v1\noutputs: {path: '${P}'}\n")
    manifest = load_manifest([path], environ={"P": "${HOME}/x"})
    assert manifest.outputs.path == "${HOME}/x"


# -- overlays -----------------------------------------------------------------------------------------


def test_overlay_merges_mappings_replaces_lists_and_merges_models_by_name(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE)
    overlay = write(
        tmp_path,
        "prod.yaml",
        """\
        defaults:
          routing: {maxRetries: 5}
        models:
          - name: chat
            gpuMemory: 48
            guardrails: [self-harm]
          - name: extra
            catalogModel: mistralai/mistral-7b-instruct-v0.3
            gpuMemory: 192
        apiKeys:
          - name: app
            allowedCIDRs: [192.0.2.0/24]
            rotateBeforeDays: 10
        """,
    )
    manifest = load_manifest([base, overlay], environ={})
    routing = manifest.defaults.routing
    assert routing is not None and (routing.strategy, routing.maxRetries) == ("least-latency", 5)
    assert [m.name for m in manifest.models] == ["chat", "embed", "extra"]
    chat = manifest.models[0]
    assert chat.gpuMemory == 48 and chat.catalogModel == "mistralai/mistral-7b-instruct-v0.3"
    assert chat.guardrails == ("self-harm",)  # lists replace wholesale
    key = manifest.apiKeys[0]
    assert key.allowedCIDRs == ("192.0.2.0/24",) and key.rotateBeforeDays == 10


def test_overlay_can_delete_an_entry_by_name(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE)
    overlay = write(
        tmp_path, "dev.yaml", "models:\n  - {name: embed, $delete: true}\n  - {name: chat, $delete: false}\n"
    )
    manifest = load_manifest([base, overlay], environ={})
    assert [m.name for m in manifest.models] == ["chat"]


def test_deleting_a_name_that_does_not_exist_is_reported_in_the_overlay(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE)
    overlay = write(tmp_path, "dev.yaml", "apiVersion: capella-deploy/v1\nmodels:\n  - {name: embedd, $delete: true}\n")
    (issue,) = problems(base, overlay)
    assert (issue.file, issue.line, issue.path) == (str(overlay), 3, "models[0]")
    assert "'embedd'" in issue.message


def test_errors_point_at_the_file_that_supplied_the_value(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE.replace("maxRetries: 2", "maxRetries: 20"))
    overlay = write(
        tmp_path,
        "prod.yaml",
        """\
        # production sizes
        models:
          - name: chat
            gpuMemory: 96
            state: sleeping
        """,
    )
    issues = problems(base, overlay)
    assert [(i.file, i.line, i.path) for i in issues] == [
        (str(base), 4, "defaults.routing.maxRetries"),
        (str(overlay), 4, "models[0].gpuMemory"),
        (str(overlay), 5, "models[0].state"),
    ]


def test_same_name_twice_in_one_file_is_a_duplicate_not_a_merge(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE)
    overlay = write(
        tmp_path,
        "o.yaml",
        "models:\n  - {name: chat, gpuMemory: 48}\n  - {name: chat, catalogModel: c, gpuMemory: 24}\n",
    )
    (issue,) = problems(base, overlay)
    assert (issue.file, issue.line, issue.path) == (str(overlay), 3, "models[2].name")


def test_empty_overlay_changes_nothing(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE)
    empty = write(tmp_path, "empty.yaml", "# nothing to change yet\n")
    assert load_manifest([base, empty], environ={}) == load_manifest([base], environ={})


def test_yaml_merge_keys_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        """\
        apiVersion: capella-deploy/v1
        defaults: {region: us-east-1}
        models:
          - &chat {name: chat-a, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
          - <<: *chat
            name: chat-b
        """,
    )
    names = [(m.name, m.gpuMemory) for m in load_manifest([path], environ={}).models]
    assert names == [("chat-a", 48), ("chat-b", 48)]


# -- YAML problems and hostile documents --------------------------------------------------------------


def test_yaml_syntax_errors_carry_their_line_and_other_files_still_report(tmp_path: Path) -> None:
    broken = write(tmp_path, "a.yaml", "apiVersion: capella-deploy/v1\nmodels:\n  - name: [x\n  - name: y\n")
    unset = write(tmp_path, "b.yaml", "organizationId: ${NOPE}\n")
    issues = problems(broken, unset)
    assert [(i.file, i.line) for i in issues] == [(str(broken), 4), (str(unset), 1)]
    assert issues[0].message.startswith("YAML syntax error")


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "apiVersion: capella-deploy/v1\noutputs:\n  path: a\n  path: b\n")
    (issue,) = problems(path)
    assert (issue.line, issue.path) == (4, "outputs.path") and "first at line 3" in issue.message


def test_a_manifest_must_be_a_mapping(tmp_path: Path) -> None:
    (issue,) = problems(write(tmp_path, "m.yaml", "- apiVersion: capella-deploy/v1\n"))
    assert issue.line == 1 and "mapping" in issue.message


def test_several_documents_in_one_file_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "apiVersion: capella-deploy/v1\n---\napiVersion: capella-deploy/v1\n")
    (issue,) = problems(path)
    assert issue.line == 2 and "more than one YAML document" in issue.message


@pytest.mark.parametrize("value", ["!!python/object/apply:os.system [echo hi]", "!!python/name:os.system x"])
def test_python_tags_are_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, "m.yaml", f"apiVersion: {value}\n")
    (issue,) = problems(path)
    assert issue.line == 1 and issue.path == "apiVersion" and "tag" in issue.message


def assert_refused_quickly(path: Path, words: str) -> ManifestIssue:
    started = time.perf_counter()
    (issue,) = problems(path)
    assert time.perf_counter() - started < 2.0
    assert words in issue.message
    return issue


def test_billion_laughs_with_many_aliases_is_refused(tmp_path: Path) -> None:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 13):  # 12 levels x 9 aliases: the 101st alias is on line 13
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    issue = assert_refused_quickly(
        write(tmp_path, "m.yaml", "\n".join(lines) + "\n"), f"more than {MAX_ALIASES} aliases"
    )
    assert issue.line == 13


def test_exponential_expansion_under_the_alias_limit_is_refused(tmp_path: Path) -> None:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):  # 8 levels x 10 aliases: within the alias limit, 10**9 values expanded
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    assert_refused_quickly(write(tmp_path, "m.yaml", "\n".join(lines) + "\n"), "aliases expand to more than")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    assert_refused_quickly(write(tmp_path, "m.yaml", "a: &a [1, *a]\n"), "cycle")


def test_deep_nesting_is_refused_before_recursion_runs_out(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_refused_quickly(path, f"deeper than {MAX_DEPTH}")


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    depth = MAX_DEPTH - 2  # the root mapping and the key's value add two levels
    path = write(tmp_path, "m.yaml", "apiVersion: capella-deploy/v1\nchecks: " + "[" * depth + "]" * depth + "\n")
    (issue,) = problems(path)  # readable; only validation objects to a list where a mapping belongs
    assert issue.path == "checks[0]"


def test_nesting_through_aliases_is_measured_after_expansion(tmp_path: Path) -> None:
    lines = ["a0: &a0 " + "[" * 60 + "]" * 60]
    for level in range(1, 4):
        lines.append(f"a{level}: &a{level} " + "[" * 30 + f"*a{level - 1}" + "]" * 30)
    assert_refused_quickly(write(tmp_path, "m.yaml", "\n".join(lines) + "\n"), "nesting deeper")


def test_oversized_files_are_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * (MAX_BYTES // 10 + 1))
    issue = assert_refused_quickly(path, "larger than 5 MiB")
    assert issue.line is None


def test_non_utf8_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"apiVersion: capella-deploy/v1\norganizationId: \xff\xfe\n")
    (issue,) = problems(path)
    assert issue.line == 2 and "UTF-8" in issue.message
