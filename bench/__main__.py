"""Run the benchmarks: ``python -m bench [--quick] [--only NAME ...]`` (``make bench``).

Every benchmark prints its own tables, then this prints one summary of ratios against the
baseline each measured in the same run. To add a benchmark, write ``bench/<name>.py`` with
``run(quick: bool = False) -> list[RatioRow]`` and add it to ``BENCHMARKS`` below.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

from bench.harness import BenchmarkUnavailable, RatioRow, format_number, print_table

# name -> module under bench/ with run(quick) -> list[RatioRow]; run in this order
BENCHMARKS: dict[str, str] = {
    "roundtrips": "bench.roundtrips",
    "randomization": "bench.randomization",
    "ecrf": "bench.ecrf",
    "mmrm": "bench.mmrm",
    "report": "bench.report",
    "sap": "bench.sap",
    "device_ingest": "bench.device_ingest",
    "lists": "bench.lists",
}


def _available(name: str) -> bool:
    """Return False for a registered benchmark whose subject is absent from this tree."""
    if name == "report":
        return importlib.util.find_spec("analysis.report") is not None
    return True


# (benchmark, start of the figure's name) -> (target as printed, test of a row); issue #21
Target = tuple[str, Callable[[RatioRow], bool]]
TARGETS: dict[tuple[str, str], Target] = {
    ("ecrf", "submits/s"): ("ratio >= 0.5", lambda r: (r.ratio or 0) >= 0.5),
    ("ecrf", "p99 latency"): ("ours < 50 ms", lambda r: r.ours < 50),
    # ("ecrf", "same statements, minimal handler vs bare insert") and ("ecrf", "ours vs the
    # minimal handler"): no target, they show the floor of the submits/s target (issue #21)
    ("roundtrips", "eCRF submit"): ("<= 8 (26 before)", lambda r: r.ours <= 8),
    ("roundtrips", "audit head lock"): ("<= 1.5 ms", lambda r: r.ours <= 1.5),
    ("roundtrips", "randomization: trial lock"): ("<= 3 ms", lambda r: r.ours <= 3),
    ("roundtrips", "list page"): ("ratio = 1 (fixed)", lambda r: r.ratio == 1),
    ("roundtrips", "randomization round trips"): ("(40 before)", lambda r: r.ours < 40),
    ("randomization", "randomizations/s"): ("ratio >= 0.3", lambda r: (r.ratio or 0) >= 0.3),
    # ("randomization", "same statements, minimal handler vs locked counter"), ("randomization",
    # "minimal handler behind the API's stack vs locked counter") and ("randomization", "ours
    # vs the minimal handler..."): no target, they show the floors of the randomizations/s
    # target (the statements', and the statements' behind the API's stack)
    ("device_ingest", "records/s vs COPY into the same"): (
        "ratio >= 0.6", lambda r: (r.ratio or 0) >= 0.6,
    ),
    ("sap", "SAP + PDF at"): (
        "<= 6 s and ratio <= 10", lambda r: r.ours <= 6 and (r.ratio or 99) <= 10,
    ),
    # issue #22: the API's first page of a list within 100 ms, a page within 300 ms
    ("lists", "API "): ("ours <= 100 ms", lambda r: r.ours <= 100),
    ("lists", ""): ("ours < 300 ms", lambda r: r.ours < 300),
    ("mmrm", "MMRM UN fit, 10,000 subjects x 5 visits vs nlme"): (
        "ratio <= 0.05", lambda r: r.ratio is not None and r.ratio <= 0.05,
    ),
    ("mmrm", "MMRM UN fit, 10,000 subjects x 5 visits vs glmmTMB"): (
        "ratio <= 0.5", lambda r: r.ratio is not None and r.ratio <= 0.5,
    ),
}


def target_of(row: RatioRow) -> Target | None:
    for (benchmark, prefix), target in TARGETS.items():
        if row.benchmark == benchmark and row.figure.startswith(prefix):
            return target
    return None


def _verdict(row: RatioRow, target: Target | None) -> str:
    if target is None:
        return ""
    if target[1](row):
        return "met"
    # a baseline stopped at its cap: the ratio is only an upper bound
    return "unknown (baseline capped)" if row.is_baseline_lower_bound else "NOT MET"


def _spread(row: RatioRow) -> str:
    if len(row.runs) < 2:
        return ""
    return f"{format_number(min(row.runs))}-{format_number(max(row.runs))} ({len(row.runs)} runs)"


def print_summary(rows: Sequence[RatioRow], skipped: dict[str, str]) -> None:
    """Print every summary figure with its ratio ours / baseline, its spread over repeated
    runs, and its target (met or not)."""
    table = []
    for row in rows:
        ratio = row.ratio
        bound = "> " if row.is_baseline_lower_bound else ""
        ratio_bound = ("< " if row.ours > 0 else "") if row.is_baseline_lower_bound else ""
        target = target_of(row)
        table.append(
            [row.benchmark, row.figure, f"{format_number(row.ours)} {row.unit}",
             f"{bound}{format_number(row.baseline)} {row.unit} ({row.baseline_name})"
             if row.baseline is not None else "-",
             f"{ratio_bound}{format_number(ratio)}" if ratio is not None else "-",
             _spread(row),
             target[0] if target else "-",
             _verdict(row, target)]
        )  # fmt: skip
    for name, why in skipped.items():
        table.append([name, f"not run: {why}", "-", "-", "-", "", "", ""])
    print_table(
        "Summary: ours / baseline (same run), against the targets of issue #21",
        ["benchmark", "figure", "ours", "baseline", "ratio", "spread", "target", "verdict"],
        table,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke)")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    print(
        f"# dtx-trials benchmarks{' (quick)' if args.quick else ''}\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · Python "
        f"{platform.python_version()} · {os.cpu_count()} CPUs · {platform.platform()}"
    )
    rows: list[RatioRow] = []
    skipped: dict[str, str] = {}
    failed: list[str] = []
    for name in names:
        if not _available(name):
            skipped[name] = "its package is not in this tree"
            continue
        started = time.perf_counter()
        print(f"\n## {name}")
        sys.stdout.flush()
        try:
            rows.extend(importlib.import_module(BENCHMARKS[name]).run(quick=args.quick))
        except BenchmarkUnavailable as exc:
            rows.extend(exc.rows)
            skipped[name] = str(exc)
            print(f"\nnot run: {exc}")
        except RuntimeError as exc:  # a violated invariant or a server that would not start
            failed.append(name)
            skipped[name] = f"FAILED: {exc}"
            print(f"\nFAILED: {exc}")
        print(f"\n({name}: {time.perf_counter() - started:.0f} s)")
    print_summary(rows, skipped)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
