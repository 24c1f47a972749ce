"""Leave-one-study-out and cumulative subsets, the per-study log-likelihood behind the
importance-sampling shortcut, and that shortcut against exact refits."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from allianceflow.fitting import Refitter, SamplerSettings
from allianceflow.meta_influence import (
    cumulative_weights,
    leave_one_out_weights,
    psis_tables,
    refit_rows,
    reported_draws,
    study_order,
)
from allianceflow.models.meta import MetaPriors, build_weighted_model, primary_spec, study_loglik
from scipy import stats

from ..conftest import validation_file

EFFECTS = pd.DataFrame({"study": ["a", "a", "b", "c", "c", "c"],
                        "yi": [0.1, 0.3, -0.1, 0.4, 0.2, 0.25],
                        "vi": [0.02, 0.03, 0.05, 0.01, 0.02, 0.04],
                        "year": [2001, 2001, 1999, np.nan, 2005, 2005]})


def test_subsets_leave_each_study_out_and_accrue_by_year():
    studies = study_order(EFFECTS)
    assert list(studies["study"]) == ["a", "b", "c"]
    assert list(studies["year"]) == [2001, 1999, 2005]  # a study's earliest year
    loo = dict(leave_one_out_weights(studies))
    assert list(loo["b"]) == [1, 0, 1]
    cum = dict(cumulative_weights(studies))
    assert list(cum) == [1999, 2001, 2005]
    assert list(cum[1999]) == [0, 1, 0] and list(cum[2005]) == [1, 1, 1]


@pytest.mark.parametrize("three_level", [True, False])
def test_study_loglik_equals_multivariate_normal(three_level):
    post = xr.Dataset({"mu": (("chain", "draw"), [[0.2, 0.1]]),
                       "tau_study": (("chain", "draw"), [[0.1, 0.3]]),
                       "tau_es": (("chain", "draw"), [[0.05, 0.2]])})
    got = study_loglik(primary_spec(three_level), EFFECTS, post)
    for d, (mu, ts, te) in enumerate([(0.2, 0.1, 0.05), (0.1, 0.3, 0.2)]):
        for s, study in enumerate(["a", "b", "c"]):
            part = EFFECTS[EFFECTS["study"] == study]
            k = len(part)
            cov = (np.diag(part["vi"] + te**2) + ts**2 * np.ones((k, k)) if three_level
                   else np.diag(part["vi"] + ts**2))
            want = stats.multivariate_normal(np.full(k, mu), cov).logpdf(part["yi"])
            assert got[d, s] == pytest.approx(want, rel=1e-10)


@pytest.mark.slow
def test_importance_sampling_agrees_with_exact_refits():
    """PSIS leave-one-study-out against exact refits on konstantopoulos2011 (11
    districts). Where Pareto k <= 0.7 the two posterior means of mu must agree within
    0.15 posterior SD (Monte-Carlo error of two 4000-draw estimates is ~0.03 SD)."""
    d = pd.read_csv(validation_file("konstantopoulos2011.csv"))
    effects = pd.DataFrame({"study": d["district"].astype(str), "yi": d["yi"], "vi": d["vi"]})
    spec = primary_spec(True)
    studies = study_order(effects)
    refitter = Refitter(build_weighted_model(spec, effects, MetaPriors()),
                        SamplerSettings(chains=4, draws=1000, tune=1000, seed=3))
    _, posterior = refit_rows(refitter, np.ones(len(studies)), studies, spec.name, False)
    log_lik = study_loglik(spec, effects, posterior)
    psis = psis_tables(reported_draws(posterior, False), log_lik, spec.name)
    compared = 0
    for i, (study, w) in enumerate(leave_one_out_weights(studies)):
        approx, khat = psis[i]
        if khat > 0.7:
            continue
        exact, _ = refit_rows(refitter, w, studies, spec.name, False)
        a = approx.set_index("parameter").loc["mu"]
        e = exact.set_index("parameter").loc["mu"]
        assert abs(a["mean"] - e["mean"]) < 0.15 * e["sd"], study
        assert a["sd"] == pytest.approx(e["sd"], rel=0.15), study
        compared += 1
    assert compared >= 8


def test_psis_summaries_are_arvizs_weighted_expectations():
    """psis_tables takes ArviZ's loo_expectations over the PSIS weights (smoothed with
    the draws' relative efficiency): the weighted mean is the hand-written sum it
    replaced, the SD that sum's with ArviZ's effective-sample-size correction, and the
    quantiles within 0.02 posterior SD of the interpolated weighted quantiles used before."""
    from allianceflow.checks import relative_efficiency

    rng = np.random.default_rng(5)
    draws = xr.Dataset({"mu": (("chain", "draw"), rng.normal(0.2, 0.1, (4, 1000))),
                        "tau_study": (("chain", "draw"), rng.gamma(4, 0.03, (4, 1000)))})
    x = draws["mu"].to_numpy().ravel()
    log_lik = np.column_stack([stats.norm(x, 0.3).logpdf(y) for y in (0.1, 0.5, -0.2)])
    tables = psis_tables(draws, log_lik, "three_level")
    assert len(tables) == 3
    da = xr.DataArray(log_lik.reshape(4, 1000, 3), dims=("chain", "draw", "study"))
    log_w, khat = da.azstats.psislw(dim=["chain", "draw"], r_eff=relative_efficiency(draws))
    for i, (rows, k) in enumerate(tables):
        assert k == pytest.approx(float(khat[i]))
        w = np.exp(log_w.isel(study=i).to_numpy().ravel())
        w /= w.sum()
        mu = rows.set_index("parameter").loc["mu"]
        mean = np.sum(w * x)
        ess = 1 / np.sum(w**2)
        assert mu["mean"] == pytest.approx(mean, rel=1e-10)
        assert mu["sd"] == pytest.approx(np.sqrt(np.sum(w * (x - mean) ** 2) * ess / (ess - 1)),
                                         rel=1e-8)
        order = np.argsort(x)
        cdf = np.cumsum(w[order])
        for q, column in ((0.025, "q2.5"), (0.975, "q97.5")):
            before = np.interp(q, (cdf - 0.5 * w[order]) / cdf[-1], x[order])
            assert abs(mu[column] - before) < 0.02 * mu["sd"]
        assert rows.set_index("parameter").loc["elpd_left_out", "mean"] == pytest.approx(
            np.log(np.sum(w * np.exp(log_lik[:, i]))), rel=1e-10)
