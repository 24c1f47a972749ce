"""Bayesian random-effects meta-analysis (two-level) and three-level meta-analysis.

Data: effects y_i with known sampling variances v_i, on the analysis scale
(Fisher z for correlations).

random_effects (two-level), each effect its own unit:
    y_i ~ Normal(mu + u_i, v_i),  u_i ~ Normal(0, tau_study^2)
    The true-effect level is normal-normal, so it is integrated out exactly:
    y_i ~ Normal(mu, v_i + tau_study^2).

three_level, effect sizes j within studies s:
    y_sj ~ Normal(mu + u_s + w_sj, v_sj),  u_s ~ Normal(0, tau_study^2),
    w_sj ~ Normal(0, tau_es^2)
    Both random-effect levels are Gaussian, so both are integrated out exactly:
    the effects of study s are jointly normal, y_s ~ MVN(mu 1, D_s + tau_study^2 1 1'),
    D_s = diag(v_sj + tau_es^2). Its density needs no matrix algebra (Sherman-Morrison,
    see `study_block_logp`), so only mu, tau_study and tau_es are sampled: no funnel,
    no latent study effects, and the pointwise log-likelihood is per study, which
    makes PSIS-LOO a leave-one-study-out check.

meta-regression (metareg_<moderator>, metareg_all): either structure with mean
    mu + X beta, X holding dummies against each categorical moderator's reference level
    and centred continuous moderators; mu is then the effect at the reference levels.

publication bias (pet, peese, selection): two-level models defined in models/bias.py,
    built here by the same `build_model`.

weighted refits (`build_weighted_model`): the unmoderated model with a weight per study
    on its log-likelihood, for leave-one-study-out and cumulative analyses.

Priors (weakly informative, by the review's measure: models/meta_priors.py, where each
choice is reasoned): mu ~ Normal(0, mu_sd); tau_study, tau_es ~ HalfNormal(tau_sd);
moderator effects beta ~ Normal(0, beta_sd). On Fisher z: 0.5, 0.5 and 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr

from .bias import (
    BIAS_MODELS,
    interval_labels,
    selected_draws,
    selection_logp,
    selection_scalar_draws,
    selection_weights,
)
from .meta_priors import MetaPriors
from .predictive import Predictive

DEFAULT_CUTPOINTS = (0.025, 0.05, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """One model of a review: its name, its levels, and the moderators it regresses on."""

    name: str
    three_level: bool
    moderators: tuple[dict, ...] = ()
    bias: str = ""  # "", "pet", "peese" or "selection" (see models/bias.py)
    cutpoints: tuple[float, ...] = DEFAULT_CUTPOINTS
    direction: int = 1  # +1: selection favours positive effects; -1: negative ones


def primary_spec(three_level: bool) -> ModelSpec:
    """The model that leave-one-study-out and cumulative analyses refit."""
    return ModelSpec("three_level", True) if three_level else ModelSpec("random_effects", False)


def model_specs(three_level: bool, moderators: list[dict],
                cutpoints: tuple[float, ...] = DEFAULT_CUTPOINTS,
                direction: int = 1) -> list[ModelSpec]:
    """Which models a review gets; the structure follows the data.

    random_effects always; three_level where some study has several effect sizes;
    with moderators declared, one meta-regression per moderator (`metareg_<name>`) and,
    where there are several, one with all of them (`metareg_all`). Meta-regressions use
    the three-level structure where it applies. The publication-bias models (pet, peese,
    selection) are two-level, like random_effects, so that the four can be averaged.
    """
    specs = [ModelSpec("random_effects", False)]
    if three_level:
        specs.append(ModelSpec("three_level", True))
    for mod in moderators:
        specs.append(ModelSpec(f"metareg_{mod['name']}", three_level, (mod,)))
    if len(moderators) > 1:
        specs.append(ModelSpec("metareg_all", three_level, tuple(moderators)))
    specs += [ModelSpec(kind, False, bias=kind, cutpoints=tuple(cutpoints),
                        direction=direction) for kind in BIAS_MODELS]
    return specs


def moderator_design(effects: pd.DataFrame, moderators: tuple[dict, ...]
                     ) -> tuple[np.ndarray, list[str]]:
    """Design matrix: dummies against the reference level; continuous moderators centred.

    Column names: `<moderator>:<level>` for categorical, `<moderator>` for continuous.
    """
    columns, names = [], []
    for mod in moderators:
        x = effects[mod["name"]]
        if mod["type"] == "continuous":
            columns.append((x - x.mean()).to_numpy(float))
            names.append(mod["name"])
            continue
        levels = sorted(x.dropna().astype(str).unique())
        reference = str(mod.get("reference", levels[0]))
        for level in levels:
            if level != reference:
                columns.append((x.astype(str) == level).to_numpy(float))
                names.append(f"{mod['name']}:{level}")
    return np.column_stack(columns), names


def complete_rows(effects: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Effects with every moderator of the model present (a meta-regression drops the rest)."""
    cols = [m["name"] for m in spec.moderators]
    return effects.dropna(subset=cols).reset_index(drop=True) if cols else effects


