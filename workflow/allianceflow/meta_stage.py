"""The meta-analysis stages: clean one review folder, fit its models, write tidy outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from .checks import CheckSettings, compare_models, run_checks, write_check_outputs
from .effects import load_review
from .fitting import (
    SUMMARY_COLUMNS,
    GateFailure,
    GateThresholds,
    SamplerSettings,
    diagnostics,
    gate_message,
    point_rows,
    python_mode_beside_the_sampler,
    sample,
    summarise,
)
from .history import HISTORY_FILE, HISTORY_TEXT, updated_history
from .io import atomic_path, sha256_file, write_csv, write_json
from .models.bias import (
    AVERAGED_MODELS,
    check_cutpoints,
    constant_quantities,
    interval_labels,
    mixture_draws,
    p_interval,
)
from .models.meta import (
    build_model,
    complete_rows,
    derived_quantities,
    model_specs,
    pointwise_loglik,
    prediction_names,
    predictive,
    primary_spec,
    reported_parameters,
    scalar_draws,
)
from .models.meta_priors import priors_of_review
from .provenance import provenance


def clean_review(raw_folder: str | Path, out_effects: str | Path, out_info: str | Path) -> None:
    review = load_review(raw_folder)
    write_csv(review.effects, out_effects)
    write_json(review.info, out_info)


def expected_direction_points(reported: np.ndarray, thresholds: list[float],
                              direction: int) -> dict[str, float]:
    """P(effect > 0) always; then P(effect beyond each threshold) in the expected direction
    (prob_gt[t] for positive reviews, prob_lt[-t] for negative ones), on the reported scale."""
    points = {"prob_gt[0]": float((reported > 0).mean())}
    for t in thresholds:
        if direction > 0:
            points[f"prob_gt[{t:g}]"] = float((reported > t).mean())
        else:
            points[f"prob_lt[{-t:g}]"] = float((reported < -t).mean())
    return points


@python_mode_beside_the_sampler
def fit_review(effects_csv: str | Path, info_json: str | Path, out_dir: str | Path,
               config: dict[str, Any]) -> pd.DataFrame:
    """Fit every applicable model of one review; write summary, diagnostics, posterior.

    Outputs (names fixed by DESIGN.md): summary.csv, diagnostics.json,
    posterior.nc (one group per model), provenance.json; and funnel.csv, the
    funnel-plot data with each effect's one-sided p-value interval.
    """
    out_dir = Path(out_dir)
    effects = pd.read_csv(effects_csv, dtype={"study": str, "es_id": str})
    info = json.loads(Path(info_json).read_text())
    settings = SamplerSettings.from_config(config["sampler"])
    thresholds = GateThresholds.from_config(config["checks"])
    priors, priors_from = priors_of_review(info, config["meta"]["priors"])
    cutpoints = check_cutpoints(config["meta"]["selection_cutpoints"])
    correlation = info["effect_type"] == "r"
    direction = int(info.get("direction", 1))

    check_settings = CheckSettings.from_config(config["checks"])
    summaries, diags, trees, checks = [], {}, {}, []
    for spec in model_specs(info["three_level"], info["moderators"], cutpoints, direction):
        name = spec.name
        data = complete_rows(effects, spec)
        model = build_model(spec, data, priors)
        idata = sample(model, settings)
        post = idata["posterior"].to_dataset()
        derived = derived_quantities(post, data["vi"].to_numpy(), correlation, settings.seed,
                                     spec)
        draws = xr.merge([scalar_draws(post), derived])
        names = reported_parameters(spec, draws, correlation)
        summary = summarise(draws, names, name)
        theta = derived["theta_new"].to_numpy().ravel()
        low, high = prediction_names(spec)
        points = {low: float(np.quantile(theta, 0.025)), high: float(np.quantile(theta, 0.975))}
        points |= expected_direction_points(reported_scale(post["mu"], correlation),
                                            config["meta"]["thresholds"], direction)
        summary = pd.concat([summary, point_rows(name, points)], ignore_index=True)
        summaries.append(summary)
        diags[name] = diagnostics(idata, summary, thresholds, name,
                                  constant=constant_quantities(post))
        diags[name]["n_effects_used"] = int(len(data))
        checks.append(run_checks(model, {"effects": predictive(spec, data, model, correlation)},
                                 idata,
                                 pointwise_loglik(idata), draws[names],
                                 check_settings, settings.seed, name))
        idata["posterior"] = xr.DataTree(xr.merge([post, derived.drop_vars("theta_new")]))
        trees[name] = idata

    summaries.append(averaged_rows(trees, correlation, config["meta"]["thresholds"],
                                   direction, settings.seed))
    table = pd.concat(summaries, ignore_index=True)
    passed = all(d["passed"] for d in diags.values())
    diag_doc = {"review": info["name"], "policy": thresholds.policy, "passed": passed,
                "priors": {**priors.__dict__, **priors_from}, "models": diags}
    write_csv(table, out_dir / "summary.csv")
    write_csv(funnel_table(effects, cutpoints, direction), out_dir / "funnel.csv")
    write_json(diag_doc, out_dir / "diagnostics.json")
    write_check_outputs(checks, out_dir, {"review": info["name"]})
    write_csv(model_comparison(trees, effects, diags), out_dir / "comparison.csv")
    root = xr.DataTree.from_dict({f"{m}/{g}": t[g].to_dataset() for m, t in trees.items()
                                  for g in t.children})
    with atomic_path(out_dir / "posterior.nc") as tmp:
        root.to_netcdf(tmp, engine="h5netcdf")
    write_json(provenance([effects_csv, info_json],
                          {"sampler": settings.__dict__, "priors": priors.__dict__,
                           "selection_cutpoints": list(cutpoints),
                           "checks": thresholds.__dict__}),
               out_dir / "provenance.json")
    if not passed and thresholds.policy == "fail":
        raise GateFailure("; ".join(gate_message(d, info["name"]) for d in diags.values()
                                    if not d["passed"]))
    history_path = out_dir / HISTORY_FILE
    previous = (pd.read_csv(history_path, dtype=dict.fromkeys(HISTORY_TEXT, str))
                if history_path.exists() else None)
    history = updated_history(previous, effects, sha256_file(effects_csv), table, correlation,
                              primary_spec(info["three_level"]).name)
    if history is not None:
        write_csv(history, history_path)
    return table


def model_comparison(trees: dict[str, xr.DataTree], effects: pd.DataFrame,
                     diags: dict[str, dict]) -> pd.DataFrame:
    """Leave-one-study-out PSIS comparison of every model fitted to all effect sizes
    (two- vs three-level, with vs without moderators, bias-adjusted or not): per-study
    log-likelihoods, so that models with and without the effect-size level compare on
    the same units. Meta-regressions that dropped effects with a missing moderator are
    left out (different data)."""
    study_idx, _ = pd.factorize(effects["study"], sort=False)
    n_studies = int(study_idx.max()) + 1
    logliks = {}
    for name, tree in trees.items():
        if diags[name]["n_effects_used"] != len(effects):
            continue
        ll = tree["log_likelihood"].to_dataset()
        da = ll[next(iter(ll.data_vars))].to_numpy()
        if da.shape[-1] != n_studies:  # per effect size: a study's effects add up
            summed = np.zeros((*da.shape[:2], n_studies))
            np.add.at(summed, (slice(None), slice(None), study_idx), da)
            da = summed
        logliks[name] = da
    return compare_models(logliks, "study")


def reported_scale(mu: xr.DataArray, correlation: bool) -> np.ndarray:
    x = mu.to_numpy().ravel()
    return np.tanh(x) if correlation else x


def averaged_rows(trees: dict[str, xr.DataTree], correlation: bool, thresholds: list[float],
                  direction: int, seed: int) -> pd.DataFrame:
    """Model `bias_averaged`: stacking weights of random_effects, pet, peese and selection
    (PSIS-LOO over effect sizes) and the pooled effect of their weighted mixture.

    What it is and is not: a predictive mixture (Yao et al. 2018), the weights chosen so
    that the mixed models best predict a left-out effect size, not posterior model
    probabilities, so it answers no question of which model is true. Its mu mixes
    quantities that differ by model (the unadjusted pooled effect; the effect of a study
    with no sampling error under PET and PEESE; the effect before selection), and where
    a study has several effect sizes the left-out units are not independent, which the
    weights ignore. It stays as a robustness summary, said so in the report
    (report_meta.bias_sentence); model averaging with posterior model probabilities is
    a separate analysis.

    R-hat and ESS are left empty: the mixture is not one Markov chain; each component's
    convergence is in its own rows.
    """
    members = {m: trees[m] for m in AVERAGED_MODELS if m in trees}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comparison = az.compare(members, method="stacking", round_to="none")
    weights = {m: float(comparison.loc[m, "weight"]) for m in members}
    mu = mixture_draws({m: t["posterior"]["mu"].to_numpy().ravel() for m, t in members.items()},
                       weights, seed)
    rows = []
    for name, x in [("mu", mu)] + ([("mu_r", np.tanh(mu))] if correlation else []):
        rows.append({"model": "bias_averaged", "parameter": name, "mean": x.mean(),
                     "sd": x.std(ddof=1), "q2.5": np.quantile(x, 0.025),
                     "q97.5": np.quantile(x, 0.975)})
    points = {f"weight[{m}]": w for m, w in weights.items()}
    points |= {f"elpd_diff[{m}]": float(comparison.loc[m, "elpd_diff"]) for m in members}
    points |= expected_direction_points(np.tanh(mu) if correlation else mu, thresholds,
                                        direction)
    return pd.concat([pd.DataFrame(rows, columns=SUMMARY_COLUMNS),
                      point_rows("bias_averaged", points)], ignore_index=True)


def funnel_table(effects: pd.DataFrame, cutpoints: tuple[float, ...],
                 direction: int) -> pd.DataFrame:
    """Funnel-plot data: each effect with its SE, one-sided p-value (in the expected
    direction) and the selection model's p-value interval it falls in."""
    se = np.sqrt(effects["vi"].to_numpy(float))
    yi = effects["yi"].to_numpy(float)
    labels = interval_labels(cutpoints)
    return pd.DataFrame({
        "study": effects["study"], "es_id": effects["es_id"], "yi": yi, "sei": se,
        "p_one_sided": stats.norm.sf(direction * yi / se),
        "p_interval": [labels[j] for j in p_interval(yi, se, cutpoints, direction)],
    })
