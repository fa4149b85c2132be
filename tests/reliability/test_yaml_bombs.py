"""Hostile manifests are refused quickly, with bounded memory, and with a message saying what is wrong.

Each bomb is read in a child process that reports its wall time and peak resident memory (bounds are generous:
the point is seconds not minutes, megabytes not gigabytes). Through the CLI, each ends in exit 1 and no
traceback, before any call to Capella (the sandbox's state file is never even created).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from capella_deploy.cli import main
from capella_deploy.manifest import Manifest, ManifestError, load_manifest

MIB = 1024 * 1024
HEAD = "apiVersion: capella-deploy/v1\ndefaults: {region: us-east-1}\n"


def billion_laughs() -> str:
    lines = ['a0: &a0 "lol"']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return HEAD + "\n".join(lines) + "\nmodels: *a9\n"


def few_aliases_wide_fanout() -> str:
    # Under the alias limit, but each level multiplies by 8: 8**6 = 262144 values once expanded.
    lines = ["b0: &b0 [x, x, x, x, x, x, x, x]"]
    for level in range(1, 7):
        lines.append(f"b{level}: &b{level} [" + ", ".join([f"*b{level - 1}"] * 8) + "]")
    return HEAD + "\n".join(lines) + "\nmodels: *b6\n"


def deep_flow() -> str:
    return HEAD + "models: " + "[" * 50_000 + "]" * 50_000 + "\n"


def deep_block() -> str:
    lines = ["models:"]
    for depth in range(1, 1500):
        lines.append("  " * depth + f"k{depth}:")
    return HEAD + "\n".join(lines) + " end\n"


def recursive_alias() -> str:
    return HEAD + "models: &loop [*loop]\n"


def oversized() -> str:
    return HEAD + "# " + "x" * (6 * MIB) + "\n"


def many_nodes() -> str:
    return HEAD + "junk: [" + ", ".join("1" for _ in range(150_000)) + "]\n"


def huge_scalar() -> str:
    return HEAD + 'models:\n  - name: "' + "n" * (4 * MIB) + '"\n    catalogModel: x\n    gpuMemory: 24\n'


def python_tag() -> str:
    return HEAD + "models: !!python/object/apply:os.system ['echo pwned']\n"


def merge_key_chain() -> str:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    for level in range(1, 60):
        lines.append(f"m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}], k{level}: {level}}}")
    return HEAD + "\n".join(lines) + "\n"


def values_to_the_size_limit() -> str:
    return HEAD + "junk: [" + ",".join("1" for _ in range((5 * MIB - 200) // 2)) + "]\n"


# (the bomb, what the refusal must say)
BOMBS: dict[str, tuple[Callable[[], str], str]] = {
    "billion laughs": (billion_laughs, "aliases expand to more than 100000 values"),
    "few aliases, wide fan-out": (few_aliases_wide_fanout, "aliases expand to more than"),
    "deep flow nesting": (deep_flow, "nesting deeper than"),
    "deep block nesting": (deep_block, "nesting deeper than"),
    "recursive alias": (recursive_alias, "cycle"),
    "oversized file": (oversized, "larger than 5 MiB"),
    "4 MiB scalar": (huge_scalar, "models[0].name: is longer than 128 characters"),
    "python tag": (python_tag, "unsupported YAML tag"),
    "merge key chain": (merge_key_chain, "more than 100 aliases"),
    "150k values": (many_nodes, "more than 50000 values in one file"),
    "5 MiB of values": (values_to_the_size_limit, "more than 50000 values in one file"),
}
MEASURE = """
import json, sys, time
from pathlib import Path
from capella_deploy.manifest import ManifestError, load_manifest
started = time.perf_counter()
try:
    load_manifest([Path(sys.argv[1])], environ={})
    outcome = "loaded"
except ManifestError as exc:
    outcome = str(exc)
# VmHWM belongs to this process image; getrusage's ru_maxrss survives exec on Linux and would report the
# high-water mark of the test worker that spawned us.
peak_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - started, "outcome": outcome, "rss_mib": peak_kib / 1024}))
"""
SECONDS = 3.0  # measured: the refused bombs take well under half a second
RSS_MIB = 150  # measured: about 45 MiB for the interpreter and the package, 60 for the 6 MiB file


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_hostile_manifest_is_refused_quickly_with_bounded_memory(bomb: str, tmp_path: Path) -> None:
    make, expected = BOMBS[bomb]
    path = tmp_path / "bomb.yaml"
    path.write_text(make())
    try:
        child = subprocess.run(
            [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=SECONDS + 1.5
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{bomb}: still reading after {SECONDS + 1.5:.1f} s")
    assert child.returncode == 0, child.stderr[-800:]
    measured = json.loads(child.stdout)
    assert measured["seconds"] < SECONDS, measured
    assert measured["rss_mib"] < RSS_MIB, measured
    assert expected in measured["outcome"]
    assert measured["outcome"].startswith(f"{path}:") and "Traceback" not in measured["outcome"]


def test_long_interpolated_values_are_fast(tmp_path: Path) -> None:
    path = tmp_path / "flood.yaml"
    path.write_text(HEAD + "organizationId: " + "${X}" * 200_000 + "\n")
    started = time.perf_counter()
    # 200,000 interpolations, then the one clear refusal of the 200,000-character id, in well under the limit.
    with pytest.raises(ManifestError, match=r"\(200000 characters\) is not valid"):
        load_manifest([path], environ={"X": "y"})
    assert time.perf_counter() - started < SECONDS


@pytest.mark.parametrize("bomb", ["billion laughs", "deep flow nesting", "oversized file", "python tag"])
def test_the_cli_refuses_a_bomb_before_any_call(bomb: str, tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMBS[bomb][0]())
    state = tmp_path / "never.json"
    started = time.perf_counter()
    result = CliRunner().invoke(
        main, ["plan", "-f", str(path), f"--sandbox={state}"], env={"CAPELLA_API_TOKEN": "t", "CAPELLA_ORG_ID": ""}
    )
    assert result.exit_code == 1
    assert time.perf_counter() - started < SECONDS
    assert f"{path}" in result.stderr and "problem(s) in the manifest" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not state.exists(), "the manifest is refused before the sandbox (or Capella) is contacted"


def test_a_big_but_honest_manifest_still_loads(tmp_path: Path) -> None:
    models = "".join(
        f"  - {{name: m{i}, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 24}}\n" for i in range(2000)
    )
    path = tmp_path / "big.yaml"
    path.write_text(HEAD + "models:\n" + models)
    started = time.perf_counter()
    manifest = load_manifest([path], environ={})
    assert isinstance(manifest, Manifest) and len(manifest.models) == 2000
    assert time.perf_counter() - started < SECONDS
