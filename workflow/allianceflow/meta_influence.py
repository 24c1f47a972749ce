"""Influence and cumulative meta-analysis of one review: the primary model refitted on
subsets of studies.

The primary model is three_level where some study has several effect sizes, else
random_effects. It is compiled once with a weight per study on its log-likelihood
(see `build_weighted_model`) and refitted by changing the weights only:

- leave-one-study-out (loso.csv): every study left out in turn. Up to
  `meta.influence_exact_max_studies` studies every subset is refitted exactly. Above
  that, the subset posterior is first approximated by Pareto-smoothed importance
  sampling of the full-data draws (weights 1 / p(study | draw), Vehtari et al.,
  2017), and any study whose Pareto k exceeds 0.7, where the approximation is not
  reliable, is refitted exactly; `method` and `pareto_k` say which was used;
- cumulative (cumulative.csv): studies added in order of publication year (a study's
  year is the earliest year among its effect sizes), one fit per distinct year.
  Studies without a year are left out of the cumulative analysis and counted.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .checks import log_mean_exp, relative_efficiency
from .fitting import Refitter, SamplerSettings, python_mode_beside_the_sampler, summarise
from .io import write_csv
from .models.meta import build_weighted_model, primary_spec, study_loglik_function
from .models.meta_priors import priors_of_review

SUBSET_COLUMNS = ["model", "parameter", "mean", "sd", "q2.5", "q97.5", "r_hat",
                  "ess_bulk", "ess_tail", "divergences", "n_studies", "n_effects", "method",
                  "pareto_k"]
PSIS_K_MAX = 0.7


def study_order(effects: pd.DataFrame) -> pd.DataFrame:
    """One row per study in the model's order: its number of effects and its year."""
    g = effects.groupby("study", sort=False)
    years = g["year"].min() if "year" in effects else pd.Series(np.nan, index=g.size().index)
    return pd.DataFrame({"study": g.size().index, "n_effects": g.size().to_numpy(),
                         "year": years.to_numpy(float)})


def leave_one_out_weights(studies: pd.DataFrame) -> Iterator[tuple[str, np.ndarray]]:
    for i, study in enumerate(studies["study"]):
        w = np.ones(len(studies))
        w[i] = 0.0
        yield study, w


def cumulative_weights(studies: pd.DataFrame) -> Iterator[tuple[int, np.ndarray]]:
    years = studies["year"].to_numpy(float)
    for year in np.unique(years[~np.isnan(years)]):
        yield int(year), (years <= year).astype(float)


def reported_draws(posterior: xr.Dataset, correlation: bool) -> xr.Dataset:
    if correlation:
        posterior = posterior.assign(mu_r=np.tanh(posterior["mu"]))
    names = [n for n in ("mu", "mu_r", "tau_study", "tau_es") if n in posterior]
    return xr.Dataset({n: posterior[n] for n in names})


def subset_counts(weights: np.ndarray, studies: pd.DataFrame) -> dict[str, int]:
    return {"n_studies": int(weights.sum()),
            "n_effects": int(studies["n_effects"].to_numpy()[weights > 0].sum())}


def refit_rows(refitter: Refitter, weights: np.ndarray, studies: pd.DataFrame,
               model: str, correlation: bool) -> tuple[pd.DataFrame, xr.Dataset]:
    posterior, stats = refitter.fit(study_weight=weights)
    draws = reported_draws(posterior, correlation)
    rows = summarise(draws, list(draws.data_vars), model)
    rows["divergences"] = int(stats["diverging"].sum()) if "diverging" in stats else 0
    return rows.assign(**subset_counts(weights, studies), method="exact"), posterior


def elpd_row(model: str, value: float) -> pd.DataFrame:
    return pd.DataFrame([{"model": model, "parameter": "elpd_left_out", "mean": value}])


