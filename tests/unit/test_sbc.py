"""Simulation-based calibration: the rank test, and a small SBC run of the random-effects
meta-analysis that passes, next to a deliberately broken simulator that the test catches;
the RI-CLPM's SBC on a template with missed cells."""

import numpy as np
import pandas as pd
import pytest
from allianceflow import synthetic
from allianceflow.analyses import find_analysis
from allianceflow.checks import part_values
from allianceflow.fitting import SamplerSettings
from allianceflow.mediation_stage import sequential_spec
from allianceflow.models import sequential_mediation as seq
from allianceflow.models.meta import MetaPriors
from allianceflow.sbc import (
    Step,
    batch_simulations,
    meta_case,
    prior_draws,
    rank_uniformity,
    riclpm_case,
    run_batch,
    sequential_case,
    summarise_family,
)
from allianceflow.trials import load_trial


def test_rank_test_accepts_uniform_ranks_and_rejects_skewed_ones():
    rng = np.random.default_rng(1)
    assert rank_uniformity(rng.integers(0, 101, 200), 100, 0.95)["passed"]
    assert not rank_uniformity(rng.integers(30, 101, 200), 100, 0.95)["passed"]
    assert not rank_uniformity(rng.integers(40, 61, 200), 100, 0.95)["passed"]  # too central


def test_coverage_is_of_the_central_interval_of_the_draws():
    """A calibrated family (each true value drawn from the posterior its draws come
    from) whose posteriors are piled at a bound, Beta(0.3, 3) like an SD near zero, or
    at both, Beta(0.5, 0.5) like a selection weight: the central 95% interval of the
    draws covers 95% of the truths. Mean +- 1.96 SD covered 0.93 and 1.00 of them."""
    rng = np.random.default_rng(2)
    rows = []
    for name, (a, b) in {"sd": (0.3, 3.0), "omega": (0.5, 0.5)}.items():
        draws, true = rng.beta(a, b, (2000, 1000)), rng.beta(a, b, 2000)
        rows.append(pd.DataFrame({
            "family": "f", "simulation": np.arange(2000), "parameter": name, "true": true,
            "rank": (draws[:, ::10] < true[:, None]).sum(axis=1), "max_rank": 100,
            "mean": draws.mean(axis=1), "sd": draws.std(axis=1, ddof=1),
            "lower_95": np.quantile(draws, 0.025, axis=1),
            "upper_95": np.quantile(draws, 0.975, axis=1), "divergences": 0}))
    ranks = pd.concat(rows, ignore_index=True)
    coverage = summarise_family(ranks, 0.95)[0].set_index("parameter")["coverage_95"]
    assert coverage.to_numpy() == pytest.approx([0.95, 0.95], abs=0.015)  # binomial sd 0.005
    # rank files without the quantiles: the central interval of the 100 thinned draws,
    # ranks 3..97 of 0..100, so 95/101 under calibration
    old_files = summarise_family(ranks.drop(columns=["lower_95", "upper_95"]), 0.95)[0]
    assert old_files["coverage_95"].to_numpy() == pytest.approx([95 / 101] * 2, abs=0.015)


def test_batches_cover_every_simulation_once():
    sims = [s for b in range(4) for s in batch_simulations(b, 3, 10)]
    assert sims == list(range(10))


