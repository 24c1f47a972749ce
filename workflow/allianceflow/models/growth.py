"""Alliance-outcome growth model: symptoms over sessions with the alliance split into its
between-patient and within-patient parts (Zilcha-Mano & Errazuriz, 2015; Falkenstroem et
al., 2017).

Time f runs from 0 at session `start` to 1 at session `end` (trial.yaml `change`, else
the first and last scheduled sessions), so slopes are changes over the course.

Alliance, patient i at session t (latent decomposition, fitted jointly with the outcome):
    A_it  = L_i + T_i (f - 1/2) + delta_it          observed as A_it + e_it
    L_i   = alpha_0 + alpha_arm x_i + v_therapist + v_site + l_i      the patient's mean
    T_i   = alpha_time + alpha_arm:time x_i + t_i                     the patient's trend
    (l_i, t_i) correlated (LKJ);  delta_it ~ N(0, sd_alliance_within)
e_it is the error of a session's score, whose SD is estimated from the items at cleaning
(scoring.score_error_variance) and held fixed; it is 0 for single-column measures.

Outcome:
    y_it = intercept + time f + arm x_i + arm:time x_i f + beta'w_i + (beta:time)'w_i f
           + alliance_between (L_i - cL) + alliance_trend:time (T_i - cT) f
           + alliance_within delta_it + u_i + s_i f + w_therapist + w_site + eps_it
    (u_i, s_i) correlated (LKJ);  eps_it ~ N(0, sigma)

Why latent parts rather than observed person means: an observed patient mean or trend
carries the sessions' error (and the trend's estimation error), which attenuates the
between effects and leaks into the arm effect; and a deviation from the patient's mean
still carries the patient's alliance trend, which is confounded with their symptom
slope. With L_i and T_i in the model, delta_it is the session's deviation from the
patient's own trajectory: the within effect. Given the observed score, delta_it is
normal with mean lambda r_it and variance lambda sd_e^2 (r_it = A_obs - L_i - T_i (f -
1/2), lambda = sd_w^2 / (sd_w^2 + sd_e^2), the reliability of a within deviation), so it
is integrated out exactly: y_it | A_obs ~ N(mu_it + b_w lambda r_it, sigma^2 + b_w^2
lambda sd_e^2). Sessions with the outcome but no alliance get N(mu_it, sigma^2 + b_w^2
sd_w^2); sessions with alliance but no outcome inform the alliance part. Missed
sessions and dropout are therefore handled by the likelihood (missing at random).

How (l_i, t_i) are sampled: neither centred (a funnel where patients barely differ in
their alliance, as in a trial whose alliance is stable) nor non-centred (a ridge where
each patient's many scores pin their own level down), but through standard normals
given the patient's own alliance scores, (l_i, t_i) = E[. | scores] + R z_i with R R' the
covariance given the scores (gaussian.intercept_slope_given_data). The alliance scores'
likelihood is then their marginal, with l_i and t_i integrated out, and z_i is close to
standard normal whatever the SDs, because what the outcome adds about a patient's
alliance is small next to what their alliance scores say. Non-centred and centred are
its two limits, reached per patient and draw from the data.

`decomposition: observed` is the classic alternative (and the one most published alliance
studies used): each patient's OLS alliance line gives their level at mid-course and their
trend, plugged in as known, and the session's residual from it is the within part. It
attenuates the between-patient effects (an OLS trend from a dozen sessions is a noisy
measure of the patient's trend) and leaks part of the trend effect into the arm x time
effect; it is there to reproduce such analyses, and it is what the agreement test with
statsmodels' MixedLM compares (tests/validation/test_trial_models_recovery.py). Sessions
without an alliance score and patients with fewer than 2 are then left out of the outcome
part.

Moderation: alliance_within:<moderator> for session or patient moderators (centred), and
with `by_arm` alliance_within:arm and alliance_between:arm.

Priors, with s_y and s_A the SDs of the outcome and alliance over the rows used:
intercept ~ N(mean_y, 2 s_y); time, arm, arm:time, covariate effects (per SD) ~ N(0,
s_y); alliance effects ~ N(0, s_y / s_A) (one SD of alliance moving the outcome by one
SD of the outcome is already very large); alliance intercept ~ N(mean_A, 2 s_A), its
time and arm effects N(0, s_A); every SD HalfNormal(s) of its equation (therapist and
site SDs HalfNormal(s / 2)); correlations LKJ(2), i.e. Beta(2, 2) on (rho + 1) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .gaussian import (
    intercept_slope_given_data,
    intercept_slope_level_information,
    intercept_slope_loglik,
    intercept_slope_posterior,
    simulate_intercept_slope,
)
from .multilevel import (
    PatientDesign,
    complete_patients,
    fixed_effects,
    group_codes,
    group_intercepts,
    pair_prior,
    patient_design,
    patient_weight,
    weighted_total,
)
from .predictive import Predictive


@dataclass(frozen=True)
class GrowthSpec:
    outcome: str
    alliance: str
    start: int
    end: int
    arm: bool = False
    covariates: tuple[str, ...] = ()
    therapist: bool = False
    site: bool = False
    moderators: tuple[str, ...] = ()
    by_arm: bool = False
    error_sd: float = 0.0  # measurement-error SD of a session's alliance score
    decomposition: str = "latent"  # or "observed": OLS patient means and trends plugged in
    lkj_eta: float = 2.0


@dataclass(frozen=True)
class GrowthData:
    patient: np.ndarray  # row -> analysed patient 0..n-1
    f: np.ndarray
    alliance: np.ndarray  # NaN where not observed
    y: np.ndarray  # NaN where not observed
    moderators: np.ndarray  # rows x moderators, centred; NaN where not observed
    design: PatientDesign
    therapist: np.ndarray | None
    site: np.ndarray | None
    n_patients: int
    n_excluded: int
    alliance_centre: float  # cL
    trend_centre: float  # cT
    observed_parts: tuple[np.ndarray, np.ndarray] | None = None  # OLS level at f=1/2, trend
    n_too_few_alliance: int = 0  # patients left out by the observed decomposition


def course_time(session: np.ndarray, start: int, end: int) -> np.ndarray:
    return (np.asarray(session, dtype=float) - start) / (end - start)


def observed_parts(patient: np.ndarray, f: np.ndarray, value: np.ndarray, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's OLS line of `value` on f: its level at f = 1/2 and its slope (NaN
    with fewer than 2 distinct times)."""
    ok = ~np.isnan(value)
    p, x, v = patient[ok], f[ok], value[ok]
    cnt = np.bincount(p, minlength=n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.bincount(p, x, n) / cnt
        mv = np.bincount(p, v, n) / cnt
        sxx = np.bincount(p, (x - mx[p]) ** 2, n)
        sxv = np.bincount(p, (x - mx[p]) * (v - mv[p]), n)
        slope = np.where(sxx > 0, sxv / sxx, np.nan)
        return mv + slope * (0.5 - mx), slope



def prepare(sessions: pd.DataFrame, patients: pd.DataFrame, spec: GrowthSpec) -> GrowthData:
    """Rows of sessions in [start, end] where the outcome or the alliance was observed, for
    patients with arm and covariates known; patients indexed 0..n-1 (no identifiers)."""
    keep = complete_patients(patients, spec.arm, spec.covariates)
    pts = patients[keep].reset_index(drop=True)
    window = sessions[(sessions["session"] >= spec.start) & (sessions["session"] <= spec.end)
                      & sessions["patient"].isin(pts["patient"])]
    window = window[window[[spec.outcome, spec.alliance]].notna().any(axis=1)]
    too_few = 0
    if spec.decomposition == "observed":  # a patient's OLS line needs 2 alliance sessions
        seen = window[window[spec.alliance].notna()].groupby("patient")["session"].nunique()
        enough = seen[seen >= 2].index
        too_few = int(window.loc[~window["patient"].isin(enough), "patient"].nunique())
        window = window[window["patient"].isin(enough)]
    pts = pts[pts["patient"].isin(window["patient"])].reset_index(drop=True)
    index = pd.Series(np.arange(len(pts)), index=pts["patient"])
    patient = np.array(index[window["patient"]].to_numpy(), dtype=np.int64)
    f = course_time(window["session"].to_numpy(), spec.start, spec.end)
    alliance = np.array(window[spec.alliance], dtype=float)
    mods = []
    for mod in spec.moderators:
        values = (window[mod] if mod in window else
                  pd.Series(pts.set_index("patient")[mod].reindex(window["patient"]).to_numpy()))
        v = np.array(values, dtype=float)
        mods.append(v - np.nanmean(v))
    levels, trends = observed_parts(patient, f, alliance, len(pts))
    return GrowthData(
        patient=patient, f=f, alliance=alliance, y=np.array(window[spec.outcome], dtype=float),
        moderators=np.column_stack(mods) if mods else np.zeros((len(f), 0)),
        design=patient_design(pts, spec.arm, spec.covariates),
        therapist=group_codes(pts, "therapist") if spec.therapist else None,
        site=group_codes(pts, "site") if spec.site else None,
        n_patients=len(pts), n_excluded=int((~keep).sum()),
        alliance_centre=float(np.nanmean(alliance)),
        trend_centre=float(np.nanmean(trends)) if np.isfinite(trends).any() else 0.0,
        observed_parts=(levels, trends) if spec.decomposition == "observed" else None,
        n_too_few_alliance=too_few,
    )


def alliance_part(data: GrowthData, spec: GrowthSpec, x_arm, s_a: float, alliance_seen):
    """Latent patient mean L and trend T of the alliance, and the alliance's likelihood.
    Returns (L, T, each row's expected alliance, sd_alliance_within, var_a, the replicated
    alliance's parts); with the observed decomposition, the OLS levels and trends, the
    rows' OLS values and None thrice (the alliance is then not modelled).

    Each patient's (L_i, T_i) is written through standard normals scaled by what their
    own alliance scores say (gaussian.intercept_slope_given_data): non-centred where a
    patient has few scores or patients barely differ, centred where the scores pin the
    patient down, chosen per patient and draw from the data. The alliance scores' density
    is then their marginal, the latent parts integrated out."""
    if data.observed_parts is not None:
        level, trend = data.observed_parts
        return (level, trend, level[data.patient] + trend[data.patient] * (data.f - 0.5),
                None, None, None)
    a_obs = data.alliance[~np.isnan(data.alliance)]
    sd_l, sd_t, rho = pair_prior(
        ("sd_alliance_level", "sd_alliance_trend", "corr_alliance_level_trend"), (s_a, s_a),
        spec.lkj_eta)
    sd_w = pm.HalfNormal("sd_alliance_within", s_a)
    var_a = sd_w**2 + spec.error_sd**2
    has_a = ~np.isnan(data.alliance)
    pa, fa = data.patient[has_a], data.f[has_a] - 0.5
    args = (fa, var_a, pa, data.n_patients, sd_l, sd_t, rho)
    level = pm.Normal("alliance_intercept", a_obs.mean(), 2 * s_a) * np.ones(data.n_patients)
    trend = pm.Normal("alliance_time", 0.0, s_a) * np.ones(data.n_patients)
    if x_arm is not None:
        level = level + pm.Normal("alliance_arm", 0.0, s_a) * x_arm
        trend = trend + pm.Normal("alliance_arm:time", 0.0, s_a) * x_arm
    if data.therapist is not None or data.site is not None:
        information = intercept_slope_level_information(*args)
    if data.therapist is not None:
        level = level + group_intercepts("sd_therapist_alliance", data.therapist, s_a / 2,
                                         information)
    if data.site is not None:
        level = level + group_intercepts("sd_site_alliance", data.site, s_a / 2, information)
    fixed_rows = level[pa] + trend[pa] * fa
    resid = alliance_seen - fixed_rows
    # the per-patient marginal is also what LOO-PIT of the alliance weighs by (given the
    # latent values, a patient's own scores would dominate their weights)
    marginal = pm.Deterministic("loglik_alliance_patient", intercept_slope_loglik(resid, *args))
    pm.Potential("alliance_loglik", marginal.sum())
    z = pm.Normal("z_alliance_patient", 0.0, 1.0, shape=(data.n_patients, 2))
    deviation = intercept_slope_given_data(resid, *args, z)
    lt_level, lt_trend = level + deviation[:, 0], trend + deviation[:, 1]
    row_mean = lt_level[data.patient] + lt_trend[data.patient] * (data.f - 0.5)
    # replicated alliance: each patient's level and trend drawn again (mixed replicates,
    # so that a replicate does not know the patient's own scores)
    parts = {"mean": fixed_rows, "var": var_a, "sd_level": sd_l, "sd_slope": sd_t, "rho": rho}
    return lt_level, lt_trend, row_mean, sd_w, var_a, parts


def outcome_rows(data: GrowthData) -> np.ndarray:
    """Rows whose outcome enters the likelihood: a moderator must be known where the
    within effect is moderated, and with the observed decomposition the alliance too
    (its deviation is the predictor)."""
    has_y = ~np.isnan(data.y) & ~np.isnan(data.moderators).any(axis=1)
    if data.observed_parts is not None:
        has_y &= ~np.isnan(data.alliance)
    return has_y


def predictive(data: GrowthData, spec: GrowthSpec, model: pm.Model,
               ranges: dict[str, list[float]]) -> dict[str, Predictive]:
    """Replicated outcomes (each patient's random level and slope drawn again, given the
    observed alliance) and, with the latent decomposition, replicated alliance scores."""
    has_y, has_a = outcome_rows(data), ~np.isnan(data.alliance)
    pj, f = data.patient[has_y], data.f[has_y]
    parts = model.predictive_parts
    blocks = {"outcome": Predictive(
        observed=data.y[has_y], group=pj, cluster=pj, parts=parts["outcome"],
        simulate=lambda v, rng: simulate_intercept_slope(v, f, pj, data.n_patients, rng),
        label=spec.outcome, bounds=tuple(ranges.get(spec.outcome, (-np.inf, np.inf))),
        group_name="patient")}
    if "alliance" in parts:
        pa, fa = data.patient[has_a], data.f[has_a] - 0.5
        blocks["alliance"] = Predictive(
            observed=data.alliance[has_a], group=pa, cluster=pa, parts=parts["alliance"],
            simulate=lambda v, rng: simulate_intercept_slope(v, fa, pa, data.n_patients, rng),
            label=spec.alliance, bounds=tuple(ranges.get(spec.alliance, (-np.inf, np.inf))),
            group_name="patient", loglik="loglik_alliance_patient")
    return blocks


def build_model(data: GrowthData, spec: GrowthSpec, shown: np.ndarray | None = None,
                weighted: bool = False) -> pm.Model:
    """The joint alliance-outcome model. `shown`: patients (indices) whose expected
    outcome trajectory the report draws; their fixed-part level and slope and the
    conditional distribution of their random level and slope are kept per draw.
    `weighted`: a weight per patient on the outcome's likelihood (K-fold refits)."""
    y_obs = data.y[~np.isnan(data.y)]
    a_obs = data.alliance[~np.isnan(data.alliance)]
    s_y, s_a = float(y_obs.std()), float(a_obs.std())
    pj, f = data.patient, data.f
    names = data.design.names
    x = data.design.x
    x_arm = x[:, names.index("arm")] if "arm" in names else None
    has_a = ~np.isnan(data.alliance)
    with pm.Model() as model:
        # the measured values as data (the priors are scaled by the dataset itself), so
        # that simulation-based calibration can refit the compiled model
        alliance_seen = pm.Data("alliance_seen", data.alliance[has_a])
        level, trend, a_mean, sd_w, var_a, alliance_parts = alliance_part(
            data, spec, x_arm, s_a, alliance_seen)
        alliance = pt.zeros(len(data.alliance))[np.flatnonzero(has_a)].set(alliance_seen)
        if sd_w is None:  # observed decomposition: the observed deviation is the within part
            e2, lam, sd_w = 0.0, 1.0, 0.0
        else:
            e2 = spec.error_sd**2
            lam = pm.Deterministic("reliability_within", sd_w**2 / var_a)

        b_w = pm.Normal("alliance_within", 0.0, s_y / s_a)
        if spec.by_arm and x_arm is not None:
            b_w = b_w + pm.Normal("alliance_within:arm", 0.0, s_y / s_a) * x_arm[pj]
        for k, mod in enumerate(spec.moderators):
            sd_mod = float(np.nanstd(data.moderators[:, k])) or 1.0
            coef = pm.Normal(f"alliance_within:{mod}", 0.0, s_y / s_a / sd_mod)
            b_w = b_w + coef * np.nan_to_num(data.moderators[:, k])
        has_y = outcome_rows(data)
        b_w_rows = b_w if b_w.ndim == 0 else b_w[has_y]
        # one variance for every outcome row where they all have the alliance and the
        # within effect is not moderated (gaussian._intercept_slope_terms: cheaper)
        extra = (lam * e2 if has_a[has_y].all()
                 else pt.where(has_a[has_y], lam * e2, sd_w**2))
        sigma = pm.HalfNormal("sigma", s_y)
        sd0, sd1, rho = pair_prior(("sd_intercept", "sd_slope", "corr_intercept_slope"),
                                   (s_y, s_y), spec.lkj_eta)
        var_y = sigma**2 + b_w_rows**2 * extra

        beta = fixed_effects(names, s_y)
        beta_t = fixed_effects(names, s_y, suffix=":time")
        between = pm.Normal("alliance_between", 0.0, s_y / s_a)
        if spec.by_arm and x_arm is not None:
            between = between + pm.Normal("alliance_between:arm", 0.0, s_y / s_a) * x_arm
        patient_level = (pm.Normal("intercept", y_obs.mean(), 2 * s_y) + pt.dot(x, beta)
                         + between * (level - data.alliance_centre))
        patient_slope = (pm.Normal("time", 0.0, s_y) + pt.dot(x, beta_t)
                         + pm.Normal("alliance_trend:time", 0.0, s_y / s_a)
                         * (trend - data.trend_centre))
        if data.therapist is not None or data.site is not None:
            information = intercept_slope_level_information(
                f[has_y], var_y, pj[has_y], data.n_patients, sd0, sd1, rho)
        if data.therapist is not None:
            patient_level += group_intercepts("sd_therapist", data.therapist, s_y / 2,
                                              information)
        if data.site is not None:
            patient_level += group_intercepts("sd_site", data.site, s_y / 2, information)
        mu_y = patient_level[pj] + patient_slope[pj] * f

        r = alliance - a_mean
        shift = pt.where(has_a[has_y], lam * r[has_y], 0.0)
        resid = pm.Data("outcome", data.y[has_y]) - mu_y[has_y] - b_w_rows * shift
        ll = intercept_slope_loglik(resid, f[has_y], var_y, pj[has_y], data.n_patients,
                                    sd0, sd1, rho)
        # K-fold refits weigh each patient's outcome (0 = left out)
        pm.Potential("outcome_loglik",
                     weighted_total(ll, patient_weight(data.n_patients, weighted)))
        pm.Deterministic("loglik_patient", ll)
        model.predictive_parts = {"outcome": {
            "mean": mu_y[has_y] + b_w_rows * shift, "var": var_y * pt.ones(int(has_y.sum())),
            "sd_level": sd0, "sd_slope": sd1, "rho": rho}}
        if data.observed_parts is None:
            model.predictive_parts["alliance"] = alliance_parts
        if shown is not None and len(shown):
            pm.Deterministic("shown_fixed", pt.stack([patient_level[shown],
                                                      patient_slope[shown]], axis=1))
            conditional = intercept_slope_posterior(resid, f[has_y], var_y, pj[has_y],
                                                    data.n_patients, sd0, sd1, rho)
            pm.Deterministic("shown_random", conditional[shown])
    return model


def shown_patients(data: GrowthData, k: int, seed: int) -> np.ndarray:
    """k patients drawn at random (fixed seed) among those with 3+ outcome sessions."""
    counts = np.bincount(data.patient[~np.isnan(data.y)], minlength=data.n_patients)
    eligible = np.flatnonzero(counts >= 3)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=min(k, len(eligible)), replace=False))


