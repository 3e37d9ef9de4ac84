"""Estimators: a pandas DataFrame and plain parameters in, a frozen result out.

Every function validates its input (raising ``analysis.results.AnalysisError``), writes
the fitted model out in ``result.model`` and reports problems in ``result.warnings``.
Numbers are pinned to R (see tests/reference/).
"""

from analysis.estimators.ancova import fit_ancova
from analysis.estimators.binary import compare_proportions, fit_cmh, fit_logistic
from analysis.estimators.gee import fit_gee, fit_random_intercept
from analysis.estimators.mmrm import fit_mmrm
from analysis.estimators.survival import estimate_kaplan_meier, fit_cox

__all__ = [
    "compare_proportions",
    "estimate_kaplan_meier",
    "fit_ancova",
    "fit_cmh",
    "fit_cox",
    "fit_gee",
    "fit_logistic",
    "fit_mmrm",
    "fit_random_intercept",
]