def psis_tables(draws: xr.Dataset, log_lik: np.ndarray, model: str
                ) -> list[tuple[pd.DataFrame, float]]:
    """Leave-one-out posterior summaries of every study by PSIS from the full-data
    draws: per study, its rows (mean, sd, q2.5, q97.5 of each reported quantity, and
    elpd_left_out) and the Pareto k of its weights.

    `log_lik` is each study's log-likelihood per draw (draws, studies); the importance
    ratio of draw s is 1 / p(study | theta_s), smoothed with the draws' relative
    efficiency. The weighted summaries are ArviZ's loo_expectations. R-hat and ESS do
    not apply (weighted draws).
    """
    from arviz_stats import loo_expectations
    from scipy.special import logsumexp

    chains, n = draws.sizes["chain"], draws.sizes["draw"]
    ll = xr.DataArray(log_lik.reshape(chains, n, -1), dims=("chain", "draw", "study"))
    tree = xr.DataTree.from_dict({"posterior": draws,
                                  "log_likelihood": xr.Dataset({"loglik": ll})})
    log_w, khat = ll.azstats.psislw(dim=["chain", "draw"], r_eff=relative_efficiency(draws))
    given = {"group": "posterior", "log_weights": log_w, "pareto_k": khat}
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # high k: the caller refits those studies
        for name in draws.data_vars:
            values[name] = {
                "mean": loo_expectations(tree, var_name=name, kind="mean", **given)[0],
                "sd": loo_expectations(tree, var_name=name, kind="sd", **given)[0],
                "q": loo_expectations(tree, var_name=name, kind="quantile",
                                      probs=[0.025, 0.975], **given)[0]}
    # each study's log predictive density under the posterior without it:
    # log sum_s w_s p(study | theta_s), the weights normalised on the log scale
    elpd = logsumexp((log_w + ll).transpose("study", ...).to_numpy().reshape(-1, chains * n),
                     axis=1)
    out = []
    for i in range(ll.sizes["study"]):
        rows = [{"model": model, "parameter": name, "mean": float(v["mean"][i]),
                 "sd": float(v["sd"][i]), "q2.5": float(v["q"].isel(study=i)[0]),
                 "q97.5": float(v["q"].isel(study=i)[1])} for name, v in values.items()]
        rows = pd.concat([pd.DataFrame(rows), elpd_row(model, float(elpd[i]))],
                         ignore_index=True)
        out.append((rows, float(khat[i])))
    return out


@python_mode_beside_the_sampler
def influence_review(effects_csv: str | Path, info_json: str | Path, out_dir: str | Path,
                     config: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write loso.csv and cumulative.csv for one review (tidy, one row per subset and
    parameter; `left_out` or `year` says which subset)."""
    out_dir = Path(out_dir)
    effects = pd.read_csv(effects_csv, dtype={"study": str, "es_id": str})
    info = json.loads(Path(info_json).read_text())
    settings = SamplerSettings.from_config(config["sampler"])
    priors, _ = priors_of_review(info, config["meta"]["priors"])
    exact_max = int(config["meta"]["influence_exact_max_studies"])
    correlation = info["effect_type"] == "r"
    spec = primary_spec(info["three_level"])
    studies = study_order(effects)
    refitter = Refitter(build_weighted_model(spec, effects, priors), settings)

    study_loglik = study_loglik_function(spec, effects)
    full, posterior = refit_rows(refitter, np.ones(len(studies)), studies, spec.name,
                                 correlation)
    loso = [full.assign(left_out="(none)")]
    psis = None
    if len(studies) > exact_max:
        psis = psis_tables(reported_draws(posterior, correlation), study_loglik(posterior),
                           spec.name)
    for i, (study, w) in enumerate(leave_one_out_weights(studies)):
        if psis is not None:
            rows, khat = psis[i]
            if khat <= PSIS_K_MAX:
                loso.append(rows.assign(**subset_counts(w, studies), method="psis",
                                        pareto_k=khat, left_out=study))
                continue
        rows, refit = refit_rows(refitter, w, studies, spec.name, correlation)
        left_out_ll = study_loglik(refit)[:, i]
        rows = pd.concat([rows, elpd_row(spec.name, log_mean_exp(left_out_ll))
                          .assign(**subset_counts(w, studies), method="exact")],
                         ignore_index=True)
        loso.append(rows.assign(left_out=study,
                                pareto_k=khat if psis is not None else np.nan))
    loso_table = pd.concat(loso, ignore_index=True).reindex(columns=["left_out",
                                                                     *SUBSET_COLUMNS])

    cumulative = [refit_rows(refitter, w, studies, spec.name, correlation)[0].assign(year=year)
                  for year, w in cumulative_weights(studies)]
    cumulative_table = (pd.concat(cumulative, ignore_index=True) if cumulative
                        else pd.DataFrame(columns=SUBSET_COLUMNS + ["year"]))
    cumulative_table = cumulative_table.reindex(columns=["year", *SUBSET_COLUMNS])
    write_csv(loso_table, out_dir / "loso.csv")
    write_csv(cumulative_table, out_dir / "cumulative.csv")
    return loso_table, cumulative_table
