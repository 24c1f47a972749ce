"""Leave-patients-out cross-validation of one trial analysis, with exact refits where
PSIS-LOO cannot be trusted (kfold.csv, one row per patient, no identifiers).

The analysis's fit stores each patient's log-likelihood per draw (the log_likelihood
group of posterior.nc). PSIS-LOO by patient (Vehtari, Gelman & Gabry, 2017) estimates
each patient's leave-one-out predictive density from it, and its Pareto k says where
the estimate fails (k > 0.7). Those patients are then left out for real: the model is
compiled once with a weight per patient on its likelihood (`patient_weight`, 1 = in,
0 = out) and refitted with the weights of each fold; a left-out patient's elpd is
log mean_s p(y_i | theta_s) over the refit's draws. Per `checks.kfold`:

- `high_k` (default): the patients with k above `kfold_pareto_k` are refitted, one at a
  time, or, where there are more of them than `kfold_folds`, dealt at random into that
  many folds (K-fold among them); every other patient keeps its PSIS value;
- `all`: every patient is dealt at random into `kfold_folds` folds (plain K-fold);
- `off`: PSIS only.

What "a patient's data" is follows each model's per-patient log-likelihood: the outcome
sessions given the patient's alliance record for growth, moderation and early alliance
(the alliance scores stay in, so the question is how well the model predicts a new
patient's course given their alliance), and every measured value, the patient's latent
changes, paths or missing cells integrated out, for the mediation models and RI-CLPM.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from .analyses import find_analysis
from .analysis_stage import LEAVE_OUTS
from .checks import log_mean_exp, relative_efficiency, stacking_weights
from .fitting import LeaveOut, Refitter, SamplerSettings, python_mode_beside_the_sampler
from .io import write_csv

KFOLD_COLUMNS = ["unit", "fold", "pareto_k", "elpd_psis", "elpd_exact", "elpd", "method",
                 "fold_divergences", "fold_max_rhat"]


@dataclass(frozen=True)
class KfoldSettings:
    mode: str = "high_k"
    folds: int = 10
    pareto_k: float = 0.7
    draws: int = 1000

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> KfoldSettings:
        keys = {"kfold": "mode", "kfold_folds": "folds", "kfold_pareto_k": "pareto_k",
                "kfold_draws": "draws"}
        return cls(**{field: cfg[key] for key, field in keys.items() if key in cfg})


def psis_pointwise(loglik: np.ndarray, r_eff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's PSIS-LOO elpd and Pareto k from the log-likelihood (draws, units):
    ArviZ's loo, pointwise, with the draws' relative efficiency `r_eff`
    (checks.relative_efficiency)."""
    tree = xr.DataTree.from_dict({
        "log_likelihood": xr.Dataset({"loglik": (("chain", "draw", "unit"), loglik[None])})})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # high Pareto k is what the caller refits for
        loo = az.loo(tree, pointwise=True, reff=r_eff)
    return np.asarray(loo.elpd_i, dtype=float), np.asarray(loo.pareto_k, dtype=float)


