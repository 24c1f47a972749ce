"""Leave-patients-out cross-validation of the trial models (trial_kfold): the per-patient
marginal densities against dense algebra, the weights that leave a patient out, and exact
refits against PSIS-LOO on a small trial."""

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr
from allianceflow import synthetic
from allianceflow.analyses import find_analysis
from allianceflow.analysis_stage import LEAVE_OUTS
from allianceflow.checks import compare_models, stacking_weights
from allianceflow.fitting import SamplerSettings, sample
from allianceflow.models import riclpm
from allianceflow.models.gaussian import random_slopes_marginal_loglik
from allianceflow.trial_kfold import (
    KfoldSettings,
    assign_folds,
    compare_analyses,
    kfold_table,
    psis_pointwise,
)
from allianceflow.trials import load_trial
from scipy import stats
from scipy.special import logsumexp

from .test_trial_models import dense_riclpm_cov


def test_random_slopes_marginal_matches_dense_normal():
    rng = np.random.default_rng(1)
    draws, units, q = 3, 4, 3
    unit_a, unit_b = rng.integers(0, units, 15), rng.integers(0, units - 1, 10)
    z_a = np.column_stack([rng.normal(size=15), np.zeros(15), np.zeros(15)])
    z_b = np.column_stack([np.zeros(10), rng.normal(size=(10, 2))])
    r_a, r_b = rng.normal(size=(draws, 15)), rng.normal(size=(draws, 10))
    s_a, l_a, s_b, l_b = rng.uniform(0.5, 1.5, (4, draws))
    a = rng.normal(size=(draws, q, q))
    cov_u = a @ a.transpose(0, 2, 1) + 0.2 * np.eye(q)
    got = random_slopes_marginal_loglik([(r_a, z_a, unit_a, s_a, l_a),
                                         (r_b, z_b, unit_b, s_b, l_b)], cov_u, units)
    for d in range(draws):
        for u in range(units):  # unit 3 has rows in the first block only
            ia, ib = unit_a == u, unit_b == u
            na, nb = ia.sum(), ib.sum()
            c = np.zeros((na + nb, na + nb))
            c[:na, :na] = s_a[d] ** 2 * np.eye(na) + l_a[d] ** 2
            c[na:, na:] = s_b[d] ** 2 * np.eye(nb) + l_b[d] ** 2
            z = np.vstack([z_a[ia], z_b[ib]])
            r = np.concatenate([r_a[d, ia], r_b[d, ib]])
            expected = stats.multivariate_normal(np.zeros(na + nb),
                                                 c + z @ cov_u[d] @ z.T).logpdf(r)
            assert got[d, u] == pytest.approx(expected, abs=1e-9)


def riclpm_posterior(rng, k, t, draws=2):
    def spd(scale):
        m = rng.normal(size=(draws, k, k))
        return m @ m.transpose(0, 2, 1) * scale + np.eye(k) * 0.3

    return xr.Dataset({
        "mu": (("chain", "draw", "occasion", "variable"), rng.normal(size=(1, draws, t, k))),
        "phi": (("chain", "draw", "variable", "from_variable"),
                rng.uniform(-0.4, 0.4, (1, draws, k, k))),
        "cov_first_std": (("chain", "draw", "variable", "from_variable"), spd(0.5)[None]),
        "cov_innovation_std": (("chain", "draw", "variable", "from_variable"), spd(0.3)[None]),
        "cov_ri_std": (("chain", "draw", "variable", "from_variable"), spd(0.8)[None])})


def test_riclpm_observed_loglik_integrates_missing_cells_and_intercepts():
    rng = np.random.default_rng(4)
    k, t = 2, 4
    values = rng.normal(size=(4, t, k))
    values[1, 1, 0] = np.nan  # a missed cell inside the span
    values[2, 2:] = np.nan  # dropout after occasion 2
    values[3, 0, 1] = values[3, 3, 0] = np.nan
    data = riclpm.RiclpmData(values=values, last=np.array([3, 3, 1, 3]),
                             occasions=list(range(t)), means=np.zeros(k), sds=np.ones(k),
                             n_excluded=0)
    post = riclpm_posterior(rng, k, t)
    got = riclpm.observed_loglik(post, data, chunk=1).to_numpy()[0]
    for d in range(2):
        p = {v: post[v].to_numpy()[0, d] for v in post.data_vars}
        cov = dense_riclpm_cov(p["phi"], p["cov_first_std"], p["cov_innovation_std"],
                               p["cov_ri_std"], t)
        for i in range(4):
            inside = (np.arange(t)[:, None] <= data.last[i]) & ~np.isnan(values[i])
            seen = inside.ravel()
            dist = stats.multivariate_normal(p["mu"].ravel()[seen], cov[np.ix_(seen, seen)])
            assert got[d, i] == pytest.approx(dist.logpdf(values[i].ravel()[seen]))
        # complete patient: the same as the model's closed form with the intercepts integrated
        closed = riclpm.riclpm_loglik(pt.as_tensor(values[:1] - p["mu"]), data.last[:1],
                                      pt.as_tensor(p["phi"]), pt.as_tensor(p["cov_first_std"]),
                                      pt.as_tensor(p["cov_innovation_std"]),
                                      pt.as_tensor(p["cov_ri_std"]), t, k).eval()
        assert got[d, 0] == pytest.approx(closed[0])


