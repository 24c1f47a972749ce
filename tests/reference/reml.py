"""Restricted maximum likelihood for two- and three-level meta-analysis, as metafor's
rma.mv(yi, vi, mods, random = ~ 1 | study/es_id, method = "REML") computes it.

Written independently of the package's likelihood: each study's marginal covariance
is built as a dense matrix, V_s = diag(v + sigma2_es) + sigma2_study * 1 1', and
inverted with numpy, whereas the package uses a closed form (Sherman-Morrison).

Restricted log-likelihood, up to a constant, for fixed effects b with design X:
    -1/2 [ sum_s log|V_s| + log|X' W X| + (y - X b_hat)' W (y - X b_hat) ],
    W = V^-1 (block diagonal), b_hat = (X' W X)^-1 X' W y (generalised least squares).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize


@dataclass
class RemlFit:
    beta: np.ndarray  # intercept first
    se: np.ndarray
    sigma2_study: float
    sigma2_es: float


def _blocks(effects: pd.DataFrame):
    return [np.flatnonzero((effects["study"] == s).to_numpy())
            for s in pd.unique(effects["study"])]


def _gls(effects, X, blocks, s2_study, s2_es):
    y, v = effects["yi"].to_numpy(float), effects["vi"].to_numpy(float)
    XtWX = np.zeros((X.shape[1], X.shape[1]))
    XtWy = np.zeros(X.shape[1])
    logdet = 0.0
    inverses = []
    for rows in blocks:
        V = np.diag(v[rows] + s2_es) + s2_study
        Vi = np.linalg.inv(V)
        inverses.append(Vi)
        logdet += np.linalg.slogdet(V)[1]
        XtWX += X[rows].T @ Vi @ X[rows]
        XtWy += X[rows].T @ Vi @ y[rows]
    beta = np.linalg.solve(XtWX, XtWy)
    quad = sum((y[r] - X[r] @ beta) @ Vi @ (y[r] - X[r] @ beta)
               for r, Vi in zip(blocks, inverses, strict=True))
    return beta, XtWX, logdet, quad


def reml(effects: pd.DataFrame, X: np.ndarray | None = None,
         three_level: bool = True) -> RemlFit:
    """REML fit; two-level when `three_level` is False (each effect its own study)."""
    X = np.ones((len(effects), 1)) if X is None else np.column_stack([np.ones(len(effects)), X])
    if three_level:
        blocks = _blocks(effects)
    else:
        blocks = [np.array([i]) for i in range(len(effects))]

    def negative_restricted_loglik(log_s2):
        s2_study = np.exp(log_s2[0])
        s2_es = np.exp(log_s2[1]) if three_level else 0.0
        _, XtWX, logdet, quad = _gls(effects, X, blocks, s2_study, s2_es)
        return 0.5 * (logdet + np.linalg.slogdet(XtWX)[1] + quad)

    start = np.log([0.05, 0.02]) if three_level else np.log([0.05])
    res = optimize.minimize(negative_restricted_loglik, start, method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    s2 = np.exp(res.x)
    s2_study, s2_es = s2[0], (s2[1] if three_level else 0.0)
    beta, XtWX, _, _ = _gls(effects, X, blocks, s2_study, s2_es)
    return RemlFit(beta, np.sqrt(np.diag(np.linalg.inv(XtWX))), float(s2_study), float(s2_es))
