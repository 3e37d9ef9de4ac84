"""Full SAP + PDF report for a simulated 1,000- and 10,000-participant trial.

Baseline: the same pipeline at 1,000 participants in the same run, so the ratio shows how the
cost scales with trial size (10 = linear). Each stage is timed: analysis datasets, every
endpoint with its sensitivity analyses and subgroups (`run_sap`), report layout and PDF, and
the growth of each stage against the smallest size is printed (time ratio / size ratio: 1 is
linear). ``BENCH_SAP_SIZES=1000,10000,50000`` adds sizes (50,000 takes minutes). At the largest
size R fits the same models on the same datasets when it is installed (``bench.sap_r``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from analysis.report import build_report
from analysis.report_builder import ReportMeta, build_report_spec
from analysis.sap import arm_labels, run_sap
from analysis.simulation import simulate_trial_data
from bench import sap_r
from bench.harness import RatioRow, print_table
from protocols.loader import load_protocol

FULL = (1_000, 10_000)
QUICK = (100, 300)
PROTOCOL = Path(__file__).resolve().parent.parent / "protocols" / "library" / "type2_diabetes.yaml"


def _pipeline(n: int, *, with_r: bool = False) -> dict[str, float]:
    """Time the stages at n participants; with_r: fit the SAP's models in R on the same
    datasets afterwards (bench.sap_r, when R is installed)."""
    import datetime

    protocol = load_protocol(PROTOCOL)
    started = time.perf_counter()
    data = simulate_trial_data(protocol, n, seed=11, effects={"hba1c_pct": {"app": -0.6}})
    simulated = time.perf_counter()
    results = run_sap(data, blinded=True, labels=arm_labels(protocol, b"bench" * 4), seed=3)
    analysed = time.perf_counter()
    meta = ReportMeta(
        generated_at=datetime.datetime.now(datetime.UTC), data_sha256="0" * 64,
        software_versions={}, product_name="bench", product_version="1", indication="T2D",
        design="randomized", sponsor="bench", phase=protocol.phase,
        cutoff_on=datetime.date.today())
    pdf = build_report(build_report_spec(results, meta))
    reported = time.perf_counter()
    figures = {"simulate_s": simulated - started, "sap_s": analysed - simulated,
               "report_s": reported - analysed, "pages": float(pdf.count(b"/Type /Page")),
               "total_s": reported - simulated}
    if with_r:
        sap_r.compare(data, results, analysed - simulated)
    return figures


def _sizes(quick: bool) -> tuple[int, ...]:
    chosen = os.environ.get("BENCH_SAP_SIZES", "")
    if chosen and not quick:
        return tuple(sorted({int(n) for n in chosen.split(",")}))
    return QUICK if quick else FULL


def run(quick: bool = False) -> list[RatioRow]:
    sizes = _sizes(quick)
    if not quick:  # warm-up (imports, fonts, caches): not charged to the smallest size
        _pipeline(50)
    # R fits the same models on the largest size's datasets (printed as the size is done)
    figures = {n: _pipeline(n, with_r=not quick and n == sizes[-1]) for n in sizes}
    print_table(
        "Full SAP + PDF (type 2 diabetes protocol, 5 endpoints, MI sensitivity, subgroups)",
        ["participants", "simulate data (s)", "SAP (s)", "report PDF (s)", "pages",
         "SAP + PDF (s)"],
        [[f"{n:,}", f["simulate_s"], f["sap_s"], f["report_s"], int(f["pages"]), f["total_s"]]
         for n, f in figures.items()])
    base = sizes[0]
    print_table(
        f"Growth against {base:,} participants: (time ratio) / (size ratio), 1 = linear",
        ["participants", "size ratio", "SAP", "report PDF", "SAP + PDF"],
        [[f"{n:,}", n / base,
          *(figures[n][k] / figures[base][k] / (n / base)
            for k in ("sap_s", "report_s", "total_s"))]
         for n in sizes[1:]])
    small, large = base, (10_000 if 10_000 in sizes and not quick else sizes[-1])
    return [RatioRow("sap", f"SAP + PDF at {large:,} participants", "s",
                     figures[large]["total_s"], figures[small]["total_s"],
                     f"same pipeline at {small:,}", higher_is_better=False)]