def build_model(spec: ModelSpec, effects: pd.DataFrame, priors: MetaPriors) -> pm.Model:
    """Random-effects meta-analysis or meta-regression, random levels integrated out.

    The linear predictor is mu + X beta, with beta ~ Normal(0, beta_sd) on the analysis
    scale; mu is then the effect at the reference levels (continuous moderators at their
    mean).
    """
    study_idx, studies = pd.factorize(effects["study"], sort=False)
    coords = {"effect": np.arange(len(effects)), "study": list(studies)}
    if spec.moderators:
        x, names = moderator_design(effects, spec.moderators)
        coords["moderator"] = names
    if spec.bias == "selection":
        coords["p_interval"] = interval_labels(spec.cutpoints)
    with pm.Model(coords=coords) as model:
        y = pm.Data("yi", effects["yi"].to_numpy(float), dims="effect")
        v = pm.Data("vi", effects["vi"].to_numpy(float), dims="effect")
        if spec.bias in ("pet", "peese"):
            mu, mean = small_study_mean(spec, effects, priors)
        else:
            mu = pm.Normal("mu", 0.0, priors.mu_sd)
            mean = mu
        if spec.moderators:
            beta = pm.Normal("beta", 0.0, priors.beta_sd, dims="moderator")
            mean = mu + pt.dot(pm.Data("X", x, dims=("effect", "moderator")), beta)
        tau_study = pm.HalfNormal("tau_study", priors.tau_sd)
        sigma = pm.math.sqrt(v + tau_study**2)
        if spec.bias == "selection":
            omega = selection_weights(len(coords["p_interval"]))
            sign = spec.direction
            model.predictive_parts = {"mean": mean * pt.ones_like(y), "tau_study": tau_study,
                                      "omega": omega}
            pm.CustomDist(
                "y", mean * pt.ones_like(y), sigma, pt.sqrt(v), omega,
                # the density of y equals that of sign*y, so selection on negative
                # effects is the positive case mirrored
                logp=lambda value, m, sd, se, om: selection_logp(
                    sign * value, sign * m, sd, se, om, spec.cutpoints),
                observed=y, dims="effect",
            )
            return model
        if not spec.three_level:
            model.predictive_parts = {"mean": mean * pt.ones_like(y), "tau_study": tau_study}
            pm.Normal("y", mu=mean, sigma=sigma, observed=y, dims="effect")
            return model
        tau_es = pm.HalfNormal("tau_es", priors.tau_sd)
        model.predictive_parts = {"mean": mean * pt.ones_like(y), "tau_study": tau_study,
                                  "tau_es": tau_es}
        idx = pm.Data("study_idx", study_idx, dims="effect")
        n_per_study = np.bincount(study_idx).astype(float)
        k = pm.Data("n_per_study", n_per_study, dims="study")
        # The observed node is per study (its number of effects stands in as the value);
        # the likelihood of the study's effects is computed from the data above.
        pm.CustomDist(
            "y_study", mean, tau_study, tau_es,
            logp=lambda _value, m, ts, te: study_block_logp(y, v, idx, k, m, ts, te),
            observed=n_per_study, dims="study",
        )
    return model


