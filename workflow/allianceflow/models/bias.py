"""Publication-bias models of a review: PET, PEESE, a step-function selection model,
and the model-averaged estimate across them and the unadjusted model.

All four (random_effects, pet, peese, selection) are two-level: each effect size is
its own unit, as in the original RoBMA. This is what lets them be compared and
averaged on the same pointwise predictive densities, one per effect size; for a
review with several effect sizes per study it ignores their dependence, which the
report says.

PET (precision-effect test):  y_i ~ Normal(mu + b_pet * se_i, v_i + tau^2)
PEESE (precision-effect estimate with standard error):
                              y_i ~ Normal(mu + b_peese * v_i, v_i + tau^2)
    In both, mu is the effect of a study with no sampling error, the bias-adjusted
    estimate. Small-study effects that come from selection make larger effects
    go with larger standard errors, so the slopes are constrained to the review's
    expected direction (HalfNormal priors, as RoBMA constrains them). Both are sampled
    around the average precision (see `small_study_mean` in models/meta.py).

Step-function selection model (Vevea & Hedges, 1995; Bayesian as in RoBMA): an
    estimate whose one-sided p-value falls in interval j of the cutpoints is
    published with relative probability omega_j (omega = 1 for the most significant
    interval, non-increasing with p). The density of a published estimate is
        f(y_i) = Normal(y_i | mu, v_i + tau^2) * omega_{j(y_i)} / A_i,
        A_i = sum_j omega_j * P(y in interval j | mu, v_i + tau^2).
    Prior: omega_j = sum_{l >= j} delta_l with delta ~ Dirichlet(1, ..., 1), which
    is uniform over non-increasing weights with omega_0 = 1 (RoBMA's cumulative
    Dirichlet). Selection favours effects in the review's expected direction
    (`expected_direction` in review.yaml, positive by default; the one-sided p-value
    is for an effect in that direction): alliance-outcome correlations are expected
    positive, alliance with interpersonal problems negative.

Model averaging: stacking of the four models' leave-one-out predictive
distributions (Yao et al., 2018), with weights from PSIS-LOO (arviz `compare`,
method "stacking"). Posterior model probabilities would need marginal likelihoods
(bridge sampling), which this package does not compute; stacking weights are not
posterior probabilities, and the report says which it shows.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from scipy import stats

from ..errors import ConfigError

BIAS_MODELS = ("pet", "peese", "selection")
AVERAGED_MODELS = ("random_effects", *BIAS_MODELS)


def check_cutpoints(cutpoints: tuple[float, ...]) -> tuple[float, ...]:
    c = tuple(float(x) for x in cutpoints)
    if any(b <= a for a, b in zip(c, c[1:], strict=False)) or not all(0 < x < 1 for x in c):
        raise ConfigError(f"meta.selection_cutpoints must increase strictly within (0, 1); "
                          f"got {list(c)}")
    return c


def interval_labels(cutpoints: tuple[float, ...]) -> list[str]:
    """Names of the p-value intervals: 'p<0.025', '0.025-0.05', ..., '0.5-1'."""
    edges = [0.0, *cutpoints, 1.0]
    return [f"p<{edges[1]:g}" if j == 0 else f"{edges[j]:g}-{edges[j + 1]:g}"
            for j in range(len(edges) - 1)]


def z_thresholds(cutpoints: tuple[float, ...]) -> np.ndarray:
    """z values at which the one-sided p-value crosses each cutpoint, decreasing."""
    return stats.norm.isf(np.asarray(cutpoints, dtype=float))


def p_interval(yi: np.ndarray, sei: np.ndarray, cutpoints: tuple[float, ...],
               direction: int = 1) -> np.ndarray:
    """Index of the one-sided p-value interval of each estimate (0 = most significant)."""
    z = direction * np.asarray(yi, float) / np.asarray(sei, float)
    return (z[:, None] < z_thresholds(cutpoints)[None, :]).sum(axis=1)


def _normal_cdf(x):
    return 0.5 * pt.erfc(-x / np.sqrt(2.0))


def selection_logp(y, mean, sigma, se, omega, cutpoints: tuple[float, ...]):
    """Log density of each published estimate under the step-function selection model.

    `omega` holds one weight per p-value interval (most significant first);
    `sigma` is the marginal SD sqrt(v + tau^2); `se` the sampling SE that defines p.
    """
    t = pt.as_tensor(z_thresholds(cutpoints))
    # P(y < se * t_k) for each threshold, decreasing thresholds -> decreasing cdf
    cdf = _normal_cdf((se[:, None] * t[None, :] - mean[:, None]) / sigma[:, None])
    ones = pt.ones_like(cdf[:, :1])
    zeros = pt.zeros_like(cdf[:, :1])
    upper = pt.concatenate([ones, cdf], axis=1)
    lower = pt.concatenate([cdf, zeros], axis=1)
    probs = upper - lower  # P(interval j), j = 0 .. K
    log_norm = pt.log(pt.sum(probs * omega[None, :], axis=1))
    j = pt.sum(pt.lt((y / se)[:, None], t[None, :]), axis=1)
    base = pm.logp(pm.Normal.dist(mean, sigma), y)
    return base + pt.log(omega[j]) - log_norm


def selection_weights(n_intervals: int) -> pt.TensorVariable:
    """Non-increasing publication weights with omega_0 = 1 (cumulative Dirichlet)."""
    delta = pm.Dirichlet("selection_delta", a=np.ones(n_intervals))
    omega = pt.cumsum(delta[::-1])[::-1]
    return pm.Deterministic("omega", omega, dims="p_interval")


def constant_quantities(posterior: xr.Dataset) -> list[str]:
    """What the selection model holds constant by construction, by the name the summary
    and the convergence gate give it: the weight of the most significant interval,
    omega_0 = 1 (the sum of the Dirichlet increments; rounding aside). It has no R-hat
    or ESS, and the gate leaves out exactly this element."""
    if "omega" not in posterior:
        return []
    return [f"omega[{posterior['omega'].coords['p_interval'].values[0]}]"]


def mixture_draws(draws: dict[str, np.ndarray], weights: dict[str, float],
                  seed: int) -> np.ndarray:
    """Draws of the model-averaged posterior: each model's draws taken in proportion to
    its weight (total size that of one model's draws)."""
    rng = np.random.default_rng(seed)
    size = min(len(v) for v in draws.values())
    names = list(draws)
    p = np.array([max(weights.get(n, 0.0), 0.0) for n in names])
    counts = rng.multinomial(size, p / p.sum())
    parts = [rng.choice(draws[n], size=c, replace=False) for n, c in zip(names, counts,
                                                                          strict=True) if c]
    return np.concatenate(parts)


def selection_scalar_draws(posterior: xr.Dataset) -> xr.Dataset:
    """omega -> omega[<interval>] scalars; the Dirichlet increments are dropped."""
    out = posterior.drop_vars([v for v in ("selection_delta",) if v in posterior])
    if "omega" in out:
        for label in out["omega"].coords["p_interval"].values:
            out[f"omega[{label}]"] = out["omega"].sel(p_interval=label, drop=True)
        out = out.drop_vars(["omega", "p_interval"], errors="ignore")
    drop = [d for d in out.dims if d.startswith("selection_delta")]
    return out.drop_dims(drop) if drop else out


def selected_draws(mean: np.ndarray, sd: np.ndarray, se: np.ndarray, omega: np.ndarray,
                   cutpoints: tuple[float, ...], direction: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Published estimates under the selection model: the p-value interval is drawn with
    probability P(interval) x omega (normalised), then the estimate from the normal
    truncated to that interval. mean, sd: (draws, n); se: (n,); omega: (draws, K)."""
    mean, sd = np.broadcast_arrays(mean, sd)
    se = np.broadcast_to(se, mean.shape)
    # interval edges on the direction-signed scale, most significant interval first
    edges = np.concatenate([[np.inf], z_thresholds(cutpoints), [-np.inf]])
    m = direction * mean
    cdf = stats.norm.cdf((se[..., None] * edges[None, None, :] - m[..., None])
                         / sd[..., None])
    probs = (cdf[..., :-1] - cdf[..., 1:]) * omega[:, None, :]
    cum = np.cumsum(probs, axis=-1)
    pick = (rng.uniform(size=mean.shape)[..., None] * cum[..., -1:] > cum).sum(axis=-1)
    upper = np.take_along_axis(cdf, pick[..., None], -1)[..., 0]
    lower = np.take_along_axis(cdf, pick[..., None] + 1, -1)[..., 0]
    u = lower + (upper - lower) * rng.uniform(size=mean.shape)
    z = stats.norm.ppf(np.clip(u, 1e-300, 1 - 1e-16))
    return direction * (m + sd * z)
