"""Benchmark capella-deploy against a served sandbox and against the hand-written baseline.

    python bench/run.py            # the full run (a few minutes), writes bench/results.json
    python bench/run.py --quick    # the CI smoke: tiny N, seconds

Prints one table and writes the figures and ratios as JSON. See bench/README.md for what each scenario
measures and the latest figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

# Run as a script, the repository root is not on the path; the harness imports itself as `bench`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, scenarios
from bench.scenarios import Result, Settings

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def run_all(settings: Settings, progress: Callable[[str], None]) -> list[Result]:
    results: list[Result] = []

    def step(key: str, title: str, work: Callable[[], Result]) -> Result:
        progress(f"running: {title}")
        started = time.perf_counter()
        try:
            result = work()
        except Exception as exc:
            # One broken scenario must not hide the others' figures; it shows as a failed check instead.
            traceback.print_exc()
            result = Result(key, title)
            result.figures = {"error": f"{type(exc).__name__}: {exc}"}
            result.row("error", f"{type(exc).__name__}: {exc}"[:100], "runs", False)
        progress(f"  done in {time.perf_counter() - started:.1f} s")
        results.append(result)
        return result

    step("plan_at_scale", "1. plan at scale", lambda: scenarios.plan_at_scale(settings))
    together = step("apply_new_models", "2. apply of new models", lambda: scenarios.apply_new_models(settings))
    step("rate_limited_apply", "3. rate-limited apply", lambda: scenarios.rate_limited(settings))
    step("polling_cost", "4. polling cost", lambda: scenarios.polling_cost(settings, together))
    step("cold_start", "5. cold start", lambda: scenarios.cold_start(settings))
    step("plan_scaling", "6. plan scaling", lambda: scenarios.plan_scaling(settings))
    step("rate_limited_at_scale", "7. at the rate limit, at scale", lambda: scenarios.rate_limited_at_scale(settings))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI: finishes in seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument("--latency-ms", type=float, help="added latency of every sandbox request")
    parser.add_argument("--deploy-seconds", type=float, help="deploy time D, in sandbox seconds")
    parser.add_argument("--speed", type=float, help="sandbox seconds per real second in the applies")
    args = parser.parse_args(argv)

    settings = scenarios.QUICK if args.quick else scenarios.FULL
    overrides = {
        name: value
        for name, value in (
            ("latency_ms", args.latency_ms),
            ("deploy_seconds", args.deploy_seconds),
            ("speed", args.speed),
        )
        if value is not None
    }
    settings = dataclasses.replace(settings, **overrides)

    started = time.perf_counter()
    results = run_all(settings, lambda line: print(line, file=sys.stderr, flush=True))
    elapsed = time.perf_counter() - started
    doc = report.document(results, settings, quick=args.quick, seconds=elapsed)
    report.write_json(args.out, doc)
    print(report.table(results), end="")
    verdict = "all targets met" if doc["all_targets_met"] else "SOME TARGETS MISSED"
    if args.quick:
        verdict += " (quick smoke: the sizes are too small for the targets to mean anything)"
    print(f"\n{verdict}; {elapsed:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