def small_study_mean(spec: ModelSpec, effects: pd.DataFrame, priors: MetaPriors):
    """PET/PEESE mean: mu + direction * slope * x, x = se (PET) or v (PEESE).

    Sampled around the average x (mu_typical, the effect of a study of average
    precision), which takes away most of the posterior correlation between
    intercept and slope; mu, the effect at x = 0, is derived from it.
    """
    vi = effects["vi"].to_numpy(float)
    x = np.sqrt(vi) if spec.bias == "pet" else vi
    slope_sd = priors.pet_sd if spec.bias == "pet" else priors.peese_sd
    mu_typical = pm.Normal("mu_typical", 0.0, priors.mu_sd)
    slope = pm.HalfNormal(f"{spec.bias}_slope", slope_sd)
    centre = float(x.mean())
    shift = spec.direction * slope
    mu = pm.Deterministic("mu", mu_typical - shift * centre)
    mean = mu_typical + shift * pm.Data("small_study_x", x - centre, dims="effect")
    return mu, mean


def build_weighted_model(spec: ModelSpec, effects: pd.DataFrame,
                         priors: MetaPriors) -> pm.Model:
    """The unmoderated model of `spec` with a weight per study on its log-likelihood.

    The weights are data (`study_weight`: 1 keeps a study, 0 leaves it out), so one
    compiled model is refitted for every leave-one-study-out and cumulative subset.
    The two-level model is the block density with no study level and tau_es = tau.
    """
    study_idx, studies = pd.factorize(effects["study"], sort=False)
    with pm.Model(coords={"effect": np.arange(len(effects)), "study": list(studies)}) as model:
        y = pm.Data("yi", effects["yi"].to_numpy(float), dims="effect")
        v = pm.Data("vi", effects["vi"].to_numpy(float), dims="effect")
        weight = pm.Data("study_weight", np.ones(len(studies)), dims="study")
        idx = pt.as_tensor(study_idx)
        k = pt.as_tensor(np.bincount(study_idx).astype(float))
        mu = pm.Normal("mu", 0.0, priors.mu_sd)
        tau_study = pm.HalfNormal("tau_study", priors.tau_sd)
        if spec.three_level:
            tau_es = pm.HalfNormal("tau_es", priors.tau_sd)
            logp = study_block_logp(y, v, idx, k, mu, tau_study, tau_es)
        else:
            logp = study_block_logp(y, v, idx, k, mu, 0.0, tau_study)
        pm.Potential("weighted_loglik", pt.sum(weight * logp))
    return model


def study_loglik_function(spec: ModelSpec, effects: pd.DataFrame):
    """A function from posterior draws of the unmoderated model of `spec` to each
    study's log-likelihood, array (draws, studies), studies in `factorize` order. The
    same block density as the model, compiled once (refits call it again and again)."""
    study_idx, _ = pd.factorize(effects["study"], sort=False)
    mu, ts, te = pt.dscalar("mu"), pt.dscalar("tau_study"), pt.dscalar("tau_es")
    y = pt.as_tensor(effects["yi"].to_numpy(float))
    v = pt.as_tensor(effects["vi"].to_numpy(float))
    k = pt.as_tensor(np.bincount(study_idx).astype(float))
    idx = pt.as_tensor(study_idx)
    if spec.three_level:
        fn = pytensor.function([mu, ts, te], study_block_logp(y, v, idx, k, mu, ts, te))
    else:  # two-level: no study level, the effect-level SD is tau_study
        fn = pytensor.function([mu, ts, te], study_block_logp(y, v, idx, k, mu, te, ts),
                               on_unused_input="ignore")

    def loglik(posterior: xr.Dataset) -> np.ndarray:
        mus = posterior["mu"].to_numpy().ravel()
        tau_s = posterior["tau_study"].to_numpy().ravel()
        tau_e = (posterior["tau_es"].to_numpy().ravel() if spec.three_level
                 else np.zeros_like(mus))
        return np.array([fn(*d) for d in zip(mus, tau_s, tau_e, strict=True)])

    return loglik


