"""MMRM with an unstructured covariance: our REML fit beside R's nlme and glmmTMB on the same
data.

Data: two arms, five post-baseline visits, a baseline covariate, correlated residuals with
variance growing over visits, and monotone dropout (about 6% of those still in leave before
each visit after the first). Ours: ``analysis.estimators.mmrm.fit_mmrm`` (UN, baseline x
visit, Satterthwaite df). R, when ``Rscript`` and nlme are installed: the same data written to
a temporary CSV, ``nlme::gls(chg ~ 0 + visit + visit:arm + visit:base,
correlation = corSymm(form = ~ visno | subject), weights = varIdent(form = ~ 1 | visit),
method = "REML")``, timed inside R around ``gls()`` only (reading the CSV excluded), with
a wall-clock cap after which it is reported as "> T s"; and, when glmmTMB is installed,
``glmmTMB(chg ~ 0 + visit + visit:arm + visit:base + us(visit + 0 | subject), dispformula = ~0,
REML = TRUE)`` timed the same way. The caps are set from our own time so that a capped baseline
still decides the target (nlme: 25 x ours, target <= 0.05; glmmTMB: 3 x ours, target <= 0.5),
at least 45 s. The arm difference at the last visit from every fit is printed as a check that
they fitted the same model.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.estimators.mmrm import fit_mmrm
from bench.harness import RatioRow, print_table

NAME = "mmrm"
N_VISITS = 5

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
method <- args[2]
suppressPackageStartupMessages(library(if (method == "gls") "nlme" else "glmmTMB",
                                       character.only = TRUE))
d <- read.csv(args[1])
d$arm <- factor(d$arm, levels = c("control", "active"))
d$visit <- factor(d$visit, levels = paste0("V", 1:5))
d$subject <- factor(d$subject)
started <- proc.time()[["elapsed"]]
if (method == "gls") {
  fit <- gls(chg ~ 0 + visit + visit:arm + visit:base, data = d,
             correlation = corSymm(form = ~ visno | subject),
             weights = varIdent(form = ~ 1 | visit), method = "REML", na.action = na.omit)
  b <- coef(fit)
  v <- vcov(fit)
} else {
  fit <- suppressWarnings(glmmTMB(chg ~ 0 + visit + visit:arm + visit:base
                                  + us(visit + 0 | subject), data = d,
                                  dispformula = ~0, REML = TRUE))
  b <- fixef(fit)$cond
  v <- vcov(fit)$cond
}
elapsed <- proc.time()[["elapsed"]] - started
name <- "visitV5:armactive"
cat(sprintf("%.6f %.10f %.10f\n", elapsed, b[[name]], sqrt(v[name, name])))
"""

# R fit -> (R package, figure's baseline name, cap as a multiple of our time, target ratio)
R_METHODS = {
    "gls": ("nlme", "nlme::gls", 25.0),
    "glmmTMB": ("glmmTMB", "glmmTMB", 3.0),
}
MIN_CAP_S = 45.0


FULL = (1_000, 10_000)
QUICK = (200,)


def simulate_trial(n_subjects: int, seed: int = 20261123) -> pd.DataFrame:
    """Return long data (subject, arm, visit, visno, base, chg) with monotone dropout."""
    rng = np.random.default_rng(seed)
    visits = np.arange(1, N_VISITS + 1)
    sd = 3.0 + 0.5 * visits
    correlation = 0.7 ** np.abs(np.subtract.outer(visits, visits)) * 0.8 + 0.2 * np.eye(N_VISITS)
    covariance = correlation * np.outer(sd, sd)
    arm = rng.integers(0, 2, n_subjects)
    base = rng.normal(25.0, 5.0, n_subjects)
    residuals = rng.multivariate_normal(np.zeros(N_VISITS), covariance, n_subjects)
    mean = (
        -0.3 * visits[None, :] - 0.4 * arm[:, None] * visits[None, :] - 0.1 * (base[:, None] - 25.0)
    )
    chg = mean + residuals
    # monotone dropout: once gone, every later visit is missing
    leaves = rng.random((n_subjects, N_VISITS)) < 0.06
    leaves[:, 0] = False
    gone = np.cumsum(leaves, axis=1) > 0
    chg[gone] = np.nan
    frame = pd.DataFrame(
        {
            "subject": np.repeat(np.arange(1, n_subjects + 1), N_VISITS),
            "arm": np.repeat(np.where(arm == 1, "active", "control"), N_VISITS),
            "visit": np.tile([f"V{v}" for v in visits], n_subjects),
            "visno": np.tile(visits, n_subjects),
            "base": np.repeat(base, N_VISITS),
            "chg": chg.reshape(-1),
        }
    )
    return frame.dropna(subset=["chg"]).reset_index(drop=True)


