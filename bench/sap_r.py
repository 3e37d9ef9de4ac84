"""The SAP's models fitted by R on the same data: the issue's "SAP compared also with an R
script doing the same models on the same data where R is available".

The analysis datasets our SAP built (``analysis.datasets.endpoint_frame`` of each endpoint of
the type 2 diabetes protocol, and the per-protocol set of the primary endpoint) are written to
CSV; one ``Rscript`` reads them (not timed) and fits, timed around the fits only:

- primary ANCOVA ``lm(change ~ arm + baseline + hba1c_band + site)``, the same on the
  per-protocol set, the BMI subgroup interaction model, and the MI-under-MAR sensitivity
  analysis with ``mice`` (Bayesian linear regression, 20 imputations, Rubin's rules; when the
  mice package is installed);
- the key secondary logistic model ``glm(response ~ arm + baseline + hba1c_band, binomial)``
  and the risk difference (``prop.test``);
- Kaplan-Meier (``survfit``) with the stratified log-rank test (``survdiff``), and the
  stratified Cox model ``coxph(Surv(time, event) ~ arm + age + strata(hba1c_band))`` (Efron).

R builds no dataset, detects no intercurrent event and lays out no table: the figure to read is
how our whole SAP stage (datasets, every model, tables) compares with R's model fits alone.
The estimates of both are printed side by side to show the two fitted the same models.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from analysis.datasets import TrialData, endpoint_frame
from analysis.sap import AnalysisResults
from bench.harness import print_table

R_TIMEOUT_S = 600.0

R_SCRIPT = r"""
suppressPackageStartupMessages(library(survival))
has_mice <- suppressWarnings(suppressPackageStartupMessages(require(mice, quietly = TRUE)))
dir <- commandArgs(trailingOnly = TRUE)[1]
rd <- function(name) {
  d <- read.csv(file.path(dir, paste0(name, ".csv")), stringsAsFactors = FALSE)
  d$arm <- factor(d$arm, levels = c("usual_care", "app"))
  d
}
primary <- rd("hba1c_change_w24"); pp <- rd("per_protocol"); logi <- rd("hba1c_target_or")
rdiff <- rd("hba1c_target_rd"); km <- rd("time_to_rescue_km"); cox <- rd("time_to_rescue_cox")
started <- proc.time()[["elapsed"]]
out <- list()
f <- change ~ arm + baseline + factor(hba1c_band) + factor(site)
out$ancova <- coef(lm(f, data = primary))[["armapp"]]
out$per_protocol <- coef(lm(f, data = pp))[["armapp"]]
# the arm's effect within BMI < 28 from the interaction model (lt28 the reference level)
primary$sg <- relevel(factor(primary$subgroup_baseline_bmi), ref = "lt28")
out$subgroup_lt28 <- coef(lm(change ~ arm * sg + baseline + factor(hba1c_band) + factor(site),
                             data = primary))[["armapp"]]
if (has_mice) {
  mi <- primary[, c("change", "arm", "baseline", "hba1c_band", "site")]
  mi$hba1c_band <- factor(mi$hba1c_band); mi$site <- factor(mi$site)
  imp <- mice(mi, m = 20, method = c("norm", "", "", "", ""), printFlag = FALSE, seed = 3)
  pooled <- summary(pool(with(imp, lm(change ~ arm + baseline + hba1c_band + site))))
  out$mi_mar <- pooled$estimate[pooled$term == "armapp"]
} else {
  out$mi_mar <- NA
}
out$logistic_or <- exp(coef(glm(response ~ arm + baseline + factor(hba1c_band),
                               family = binomial, data = logi))[["armapp"]])
b <- rdiff[!is.na(rdiff$response), ]
x <- tapply(b$response, b$arm, sum); n <- tapply(b$response, b$arm, length)
pt <- suppressWarnings(prop.test(x[c("app", "usual_care")], n[c("app", "usual_care")]))
out$risk_difference <- unname(pt$estimate[1] - pt$estimate[2])
fitkm <- survfit(Surv(time, event) ~ arm, data = km)
out$logrank_chisq <- survdiff(Surv(time, event) ~ arm + strata(hba1c_band), data = km)$chisq
out$cox_hr <- exp(coef(coxph(Surv(time, event) ~ arm + age + strata(hba1c_band),
                             data = cox, ties = "efron"))[["armapp"]])
