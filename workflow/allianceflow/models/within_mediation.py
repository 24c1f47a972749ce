"""Within-person (1-1-1) multilevel mediation, equivalent to bmlm's `mlm` (Vuorre & Bolger, 2017).

Person j, occasion i, with x and m person-mean centred (the within-person parts):
    m_ij = dm + u_dm_j + (a + u_a_j) x_ij                                    + e_m
    y_ij = dy + u_dy_j + (c_prime + u_cp_j) x_ij + (b + u_b_j) m_ij           + e_y
    (u_a, u_b, u_cp)_j ~ MVN(0, diag(sd) R diag(sd)),  R ~ LKJ(eta)
    u_dm_j ~ Normal(0, sd_dm), u_dy_j ~ Normal(0, sd_dy)
    e_m ~ Normal(0, sigma_m), e_y ~ Normal(0, sigma_y)

One difference from bmlm, for speed and sampling geometry: the random intercepts are
not correlated with the random slopes. They are Gaussian and enter linearly, so each
person's intercept is integrated out exactly (compound-symmetric likelihood, see
models/gaussian.py): no intercept latents, no funnel when their SD is near zero (as
in pre-centred data), and the log-likelihood comes per person (leave-one-person-out
LOO). None of the reported quantities involves intercept-slope correlations; the blch9
test shows the published table is reproduced.

Derived next to the model that defines them (Kenny, Korchmaros & Bolger, 2003):
    cov_ab = sd_a sd_b R[a, b]            the covariance of the person-level a and b paths
    me     = a b + cov_ab                 the average within-person indirect effect
    c      = c_prime + me                 the total effect
    pme    = me / c                       the proportion mediated
    person j's indirect effect (a + u_a_j)(b + u_b_j)

Extensions for trial data (both off for data that are already centred, as blch9):
- `centre`: x and m are centred on each person's mean, and the person means enter as
  between-person predictors (a_between in the m equation, c_prime_between and
  b_between in the y equation), so within- and between-person paths are estimated
  separately; me_between = a_between b_between.
- `lag` L > 0: x at session t, m at t + L, y at t + 2L (Lindqvist et al., 2023).
- `time`: a linear session trend in both equations, so that shared trends over
  treatment are not mistaken for within-person effects.

Priors, on the data's own scales (sx, sm, sy are the SDs of the rows used): paths
a ~ Normal(0, sm/sx), b ~ Normal(0, sy/sm), c_prime ~ Normal(0, sy/sx) - a one-SD change
in x moving m by one SD is already a very large within-person effect; intercepts
Normal(mean, 2 SD); random-effect SDs and residual SDs HalfNormal(SD of the outcome
of their equation, divided by the predictor's SD for slopes); LKJ(eta = 4) on the
correlations of the person-level a, b and c_prime (each correlation's prior is then
Beta(4.5, 4.5) on (-1, 1), SD 0.32): with a handful of occasions per person these
correlations are weakly identified, and with eta = 2 the sampler mixed them too slowly
to pass the gate on the default adolescent trial, whose paths do not vary by person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from ..checks import part_values
from .gaussian import (
    compound_symmetric_loglik,
    random_slopes_marginal_loglik,
    simulate_random_slopes,
)
from .multilevel import patient_weight, weighted_total
from .predictive import Predictive

# order of the correlated person-level paths
EFFECTS = ("a", "b", "c_prime")
PARAMETERS = ["a", "b", "c_prime", "c", "me", "pme", "cov_ab", "corr_ab", "sd_a", "sd_b",
              "sd_c_prime", "sd_dm", "sd_dy", "sigma_m", "sigma_y"]
BETWEEN_PARAMETERS = ["a_between", "b_between", "c_prime_between", "me_between"]
TIME_PARAMETERS = ["time_m", "time_y"]
# the proportion mediated and its denominator: near-zero total effects make it unbounded
RATIOS = {"pme": "c"}


@dataclass(frozen=True)
class WithinSpec:
    x: str
    m: str
    y: str
    lag: int = 0
    centre: bool = True
    time: bool = False
    lkj_eta: float = 4.0


@dataclass(frozen=True)
class WithinData:
    """Model rows: person index, x, m; y rows are those with y observed.

    `m` is the mediator as the outcome of its equation (as measured: its person mean is
    the random intercept's business); `m_within` is its within-person part, the predictor
    of y. Without centring the two are the same column.
    """

    person: np.ndarray
    x: np.ndarray
    m: np.ndarray
    m_within: np.ndarray
    y: np.ndarray  # NaN where y is missing: such rows inform only the m equation
    time: np.ndarray
    x_mean: np.ndarray  # per person, centred on the grand mean (zeros if not centring)
    m_mean: np.ndarray
    n_persons: int


def lagged_rows(sessions: pd.DataFrame, spec: WithinSpec, person: str = "patient",
                session: str = "session") -> pd.DataFrame:
    """(person, time, x_t, m_{t+L}, y_{t+2L}) on each person's session grid.

    Sessions are positions on the trial's grid (the cleaned sessions table has every
    person x session cell), so 'the next session' is the next scheduled one, observed
    or not. Rows need x and m; y may be missing.
    """
    df = sessions.sort_values([person, session])
    by = df.groupby(person, sort=False)
    out = pd.DataFrame({
        "person": df[person].to_numpy(),
        "time": df[session].to_numpy(dtype=float),
        "x": df[spec.x].to_numpy(dtype=float),
        "m": by[spec.m].shift(-spec.lag).to_numpy(dtype=float),
        "y": by[spec.y].shift(-2 * spec.lag).to_numpy(dtype=float),
    })
    return out.dropna(subset=["x", "m"]).reset_index(drop=True)


def centred(person: np.ndarray, values: np.ndarray, n: int, centre: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """Values minus their person's mean, and the person means centred on their mean
    (the between-person predictor); without centring, the values and zeros."""
    if not centre:
        return values, np.zeros(n)
    means = np.bincount(person, values, n) / np.bincount(person, None, n)
    return values - means[person], means - means.mean()


def prepare(rows: pd.DataFrame, spec: WithinSpec) -> WithinData:
    """Index persons 0..J-1 (no identifiers are kept) and centre x and m within person."""
    # own, writable copies: nutpie refuses read-only arrays that pandas may hand out
    person = np.array(pd.factorize(rows["person"], sort=True)[0], dtype=np.int64)
    x = np.array(rows["x"], dtype=float)
    m = np.array(rows["m"], dtype=float)
    n = int(person.max()) + 1
    x_within, x_mean = centred(person, x, n, spec.centre)
    m_within, m_mean = centred(person, m, n, spec.centre)
    time = np.array(rows["time"], dtype=float)
    return WithinData(person=person, x=x_within, m=m, m_within=m_within,
                      y=np.array(rows["y"], dtype=float), time=time - time.mean(),
                      x_mean=x_mean, m_mean=m_mean, n_persons=n)


def build_model(data: WithinData, spec: WithinSpec, weighted: bool = False) -> pm.Model:
    """`weighted`: a weight per person on the likelihood (K-fold refits)."""
    has_y = ~np.isnan(data.y)
    pj, x, m = data.person, data.x, data.m
    py, xy, y = pj[has_y], x[has_y], data.y[has_y]
    sx, sm, sy = x.std(), data.m_within.std(), y.std()
    n = data.n_persons
    coords = {"person": np.arange(n), "effect": list(EFFECTS), "effect_": list(EFFECTS)}
    with pm.Model(coords=coords) as model:
        # the measured values as data (priors above are scaled by the dataset itself),
        # so that simulation-based calibration can refit the compiled model
        m_data = pm.Data("m", m)
        my = pm.Data("m_within_y", data.m_within[has_y])
        m_mean = pm.Data("m_mean", data.m_mean)
        y_data = pm.Data("y", y)
        dm = pm.Normal("dm", m.mean(), 2 * m.std())
        dy = pm.Normal("dy", y.mean(), 2 * sy)
        a = pm.Normal("a", 0.0, sm / sx)
        b = pm.Normal("b", 0.0, sy / sm)
        c_prime = pm.Normal("c_prime", 0.0, sy / sx)
        # SDs in units of `scales` (so HalfNormal(scales) overall): LKJCholeskyCov's
        # initial point draws its sd_dist with scipy, which fails on array-valued sigmas
        scales = np.array([sm / sx, sy / sm, sy / sx])
        chol, corr, sds = pm.LKJCholeskyCov(
            "person_cov", n=len(EFFECTS), eta=spec.lkj_eta,
            sd_dist=pm.HalfNormal.dist(1.0, shape=len(EFFECTS)), compute_corr=True,
            store_in_trace=False)
        z = pm.Normal("z", 0.0, 1.0, dims=("person", "effect"))
        u = pm.Deterministic("u", (z[:, None, :] * chol[None, :, :]).sum(axis=-1) * scales,
                             dims=("person", "effect"))
        pm.Deterministic("sd_person", sds * scales, dims="effect")
        pm.Deterministic("corr_person", corr, dims=("effect", "effect_"))

        # the fixed parts of each row's mean; the person's paths u are added below
        fixed_m = dm + a * x
        fixed_y = dy + b * my + c_prime * xy
        if spec.centre:
            fixed_m += pm.Normal("a_between", 0.0, sm / sx) * data.x_mean[pj]
            c_between = pm.Normal("c_prime_between", 0.0, sy / sx)
            b_between = pm.Normal("b_between", 0.0, sy / sm)
            fixed_y += c_between * data.x_mean[py] + b_between * m_mean[py]
        if spec.time:
            st = max(data.time.std(), 1e-9)
            fixed_m += pm.Normal("time_m", 0.0, m.std() / st) * data.time
            fixed_y += pm.Normal("time_y", 0.0, sy / st) * data.time[has_y]
        mu_m = fixed_m + u[pj, 0] * x
        mu_y = fixed_y + u[py, 1] * my + u[py, 2] * xy
        sigma_m, sd_dm = pm.HalfNormal("sigma_m", m.std()), pm.HalfNormal("sd_dm", m.std())
        sigma_y, sd_dy = pm.HalfNormal("sigma_y", sy), pm.HalfNormal("sd_dy", sy)
        ll_m = compound_symmetric_loglik(m_data - mu_m, pj, n, sigma_m, sd_dm)
        ll_y = compound_symmetric_loglik(y_data - mu_y, py, n, sigma_y, sd_dy)
        model.predictive_parts = {
            "m": {"mean": mu_m, "sigma": sigma_m, "sd_level": sd_dm},
            "y": {"mean": mu_y, "sigma": sigma_y, "sd_level": sd_dy}}
        model.fixed_parts = {"m": fixed_m, "y": fixed_y}  # for person_loglik
        # the paths drawn afresh per person (mixed replicates, for LOO-PIT by person)
        scaled = chol * scales[:, None]
        cov_u = scaled @ scaled.T
        model.mixed_parts = {
            "m": {"mean": fixed_m, "sigma": sigma_m, "sd_level": sd_dm, "cov_u": cov_u},
            "y": {"mean": fixed_y, "sigma": sigma_y, "sd_level": sd_dy, "cov_u": cov_u}}
        # K-fold refits weigh each person (0 = left out)
        pm.Potential("loglik", weighted_total(ll_m + ll_y, patient_weight(n, weighted)))
    return model


def person_loglik(model: pm.Model, post: xr.Dataset, data: WithinData) -> xr.DataArray:
    """Each person's log density of their m and y rows per draw, with their paths
    (a_j, b_j, c'_j) and intercepts integrated out (gaussian.random_slopes_marginal_loglik):
    the per-person density for leave-one-person-out. Given the sampled paths, a person's
    own rows would dominate their importance weights."""
    has_y = ~np.isnan(data.y)
    fixed = part_values(model, model.fixed_parts, post)
    flat = {v: post[v].to_numpy().reshape(-1, *post[v].shape[2:])
            for v in ("sd_person", "corr_person", "sigma_m", "sd_dm", "sigma_y", "sd_dy")}
    sd = flat["sd_person"]
    cov_u = sd[:, :, None] * flat["corr_person"] * sd[:, None, :]
    zero_m, zero_y = np.zeros(len(data.m)), np.zeros(int(has_y.sum()))
    blocks = [
        (data.m - fixed["m"], np.column_stack([data.x, zero_m, zero_m]), data.person,
         flat["sigma_m"], flat["sd_dm"]),
        (data.y[has_y] - fixed["y"],
         np.column_stack([zero_y, data.m_within[has_y], data.x[has_y]]),
         data.person[has_y], flat["sigma_y"], flat["sd_dy"])]
    ll = random_slopes_marginal_loglik(blocks, cov_u, data.n_persons)
    return xr.DataArray(ll.reshape(post.sizes["chain"], post.sizes["draw"], -1),
                        dims=("chain", "draw", "person"))


def predictive(data: WithinData, spec: WithinSpec, model: pm.Model,
               ranges: dict[str, list[float]]) -> dict[str, Predictive]:
    """Replicated mediator and outcome, each person's intercepts and paths (a_j, b_j,
    c'_j) drawn again (mixed replicates: a replicate does not know the person's own
    paths, so LOO-PIT by person can be judged), given the observed x (and m, for y)."""
    has_y = ~np.isnan(data.y)
    zero_m, zero_y = np.zeros(len(data.m)), np.zeros(int(has_y.sum()))
    rows = {"m": (data.m, data.person, spec.m, np.column_stack([data.x, zero_m, zero_m])),
            "y": (data.y[has_y], data.person[has_y], spec.y,
                  np.column_stack([zero_y, data.m_within[has_y], data.x[has_y]]))}
    return {key: Predictive(
        observed=values, group=person, cluster=person, parts=model.mixed_parts[key],
        simulate=lambda v, rng, person=person, z=z: simulate_random_slopes(
            v, z, person, data.n_persons, rng),
        label=measure, bounds=tuple(ranges.get(measure, (-np.inf, np.inf))),
        group_name="person")
        for key, (values, person, measure, z) in rows.items()}


def constant_quantities(posterior: xr.Dataset) -> list[str]:
    """corr_person's diagonal, 1 by construction (rounding aside): it has no R-hat or ESS,
    and the convergence gate leaves out exactly these elements (by the names
    fitting.element_label gives them)."""
    return [f"corr_person[{e}, {e}]"
            for e in posterior["corr_person"].coords["effect"].values]


def derived_quantities(post: xr.Dataset, spec: WithinSpec) -> xr.Dataset:
    """The bmlm quantities (me, c, pme, cov_ab) and the person-level paths, per draw."""
    sd = post["sd_person"]
    sd_of = {e: sd.isel(effect=i, drop=True) for i, e in enumerate(EFFECTS)}
    corr_ab = post["corr_person"].isel(effect=0, effect_=1, drop=True)
    cov_ab = sd_of["a"] * sd_of["b"] * corr_ab
    me = post["a"] * post["b"] + cov_ab
    c = post["c_prime"] + me
    u = post["u"]
    a_j = post["a"] + u.isel(effect=0, drop=True)
    b_j = post["b"] + u.isel(effect=1, drop=True)
    out = {
        "c": c, "me": me, "pme": me / c, "cov_ab": cov_ab, "corr_ab": corr_ab,
        "sd_a": sd_of["a"], "sd_b": sd_of["b"], "sd_c_prime": sd_of["c_prime"],
        "a_person": a_j, "b_person": b_j, "me_person": a_j * b_j,
    }
    if spec.centre:
        out["me_between"] = post["a_between"] * post["b_between"]
    return xr.Dataset(out)


def reported_parameters(spec: WithinSpec) -> list[str]:
    return (PARAMETERS + (BETWEEN_PARAMETERS if spec.centre else [])
            + (TIME_PARAMETERS if spec.time else []))
