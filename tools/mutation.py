"""Mutation testing, one source file at a time, against the tests that reach it.

    python tools/mutation.py [--tests PATH ...] [--workers N] [--keep DIR] FILE [FILE ...]

Each FILE (a path inside the repository, e.g. capella_deploy/plan/planner.py) gets its own run of mutmut in a
scratch copy of the repository, so the working tree is never touched and the runs do not share a cache. mutmut
first runs the selected tests once to learn which of them reach each function, then runs, for every mutant,
only the tests that reach the mutated function. The selection is the default suite unless ``--tests`` narrows it.

For every file this prints killed / total, the mutants no test reached, every survivor as a one-line diff, and how
long the run took. Survivors that match an entry of ``equivalent_mutants.toml`` (beside this script) are listed
apart with the entry's reason, and a second score leaves them out. The exit status is 1 when any file has a
survivor that is neither killed nor listed as equivalent.

Needs the ``mutation`` extra (``pip install -e '.[mutation]'``). CPU-heavy: kept out of the default test run.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
EQUIVALENTS = Path(__file__).with_name("equivalent_mutants.toml")

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code); any other code is "suspicious".
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout"}
STATUS.update({24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "type check"})

# Runs in the scratch copy: the diff of every mutant that did not die, as JSON.
_SHOW = """
import json, sys
from mutmut.__main__ import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name, path=sys.argv[1]) for name in sys.argv[2:]}))
"""


@dataclass(frozen=True)
class Equivalent:
    file: str
    function: str
    before: str
    after: str
    reason: str


@dataclass
class Mutant:
    name: str
    status: str
    function: str = ""
    before: str = ""
    after: str = ""
    line: int = 0
    equivalent: Equivalent | None = None

    def describe(self) -> str:
        where = f"line {self.line} in {self.function}" if self.line else self.function
        return f"{where}: {self.before.strip()!s} -> {self.after.strip() or '(removed)'}"


@dataclass
class FileReport:
    path: str
    seconds: float
    mutants: list[Mutant] = field(default_factory=list)
    error: str = ""

    def count(self, *statuses: str) -> int:
        return sum(m.status in statuses for m in self.mutants)

    @property
    def survivors(self) -> list[Mutant]:
        return [m for m in self.mutants if m.status not in ("killed", "type check")]

    @property
    def unexplained(self) -> list[Mutant]:
        return [m for m in self.survivors if m.equivalent is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="source files to mutate, relative to the repository")
    parser.add_argument("--tests", nargs="*", default=[], help="test files or node ids to select (default: suite)")
    parser.add_argument("--workers", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--keep", type=Path, help="keep each scratch copy under this directory")
    parser.add_argument("--report", type=Path, help="also write the reports as JSON here")
    args = parser.parse_args(argv)

    equivalents = load_equivalents()
    reports = []
    for path in args.files:
        relative = _relative(path)
        report = mutate_file(relative, args.tests, args.workers, args.keep, equivalents)
        print_report(report)
        reports.append(report)
    if len(reports) > 1:
        print("\nSummary")
        for report in reports:
            print("  " + score_line(report))
    if args.report:
        args.report.write_text(json.dumps([_as_json(r) for r in reports], indent=2) + "\n")
    return 1 if any(r.error or r.unexplained for r in reports) else 0


def mutate_file(
    path: str, tests: list[str], workers: int, keep: Path | None, equivalents: list[Equivalent]
) -> FileReport:
    started = time.monotonic()
    if keep is not None:
        workdir = keep / re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-")
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="mutation-"))
    try:
        _copy_repository(workdir)
        _configure(workdir, path, tests)
        log = workdir / "mutmut.log"
        with log.open("w") as out:
            code = subprocess.call(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(workers)],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        meta = workdir / "mutants" / (path + ".meta")
        if code != 0 or not meta.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            return FileReport(path, time.monotonic() - started, error=f"mutmut exited {code}:\n{tail}")
        exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        mutants = [Mutant(name, _status(exit_codes[name])) for name in sorted(exit_codes, key=_mutant_order)]
        _describe(workdir, path, [m for m in mutants if m.status not in ("killed", "type check")], equivalents)
        _locate(REPO / path, mutants)
        return FileReport(path, time.monotonic() - started, mutants)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _copy_repository(workdir: Path) -> None:
    """The files git would commit (tracked, or new and not ignored), as they are in the working tree now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _configure(workdir: Path, path: str, tests: list[str]) -> None:
    pyproject = workdir / "pyproject.toml"
    text = pyproject.read_text()
    if "[tool.mutmut]" in text:
        raise SystemExit("pyproject.toml has a [tool.mutmut] section; this runner writes its own, remove it")
    package = Path(path).parts[0]
    settings = {
        "source_paths": [package],
        "only_mutate": [path],
        "pytest_add_cli_args_test_selection": tests,
        # One process per mutant already; xdist inside it would only add workers the machine does not have.
        "pytest_add_cli_args": ["-p", "no:xdist", "-p", "no:cacheprovider"],
        "use_git_change_detection": False,
        # Tests read examples, schemas and docs beside the code: the mutants' copy needs them too.
        "also_copy": sorted(entry.name for entry in workdir.iterdir() if entry.name not in (package, "tests")),
    }
    lines = ["", "[tool.mutmut]", *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]
    pyproject.write_text(text + "\n".join(lines) + "\n")


