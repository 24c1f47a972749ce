"""Early alliance predicting end-of-treatment outcome, adjusting for baseline severity.

The question of most alliance-outcome studies (Flueckiger et al., 2018): does the
alliance at an early session (`session`, e.g. 3) predict the outcome at the end of
treatment (`end`), given the arm and baseline covariates? Patients who leave early have
no end-of-treatment score, and dropping them (listwise deletion) biases the answer when
dropout depends on how they were doing. So the end-of-treatment outcome is each
patient's latent level at the end of their outcome trajectory over the sessions after
the early one:

    y_it = level_i + slope_i g_t + eps_it,   g_t = (t - end) / (end - session) in (-1, 0]
    level_i = intercept + early_alliance (A_i - cA) + arm x_i + beta'w_i + v_th + v_site + u_i
    slope_i = time + early_alliance:time (A_i - cA) + arm:time x_i + (beta:time)'w_i + s_i

so early_alliance is the difference in expected end-of-treatment outcome per point of
early alliance, and every observed session after the early one informs it (missing at
random given those sessions). (u_i, s_i) are correlated (LKJ) and integrated out exactly
(gaussian.intercept_slope_loglik); sd_level, sd_slope and corr_level_slope describe them
at the middle of the outcome rows' time, where the model is sampled.

The early alliance A_i is a latent true score, A_i ~ N(alpha_0 + alpha_arm x_i +
therapist + site, sd_early_alliance): it is observed with the item-based error SD of the
session's score (none for single-column measures), which would otherwise attenuate the
effect; and a patient who missed the early session keeps their outcome sessions in the
likelihood, A_i being imputed from its distribution. The observed scores' likelihood is
their marginal, N(alpha_0 + ..., sqrt(sd_early_alliance^2 + e^2)); the outcome's is its
density given the score, A_i's remaining uncertainty integrated out with (u_i, s_i)
(it loads on the level by early_alliance and on the slope by early_alliance:time). Each
A_i is sampled through a standard normal given the patient's score and outcome
(gaussian.intercept_slope_shift_terms): non-centred where both say little, centred
where either pins the patient down, so there is no funnel as sd_early_alliance goes to
0, neither where the score is weak nor where a strong effect lets the outcome fix A_i.
early_alliance_per_sd is the effect per SD of true early alliance over the trial's
patients (arm, therapists and sites included), not per residual SD given them.

Priors: as in models/growth.py (intercept N(mean_y, 2 s_y); time, arm and covariate
effects N(0, s_y); alliance effects N(0, s_y / s_A); SDs HalfNormal(s); LKJ(2)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .gaussian import (
    intercept_slope_level_information,
    intercept_slope_loglik,
    intercept_slope_shift_terms,
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
class EarlySpec:
    outcome: str
    alliance: str
    session: int  # the early session whose alliance predicts
    end: int  # end of treatment
    arm: bool = False
    covariates: tuple[str, ...] = ()
    therapist: bool = False
    site: bool = False
    error_sd: float = 0.0
    lkj_eta: float = 2.0


@dataclass(frozen=True)
class EarlyData:
    patient: np.ndarray  # outcome row -> patient 0..n-1
    g: np.ndarray  # (session - end) / (end - early session)
    y: np.ndarray
    early: np.ndarray  # per patient; NaN where the early session was missed
    design: PatientDesign
    therapist: np.ndarray | None
    site: np.ndarray | None
    n_patients: int
    n_excluded: int  # arm or covariates missing
    n_no_outcome: int  # no outcome after the early session
    early_centre: float
    g_mid: float  # mean g of the outcome rows: the model is sampled there


def prepare(sessions: pd.DataFrame, patients: pd.DataFrame, spec: EarlySpec) -> EarlyData:
    keep = complete_patients(patients, spec.arm, spec.covariates)
    pts = patients[keep]
    rows = sessions[(sessions["session"] > spec.session) & (sessions["session"] <= spec.end)
                    & sessions[spec.outcome].notna() & sessions["patient"].isin(pts["patient"])]
    with_outcome = pts["patient"].isin(rows["patient"])
    pts = pts[with_outcome].reset_index(drop=True)
    index = pd.Series(np.arange(len(pts)), index=pts["patient"])
    early = (sessions[sessions["session"] == spec.session].set_index("patient")[spec.alliance]
             .reindex(pts["patient"]).to_numpy(dtype=float))
    g = (rows["session"].to_numpy(dtype=float) - spec.end) / (spec.end - spec.session)
    return EarlyData(
        patient=np.array(index[rows["patient"]].to_numpy(), dtype=np.int64),
        g=g, g_mid=float(g.mean()),
        y=np.array(rows[spec.outcome], dtype=float), early=np.array(early),
        design=patient_design(pts, spec.arm, spec.covariates),
        therapist=group_codes(pts, "therapist") if spec.therapist else None,
        site=group_codes(pts, "site") if spec.site else None,
        n_patients=len(pts), n_excluded=int((~keep).sum()),
        n_no_outcome=int((~with_outcome).sum()), early_centre=float(np.nanmean(early)),
    )


def early_alliance_scores(data: EarlyData, spec: EarlySpec, x_arm, s_a: float):
    """Each patient's true early alliance, latent where missed or measured with error:
    the observed scores' likelihood (their marginal), and per patient the mean m0 and
    variance v0 of the true score given the score, with the standard normals z through
    which build_model writes it. Returns (m0, v0, z, sd_true): sd_true is the SD of the
    true early alliance over the trial's patients, sqrt(sd_early_alliance^2 +
    sd_therapist_alliance^2 + sd_site_alliance^2 + alliance_arm^2 var(arm)), not
    sd_early_alliance, which is residual given arm, therapist and site."""
    seen = ~np.isnan(data.early)
    sd = pm.HalfNormal("sd_early_alliance", s_a)
    e2 = spec.error_sd**2
    # what a patient's early score says about a shift of their group's level
    information = pt.as_tensor(np.where(seen, 1.0, 0.0)) / (sd**2 + e2)
    mean = pm.Normal("alliance_intercept", data.early_centre, 2 * s_a) * np.ones(data.n_patients)
    variance = sd**2
    if x_arm is not None:
        arm = pm.Normal("alliance_arm", 0.0, s_a)
        mean = mean + arm * x_arm
        variance = variance + arm**2 * float(np.var(x_arm))
    model = pm.modelcontext(None)
    if data.therapist is not None:
        mean = mean + group_intercepts("sd_therapist_alliance", data.therapist, s_a / 2,
                                       information)
        variance = variance + model["sd_therapist_alliance"] ** 2
    if data.site is not None:
        mean = mean + group_intercepts("sd_site_alliance", data.site, s_a / 2, information)
        variance = variance + model["sd_site_alliance"] ** 2
    early_seen = pm.Data("early_seen", data.early[seen])  # data: SBC swaps them
    # the observed scores' density with the true scores integrated out
    pm.Normal("early_obs", mean[seen], pt.sqrt(sd**2 + e2), observed=early_seen)
    # the scores' replicates (SBC simulates them from a prior draw)
    model.predictive_parts = {"early": {"mean": mean[seen],
                                                       "sd": pt.sqrt(sd**2 + e2)}}
    # what the score says about the true score: Normal(m0, v0), with w = sd^2 / (sd^2 +
    # e^2) m0 = mean + w (obs - mean) and v0 = sd^2 e^2 / (sd^2 + e^2) for a patient with
    # a score (an error-free score is the true score itself, v0 = 0), m0 = mean and
    # v0 = sd^2 for one who missed the session
    obs = pt.zeros(data.n_patients)[np.flatnonzero(seen)].set(early_seen)
    missed = np.flatnonzero(~seen)
    if e2 > 0:
        w = sd**2 / (sd**2 + e2)
        m0 = mean + pt.where(seen, w * (obs - mean), 0.0)
        v0 = pt.where(seen, w * e2, sd**2)
        z = pm.Normal("z_early", 0.0, 1.0, shape=data.n_patients)
    else:
        m0 = pt.where(seen, obs, mean)
        v0 = pt.where(seen, 0.0, sd**2)
        z = pt.zeros(data.n_patients)
        if missed.size:
            z = z[missed].set(pm.Normal("z_early", 0.0, 1.0, shape=missed.size))
    return m0, v0, z, pt.sqrt(variance)


def build_model(data: EarlyData, spec: EarlySpec, weighted: bool = False) -> pm.Model:
    """Sampled at the middle of the outcome rows' time (g - g_mid), where level and slope
    are nearly uncorrelated; the end-of-treatment effects are derived from them.
    `weighted`: a weight per patient on the outcome's likelihood (K-fold refits)."""
    s_y = float(data.y.std())
    s_a = float(np.nanstd(data.early)) or 1.0
    names, x = data.design.names, data.design.x
    x_arm = x[:, names.index("arm")] if "arm" in names else None
    g = data.g - data.g_mid
    with pm.Model() as model:
        m0, v0, z, sd_true = early_alliance_scores(data, spec, x_arm, s_a)
        effect = pm.Normal("early_alliance@mid", 0.0, s_y / s_a)
        effect_t = pm.Normal("early_alliance:time", 0.0, s_y / s_a)
        beta = fixed_effects(names, s_y, suffix="@mid")
        beta_t = fixed_effects(names, s_y, suffix=":time")
        intercept = pm.Normal("intercept@mid", data.y.mean(), 2 * s_y)
        time = pm.Normal("time", 0.0, s_y)
        # the same quantities at the end of treatment (g = 0)
        end_effect = pm.Deterministic("early_alliance", effect - data.g_mid * effect_t)
        pm.Deterministic("early_alliance_per_sd", end_effect * sd_true)
        pm.Deterministic("intercept", intercept - data.g_mid * time)
        for k, name in enumerate(names):
            pm.Deterministic(name, beta[k] - data.g_mid * beta_t[k])
        pj = data.patient
        sigma = pm.HalfNormal("sigma", s_y)
        sd0, sd1, rho = pair_prior(("sd_level", "sd_slope", "corr_level_slope"), (s_y, s_y),
                                   spec.lkj_eta)
        # the patients' levels and slopes at the true early alliance's mean given the score
        level = intercept + pt.dot(x, beta) + effect * (m0 - data.early_centre)
        slope = time + pt.dot(x, beta_t) + effect_t * (m0 - data.early_centre)
        if data.therapist is not None or data.site is not None:
            information = intercept_slope_level_information(g, sigma**2, pj, data.n_patients,
                                                            sd0, sd1, rho)
        if data.therapist is not None:
            level += group_intercepts("sd_therapist", data.therapist, s_y / 2, information)
        if data.site is not None:
            level += group_intercepts("sd_site", data.site, s_y / 2, information)
        mean0 = level[pj] + slope[pj] * g
        resid = pm.Data("y", data.y) - mean0
        # the outcome given the score: the true score's remaining uncertainty (v0) loads
        # on the level by the effect and on the slope by its change over time, and is
        # integrated out with the random level and slope
        ll = intercept_slope_loglik(resid, g, sigma**2, pj, data.n_patients, sd0, sd1, rho,
                                    extra=(v0, effect, effect_t))
        weight = patient_weight(data.n_patients, weighted)
        # K-fold refits weigh each patient's outcome (0 = left out)
        pm.Potential("outcome_loglik", weighted_total(ll, weight))
        pm.Deterministic("loglik_patient", ll)
        # the true score given the score and the outcome: Normal(m0 + v0 t / (1 + v0 q),
        # v0 / (1 + v0 q)), q and t what the outcome says about it (information, score),
        # and written through z: non-centred where the score and the outcome say little,
        # centred where either pins the patient down. Given the score only (the
        # score's own data), the outcome's high information (a strong effect, a small
        # residual SD) against a small sd_early_alliance would leave a funnel.
        q, t = intercept_slope_shift_terms(resid, g, sigma**2, pj, data.n_patients, sd0,
                                           sd1, rho, effect, effect_t)
        if weight is not None:  # a left-out patient's outcome says nothing here either
            q, t = weight * q, weight * t
        shrink = v0 / (1 + v0 * q)
        shift = shrink * t + pt.sqrt(shrink) * z  # the true score minus m0
        mean = mean0 + shift[pj] * (effect + effect_t * g)
        parts = {"var": sigma**2, "sd_level": sd0, "sd_slope": sd1, "rho": rho}
        model.predictive_parts["outcome"] = {"mean": mean, **parts}
        # for simulation-based calibration: the outcome's parts at a true score drawn
        # given the (simulated) score alone, m0 + sqrt(v0) z, z from the prior
        model.predictive_parts["outcome_given_score"] = {
            "mean": mean0 + (pt.sqrt(v0) * z)[pj] * (effect + effect_t * g), **parts}
    return model


def predictive(data: EarlyData, spec: EarlySpec, model: pm.Model,
               ranges: dict[str, list[float]]) -> dict[str, Predictive]:
    """Replicated outcomes after the early session, each patient's random level and
    slope drawn again (given the early alliance the model infers)."""
    g = data.g - data.g_mid
    return {"outcome": Predictive(
        observed=data.y, group=data.patient, cluster=data.patient,
        parts=model.predictive_parts["outcome"],
        simulate=lambda v, rng: simulate_intercept_slope(v, g, data.patient,
                                                         data.n_patients, rng),
        label=spec.outcome, bounds=tuple(ranges.get(spec.outcome, (-np.inf, np.inf))),
        group_name="patient")}


def reported_parameters(data: EarlyData, post: xr.Dataset) -> list[str]:
    names = (["early_alliance", "early_alliance_per_sd", "early_alliance:time", "intercept",
              "time"] + data.design.names + [f"{n}:time" for n in data.design.names]
             + ["sd_level", "sd_slope", "corr_level_slope", "sigma", "alliance_intercept",
                "alliance_arm", "sd_early_alliance", "sd_therapist", "sd_site",
                "sd_therapist_alliance", "sd_site_alliance"])
    return [n for n in names if n in post.data_vars]