def shown_trajectories(post: xr.Dataset, f_grid: np.ndarray, seed: int) -> xr.DataArray:
    """Expected outcome of each shown patient at each grid time, per draw: the fixed part
    plus a draw of their random level and slope from its conditional distribution (so the
    band carries both parameter and patient uncertainty); session fluctuations excluded."""
    fixed = post["shown_fixed"].to_numpy()  # chain, draw, shown, 2
    cond = post["shown_random"].to_numpy()  # chain, draw, shown, 5
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(fixed.shape)
    v00, v01, v11 = cond[..., 2], cond[..., 3], cond[..., 4]
    c00 = np.sqrt(np.maximum(v00, 0))
    c10 = np.where(c00 > 0, v01 / np.where(c00 > 0, c00, 1), 0)
    c11 = np.sqrt(np.maximum(v11 - c10**2, 0))
    level = fixed[..., 0] + cond[..., 0] + c00 * z[..., 0]
    slope = fixed[..., 1] + cond[..., 1] + c10 * z[..., 0] + c11 * z[..., 1]
    values = level[..., None] + slope[..., None] * f_grid
    return xr.DataArray(values, dims=("chain", "draw", "shown", "time"),
                        coords={"time": f_grid})


def derived_quantities(post: xr.Dataset, spec: GrowthSpec, arm_name: str | None
                       ) -> xr.Dataset:
    """Effects in the non-reference arm where the alliance effects differ by arm."""
    out = {}
    if spec.by_arm and spec.arm and arm_name:
        for part in ("alliance_within", "alliance_between"):
            out[f"{part}[{arm_name}]"] = post[part] + post[f"{part}:arm"]
    return xr.Dataset(out)


def reported_parameters(data: GrowthData, spec: GrowthSpec, post: xr.Dataset) -> list[str]:
    names = ["alliance_within", "alliance_between", "alliance_trend:time", "intercept", "time"]
    names += data.design.names + [f"{n}:time" for n in data.design.names]
    names += [f"alliance_within:{m}" for m in spec.moderators]
    names += [n for n in post.data_vars if n.endswith(":arm") or
              (n.startswith("alliance_") and n.endswith("]"))]
    names += ["sd_intercept", "sd_slope", "corr_intercept_slope", "sigma",
              "alliance_intercept", "alliance_time", "alliance_arm", "alliance_arm:time",
              "sd_alliance_level", "sd_alliance_trend", "corr_alliance_level_trend",
              "sd_alliance_within", "reliability_within", "sd_therapist", "sd_site",
              "sd_therapist_alliance", "sd_site_alliance"]
    seen: list[str] = []
    for n in names:
        if n in post.data_vars and n not in seen:
            seen.append(n)
    return seen