def _describe(workdir: Path, path: str, mutants: list[Mutant], equivalents: list[Equivalent]) -> None:
    if not mutants:
        return
    shown = subprocess.run(
        [sys.executable, "-c", _SHOW, path, *(m.name for m in mutants)],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    diffs: dict[str, str] = json.loads(shown.stdout)
    for mutant in mutants:
        mutant.function = _function_of(mutant.name)
        mutant.before, mutant.after = _changed_lines(diffs.get(mutant.name, ""))
        mutant.equivalent = next(
            (
                e
                for e in equivalents
                if e.file == path
                and e.function == mutant.function
                and _squash(e.before) == _squash(mutant.before)
                and _squash(e.after) == _squash(mutant.after)
            ),
            None,
        )


def _locate(source: Path, mutants: list[Mutant]) -> None:
    """Turn each mutant's line within its function into a line of the file, for people to find it."""
    tree = ast.parse(source.read_text())
    lines = source.read_text().splitlines()
    starts: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    starts[f"{node.name}.{item.name}"] = item.lineno
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            starts.setdefault(node.name, node.lineno)
    for mutant in mutants:
        start = starts.get(mutant.function)
        first = mutant.before.splitlines()[0] if mutant.before else ""
        if start is None or not first:
            continue
        mutant.line = next(
            (number for number in range(start, len(lines) + 1) if lines[number - 1].strip() == first),
            0,
        )


def _changed_lines(diff: str) -> tuple[str, str]:
    removed, added = [], []
    for text in diff.splitlines():
        if text.startswith("-") and not text.startswith("---"):
            removed.append(text[1:].strip())
        elif text.startswith("+") and not text.startswith("+++"):
            added.append(text[1:].strip())
    return "\n".join(removed), "\n".join(added)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _function_of(name: str) -> str:
    """``pkg.mod.xǁOutputsǁsave__mutmut_3`` -> ``Outputs.save``; ``pkg.mod.x__differs__mutmut_1`` -> ``_differs``."""
    mangled = name.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("xǁ"):
        return mangled[2:].replace("ǁ", ".")
    return mangled.removeprefix("x_")


def _mutant_order(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def _status(code: int | None) -> str:
    if code is None:
        return "not checked"
    return STATUS.get(code, "suspicious")


def _relative(path: Path) -> str:
    resolved = path.resolve()
    if not resolved.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        return resolved.relative_to(REPO).as_posix()
    except ValueError:
        raise SystemExit(f"{path}: not inside {REPO}") from None


def load_equivalents() -> list[Equivalent]:
    if not EQUIVALENTS.exists():
        return []
    data = tomllib.loads(EQUIVALENTS.read_text())
    return [Equivalent(**entry) for entry in data.get("equivalent", [])]


def score_line(report: FileReport) -> str:
    if report.error:
        return f"{report.path}: run failed after {report.seconds:.0f} s"
    total = len(report.mutants)
    killed = report.count("killed", "type check")
    equivalent = len(report.survivors) - len(report.unexplained)
    score = 100 * killed / total if total else 100.0
    without = 100 * killed / (total - equivalent) if total - equivalent else 100.0
    return (
        f"{report.path}: {killed} / {total} killed ({score:.1f} %); "
        f"{killed} / {total - equivalent} without the {equivalent} equivalent ({without:.1f} %); "
        f"{report.seconds:.0f} s"
    )


def print_report(report: FileReport) -> None:
    print(f"\n== {report.path}")
    if report.error:
        print(report.error)
        return
    counts = {status: report.count(status) for status in sorted({m.status for m in report.mutants})}
    print("  " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for title, mutants in (
        ("survivors", report.unexplained),
        ("equivalent (tools/equivalent_mutants.toml)", [m for m in report.survivors if m.equivalent]),
    ):
        if mutants:
            print(f"  {title}:")
            for mutant in mutants:
                print(f"    [{mutant.status}] {mutant.name.rsplit('.', 1)[-1]}  {mutant.describe()}")
                if mutant.equivalent:
                    print(f"        because {mutant.equivalent.reason}")
    print("  " + score_line(report))


def _as_json(report: FileReport) -> dict[str, object]:
    return {
        "path": report.path,
        "seconds": round(report.seconds, 1),
        "error": report.error,
        "total": len(report.mutants),
        "killed": report.count("killed", "type check"),
        "survivors": [
            {"name": m.name, "status": m.status, "change": m.describe(), "equivalent": m.equivalent is not None}
            for m in report.survivors
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
