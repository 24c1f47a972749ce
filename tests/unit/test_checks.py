"""Model checks (allianceflow.checks): the simultaneous ECDF band, LOO-PIT weights, the
predictive p-values, and each model family's simulator against the covariance its
likelihood assumes. One small meta-analysis is sampled end to end: the checks pass when
the model generated the data and flag the missing study level when it did not."""

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from allianceflow.checks import (
    CheckSettings,
    ecdf_band,
    ppc_table,
    psis_weights,
    run_checks,
    statistic,
    uniformity,
    unit_indicator,
    unit_loo_pit,
)
from allianceflow.fitting import SamplerSettings, sample
from allianceflow.models import riclpm
from allianceflow.models.bias import p_interval, selected_draws
from allianceflow.models.gaussian import (
    simulate_compound_symmetric,
    simulate_intercept_slope,
    simulate_random_slopes,
)
from allianceflow.models.meta import MetaPriors, ModelSpec, build_model, pointwise_loglik
from allianceflow.models.meta import predictive as meta_predictive
from scipy import stats

from tests.unit.test_trial_models import dense_riclpm_cov


def test_simultaneous_band_covers_uniform_samples_and_rejects_others():
    rng = np.random.default_rng(3)
    grid, lower, upper = ecdf_band(200, 0.95, n_sim=2000, seed=1)
    inside = 0
    for _ in range(400):
        ecdf = np.searchsorted(np.sort(rng.uniform(size=200)), grid, side="right") / 200
        inside += bool(((ecdf >= lower) & (ecdf <= upper)).all())
    assert 0.92 <= inside / 400 <= 0.98  # simultaneous, not pointwise, 95%
    assert not uniformity(rng.beta(2, 2, size=1000), 0.99)["passed"]  # too central


def test_loo_pit_weights_reproduce_psis_loo():
    rng = np.random.default_rng(4)
    loglik = rng.normal(-1.0, 0.3, size=(800, 5)) + rng.normal(0, 0.5, size=5)
    w, k = psis_weights(loglik)
    tree = xr.DataTree.from_dict({
        "posterior": xr.Dataset({"x": (("chain", "draw"), np.zeros((1, 800)))}),
        "log_likelihood": xr.Dataset({"y": (("chain", "draw", "i"), loglik[None])})})
    loo = az.loo(tree, pointwise=True)
    elpd_i = np.log((w * np.exp(loglik)).sum(axis=0))
    assert elpd_i == pytest.approx(np.asarray(loo.elpd_i), abs=1e-6)
    assert k == pytest.approx(np.asarray(loo.pareto_k), abs=1e-6)


def test_unit_loo_pit_and_predictive_p_values():
    replicated = np.arange(10.0)[:, None] * np.ones((10, 3))
    weights = np.full((10, 2), 0.1)
    # unit 0: one value at the median; unit 1: mean 9.5, above every replicate
    indicator = unit_indicator(np.array([0, 1, 1]))
    pit = unit_loo_pit(indicator.T @ np.array([4.5, -1.0, 20.0]),
                       np.asarray(replicated @ indicator), weights)
    assert pit[0] == pytest.approx(0.5)
    assert 0.9 < pit[1] < 1  # Pareto-smoothed tail: not 1, which no test could take
    table = ppc_table(np.array([4.5, 4.5, 4.5]), replicated, None, ("mean", "max"), "posterior")
    assert table.set_index("statistic")["p_value"].to_dict() == {"mean": 0.5, "max": 0.5}
    means = statistic("cluster_sd", np.array([1.0, 3.0, 10.0, 10.0]), np.array([0, 0, 1, 1]))
    assert means[0] == pytest.approx(np.std([2.0, 10.0], ddof=1))


