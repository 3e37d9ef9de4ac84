"""Kenward-Roger (1997) adjusted covariance and df for MMRMs with linear covariance structures.

For a structure linear in its parameters, ``Sigma = sum_i theta_i B_i`` (UN in its
entries, CS as common covariance + extra diagonal variance, TOEP in lag covariances),
the second-derivative terms R_ij vanish ("linear" Kenward-Roger, as SAS PROC MIXED
``DDFM=KR`` for these structures and R mmrm's ``"Kenward-Roger-Linear"``):

* ``P_i = -X'V^-1 B_i V^-1 X``, ``Q_ij = X'V^-1 B_i V^-1 B_j V^-1 X``, ``Phi = (X'V^-1X)^-1``;
* W = covariance of the linear parameters = inverse *observed* REML information (as the
  R package mmrm and SAS; pbkrtest uses the expected information, which is biased when
  data are missing at random), mapped from theta by the Jacobian;
* ``Phi_A = Phi + 2 Phi (sum_ij W_ij (Q_ij - P_i Phi P_j)) Phi``;
* for one contrast row L: ``A1 = A2 = a'Wa`` with ``a_i = L Phi P_i Phi L' / (L Phi L')``,
  and KR's moment matching with l = 1 gives ``m = 2 / a'Wa`` and lambda = 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.estimators._design import FloatArray
from analysis.results import AnalysisError

if TYPE_CHECKING:
    from analysis.estimators.mmrm import _Evaluation, _Pattern

LINEAR_STRUCTURES = ("UN", "CS", "TOEP")


def linear_basis(structure: str, k: int) -> list[FloatArray]:
    """Return the matrices B_i with Sigma = sum_i theta_i B_i for a linear structure."""
    if structure == "UN":
        basis: list[FloatArray] = []
        for j in range(k):
            for m in range(j, k):
                b = np.zeros((k, k))
                b[j, m] = b[m, j] = 1.0
                basis.append(b)
        return basis
    if structure == "CS":
        basis = [np.ones((k, k)), np.eye(k)]
        return basis
    if structure == "TOEP":
        lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
        basis = [(lag == h).astype(float) for h in range(k)]
        return basis
    raise AnalysisError(
        f"Kenward-Roger is implemented for the linear structures {LINEAR_STRUCTURES}, "
        f"not {structure}"
    )


def linear_jacobian(structure: str, dsigma: FloatArray) -> FloatArray:
    """Return d(linear parameters)/d(theta) from dSigma/dtheta (shape q x K x K)."""
    k = dsigma.shape[1]
    if structure == "UN":
        return np.array([dsigma[:, j, m] for j in range(k) for m in range(j, k)])
    if structure == "CS":
        return np.array([dsigma[:, 0, 1], dsigma[:, 0, 0] - dsigma[:, 0, 1]])
    return np.array([dsigma[:, 0, h] for h in range(k)])


class KenwardRoger:
    """Pre-computed Kenward-Roger pieces at the REML estimate of one MMRM fit.

    ``theta_cov`` is the covariance of the fitted covariance parameters theta (inverse
    observed REML information) and ``dsigma`` their dSigma/dtheta; W in the linear
    parameterisation is ``J theta_cov J'``.
    """

    def __init__(
        self,
        patterns: list[_Pattern],
        evaluation: _Evaluation,
        structure: str,
        theta_cov: FloatArray,
        dsigma: FloatArray,
    ) -> None:
        k = dsigma.shape[1]
        basis = linear_basis(structure, k)
        jac = linear_jacobian(structure, dsigma)
        w_lin = jac @ theta_cov @ jac.T
        self.w: FloatArray = (w_lin + w_lin.T) / 2
        q = len(basis)
        phi = evaluation.a_inv
        p = phi.shape[0]
        self.p_mats = np.zeros((q, p, p))
        lam = np.zeros((p, p))
        for pat, w in zip(patterns, evaluation.inverses, strict=True):
            wbs = [w @ b[np.ix_(pat.visits, pat.visits)] for b in basis]
            for i in range(q):
                self.p_mats[i] -= pat.contract(wbs[i] @ w)
                for j in range(q):
                    lam += self.w[i, j] * pat.contract(wbs[i] @ wbs[j] @ w)
        for i in range(q):
            for j in range(q):
                lam -= self.w[i, j] * (self.p_mats[i] @ phi @ self.p_mats[j])
        self.phi = phi
        adjusted = phi + 2 * phi @ lam @ phi
        self.phi_adjusted: FloatArray = (adjusted + adjusted.T) / 2

    def contrast(self, row: FloatArray) -> tuple[float, float]:
        """Return the KR-adjusted variance and the KR df of one contrast row.

        For one row, A1 = A2 = a'Wa and KR's moment matching reduces to
        ``m = 2 / a'Wa`` (the Satterthwaite df of the unadjusted variance), lambda = 1.
        """
        variance = float(row @ self.phi @ row)
        u = self.phi @ row
        a = np.array([float(u @ pm @ u) for pm in self.p_mats]) / variance
        a_w_a = float(a @ self.w @ a)
        df = 2.0 / a_w_a if a_w_a > 0 else float("inf")
        return float(row @ self.phi_adjusted @ row), df
