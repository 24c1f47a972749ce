"""Closed-form Gaussian pieces shared by the trial models."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt


def compound_symmetric_loglik(resid, patient: np.ndarray, n_patients: int, sigma, sd_level):
    """Per-patient log density of residuals sharing one Normal(0, sd_level) level.

    Covariance sigma^2 I + s^2 11' for the n residuals of a patient: its determinant is
    sigma^(2(n-1)) (sigma^2 + n s^2), and its inverse applied to r gives
    (r'r - s^2 (sum r)^2 / (sigma^2 + n s^2)) / sigma^2 (Sherman-Morrison).
    """
    n = np.bincount(patient, minlength=n_patients).astype(float)
    ss = pt.inc_subtensor(pt.zeros(n_patients)[patient], resid**2)
    s1 = pt.inc_subtensor(pt.zeros(n_patients)[patient], resid)
    s2, t2 = sigma**2, sd_level**2
    denom = s2 + n * t2
    quad = (ss - t2 * s1**2 / denom) / s2
    logdet = (n - 1) * pt.log(s2) + pt.log(denom)
    return -0.5 * (n * np.log(2 * np.pi) + logdet + quad)