def small_review(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = rng.integers(30, 300, 20)
    return pd.DataFrame({"study": [f"s{i}" for i in range(20)], "es_id": "1",
                         "yi": rng.normal(0.25, 0.15, 20), "vi": 1 / (n - 3.0)})


@pytest.fixture(scope="module")
def sbc_runs():
    effects = small_review()
    info = {"effect_type": "r", "direction": 1}
    settings = SamplerSettings(chains=2, draws=300, tune=300, seed=4)
    sims = list(range(24))
    good = meta_case("random_effects", effects, info, MetaPriors(), (0.025, 0.05, 0.5))
    broken = meta_case("random_effects", effects, info, MetaPriors(), (0.025, 0.05, 0.5))
    step = broken.steps[0]
    # a simulator that does not match the model: effects twice as far from zero
    broken.steps = [Step(step.parts, lambda v, rng: {"yi": 2 * step.simulate(v, rng)["yi"]})]
    return (run_batch(good, sims, settings, thin_to=50, seed=11),
            run_batch(broken, sims, settings, thin_to=50, seed=11))


def test_small_sbc_run_of_the_random_effects_model(sbc_runs):
    ranks, _ = sbc_runs
    assert set(ranks["parameter"]) == {"mu", "tau_study"}
    assert ranks["rank"].between(0, 50).all() and ranks["simulation"].nunique() == 24
    mu = ranks[ranks["parameter"] == "mu"]
    assert np.corrcoef(mu["true"], mu["mean"])[0, 1] > 0.95  # the refits recover each truth
    summary, curves = summarise_family(ranks, 0.95)
    assert summary["passed"].all()
    assert set(curves["parameter"]) == {"mu", "tau_study"}


def test_sbc_catches_a_simulator_that_does_not_match_the_model(sbc_runs):
    _, broken = sbc_runs
    summary, _ = summarise_family(broken, 0.95)
    assert not summary.set_index("parameter").loc["mu", "passed"]


def test_sequential_simulator_draws_each_patients_changes_jointly(tmp_path):
    """The sequential mediation model integrates the latent changes out, so its SBC
    simulator draws them, jointly over measures (the path model correlates them). At one
    prior draw, a patient's sessions over 4000 simulated datasets have the mean and
    covariance the likelihood assumes: mu_level + f m and F S F' + compound symmetry
    within each measure."""
    trial = synthetic.cbasp_rct(seed=6, n_patients=30, n_sessions=6, n_sites=2,
                                therapists_per_site=2)
    t = load_trial(synthetic.write_dataset(trial, tmp_path))
    analysis = find_analysis(t.info, "sequential_mediation")
    case = sequential_case(analysis, t.info, t.sessions, t.patients)
    spec = sequential_spec(analysis, t.info)
    data = seq.prepare(t.sessions, t.patients, spec)
    step = case.steps[0]
    values = part_values(case.model, step.parts, prior_draws(case.model, 1, seed=5))
    rng = np.random.default_rng(0)
    sims = [step.simulate(values, rng) for _ in range(4000)]
    measures = (*spec.mediators, spec.y)
    chol = values["change|chol"][0]
    s_cov = chol @ chol.T
    m = values["change|mean"][0][0]  # patient 0's mean changes
    rows = [(ki, j) for ki, k in enumerate(measures)
            for j in np.flatnonzero(data.measures[measures[ki]].patient == 0)]
    assert len({ki for ki, _ in rows}) == len(measures)
    got = np.array([[s[f"value[{measures[ki]}]"][j] for ki, j in rows] for s in sims])
    f = np.zeros((len(rows), len(measures)))
    mean, cov = np.zeros(len(rows)), np.zeros((len(rows), len(rows)))
    for r, (ki, j) in enumerate(rows):
        k = measures[ki]
        f[r, ki] = data.measures[k].f[j]
        mean[r] = values[f"{k}|mu_level"][0] + f[r, ki] * m[ki]
        for r2, (ki2, _) in enumerate(rows):
            if ki2 == ki:
                cov[r, r2] = values[f"{k}|sd_level"][0] ** 2 + (
                    values[f"{k}|sigma"][0] ** 2 if r == r2 else 0)
    cov += f @ s_cov @ f.T
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(got.mean(axis=0) - mean), 4 * sd / np.sqrt(len(sims)))
    np.testing.assert_allclose(got.std(axis=0), sd, rtol=0.06)
    np.testing.assert_allclose(np.corrcoef(got.T), cov / np.outer(sd, sd), atol=0.07)


@pytest.mark.slow
def test_riclpm_sbc_refits_a_template_with_missed_cells(tmp_path):
    """A template trial with cells missed inside patients' spans (a missed week, a skipped
    measure): the missed cells are latent values with a flat prior, which no prior draw can
    make, so the simulations start from the proper priors only and the simulator fills
    every cell. Two simulations refit, each ranking every population-level parameter (the
    occasion deviations `mu_deviation` too, however many values) and no missed cell."""
    trial = synthetic.internet_adolescent_trial(seed=8, n_patients=20, n_weeks=4)
    t = load_trial(synthetic.write_dataset(trial, tmp_path))
    analysis = {**find_analysis(t.info, "riclpm"), "variables": ["alliance", "depression"],
                "start": 1, "end": 4}
    sessions = t.sessions.copy()
    first = sessions.groupby("patient")["session"].transform("min")
    last = sessions.groupby("patient")["session"].transform("max")
    inside = sessions.index[(sessions["session"] > first) & (sessions["session"] < last)]
    missed = inside[:6]
    sessions.loc[missed[:3], "alliance"] = np.nan  # a skipped measure
    sessions.loc[missed[3:], ["alliance", "depression"]] = np.nan  # a missed week
    case = riclpm_case(analysis, t.info, sessions, t.patients)
    assert "missing_cells" in [rv.name for rv in case.model.free_RVs]
    ranks = run_batch(case, [0, 1], SamplerSettings(chains=2, draws=100, tune=100, seed=3),
                      thin_to=20, seed=5)
    params = set(ranks["parameter"])
    assert ranks["simulation"].nunique() == 2
    assert not any(p.startswith("missing_cells") for p in params)
    assert sum(p.startswith("mu_deviation") for p in params) == 2 * 4  # variables x weeks
    assert ranks["rank"].between(0, 20).all() and np.isfinite(ranks["mean"]).all()