def assign_folds(refit: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold per unit (-1: not refitted): the units to refit, in random order, dealt
    round-robin into min(folds, their number) folds."""
    out = np.full(len(refit), -1)
    units = np.random.default_rng(seed).permutation(np.flatnonzero(refit))
    out[units] = np.arange(len(units)) % max(min(folds, len(units)), 1)
    return out


def units_to_refit(k: np.ndarray, settings: KfoldSettings) -> np.ndarray:
    if settings.mode == "all":
        return np.ones(len(k), dtype=bool)
    if settings.mode == "off":
        return np.zeros(len(k), dtype=bool)
    return k > settings.pareto_k


def max_rhat(post: xr.Dataset) -> float:
    rhat = az.rhat(post, sample_dims=["chain", "draw"])
    values = [np.nanmax(np.asarray(v)) for v in rhat.data_vars.values() if np.asarray(v).size]
    return float(np.nanmax(values)) if values else float("nan")


def kfold_table(loglik: np.ndarray, settings: KfoldSettings, seed: int,
                leave_out: Callable[[], LeaveOut], sampler: SamplerSettings,
                r_eff: float = 1.0) -> pd.DataFrame:
    """One row per unit: PSIS elpd and k, the fold it was left out in, its exact elpd
    from that fold's refit, the elpd used (exact where refitted) and the refit's
    divergences and max R-hat. `leave_out` builds the model only if a refit is needed."""
    elpd_psis, k = psis_pointwise(loglik, r_eff)
    folds = assign_folds(units_to_refit(k, settings), settings.folds, seed)
    table = pd.DataFrame({"unit": np.arange(len(k)), "fold": folds, "pareto_k": k,
                          "elpd_psis": elpd_psis, "elpd_exact": np.nan,
                          "fold_divergences": np.nan, "fold_max_rhat": np.nan})
    if (folds >= 0).any():
        lo = leave_out()
        if lo.n_units != len(k):
            raise ValueError(f"the refit model has {lo.n_units} patients, the fit {len(k)}")
        refitter = Refitter(lo.model, replace(sampler, draws=settings.draws))
        for fold in range(folds.max() + 1):
            out = folds == fold
            post, stats = refitter.fit(patient_weight=(~out).astype(float))
            ll = lo.loglik(post).transpose("chain", "draw", ...).to_numpy()
            ll = ll.reshape(-1, ll.shape[-1])
            table.loc[out, "elpd_exact"] = [log_mean_exp(ll[:, i]) for i in np.flatnonzero(out)]
            table.loc[out, "fold_divergences"] = int(stats["diverging"].sum())
            table.loc[out, "fold_max_rhat"] = max_rhat(post)
    refitted = table["fold"] >= 0
    table["elpd"] = np.where(refitted, table["elpd_exact"], table["elpd_psis"])
    table["method"] = np.where(refitted, "exact", "psis")
    return table[KFOLD_COLUMNS]


@python_mode_beside_the_sampler
def kfold_trial_analysis(sessions_csv: str | Path, patients_csv: str | Path,
                         info_json: str | Path, posterior_nc: str | Path,
                         analysis_name: str, out_csv: str | Path,
                         config: dict[str, Any]) -> pd.DataFrame:
    info = json.loads(Path(info_json).read_text())
    analysis = find_analysis(info, analysis_name)
    with xr.open_datatree(posterior_nc, engine="h5netcdf") as tree:
        ll = tree["log_likelihood"].to_dataset()["patient"].load()
        r_eff = relative_efficiency(tree["posterior"].to_dataset().load())
    loglik = ll.to_numpy().reshape(ll.sizes["chain"] * ll.sizes["draw"], -1)
    sampler = SamplerSettings.from_config(config["sampler"])

    sessions = pd.read_csv(sessions_csv, dtype={"patient": str})
    patients = pd.read_csv(patients_csv, dtype={"patient": str})
    lo = LEAVE_OUTS[analysis["type"]](analysis, info, sessions, patients)
    table = kfold_table(loglik, KfoldSettings.from_config(config["checks"]), sampler.seed,
                        lambda: lo, sampler, r_eff)
    table = table.assign(trial=info["name"], analysis=analysis_name,
                         data_signature=lo.signature())
    write_csv(table, out_csv)
    return table


# ---- comparing analyses of the same data ----------------------------------------------


def compare_analyses(kfolds: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Analyses of one trial whose per-patient data are the same (equal `data_signature`,
    e.g. growth and moderation of one outcome), compared on their leave-patients-out
    elpd (exact where refitted): total, SE, difference from the best and its SE (paired
    over patients), and stacking weights. One row per analysis in a group of two or more."""
    columns = ["group", "analysis", "rank", "elpd", "se", "elpd_diff", "dse", "weight",
               "patients", "refitted"]
    by_signature: dict[str, list[str]] = {}
    for name, table in kfolds.items():
        by_signature.setdefault(str(table["data_signature"].iloc[0]), []).append(name)
    rows = []
    for signature, names in by_signature.items():
        if len(names) < 2:
            continue
        pointwise = np.column_stack([kfolds[n].sort_values("unit")["elpd"].to_numpy()
                                     for n in names])
        n_units = len(pointwise)
        totals = pointwise.sum(axis=0)
        best = int(np.argmax(totals))
        weights = stacking_weights(pointwise)
        for rank, k in enumerate(np.argsort(-totals)):
            diff = pointwise[:, best] - pointwise[:, k]
            rows.append({"group": signature, "analysis": names[k], "rank": rank,
                         "elpd": totals[k],
                         "se": float(np.sqrt(n_units * pointwise[:, k].var(ddof=1))),
                         "elpd_diff": float(diff.sum()),
                         "dse": float(np.sqrt(n_units * diff.var(ddof=1))),
                         "weight": float(weights[k]), "patients": n_units,
                         "refitted": int((kfolds[names[k]]["method"] == "exact").sum())})
    return pd.DataFrame(rows, columns=columns)


def compare_trial(kfold_csvs: list[str | Path], out_csv: str | Path) -> pd.DataFrame:
    kfolds = {}
    for path in kfold_csvs:
        table = pd.read_csv(path, dtype={"data_signature": str})
        kfolds[str(table["analysis"].iloc[0])] = table
    comparison = compare_analyses(kfolds)
    write_csv(comparison, out_csv)
    return comparison