def random_intercept_fit(rng, tau_model: float, units: int = 40, tau: float = 1.5,
                         sigma: float = 1.0, draws: int = 2000):
    """Sessions within patients (3 to 19 each), y_ij = mu + u_i + e_ij, and exact
    posterior draws of mu under a model with known SDs (tau_model, sigma) and prior
    mu ~ N(0, 10): each patient's log-likelihood with u_i integrated out, and a block
    whose replicates draw u_i again, as the trial models' checks get them."""
    from allianceflow.checks import Predictive

    n = rng.integers(3, 20, units)
    patient = np.repeat(np.arange(units), n)
    y = rng.normal(0, 1) + rng.normal(0, tau, units)[patient] + rng.normal(0, sigma, n.sum())
    mean = np.bincount(patient, y) / n
    within = np.bincount(patient, (y - mean[patient]) ** 2)
    v_mean, v_total = tau_model**2 + sigma**2 / n, sigma**2 + n * tau_model**2
    precision = 1 / 100 + (1 / v_mean).sum()
    mu = rng.normal((mean / v_mean).sum() / precision, precision**-0.5, draws)
    loglik = -0.5 * ((n - 1) * np.log(sigma**2) + np.log(v_total) + n * np.log(2 * np.pi)
                     + within / sigma**2 + n * (mean - mu[:, None]) ** 2 / v_total)

    def simulate(parts, rng):
        mu_ = parts["mu"]
        return (mu_[:, None] + rng.normal(0, tau_model, (len(mu_), units))[:, patient]
                + rng.normal(0, sigma, (len(mu_), n.sum())))

    block = Predictive(observed=y, group=patient, parts={}, simulate=simulate, label="y",
                       group_name="patient", cluster=patient)
    return block, mu, loglik


def loo_pit_rejects(rng, tau_model: float, replicates: int) -> tuple[float, float, float]:
    """Share of simulated fits whose LOO-PIT test fails at 5%: as check_block runs it;
    with POT-C's own p-value of the same per-patient values; and with POT-C of every
    session's value."""
    from allianceflow.checks import loo_pit_test
    from arviz_stats.base import array_stats

    settings = CheckSettings(pit_prob=0.95, pit_null_draws=1000)
    ours = uncalibrated = per_session = 0
    for _ in range(replicates):
        block, mu, loglik = random_intercept_fit(rng, tau_model)
        weights, _ = psis_weights(loglik)
        pick = rng.choice(len(mu), 400, replace=False)
        weights = weights[pick] / weights[pick].sum(axis=0)
        parts = {"mu": mu[pick]}
        rep = block.simulate(parts, rng)
        test = loo_pit_test(block, parts, rep, weights, settings, rng, 0)
        ours += not test["passed"]
        uncalibrated += test["pot_c_p_value"] < 0.05
        session_pit = (weights[:, block.group] * (rep < block.observed)).sum(axis=0)
        per_session += array_stats.uniformity_test(session_pit, method="pot_c")[0] < 0.05
    return ours / replicates, uncalibrated / replicates, per_session / replicates


def test_loo_pit_test_holds_its_nominal_level_on_patients():
    """Calibration: 200 correctly specified fits of 40 patients with 3 to 19 sessions,
    nominal level 5%. The check rejects 4 to 19 of them (P of fewer than 4 is 1% at a
    true 5% and 0.5% at a true 2%; P of more than 19 is 0.3% at a true 5% and nil at a
    true 20%). POT-C's own p-value of the same per-patient values, which takes them as
    exchangeable, rejects at most 2 (conservative: LOO-PIT values are negatively
    dependent); POT-C of every session's value at least 20% (a patient's sessions move
    together)."""
    rates = loo_pit_rejects(np.random.default_rng(11), tau_model=1.5, replicates=200)
    print(f"rejection rate at 5%: calibrated {rates[0]:.3f}, POT-C alone {rates[1]:.3f}, "
          f"per session {rates[2]:.3f}")
    assert 0.02 <= rates[0] < 0.10
    assert rates[1] <= 0.01
    assert rates[2] >= 0.20


def test_loo_dependence_recovers_the_correlation_of_centred_values():
    """Equal patients and one population mean: the LOO z-scores are correlated
    -1/(units - 1), which the estimate from replicates recovers."""
    from allianceflow.checks import loo_dependence

    rng = np.random.default_rng(3)
    units, draws, sets = 30, 400, 20
    mu = rng.normal(0, (2.0 / units) ** 0.5, draws)  # posterior of the mean, v = 2
    means = mu[None, :, None] + rng.normal(0, 2.0**0.5, (sets, draws, units))
    dep = loo_dependence(means)
    z = dep.sample(20000, rng)
    r = np.corrcoef(z, rowvar=False)
    assert dep.rank == 1
    assert np.allclose(np.diag(np.cov(z, rowvar=False)), 1, atol=0.05)
    assert abs(r[~np.eye(units, dtype=bool)].mean() + 1 / (units - 1)) < 0.005
    assert loo_dependence(np.repeat(means[:1], sets, axis=0)).rank == 0  # no spread


