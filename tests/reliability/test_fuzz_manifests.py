"""Adversarial manifests: any input ends in a manifest or in located, named problems, never a traceback.

Three properties, checked by Hypothesis (derandomized, see conftest):

* any text or bytes at all is either a manifest or a ``ManifestError`` whose every issue names the file;
* manifests near the valid ones, with names, regions, CIDRs, GPU sizes and lifetimes drawn from valid and
  invalid values, load exactly when an independent oracle (the documented rules, written again here) says
  they are valid, and otherwise name every bad field at its path and line;
* through the CLI, an invalid manifest stops ``plan`` before any call: the sandbox is never even opened.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from capella_deploy.cli import main
from capella_deploy.manifest import ManifestError, load_manifest

PROFILE = settings.get_profile("reliability")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
REGION = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
GPU_SIZES = (24, 48, 192)

# No "$": ${...} is interpolation, whose own errors are tested elsewhere; no surrogates: not YAML text.
loose_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="$"), max_size=40)


def mostly(good: st.SearchStrategy[Any], *others: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Good values four times in five, so a fair share of manifests is wholly valid (and shrinks to valid)."""
    bad = st.one_of(*others)
    return st.integers(0, 4).flatmap(lambda roll: good if roll < 4 else bad)


names = mostly(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True),
    st.sampled_from(["chat-prod", "a", "A.b_c-9", "x" * 128, "x" * 129, "-lead", ".hidden", "sp ace", "ü", ""]),
    loose_text,
)
regions = mostly(
    st.sampled_from(["us-east-1", "eu-west-1", "us-central1", "eastus"]),
    st.sampled_from(["US-EAST-1", "us_east_1", "us-", "-x", "r" * 65, ""]),
    st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,4}){0,3}", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="$"), min_size=1, max_size=40),
)
cidrs = mostly(
    st.ip_addresses().map(str),
    st.builds(lambda ip, bits: f"{ip}/{bits}", st.ip_addresses(v=4), st.integers(0, 40)),
    st.builds(lambda ip, bits: f"{ip}/{bits}", st.ip_addresses(v=6), st.integers(0, 140)),
    st.sampled_from(["10.0.0.0/16", "300.1.1.1", "10.0.0.0/8/8", "localhost", "", "10.0.0.0/ 8", "::/0"]),
    loose_text,
)
gpus = mostly(st.sampled_from(GPU_SIZES), st.integers(-1, 300), st.sampled_from(["48", "big", None, 48.0, True]))
expiries = mostly(st.integers(1, 365), st.integers(-3, 400))
ABSENT: Any = object()


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, st.just(ABSENT))


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "capella-deploy/v1"}
    default_region = draw(st.one_of(st.sampled_from(["us-east-1", "eu-west-1"]), optional(regions)))
    if default_region is not ABSENT:
        doc["defaults"] = {"region": default_region}
    doc["models"] = [
        {
            k: v
            for k, v in {
                "name": draw(names),
                "catalogModel": "mistralai/mistral-7b-instruct-v0.3",
                "gpuMemory": draw(gpus),
                "region": draw(optional(regions)),
            }.items()
            if v is not ABSENT
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    doc["apiKeys"] = [
        {
            k: v
            for k, v in {
                "name": draw(names),
                "region": draw(optional(regions)),
                "expiryDays": draw(expiries),
                "allowedCIDRs": draw(st.lists(cidrs, min_size=1, max_size=3)),
            }.items()
            if v is not ABSENT
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    return doc


def problems_by_oracle(doc: dict[str, Any]) -> set[str]:
    """The paths the documented rules reject, computed without the tool's code."""
    bad: set[str] = set()
    default = (doc.get("defaults") or {}).get("region")
    if default not in (None, "") and not valid_region(default):
        bad.add("defaults.region")
    for section in ("models", "apiKeys"):
        seen: set[str] = set()
        for index, entry in enumerate(doc[section]):
            where = f"{section}[{index}]"
            name = entry["name"]
            if not (isinstance(name, str) and NAME.fullmatch(name) and len(name) <= 128) or name in seen:
                bad.add(f"{where}.name")
            seen.add(name)
            region = entry.get("region")
            if region in (None, "") and default in (None, ""):
                bad.add(f"{where}.region")  # no region at all
            elif region not in (None, "") and not valid_region(region):
                bad.add(f"{where}.region")
            if section == "models":
                gpu = entry["gpuMemory"]
                if not ((gpu in GPU_SIZES and not isinstance(gpu, bool)) or gpu in ("24", "48", "192")):
                    bad.add(f"{where}.gpuMemory")
            else:
                if not 1 <= entry["expiryDays"] <= 365:
                    bad.add(f"{where}.expiryDays")
                for position, cidr in enumerate(entry["allowedCIDRs"]):
                    if not valid_cidr(cidr):
                        bad.add(f"{where}.allowedCIDRs[{position}]")
    return bad


def valid_region(value: Any) -> bool:
    return isinstance(value, str) and REGION.fullmatch(value) is not None and len(value) <= 64


def valid_cidr(value: Any) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError):
        return False
    return True


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "capella.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


def load_or_issues(path: Path) -> ManifestError | None:
    try:
        load_manifest([path], environ={})
    except ManifestError as exc:
        assert exc.issues, "a refusal lists at least one problem"
        for issue in exc.issues:
            assert issue.file == str(path) and issue.message.strip()
            assert "Traceback" not in issue.message
        return exc
    return None


@settings(PROFILE, max_examples=200)
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300), st.text("{}[]:-&*!|>'\"#\n ab1", max_size=80)))
def test_any_text_or_bytes_is_a_manifest_or_located_problems(text: str | bytes, tmp_path: Path) -> None:
    load_or_issues(write(tmp_path, text))


@settings(PROFILE, max_examples=300)
@given(doc=manifests())
def test_names_regions_cidrs_sizes_and_lifetimes_are_judged_as_documented(doc: dict[str, Any], tmp_path: Path) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    seen = yaml.safe_load(text)  # what the tool reads back, after YAML's own normalisation
    assume(seen == doc)
    path = write(tmp_path, text)
    expected = problems_by_oracle(doc)
    event("invalid" if expected else "valid")
    error = load_or_issues(path)
    reported = {issue.path for issue in error.issues} if error else set()
    assert (error is None) == (not expected), f"oracle: {sorted(expected)}; tool: {error}"
    assert expected <= reported, f"not reported: {sorted(expected - reported)}"
    assert all(issue.line is not None for issue in error.issues) if error else True


@settings(PROFILE, max_examples=25)
@given(doc=manifests())
def test_an_invalid_manifest_stops_before_any_call(doc: dict[str, Any], tmp_path: Path) -> None:
    assume(problems_by_oracle(doc))
    path = write(tmp_path, yaml.safe_dump(doc, allow_unicode=True))
    state = tmp_path / "sandbox-never-opened.json"
    result = CliRunner().invoke(
        main, ["plan", "-f", str(path), f"--sandbox={state}"], env={"CAPELLA_API_TOKEN": "t", "CAPELLA_ORG_ID": ""}
    )
    assert result.exit_code == 1
    assert "problem(s) in the manifest" in result.stderr and "Traceback" not in result.output
    assert not state.exists()


def test_a_blank_region_means_unset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\n"
        'models:\n  - {name: a, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 24, region: "${R:-}"}\n',
    )
    manifest = load_manifest([path], environ={})
    assert manifest.models[0].region is None
