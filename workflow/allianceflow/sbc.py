"""Simulation-based calibration (Talts et al. 2018; Modrák et al. 2023) of each model
family, on data shaped like a real (template) dataset of this project.

One simulation: draw every parameter from the prior, simulate a dataset with the
template's design (the same patients, sessions, missing cells, sampling variances),
refit the model to it and record, for every population-level parameter, the rank of
its prior draw among thinned posterior draws. If the model samples its own posterior
correctly, each parameter's ranks are uniform over 0..L.

The simulators are the ones the predictive checks use (models/*.py); the model is
compiled once per job and refitted by swapping its data (pm.Data) only. Where a model
takes one of its measures as a predictor of another (the alliance in growth models, the
mediator in within-person mediation), the data are simulated in that order: the first
measure, then the second from the model evaluated on the simulated first.

Families and their templates are set in config `sbc`; rule files fan the simulations
out as jobs of `per_job` simulations (workflow/rules/checks.smk).
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .checks import ecdf_band, part_values
from .fitting import Refitter, SamplerSettings, python_mode_beside_the_sampler
from .models import early_alliance as early
from .models import growth, riclpm
from .models import sequential_mediation as seq
from .models import within_mediation as within
from .models.gaussian import simulate_compound_symmetric
from .models.meta import MetaPriors, build_model
from .models.meta import predictive as meta_predictive
from .models.meta_priors import priors_of_review
from .models.structure import population_variables


@dataclass
class Step:
    """One stage of simulating a dataset: the model's parts it needs, and how to turn
    their values at one prior draw into pm.Data values. `after_data`: the parts depend
    on data simulated by an earlier step, so they are evaluated again on those."""

    parts: dict[str, pt.TensorVariable]
    simulate: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]
    after_data: bool = False


@dataclass
class SbcCase:
    family: str
    model: pm.Model
    steps: list[Step]


def flat_values(ds: xr.Dataset, names: list[str]) -> dict[str, np.ndarray]:
    """{parameter[index]: draws} with vector and matrix parameters split by element."""
    out = {}
    for name in names:
        x = ds[name].to_numpy()
        x = x.reshape(x.shape[0] * x.shape[1], -1)
        if x.shape[1] == 1:
            out[name] = x[:, 0]
        else:
            for j in range(x.shape[1]):
                out[f"{name}[{j}]"] = x[:, j]
    return out


def prior_draws(model: pm.Model, n: int, seed: int) -> xr.Dataset:
    """n draws of every free variable from the prior (the values simulations start from),
    but those with an improper prior, which no simulation needs: the RI-CLPM's missed
    cells (pm.Flat, their density is the likelihood's) are data the simulator makes."""
    from pymc.distributions.continuous import FlatRV, HalfFlatRV

    proper = [rv.name for rv in model.free_RVs
              if not isinstance(rv.owner.op, FlatRV | HalfFlatRV)]
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = pm.sample_prior_predictive(draws=n, var_names=proper, random_seed=seed)
    return prior["prior"].to_dataset()


def simulate_dataset(case: SbcCase, draw: xr.Dataset, first: dict[str, np.ndarray],
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The pm.Data values of one simulated dataset, from one prior draw (`draw`, one
    chain and one draw) and the parts already evaluated at it (`first`)."""
    data: dict[str, np.ndarray] = {}
    for i, step in enumerate(case.steps):
        if step.after_data:
            with case.model:
                pm.set_data(data)
            values = part_values(case.model, step.parts, draw)
        else:
            values = {k: first[f"{i}:{k}"] for k in step.parts}
        data.update(step.simulate(values, rng))
    return data


def thinned(x: np.ndarray, n: int) -> np.ndarray:
    """n draws spaced evenly through the chain-major draws (thinning reduces the
    autocorrelation that would make ranks over-dispersed)."""
    return x[np.linspace(0, len(x) - 1, n).round().astype(int)]


def run_batch(case: SbcCase, sims: list[int], settings: SamplerSettings, thin_to: int,
              seed: int) -> pd.DataFrame:
    """Ranks of every population-level parameter in each simulation of `sims`."""
    names = population_variables(case.model)
    refitter = Refitter(case.model, settings)
    rows = []
    for sim in sims:
        # each simulation its own streams, whatever the batch; families differ
        sim_seed = seed + 7919 * sim + zlib.crc32(case.family.encode()) % 100003
        prior = prior_draws(case.model, 1, sim_seed)
        parts = {f"{i}:{k}": t for i, s in enumerate(case.steps) for k, t in s.parts.items()
                 if not s.after_data}
        first = part_values(case.model, parts, prior) if parts else {}
        data = simulate_dataset(case, prior, first, np.random.default_rng(sim_seed))
        post, stats = refitter.fit(**data)
        truth = {k: float(v[0]) for k, v in flat_values(prior, names).items()}
        draws = flat_values(post, names)
        divergences = int(stats["diverging"].sum()) if "diverging" in stats else 0
        for name, true in truth.items():
            x = draws[name]
            rows.append({"family": case.family, "simulation": sim, "parameter": name,
                         "rank": int((thinned(x, thin_to) < true).sum()), "max_rank": thin_to,
                         "true": true, "mean": float(x.mean()), "sd": float(x.std(ddof=1)),
                         "lower_95": float(np.quantile(x, 0.025)),
                         "upper_95": float(np.quantile(x, 0.975)),
                         "divergences": divergences})
    return pd.DataFrame(rows)


# ---- the rank test ---------------------------------------------------------------------


def rank_uniformity(ranks: np.ndarray, max_rank: int, prob: float, seed: int = 0
                    ) -> dict[str, Any]:
    """ECDF of the fractional ranks (rank + 1/2) / (L + 1) against the simultaneous band
    of a uniform sample (Säilynoja et al. 2022): passed or not, and the curves."""
    u = (np.asarray(ranks, float) + 0.5) / (max_rank + 1)
    grid, lower, upper = ecdf_band(len(u), prob, seed=seed,
                                   grid=np.arange(1, max_rank + 1) / (max_rank + 1))
    ecdf = np.searchsorted(np.sort(u), grid, side="right") / len(u)
    inside = (ecdf >= lower - 1e-12) & (ecdf <= upper + 1e-12)
    return {"grid": grid, "ecdf": ecdf, "lower": lower, "upper": upper,
            "passed": bool(inside.all())}


def interval_coverage(group: pd.DataFrame) -> float:
    """Share of simulations whose true value lies in the central 95% interval of the
    posterior draws (their 2.5% and 97.5% quantiles). Not mean +- 1.96 SD: SDs and
    selection weights have skewed posteriors bounded at zero or one, where that interval
    is the wrong width and reaches past the bound. Rank files written before the
    quantiles were recorded (bench/sbc/) use the central interval of the thinned draws
    instead, from the ranks: 0.025 L <= rank <= 0.975 L."""
    true = group["true"]
    if {"lower_95", "upper_95"} <= set(group.columns) and group["lower_95"].notna().all():
        return float(((true >= group["lower_95"]) & (true <= group["upper_95"])).mean())
    rank, max_rank = group["rank"], group["max_rank"]
    return float(((rank >= 0.025 * max_rank) & (rank <= 0.975 * max_rank)).mean())


def summarise_family(ranks: pd.DataFrame, prob: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per parameter: simulations, pass/fail of the rank-ECDF test, the coverage of
    central 95% intervals (interval_coverage) and the simulations with divergences; and
    the ECDF curves.

    Each parameter is tested at prob^(1/P) for the family's P parameters (Šidák), so that
    a correct family fails any test with probability 1 - prob, not one per parameter."""
    rows, curves = [], []
    per_parameter = prob ** (1.0 / ranks["parameter"].nunique())
    for (family, name), group in ranks.groupby(["family", "parameter"], sort=False):
        test = rank_uniformity(group["rank"].to_numpy(), int(group["max_rank"].iloc[0]),
                               per_parameter)
        rows.append({"family": family, "parameter": name, "simulations": len(group),
                     "passed": test["passed"], "band": per_parameter,
                     "coverage_95": interval_coverage(group),
                     "simulations_with_divergences": int(
                         group.groupby("simulation")["divergences"].first().gt(0).sum())})
        curves.append(pd.DataFrame({"family": family, "parameter": name, "grid": test["grid"],
                                    "ecdf": test["ecdf"], "lower": test["lower"],
                                    "upper": test["upper"]}))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


# ---- the families: a model built on a template dataset, and how to simulate its data


def one(values: np.ndarray) -> np.ndarray:
    """The single simulated dataset of a (1, n) array."""
    return np.asarray(values)[0]


def meta_case(kind: str, effects: pd.DataFrame, info: dict[str, Any],
              priors: MetaPriors, cutpoints: tuple[float, ...]) -> SbcCase:
    """random_effects, three_level, pet, peese or selection, on a review's effect sizes
    and sampling variances."""
    from .models.meta import model_specs

    specs = model_specs(True, [], cutpoints, int(info.get("direction", 1)))
    spec = next(s for s in specs if s.name == kind)
    model = build_model(spec, effects, priors)
    pred = meta_predictive(spec, effects, model, info["effect_type"] == "r")
    return SbcCase(f"meta_{kind}", model, [Step(pred.parts, lambda v, rng: {
        "yi": one(pred.simulate(v, rng))})])


def growth_case(analysis: dict[str, Any], info: dict[str, Any], sessions: pd.DataFrame,
                patients: pd.DataFrame) -> SbcCase:
    """Alliance scores first, each patient's latent level and trend drawn from its
    prior (with the deviations and item error), then the outcome from the model
    evaluated on them. The model writes the latent parts through standard normals given
    the scores (models/growth.py, alliance_part), so the prior draw of those normals,
    evaluated on the new scores, is a draw of the latent parts given the scores: the
    outcome is simulated from the same latent parts that made the scores."""
    from .trial_models_stage import growth_spec

    spec = growth_spec(analysis, info)
    if spec.decomposition != "latent":
        raise ValueError("SBC of the growth model needs the latent decomposition")
    data = growth.prepare(sessions, patients, spec)
    model = growth.build_model(data, spec)
    blocks = growth.predictive(data, spec, model, {})
    return SbcCase(analysis["type"], model, [
        Step(blocks["alliance"].parts,
             lambda v, rng: {"alliance_seen": one(blocks["alliance"].simulate(v, rng))}),
        Step(blocks["outcome"].parts,
             lambda v, rng: {"outcome": one(blocks["outcome"].simulate(v, rng))},
             after_data=True)])


def early_case(analysis: dict[str, Any], info: dict[str, Any], sessions: pd.DataFrame,
               patients: pd.DataFrame) -> SbcCase:
    """The early alliance scores, then the later outcomes from the model evaluated on
    them: the outcome's parts at a true score m0 + sqrt(v0) z (its mean and variance
    given the new score, models/early_alliance.py), so that the prior draw of z on the new
    scores is a draw of the true scores given them. (The fitted model writes the true
    scores given the outcome too, which at this step is still the template's.)"""
    from .trial_models_stage import early_spec

    spec = early_spec(analysis, info)
    data = early.prepare(sessions, patients, spec)
    model = early.build_model(data, spec)
    blocks = early.predictive(data, spec, model, {})
    return SbcCase("early_alliance", model, [
        Step(model.predictive_parts["early"],
             lambda v, rng: {"early_seen": one(v["mean"] + v["sd"]
                                               * rng.standard_normal(v["mean"].shape))}),
        Step(model.predictive_parts["outcome_given_score"],
             lambda v, rng: {"y": one(blocks["outcome"].simulate(v, rng))},
             after_data=True)])


def riclpm_case(analysis: dict[str, Any], info: dict[str, Any], sessions: pd.DataFrame,
                patients: pd.DataFrame) -> SbcCase:
    """Every variable at every occasion jointly (the VAR(1) couples them); cells the
    template did not observe are set to 0 and play no part (missing cells inside a
    patient's span are sampled, cells after dropout are not modelled)."""
    from .trial_models_stage import riclpm_spec

    spec = riclpm_spec(analysis, info)
    data = riclpm.prepare(sessions, spec)
    model = riclpm.build_model(data, spec)
    seen = ~np.isnan(data.values)

    def simulate(v, rng):
        cube = riclpm.simulate_cube(v, data.values.shape[0], rng)[0]
        return {"values": np.where(seen, cube, 0.0)}

    return SbcCase("riclpm", model, [Step(model.predictive_parts, simulate)])


def sequential_case(analysis: dict[str, Any], info: dict[str, Any], sessions: pd.DataFrame,
                    patients: pd.DataFrame) -> SbcCase:
    """Each patient's latent changes drawn jointly from the path model, then every
    measure's sessions from them (the model integrates the changes out)."""
    from .mediation_stage import sequential_spec

    spec = sequential_spec(analysis, info)
    data = seq.prepare(sessions, patients, spec)
    model = seq.build_model(data, spec)
    measures = (*spec.mediators, spec.y)
    parts = {f"change|{p}": t for p, t in model.change_parts.items()}
    parts |= {f"{k}|{p}": t for k, b in model.measure_parts.items() for p, t in b.items()}

    def simulate(v, rng):
        mean, chol = v["change|mean"][0], v["change|chol"][0]
        changes = mean + rng.standard_normal(mean.shape) @ chol.T
        out = {}
        for ki, k in enumerate(measures):
            rows = data.measures[k]
            block = {"mean": (v[f"{k}|mu_level"] + rows.f * changes[rows.patient, ki])[None],
                     "sigma": v[f"{k}|sigma"], "sd_level": v[f"{k}|sd_level"]}
            out[f"value[{k}]"] = one(simulate_compound_symmetric(block, rows.patient,
                                                                 data.n_patients, rng))
        return out

    return SbcCase("sequential_mediation", model, [Step(parts, simulate)])


def within_case(analysis: dict[str, Any], info: dict[str, Any], sessions: pd.DataFrame,
                patients: pd.DataFrame) -> SbcCase:
    """The mediator first (then centred within person as prepare() does), then the
    outcome from the model evaluated on it."""
    from .mediation_stage import within_spec

    spec = within_spec(analysis)
    data = within.prepare(within.lagged_rows(sessions, spec), spec)
    model = within.build_model(data, spec)
    has_y = ~np.isnan(data.y)
    parts = model.predictive_parts  # given the prior draw's own person paths

    def simulate_m(v, rng):
        m = one(simulate_compound_symmetric(v, data.person, data.n_persons, rng))
        m_within, m_mean = within.centred(data.person, m, data.n_persons, spec.centre)
        return {"m": m, "m_within_y": m_within[has_y], "m_mean": m_mean}

    return SbcCase("within_mediation", model, [
        Step(parts["m"], simulate_m),
        Step(parts["y"], lambda v, rng: {"y": one(simulate_compound_symmetric(
            v, data.person[has_y], data.n_persons, rng))}, after_data=True)])


TRIAL_CASES = {"growth": growth_case, "moderation": growth_case, "early_alliance": early_case,
               "riclpm": riclpm_case, "sequential_mediation": sequential_case,
               "within_mediation": within_case}


def build_case(family: str, template: dict[str, str], clean_dir: str | Path,
               config: dict[str, Any]) -> SbcCase:
    """The SBC case of one family on its template dataset (config `sbc.families`):
    meta_<model> families take {review}, trial families {trial, analysis}."""
    clean_dir = Path(clean_dir)
    if family.startswith("meta_"):
        folder = clean_dir / "meta" / template["review"]
        effects = pd.read_csv(folder / "effects.csv", dtype={"study": str, "es_id": str})
        info = json.loads((folder / "review.json").read_text())
        return meta_case(family.removeprefix("meta_"), effects, info,
                         priors_of_review(info, config["meta"]["priors"])[0],
                         tuple(config["meta"]["selection_cutpoints"]))
    folder = clean_dir / "trials" / template["trial"]
    info = json.loads((folder / "trial.json").read_text())
    sessions = pd.read_csv(folder / "sessions.csv", dtype={"patient": str})
    patients = pd.read_csv(folder / "patients.csv", dtype={"patient": str})
    analysis = next(a for a in info["analyses"] if a["name"] == template["analysis"])
    if analysis["type"] != family:
        raise ValueError(f"SBC family '{family}': the template analysis "
                         f"'{template['analysis']}' of {template['trial']} is of type "
                         f"'{analysis['type']}'")
    return TRIAL_CASES[family](analysis, info, sessions, patients)


# ---- stage functions the rules call ------------------------------------------------------


def batch_simulations(batch: int, per_job: int, total: int) -> list[int]:
    return list(range(batch * per_job, min((batch + 1) * per_job, total)))


@python_mode_beside_the_sampler
def sbc_batch(family: str, batch: int, clean_dir: str | Path, settings: dict[str, Any],
              out: str | Path) -> pd.DataFrame:
    """One job: the simulations of `batch` for `family`, written as ranks (tidy CSV)."""
    from .io import write_csv

    s = settings["sbc"]
    sims = batch_simulations(batch, s["per_job"], s["simulations"])
    case = build_case(family, settings["template"], clean_dir, settings)
    sampler = SamplerSettings(chains=s["chains"], draws=s["draws"], tune=s["tune"],
                              seed=s["seed"] + batch,
                              **{k: v for k, v in settings["sampler"].items()
                                 if k in ("backend", "compiler", "target_accept", "threads")})
    table = run_batch(case, sims, sampler, s["thin_to"], s["seed"])
    write_csv(table, out)
    return table


def sbc_summary(batches: list[str | Path], prob: float, ranks_out: str | Path,
                summary_out: str | Path, ecdf_out: str | Path) -> pd.DataFrame:
    """All ranks of a family, the test per parameter and the ECDF curves."""
    from .io import write_csv

    ranks = pd.concat([pd.read_csv(b) for b in batches], ignore_index=True)
    summary, curves = summarise_family(ranks, prob)
    write_csv(ranks, ranks_out)
    write_csv(summary, summary_out)
    write_csv(curves, ecdf_out)
    return summary
