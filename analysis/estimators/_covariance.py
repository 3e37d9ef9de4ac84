"""Covariance structures over visits for the MMRM: parameter maps and derivatives.

Every structure maps an unconstrained vector ``theta`` to a positive-definite K x K
matrix using only analytic operations (exp, tanh, sums, products), so the derivative
``d Sigma / d theta`` is computed exactly by the complex-step method.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from analysis.results import AnalysisError

CovarianceStructure = Literal["UN", "CS", "CSH", "AR1", "ARH1", "TOEP", "TOEPH"]
STRUCTURES: tuple[CovarianceStructure, ...] = ("UN", "CS", "CSH", "AR1", "ARH1", "TOEP", "TOEPH")

DESCRIPTIONS: dict[str, str] = {
    "UN": "unstructured (log-Cholesky parameterisation)",
    "CS": "compound symmetry, homogeneous variance",
    "CSH": "compound symmetry, heterogeneous variances by visit",
    "AR1": "first-order autoregressive over visit positions, homogeneous variance",
    "ARH1": "first-order autoregressive over visit positions, heterogeneous variances",
    "TOEP": "Toeplitz (banded by visit distance, partial-autocorrelation parameterisation)",
    "TOEPH": "Toeplitz with heterogeneous variances by visit",
}

_STEP = 1e-30


def n_parameters(structure: CovarianceStructure, n_visits: int) -> int:
    """Return the number of covariance parameters of ``structure`` over ``n_visits``."""
    k = n_visits
    counts = {
        "UN": k * (k + 1) // 2,
        "CS": 2,
        "CSH": k + 1,
        "AR1": 2,
        "ARH1": k + 1,
        "TOEP": k,
        "TOEPH": 2 * k - 1,
    }
    if structure not in counts:
        raise AnalysisError(f"unknown covariance structure {structure!r}; use one of {STRUCTURES}")
    if k < 2 and structure != "UN":
        raise AnalysisError(f"structure {structure} needs at least two visits")
    return counts[structure]


def _toeplitz_correlations(pacf: npt.NDArray[np.complex128]) -> npt.NDArray[np.complex128]:
    """Return autocorrelations r_1..r_m from partial autocorrelations (Durbin-Levinson)."""
    m = len(pacf)
    r = np.zeros(m, dtype=complex)
    phi = np.zeros(0, dtype=complex)
    for k in range(m):
        if k == 0:
            r[0] = pacf[0]
            phi = pacf[:1].copy()
            continue
        lagged = r[:k][::-1]
        r[k] = pacf[k] * (1 - np.sum(phi * r[:k])) + np.sum(phi * lagged)
        phi = np.concatenate([phi - pacf[k] * phi[::-1], pacf[k : k + 1]])
    return r


def _correlation(structure: str, params: npt.NDArray[np.complex128], k: int) -> (
    npt.NDArray[np.complex128]
):
    """Return the K x K correlation matrix of a structured (non-UN) model."""
    lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    if structure in ("CS", "CSH"):
        a = 1.0 / (k - 1)
        e = np.exp(params[0])
        rho = (e - a) / (1 + e)
        return np.where(lag == 0, 1.0 + 0j, rho)
    if structure in ("AR1", "ARH1"):
        rho = np.tanh(params[0])
        out = np.ones((k, k), dtype=complex)
        for h in range(1, k):
            out = np.where(lag == h, rho**h, out)
        return out
    r = np.concatenate([np.ones(1, dtype=complex), _toeplitz_correlations(np.tanh(params))])
    return r[lag]


def covariance_matrix(
    structure: CovarianceStructure, theta: npt.NDArray[np.complex128], k: int
) -> npt.NDArray[np.complex128]:
    """Return Sigma(theta) (complex dtype so that complex-step derivatives work)."""
    theta = np.asarray(theta, dtype=complex)
    if structure == "UN":
        chol = np.zeros((k, k), dtype=complex)
        chol[np.diag_indices(k)] = np.exp(theta[:k])
        chol[np.tril_indices(k, -1)] = theta[k:]
        return chol @ chol.T
    if structure in ("CS", "AR1", "TOEP"):
        sd = np.exp(theta[0]) * np.ones(k, dtype=complex)
        rest = theta[1:]
    else:
        sd = np.exp(theta[:k])
        rest = theta[k:]
    corr = _correlation(structure, rest, k)
    return corr * np.outer(sd, sd)


def covariance_and_derivatives(
    structure: CovarianceStructure, theta: npt.NDArray[np.floating[Any]], k: int
) -> tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]]]:
    """Return Sigma(theta) and dSigma/dtheta (shape q x K x K) by complex step."""
    q = len(theta)
    sigma = covariance_matrix(structure, theta.astype(complex), k).real
    deriv = np.empty((q, k, k))
    for i in range(q):
        shifted = theta.astype(complex)
        shifted[i] += 1j * _STEP
        deriv[i] = covariance_matrix(structure, shifted, k).imag / _STEP
    return sigma, deriv


def _pacf_from_correlations(r: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
    """Return partial autocorrelations from autocorrelations r_1..r_m (Durbin-Levinson)."""
    m = len(r)
    pacf = np.zeros(m)
    phi = np.zeros(0)
    full = np.concatenate([[1.0], r])
    for k in range(m):
        num = full[k + 1] - np.sum(phi * full[1 : k + 1][::-1])
        den = 1 - np.sum(phi * full[1 : k + 1])
        pk = num / den if den > 1e-8 else 0.0
        pk = float(np.clip(pk, -0.95, 0.95))
        pacf[k] = pk
        phi = np.concatenate([phi - pk * phi[::-1], [pk]])
    return pacf


def starting_values(
    structure: CovarianceStructure, sigma0: npt.NDArray[np.floating[Any]]
) -> npt.NDArray[np.floating[Any]]:
    """Return theta whose Sigma is close to the (positive-definite) ``sigma0``."""
    k = sigma0.shape[0]
    sd = np.sqrt(np.diag(sigma0))
    corr = sigma0 / np.outer(sd, sd)
    lag_means = np.array([np.mean(np.diag(corr, h)) for h in range(1, k)])
    if structure == "UN":
        chol = np.linalg.cholesky(sigma0)
        return np.concatenate([np.log(np.diag(chol)), chol[np.tril_indices(k, -1)]])
    if structure in ("CS", "AR1", "TOEP"):
        scale = np.array([0.5 * np.log(np.mean(sd**2))])
    else:
        scale = np.log(sd)
    if structure in ("CS", "CSH"):
        a = 1.0 / (k - 1)
        rho = float(np.clip(np.mean(corr[np.triu_indices(k, 1)]), -a + 0.05, 0.95))
        return np.concatenate([scale, [np.log((rho + a) / (1 - rho))]])
    if structure in ("AR1", "ARH1"):
        rho = float(np.clip(lag_means[0], -0.9, 0.9))
        return np.concatenate([scale, [np.arctanh(rho)]])
    return np.concatenate([scale, np.arctanh(_pacf_from_correlations(lag_means))])