def test_folds_deal_each_refitted_unit_once():
    refit = np.zeros(40, dtype=bool)
    refit[[3, 5, 8, 13, 21, 34, 35]] = True
    folds = assign_folds(refit, 3, seed=1)
    assert (folds[~refit] == -1).all()
    assert sorted(np.bincount(folds[refit])) == [2, 2, 3]
    assert (assign_folds(refit, 10, seed=1)[refit] >= 0).all()  # fewer units than folds:
    assert len(set(assign_folds(refit, 10, seed=1)[refit])) == 7  # one at a time


@pytest.fixture(scope="module")
def small_trials(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    trial = synthetic.cbasp_rct(seed=6, n_patients=30, n_sessions=6, n_sites=2,
                                therapists_per_site=2)
    weekly = synthetic.internet_adolescent_trial(seed=7, n_patients=40, n_weeks=6)
    return {ds.name: load_trial(synthetic.write_dataset(ds, raw)) for ds in (trial, weekly)}


@pytest.mark.parametrize("trial, analysis, weighted", [
    ("synthetic_cbasp_rct", "growth", ["outcome"]),
    ("synthetic_cbasp_rct", "early_alliance", ["y"]),
    ("synthetic_cbasp_rct", "sequential_mediation", ["value[alliance]", "value[iip]",
                                                     "value[hrsd]"]),
    ("synthetic_internet_adolescent", "within_mediation", ["m", "y"]),
    ("synthetic_internet_adolescent", "riclpm", ["values"])])
def test_a_zero_weight_takes_the_patients_data_out_of_the_likelihood(small_trials, trial,
                                                                    analysis, weighted):
    """With every weight 0 the data the weights cover no longer move the log density
    (with weights 1 they do); each patient's share, found by zeroing their weight alone,
    adds up to the whole; where the model keeps each patient's log-likelihood, the share
    is exactly that."""
    t = small_trials[trial]
    a = find_analysis(t.info, analysis)
    lo = LEAVE_OUTS[a["type"]](a, t.info, t.sessions, t.patients)
    logp = lo.model.compile_logp()
    point = lo.model.initial_point(random_seed=3)
    original = {name: lo.model[name].get_value() for name in weighted}
    rng = np.random.default_rng(0)

    def at(weight, shifted=False):
        data = {name: v + rng.normal(size=v.shape) if shifted else v
                for name, v in original.items()}
        with lo.model:
            pm.set_data({"patient_weight": weight, **data})
        return float(logp(point))

    ones, zeros = np.ones(lo.n_units), np.zeros(lo.n_units)
    assert at(zeros, shifted=True) == pytest.approx(at(zeros), abs=1e-8)
    assert abs(at(ones, shifted=True) - at(ones)) > 1.0
    full, none = at(ones), at(zeros)
    shares = np.array([full - at(np.where(np.arange(lo.n_units) == j, 0.0, 1.0))
                       for j in range(lo.n_units)])
    assert full - none == pytest.approx(shares.sum(), rel=1e-6)
    if "loglik_patient" in lo.model.named_vars:
        own = lo.model.replace_rvs_by_values([lo.model["loglik_patient"]])[0]
        own = lo.model.compile_fn(own, inputs=lo.model.value_vars,
                                  on_unused_input="ignore")(point)
        np.testing.assert_allclose(shares, own, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_exact_refits_agree_with_psis_where_pareto_k_is_low(small_trials):
    """Within-person mediation on 40 persons, 6 of them left out one at a time (those
    with the highest Pareto k; with the paths integrated out these are mostly below 0.7,
    where PSIS-LOO is trustworthy). There each exact leave-one-out elpd must land near its
    PSIS estimate, and every one must lie below the person's in-sample lpd (by about
    their p_loo, near 1 here: a refit that kept the person in would land on the lpd)."""
    t = small_trials["synthetic_internet_adolescent"]
    a = find_analysis(t.info, "within_mediation")
    settings = SamplerSettings(chains=2, draws=1000, tune=500, seed=3)
    lo = LEAVE_OUTS["within_mediation"](a, t.info, t.sessions, t.patients)
    post = sample(lo.model, settings, log_likelihood=False)["posterior"].to_dataset()
    ll = lo.loglik(post).to_numpy().reshape(-1, lo.n_units)
    k = psis_pointwise(ll)[1]
    cut = float(np.sort(k)[-7])  # the 6 highest k are above it
    table = kfold_table(ll, KfoldSettings(mode="high_k", folds=10, pareto_k=cut, draws=1000),
                        3, lambda: lo, settings)
    done = table[table["method"] == "exact"]
    assert len(done) == 6 and done["fold"].nunique() == 6
    lpd = logsumexp(ll, axis=0) - np.log(len(ll))
    p_loo = lpd[done["unit"]] - done["elpd_psis"].to_numpy()
    gap = done["elpd_exact"].to_numpy() - done["elpd_psis"].to_numpy()
    reliable = done["pareto_k"].to_numpy() <= 0.7
    print(np.round(p_loo, 3), np.round(gap, 3), reliable)
    assert reliable.sum() >= 4
    assert np.abs(gap[reliable]).max() < 0.25 * p_loo.mean(), (gap, p_loo)
    assert (done["elpd_exact"].to_numpy() < lpd[done["unit"]]).all()
    assert (done["fold_divergences"] == 0).all()
    untouched = table[table["method"] == "psis"]
    assert (untouched["elpd"] == untouched["elpd_psis"]).all()


def test_stacking_weights_match_arviz_on_the_same_pointwise_elpd():
    """Half the units come from N(0, 1), half from N(0, 3): each of two fixed models
    fits one half, so stacking mixes them; ArviZ's compare gives the reference."""
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0, 1, 40), rng.normal(0, 3, 40)])
    logliks = {"narrow": stats.norm(0, 1).logpdf(y), "wide": stats.norm(0, 2).logpdf(y)}
    logliks = {k: v[None, None, :] + rng.normal(0, 0.05, (2, 200, len(y)))
               for k, v in logliks.items()}
    reference = compare_models(logliks, "unit").set_index("model")["weight"]
    pointwise = [psis_pointwise(ll.reshape(-1, len(y)))[0] for ll in logliks.values()]
    weights = stacking_weights(np.column_stack(pointwise))
    assert 0.05 < weights[0] < 0.5
    assert weights == pytest.approx(reference[list(logliks)].to_numpy(), abs=1e-3)