elapsed <- proc.time()[["elapsed"]] - started
cat(sprintf("elapsed %.6f\n", elapsed))
cat(sprintf("mice %s\n", if (has_mice) "yes" else "no"))
for (k in names(out)) cat(sprintf("%s %.10g\n", k, out[[k]]))
"""

# our results -> the figure R prints under the same name
ENDPOINTS = ("hba1c_change_w24", "hba1c_target_or", "hba1c_target_rd", "time_to_rescue_km",
             "time_to_rescue_cox")  # fmt: skip


def why_not() -> str | None:
    """Return why R cannot run the comparison, or None when it can."""
    if shutil.which("Rscript") is None:
        return "Rscript not found"
    probe = subprocess.run(["Rscript", "-e", "suppressPackageStartupMessages(library(survival))"],
                           capture_output=True, timeout=60, check=False)  # fmt: skip
    return None if probe.returncode == 0 else "R package survival not installed"


def compare(data: TrialData, results: AnalysisResults, ours_sap_s: float) -> None:
    """Write the SAP's datasets, fit the same models in R, print times and estimates."""
    reason = why_not()
    if reason:
        print(f"\nSAP in R not run: {reason}")
        return
    protocol = data.protocol
    by_id = {e.id: e for e in protocol.endpoints}
    with tempfile.TemporaryDirectory() as workdir:
        for endpoint_id in ENDPOINTS:
            endpoint_frame(data, by_id[endpoint_id]).to_csv(Path(workdir) / f"{endpoint_id}.csv",
                                                            index=False)  # fmt: skip
        endpoint_frame(data, by_id[ENDPOINTS[0]], "per_protocol").to_csv(
            Path(workdir) / "per_protocol.csv", index=False
        )
        script = Path(workdir) / "sap.R"
        script.write_text(R_SCRIPT)
        started = time.perf_counter()
        completed = subprocess.run(["Rscript", str(script), workdir], capture_output=True,
                                   text=True, timeout=R_TIMEOUT_S, check=False)  # fmt: skip
        wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"Rscript (SAP models) failed: {completed.stderr[-500:]}")
    r_s, has_mice, figures = parse_r_output(completed.stdout)
    ours = _our_estimates(results)
    print_table(
        "The SAP's models in R on the same datasets (MI: the same model, other random draws)",
        ["figure", "ours", "R"],
        [[name, _fmt(ours.get(name)), _fmt(value)] for name, value in figures.items()],
    )
    print_table(
        "Time: our SAP stage (datasets, every model, tables) vs R's model fits alone",
        ["ours: SAP stage s", "R: fits s", "R: Rscript wall s (start, reading, fits)",
         "ours / R fits", "R's MI"],
        [[ours_sap_s, r_s, wall, ours_sap_s / r_s if r_s else "-",
          "mice, 20 imputations" if has_mice else "not run (apt-get install r-cran-mice)"]],
    )  # fmt: skip


def parse_r_output(stdout: str) -> tuple[float, bool, dict[str, float | None]]:
    """The R script's printout: its fits' seconds, whether mice ran, and each figure by name
    (None where R printed NA: the MI estimate when mice is not installed)."""
    printed = dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)
    elapsed = float(printed.pop("elapsed"))
    has_mice = printed.pop("mice") == "yes"
    figures = {k: None if v.strip() == "NA" else float(v) for k, v in printed.items()}
    return elapsed, has_mice, figures


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def _our_estimates(results: AnalysisResults) -> dict[str, float | None]:
    by_id = {a.id: a for a in results.endpoints}

    def headline(endpoint_id: str) -> float | None:
        effect: Any = by_id[endpoint_id].headline
        return None if effect is None else float(effect["estimate"])

    def sensitivity(method: str) -> float | None:
        for entry in by_id[ENDPOINTS[0]].sensitivity:
            if entry["method"] == method and entry.get("effects"):
                return float(entry["effects"][0]["estimate"])
        return None

    def subgroup(level: str) -> float | None:
        for entry in by_id[ENDPOINTS[0]].subgroups:
            for row in entry.get("levels", ()):
                if row["level"] == level and row.get("effects"):
                    return float(row["effects"][0]["estimate"])
        return None

    km = by_id["time_to_rescue_km"].result or {}
    return {
        "ancova": headline("hba1c_change_w24"),
        "per_protocol": sensitivity("per_protocol"),
        "subgroup_lt28": subgroup("lt28"),
        "mi_mar": sensitivity("multiple_imputation_mar"),
        "logistic_or": headline("hba1c_target_or"),
        "risk_difference": headline("hba1c_target_rd"),
        "logrank_chisq": _logrank(km),
        "cox_hr": headline("time_to_rescue_cox"),
    }


def _logrank(result: Any) -> float | None:
    """The stratified log-rank statistic (survdiff's chisq)."""
    for test in result.get("tests", ()):
        if test["name"] == "stratified_logrank":
            return float(test["statistic"])
    return None