def test_loo_pit_test_finds_too_little_between_patient_spread():
    """Power: the model's between-patient SD a third of the truth's is found."""
    ours, _, _ = loo_pit_rejects(np.random.default_rng(12), tau_model=0.5, replicates=20)
    assert ours >= 0.9


def test_selection_model_replicates_follow_the_publication_weights():
    rng = np.random.default_rng(5)
    n = 40000
    mean, sd, se = np.zeros((1, n)), np.full((1, n), 1.0), np.full(n, 1.0)
    cut = (0.025, 0.05, 0.5)
    free = selected_draws(mean, sd, se, np.ones((1, 4)), cut, 1, rng)[0]
    assert stats.kstest(free, "norm").pvalue > 0.01  # all weights 1: no selection
    omega = np.array([[1.0, 0.5, 0.25, 0.1]])
    kept = selected_draws(mean, sd, se, omega, cut, 1, rng)[0]
    share = np.bincount(p_interval(kept, se, cut, 1), minlength=4) / n
    prob = np.diff(-stats.norm.sf([np.inf, *stats.norm.isf(cut), -np.inf]))
    expected = prob * omega[0] / (prob * omega[0]).sum()
    assert share == pytest.approx(expected, abs=0.01)


def empirical_cov(draws: np.ndarray) -> np.ndarray:
    return np.cov(draws, rowvar=False)


def test_trial_simulators_match_the_covariance_the_likelihoods_assume():
    rng = np.random.default_rng(6)
    n = 60000
    f = np.array([0.0, 0.3, 1.0])
    patient = np.zeros(3, dtype=int)
    parts = {"mean": np.zeros((n, 3)), "var": np.full(n, 0.5), "sd_level": np.full(n, 1.2),
             "sd_slope": np.full(n, 0.8), "rho": np.full(n, -0.5)}
    y = simulate_intercept_slope(parts, f, patient, 1, rng)
    z = np.c_[np.ones(3), f]
    g = np.array([[1.44, -0.48], [-0.48, 0.64]])
    assert empirical_cov(y) == pytest.approx(0.5 * np.eye(3) + z @ g @ z.T, abs=0.05)
    cs = simulate_compound_symmetric({"mean": np.zeros((n, 3)), "sigma": np.full(n, 0.7),
                                      "sd_level": np.full(n, 1.1)}, patient, 1, rng)
    assert empirical_cov(cs) == pytest.approx(0.49 * np.eye(3) + 1.21, abs=0.05)
    loads = np.array([[0.5, 0.0], [-1.0, 0.3], [0.2, 1.0]])  # rows' loadings on 2 slopes
    cov_u = np.array([[0.8, 0.3], [0.3, 0.5]])
    rs = simulate_random_slopes({"mean": np.zeros((n, 3)), "sigma": np.full(n, 0.7),
                                 "sd_level": np.full(n, 1.1),
                                 "cov_u": np.broadcast_to(cov_u, (n, 2, 2))}, loads, patient,
                                1, rng)
    assert empirical_cov(rs) == pytest.approx(0.49 * np.eye(3) + 1.21
                                              + loads @ cov_u @ loads.T, abs=0.05)

    k, t = 2, 3
    phi = np.array([[0.4, -0.2], [0.15, 0.3]])
    psi, sz, sri = (np.array([[1.0, 0.3], [0.3, 0.8]]), np.array([[0.5, 0.1], [0.1, 0.4]]),
                    np.array([[0.6, -0.2], [-0.2, 0.9]]))
    draws = 40000
    cube = riclpm.simulate_cube({"mu": np.zeros((draws, t, k)),
                                 "phi": np.broadcast_to(phi, (draws, k, k)),
                                 "cov_ri": np.broadcast_to(sri, (draws, k, k)),
                                 "cov_first": np.broadcast_to(psi, (draws, k, k)),
                                 "cov_innovation": np.broadcast_to(sz, (draws, k, k))}, 1, rng)
    assert empirical_cov(cube[:, 0].reshape(draws, t * k)) == pytest.approx(
        dense_riclpm_cov(phi, psi, sz, sri, t), abs=0.05)