def test_analyses_are_compared_only_with_analyses_of_the_same_data():
    rng = np.random.default_rng(2)
    base = rng.normal(-10, 2, 50)

    def kfold(shift, signature):
        return pd.DataFrame({"unit": np.arange(50), "elpd": base + shift
                             + rng.normal(0, 0.1, 50), "method": "psis",
                             "data_signature": signature})

    table = compare_analyses({"growth": kfold(0.0, "a"), "moderation": kfold(-0.2, "a"),
                              "early_alliance": kfold(5.0, "b")})
    assert list(table["analysis"]) == ["growth", "moderation"]
    best, other = table.iloc[0], table.iloc[1]
    assert best["elpd_diff"] == 0 and best["dse"] == 0
    assert other["elpd_diff"] == pytest.approx(10.0, abs=1.5)
    assert other["dse"] == pytest.approx(np.sqrt(50) * np.sqrt(2) * 0.1, rel=0.3)
    assert best["weight"] + other["weight"] == pytest.approx(1.0)
    assert best["weight"] > 0.9


def test_psis_uses_the_chains_relative_efficiency_as_arviz_does():
    """Autocorrelated chains: psis_pointwise with checks.relative_efficiency gives ArviZ's
    loo on the full tree (which takes r_eff from the posterior) to the last digit, and
    the relative efficiency is below 1."""
    import arviz as az
    import xarray as xr
    from allianceflow.checks import psis_weights, relative_efficiency

    rng = np.random.default_rng(7)
    mu = np.zeros((2, 800))
    for t in range(1, 800):  # AR(1) chains, rho 0.8
        mu[:, t] = 0.8 * mu[:, t - 1] + rng.normal(0, 0.6, 2)
    y = rng.normal(0, 1, 30)
    ll = stats.norm(mu[..., None], 1).logpdf(y)  # (chain, draw, unit)
    post = xr.Dataset({"mu": (("chain", "draw"), mu)})
    tree = xr.DataTree.from_dict({"posterior": post, "log_likelihood": xr.Dataset(
        {"y": (("chain", "draw", "unit"), ll)})})
    r_eff = relative_efficiency(post)
    assert r_eff < 0.5
    reference = az.loo(tree, pointwise=True)
    elpd, k = psis_pointwise(ll.reshape(-1, len(y)), r_eff)
    np.testing.assert_allclose(elpd, np.asarray(reference.elpd_i), rtol=1e-10)
    np.testing.assert_allclose(k, np.asarray(reference.pareto_k), rtol=1e-10)
    _, k_weights = psis_weights(ll.reshape(-1, len(y)), r_eff)
    np.testing.assert_allclose(k_weights, k, rtol=1e-10)