def fit_ours(data: pd.DataFrame) -> tuple[float, float, float]:
    """Return (seconds, last-visit difference, its SE) from our fit."""
    started = time.perf_counter()
    result = fit_mmrm(
        data, outcome="chg", arm="arm", visit="visit", subject="subject",
        reference_arm="control", baseline="base", covariance="UN",
        visit_order=[f"V{v}" for v in range(1, N_VISITS + 1)],
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    effect = next(e for e in result.effects if e.visit == f"V{N_VISITS}")
    return elapsed, effect.estimate, float(effect.se or 0.0)


def r_available(package: str) -> str | None:
    """Return why R cannot run a comparison with the package, or None when it can."""
    if shutil.which("Rscript") is None:
        return "Rscript not found"
    probe = subprocess.run(
        ["Rscript", "-e", f"suppressPackageStartupMessages(library({package}))"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return None if probe.returncode == 0 else f"R package {package} not installed"


@dataclass(frozen=True)
class RFit:
    seconds: float | None  # None: timed out
    estimate: float | None
    se: float | None
    wall_s: float


def fit_r(data: pd.DataFrame, method: str, timeout_s: float) -> RFit:
    """Fit with R (``method``: gls or glmmTMB) in a child Rscript; kill it after timeout_s."""
    with tempfile.TemporaryDirectory() as workdir:
        csv = Path(workdir) / "mmrm.csv"
        script = Path(workdir) / "mmrm.R"
        data.to_csv(csv, index=False)
        script.write_text(R_SCRIPT)
        started = time.perf_counter()
        try:
            completed = subprocess.run(
                ["Rscript", str(script), str(csv), method],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return RFit(None, None, None, time.perf_counter() - started)
        wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"Rscript failed: {completed.stderr[-500:]}")
    seconds, estimate, se = (float(v) for v in completed.stdout.split()[-3:])
    return RFit(seconds, estimate, se, wall)


def run(quick: bool = False) -> list[RatioRow]:
    """Time our fit and each available R fit at each size; print the table and return ours / R
    per size and R package."""
    why_not = {m: r_available(package) for m, (package, _, _) in R_METHODS.items()}
    table: list[list[Any]] = []
    rows: list[RatioRow] = []
    for n in QUICK if quick else FULL:
        data = simulate_trial(n)
        seconds, estimate, se = fit_ours(data)
        for method, (_, name, multiple) in R_METHODS.items():
            cap = max(MIN_CAP_S, multiple * seconds)
            r = None if why_not[method] else fit_r(data, method, cap)
            r_time: float | str
            ratio: float | str
            if r is None:
                r_time, ratio, r_estimate = why_not[method] or "", "-", "-"
            elif r.seconds is None:
                r_time, ratio, r_estimate = f"> {cap:.0f} s", f"< {seconds / cap:.3g}", "-"
            else:
                r_time, ratio = r.seconds, seconds / r.seconds
                r_estimate = f"{r.estimate:.4f} ({r.se:.4f})"
            table.append([f"{n:,}", len(data), name, seconds, r_time, ratio,
                          f"{estimate:.4f} ({se:.4f})", r_estimate])  # fmt: skip
            is_capped = r is not None and r.seconds is None
            rows.append(
                RatioRow(
                    NAME, f"MMRM UN fit, {n:,} subjects x {N_VISITS} visits vs {name}", "s",
                    seconds, None if r is None else (cap if r.seconds is None else r.seconds),
                    name + (" (stopped at the cap)" if is_capped else ""), False,
                    is_baseline_lower_bound=is_capped,
                )
            )  # fmt: skip
    print_table(
        "MMRM, unstructured covariance, REML: fit_mmrm vs nlme::gls(corSymm, varIdent) and "
        "glmmTMB(us, dispformula = ~0)",
        ["subjects", "observations", "R fit", "ours s", "R s", "ours / R",
         f"ours: V{N_VISITS} diff (SE)", f"R: V{N_VISITS} diff (SE)"],
        table,
    )  # fmt: skip
    return rows