def clustered_effects(tau_study: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    study = np.repeat(np.arange(15), 4)
    vi = rng.uniform(0.01, 0.03, study.size)
    yi = (0.3 + tau_study * rng.standard_normal(15)[study]
          + 0.1 * rng.standard_normal(study.size) + np.sqrt(vi) * rng.standard_normal(study.size))
    return pd.DataFrame({"study": study.astype(str), "es_id": np.arange(study.size).astype(str),
                         "yi": yi, "vi": vi})


@pytest.mark.parametrize("tau_study, flagged", [(0.0, False), (0.5, True)])
def test_two_level_model_checks_flag_a_missing_study_level(tau_study, flagged):
    effects = clustered_effects(tau_study, seed=7)
    spec = ModelSpec("random_effects", False)
    model = build_model(spec, effects, MetaPriors())
    idata = sample(model, SamplerSettings(chains=2, draws=500, tune=500, seed=8))
    summary, tables = run_checks(model, {"effects": meta_predictive(spec, effects, model, True)},
                                 idata, pointwise_loglik(idata),
                                 idata["posterior"].to_dataset()[["mu", "tau_study"]],
                                 CheckSettings(predictive_draws=300), 9, spec.name)
    p = summary["data"]["effects"]["posterior_predictive"]["cluster_sd"]
    assert (p < 0.01) == flagged  # the spread of study means is what a two-level model misses
    assert summary["data"]["effects"]["prior_predictive"]["share_outside"] < 0.05
    assert set(tables) == {"ppc", "ppc_curves", "loo_pit", "sensitivity", "priors"}
    assert set(tables["sensitivity"]["parameter"]) == {"mu", "tau_study"}
    assert tables["priors"].set_index("parameter")["prior"].to_dict() == {
        "mu": "Normal(μ = 0, σ = 0.5)", "tau_study": "HalfNormal(σ = 0.5)"}


def test_loo_pit_of_replicates_that_keep_each_units_latent_effects_is_not_judged():
    from allianceflow.checks import Predictive, check_block

    rng = np.random.default_rng(10)
    observed = rng.normal(size=40)
    replicated = rng.normal(size=(200, 40)) * 0.2  # far too narrow: PIT piles up at 0 and 1
    block = Predictive(observed=observed, group=np.arange(40), parts={},
                       simulate=lambda v, rng: v["rep"], label="y", conditional_on_units=True)
    loglik = rng.normal(-1, 0.01, size=(400, 40))
    summary, _ = check_block("y", block, {"rep": replicated}, {"rep": replicated}, loglik,
                             np.arange(200), CheckSettings(), rng, 0)
    assert summary["loo_pit"]["passed"] is None and not summary["loo_pit"]["reliable"]
    assert not any("LOO-PIT" in w for w in summary["warnings"])
    block.conditional_on_units = False
    summary, _ = check_block("y", block, {"rep": replicated}, {"rep": replicated}, loglik,
                             np.arange(200), CheckSettings(), rng, 0)
    assert summary["loo_pit"]["passed"] is False
    assert any("LOO-PIT of the units is not uniform" in w for w in summary["warnings"])


def test_prior_table_prints_the_priors_the_model_was_built_with():
    """The table the reports print is read from the model graph: the data-scaled SDs of
    within-person mediation's paths, and nothing per person."""
    from allianceflow.checks import prior_table
    from allianceflow.models import within_mediation as wm

    rng = np.random.default_rng(8)
    rows = pd.DataFrame({"person": np.repeat(np.arange(12), 5), "time": np.tile(np.arange(5), 12),
                         "x": rng.normal(0, 2.0, 60), "m": rng.normal(10, 3.0, 60),
                         "y": rng.normal(50, 8.0, 60)})
    data = wm.prepare(rows, wm.WithinSpec(x="x", m="m", y="y"))
    table = prior_table(wm.build_model(data, wm.WithinSpec(x="x", m="m", y="y")))
    prior = dict(zip(table["parameter"], table["prior"], strict=True))
    sx, sm, sy = data.x.std(), data.m_within.std(), data.y.std()
    assert prior["a"] == f"Normal(μ = 0, σ = {round(sm / sx, 4):.4g})"
    assert prior["b"] == f"Normal(μ = 0, σ = {round(sy / sm, 4):.4g})"
    assert prior["dy"] == f"Normal(μ = {round(data.y.mean(), 4):.4g}, σ = {round(2 * sy, 4):.4g})"
    assert prior["person_cov"].startswith("LKJCholeskyCov(n = 3, η = 4;")
    assert "z" not in prior  # per-person values are not population priors
    assert set(table["values"]) <= set(range(1, 13))


def test_power_scaling_takes_the_log_prior_of_the_population_variables_only():
    """Power-scaling sums the log prior of the population-level variables
    (models/structure.py), however many values they have: a ZeroSumNormal over 3 x 10,
    an LKJ prior; the standard-normal offsets z of a random effect are left out."""
    import pymc as pm
    import pytensor
    from allianceflow.checks import summed_log_prior
    from allianceflow.models.structure import population_variables

    with pytensor.config.change_flags(mode="FAST_COMPILE"):  # nothing to compile here
        with pm.Model() as model:
            mu = pm.Normal("mu", 0, 1, shape=3)
            sd = pm.HalfNormal("sd", 1)
            pm.ZeroSumNormal("dev", 1, shape=(3, 10))
            pm.LKJCholeskyCov("cov", n=5, eta=2, sd_dist=pm.Exponential.dist(1, shape=5))
            z = pm.Normal("z", 0, 1, shape=40)
            pm.Normal("y", mu[0] + sd * z, 1, observed=np.zeros(40))
            idata = pm.sample_prior_predictive(draws=5, random_seed=1)
        idata["posterior"] = idata["prior"]
        full = pm.stats.compute_log_prior(idata, model=model, extend_inferencedata=False,
                                          progressbar=False)
        full = full["log_prior"].to_dataset() if isinstance(full, xr.DataTree) else full
        names = population_variables(model)
        assert names == ["mu", "sd", "dev", "cov"]
        ours = summed_log_prior(idata["posterior"].to_dataset(), model, names)["total"]
        expected = sum(full[n].sum([d for d in full[n].dims if d not in ("chain", "draw")])
                       for n in names)
        np.testing.assert_allclose(ours.to_numpy(), expected.to_numpy(), rtol=1e-10)


def test_the_summed_log_prior_in_one_call_equals_pymcs_draw_by_draw():
    """summed_log_prior vectorises over draws what compute_log_prior evaluates draw by draw:
    the same totals to the last bit, for bounded, vector, LKJ and hierarchical priors, in
    Python mode with more variables than one NumPy ufunc takes inputs (32)."""
    import pymc as pm
    import pytensor
    from allianceflow.checks import summed, summed_log_prior

    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        with pm.Model() as model:
            mu = pm.Normal("mu", 0, 1, shape=3)
            sd = pm.HalfNormal("sd", 1)
            pm.Uniform("rho", -1, 1)
            pm.Beta("omega", 2, 3)
            pm.LKJCholeskyCov("cov", n=3, eta=2, sd_dist=pm.Exponential.dist(1, shape=3))
            extra = [pm.Gamma(f"g{i}", 2, 1) for i in range(35)]
            z = pm.Normal("z", mu[0], sd, shape=20)
            pm.Normal("y", z + extra[0], 1, observed=np.zeros(20))
            idata = pm.sample_prior_predictive(draws=7, random_seed=3)
        idata["posterior"] = idata["prior"]
        names = [rv.name for rv in model.free_RVs]
        reference = pm.compute_log_prior(idata, model=model, extend_inferencedata=False,
                                         progressbar=False, var_names=names)
        reference = (reference["log_prior"].to_dataset()
                     if isinstance(reference, xr.DataTree) else reference)
        ours = summed_log_prior(idata["posterior"].to_dataset(), model, names)
        np.testing.assert_array_equal(ours["total"].to_numpy(),
                                      summed(reference)["total"].to_numpy())
        assert ours["total"].dims == ("chain", "draw")
        assert np.isfinite(ours["total"]).all() and ours["total"].std() > 0
        none = summed_log_prior(idata["posterior"].to_dataset(), model, [])
        assert (none["total"] == 0).all()


def test_a_jobs_other_functions_run_in_python_mode_and_the_mode_is_restored():
    import pytensor
    from allianceflow.fitting import python_mode_beside_the_sampler

    before = pytensor.config.mode
    seen = python_mode_beside_the_sampler(lambda: pytensor.config.mode)()
    assert seen == "FAST_COMPILE"
    assert pytensor.config.mode == before


def test_log_mean_exp_is_the_stable_log_of_the_weighted_mean():
    from allianceflow.checks import log_mean_exp

    rng = np.random.default_rng(6)
    x, w = rng.normal(-800, 3, 500), rng.uniform(size=500)  # exp(x) underflows to 0
    shifted = x + 800
    assert log_mean_exp(x) == pytest.approx(np.log(np.mean(np.exp(shifted))) - 800, abs=1e-9)
    assert log_mean_exp(x, w) == pytest.approx(
        np.log(np.sum(w * np.exp(shifted)) / w.sum()) - 800, abs=1e-9)