def study_loglik(spec: ModelSpec, effects: pd.DataFrame, posterior: xr.Dataset) -> np.ndarray:
    """Each study's log-likelihood under each posterior draw (see study_loglik_function)."""
    return study_loglik_function(spec, effects)(posterior)


def scalar_draws(posterior: xr.Dataset) -> xr.Dataset:
    """Split vector parameters into named scalars: beta -> beta[<moderator>],
    omega -> omega[<p interval>]."""
    out = selection_scalar_draws(posterior)
    if "beta" in posterior:
        for name in posterior["beta"].coords["moderator"].values:
            out[f"beta[{name}]"] = posterior["beta"].sel(moderator=name, drop=True)
        out = out.drop_vars(["beta", "moderator"])
    return out


def segment_sum(values, index, n_segments: int):
    """Sum of `values` within each segment given by integer `index` (a study's effects)."""
    return pt.zeros(n_segments)[index].inc(values)


def study_block_logp(y, v, index, n_per_study, mu, tau_study, tau_es):
    """Log density of each study's effects with both random-effect levels integrated out.

    With d_j = v_j + tau_es^2, w_j = 1/d_j, r_j = y_j - mu and t = tau_study^2:
      log|Sigma_s| = sum log d_j + log(1 + t sum w_j)
      r' Sigma_s^-1 r = sum w_j r_j^2 - t (sum w_j r_j)^2 / (1 + t sum w_j)
    """
    n_studies = n_per_study.shape[0]
    d = v + tau_es**2
    w = 1.0 / d
    r = y - mu
    sum_w = segment_sum(w, index, n_studies)
    sum_wr = segment_sum(w * r, index, n_studies)
    sum_wr2 = segment_sum(w * r**2, index, n_studies)
    sum_logd = segment_sum(pt.log(d), index, n_studies)
    t = tau_study**2
    denom = 1.0 + t * sum_w
    quad = sum_wr2 - t * sum_wr**2 / denom
    logdet = sum_logd + pt.log(denom)
    return -0.5 * (n_per_study * np.log(2 * np.pi) + logdet + quad)


def typical_sampling_variance(vi: np.ndarray) -> float:
    """Higgins & Thompson's 'typical' within-study variance used in I^2.

    s^2 = (k - 1) sum(w) / ((sum w)^2 - sum(w^2)), with w = 1 / v.
    """
    w = 1.0 / np.asarray(vi, dtype=float)
    k = w.size
    return float((k - 1) * w.sum() / (w.sum() ** 2 - (w**2).sum()))


def i2_names(spec: ModelSpec) -> list[str]:
    """I^2 of each level. In a meta-regression the SDs are residual, given the
    moderators, so its I^2 is the residual heterogeneity's share (`i2_*_residual`), not
    the heterogeneity of the effects."""
    names = ["i2_study", "i2_es"] if spec.three_level else ["i2_study"]
    return [f"{n}_residual" for n in names] if spec.moderators else names


def prediction_names(spec: ModelSpec) -> tuple[str, str]:
    """The 95% prediction interval's rows. In a meta-regression mu is the effect at the
    moderators' reference levels (continuous ones at their mean), and so is the new
    study whose interval it is (`pred_*_at_reference`)."""
    suffix = "_at_reference" if spec.moderators else ""
    return f"pred_low{suffix}", f"pred_high{suffix}"


