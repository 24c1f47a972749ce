"""The meta-analysis likelihood and derived quantities, checked without sampling."""

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
import xarray as xr
from allianceflow.models.meta import (
    MetaPriors,
    ModelSpec,
    build_model,
    complete_rows,
    model_specs,
    moderator_design,
    study_block_logp,
    typical_sampling_variance,
)
from scipy import stats


def test_marginal_study_block_equals_multivariate_normal():
    rng = np.random.default_rng(3)
    idx = np.array([0, 0, 0, 1, 2, 2])
    y, v = rng.normal(0.2, 0.3, 6), rng.uniform(0.01, 0.1, 6)
    mu, ts, te = 0.15, 0.2, 0.1
    k = np.bincount(idx).astype(float)
    got = pytensor.function([], study_block_logp(pt.as_tensor(y), pt.as_tensor(v),
                                                 pt.as_tensor(idx), pt.as_tensor(k),
                                                 mu, ts, te))()
    for s in range(3):
        m = idx == s
        cov = np.diag(v[m] + te**2) + ts**2 * np.ones((m.sum(), m.sum()))
        assert got[s] == pytest.approx(stats.multivariate_normal(np.full(m.sum(), mu),
                                                                 cov).logpdf(y[m]), rel=1e-10)


def test_typical_sampling_variance_equal_variances():
    # With equal variances v the Higgins-Thompson typical variance is v itself.
    assert typical_sampling_variance(np.full(10, 0.04)) == pytest.approx(0.04)


RATER = {"name": "rater", "type": "categorical", "reference": "patient"}
N_YEAR = {"name": "year", "type": "continuous"}


def test_structure_follows_the_data():
    bias = ["pet", "peese", "selection"]
    names = [s.name for s in model_specs(False, [])]
    assert names == ["random_effects", *bias]
    names = [s.name for s in model_specs(True, [])]
    assert names == ["random_effects", "three_level", *bias]
    specs = model_specs(True, [RATER, N_YEAR])
    assert [s.name for s in specs] == ["random_effects", "three_level", "metareg_rater",
                                       "metareg_year", "metareg_all", *bias]
    assert all(s.three_level for s in specs[1:5])
    assert [s.name for s in model_specs(False, [RATER])][1] == "metareg_rater"


def test_moderator_design_reference_dummies_and_centring():
    e = pd.DataFrame({"rater": ["patient", "observer", "therapist", "observer"],
                      "year": [2000.0, 2002.0, 2004.0, 2006.0]})
    x, names = moderator_design(e, (RATER, N_YEAR))
    assert names == ["rater:observer", "rater:therapist", "year"]
    np.testing.assert_array_equal(x[:, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(x[:, 1], [0, 0, 1, 0])
    np.testing.assert_allclose(x[:, 2], [-3, -1, 1, 3])


def test_meta_regression_drops_rows_missing_its_moderator():
    e = pd.DataFrame({"study": ["a", "b", "c"], "yi": [0.1, 0.2, 0.3], "vi": [0.01] * 3,
                      "rater": ["patient", None, "observer"]})
    assert len(complete_rows(e, ModelSpec("metareg_rater", False, (RATER,)))) == 2
    assert len(complete_rows(e, ModelSpec("random_effects", False))) == 3


def test_models_have_the_design_parameter_names():
    e = pd.DataFrame({"study": ["a", "a", "b"], "yi": [0.1, 0.2, 0.3], "vi": [0.01] * 3,
                      "rater": ["patient", "observer", "patient"]})
    names = {v.name for v in build_model(ModelSpec("three_level", True), e,
                                         MetaPriors()).free_RVs}
    assert names == {"mu", "tau_study", "tau_es"}
    names = {v.name for v in build_model(ModelSpec("random_effects", False), e,
                                         MetaPriors()).free_RVs}
    assert names == {"mu", "tau_study"}
    names = {v.name for v in build_model(ModelSpec("metareg_rater", True, (RATER,)), e,
                                         MetaPriors()).free_RVs}
    assert names == {"mu", "beta", "tau_study", "tau_es"}


def test_a_meta_regressions_i2_and_prediction_interval_are_named_as_what_they_are():
    """In a meta-regression the SDs are residual and mu is at the reference levels: its I²
    rows are the residual heterogeneity's share and its prediction interval is a new
    study's at the reference levels, and their names say so."""
    from allianceflow.models.meta import derived_quantities, prediction_names, reported_parameters

    post = xr.Dataset({k: (("chain", "draw"), np.full((1, 4), v))
                       for k, v in {"mu": 0.2, "tau_study": 0.1, "tau_es": 0.05}.items()})
    vi = np.full(3, 0.01)
    plain, moderated = ModelSpec("three_level", True), ModelSpec("metareg_rater", True, (RATER,))
    assert set(derived_quantities(post, vi, False, 1, plain)) >= {"i2_study", "i2_es"}
    got = derived_quantities(post, vi, False, 1, moderated)
    assert set(got) >= {"i2_study_residual", "i2_es_residual"} and "i2_study" not in got
    assert float(got["i2_study_residual"][0, 0]) == pytest.approx(0.01 / 0.0225)
    assert prediction_names(plain) == ("pred_low", "pred_high")
    assert prediction_names(moderated) == ("pred_low_at_reference", "pred_high_at_reference")
    assert reported_parameters(moderated, xr.merge([post, got]), False)[-2:] == [
        "i2_study_residual", "i2_es_residual"]