def derived_quantities(posterior: xr.Dataset, vi: np.ndarray, correlation: bool,
                       seed: int, spec: ModelSpec) -> xr.Dataset:
    """Derived draws: mu_r, multilevel I^2 (named by i2_names) and the true effect of a
    new study.

    I^2 per level = tau_level^2 / (sum of tau^2 + s^2) (Cheung 2014; metafor's
    multilevel I^2). The new-study effect theta_new = mu + u + w excludes sampling
    error, as metafor's prediction interval does; its 2.5% and 97.5% quantiles are
    the 95% prediction interval, reported on the reported scale (r for correlations).
    """
    s2 = typical_sampling_variance(vi)
    mu = posterior["mu"]
    tau_s = posterior["tau_study"]
    tau_e = posterior["tau_es"] if "tau_es" in posterior else xr.zeros_like(tau_s)
    total = tau_s**2 + tau_e**2 + s2
    out = dict(zip(i2_names(spec), (tau_s**2 / total, tau_e**2 / total), strict=False))
    rng = np.random.default_rng(seed)
    e1 = rng.standard_normal(mu.shape)
    e2 = rng.standard_normal(mu.shape)
    theta_new = mu + tau_s * e1 + tau_e * e2
    if correlation:
        out["mu_r"] = np.tanh(mu)
        theta_new = np.tanh(theta_new)
    out["theta_new"] = theta_new
    return xr.Dataset(out)


def reported_parameters(spec: ModelSpec, draws: xr.Dataset, correlation: bool) -> list[str]:
    names = ["mu"] + (["mu_r"] if correlation else [])
    names += sorted(n for n in draws.data_vars if n.startswith("beta["))
    names += [n for n in ("pet_slope", "peese_slope") if n in draws]
    names += [n for n in draws.data_vars if n.startswith("omega[") and "p<" not in n]
    names += ["tau_study", "tau_es"] if spec.three_level else ["tau_study"]
    return names + i2_names(spec)


# Fisher z of |r| = .99: a prior that simulates effects beyond it puts mass on
# correlations no alliance-outcome study can produce.
FISHER_Z_BOUND = float(np.arctanh(0.99))


def predictive(spec: ModelSpec, effects: pd.DataFrame, model: pm.Model,
               correlation: bool) -> Predictive:
    """Replicated effect sizes: every random level drawn again, then sampling error
    (with the study's own variance); under the selection model, estimates are kept
    with their p-value interval's publication weight. LOO-PIT units follow the
    log-likelihood: effects (two-level) or studies (three-level)."""
    study_idx, _ = pd.factorize(effects["study"], sort=False)
    vi = effects["vi"].to_numpy(float)
    three = spec.three_level and not spec.bias

    def simulate(parts: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        mean = parts["mean"]
        draws = mean.shape[0]
        tau_s = parts["tau_study"].reshape(draws, 1)
        if three:
            u = rng.standard_normal((draws, study_idx.max() + 1))[:, study_idx]
            w = rng.standard_normal(mean.shape) * parts["tau_es"].reshape(draws, 1)
            return mean + tau_s * u + w + rng.standard_normal(mean.shape) * np.sqrt(vi)
        sd = np.sqrt(vi + tau_s**2)
        if spec.bias == "selection":
            return selected_draws(mean, sd, np.sqrt(vi), parts["omega"], spec.cutpoints,
                                  spec.direction, rng)
        return mean + sd * rng.standard_normal(mean.shape)

    return Predictive(
        observed=effects["yi"].to_numpy(float),
        group=study_idx if three else np.arange(len(effects)),
        parts=model.predictive_parts, simulate=simulate,
        label="effect size (Fisher z)" if correlation else "effect size",
        bounds=(-FISHER_Z_BOUND, FISHER_Z_BOUND) if correlation else (-np.inf, np.inf),
        group_name="study" if three else "effect size", cluster=study_idx,
    )


def pointwise_loglik(idata: xr.DataTree) -> np.ndarray:
    """The log-likelihood group as (draws, units): effects, or studies when three-level."""
    ll = idata["log_likelihood"].to_dataset()
    da = ll[next(iter(ll.data_vars))]
    return da.to_numpy().reshape(da.sizes["chain"] * da.sizes["draw"], -1)
