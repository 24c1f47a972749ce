"""The meta-analysis likelihood and derived quantities, checked without sampling."""

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from allianceflow.models.meta import (
    MetaPriors,
    build_model,
    models_for,
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


def test_structure_follows_the_data():
    assert models_for(False) == ["random_effects"]
    assert models_for(True) == ["random_effects", "three_level"]


def test_models_have_the_design_parameter_names():
    e = pd.DataFrame({"study": ["a", "a", "b"], "yi": [0.1, 0.2, 0.3], "vi": [0.01] * 3})
    names = {v.name for v in build_model("three_level", e, MetaPriors()).free_RVs}
    assert names == {"mu", "tau_study", "tau_es"}
    names = {v.name for v in build_model("random_effects", e, MetaPriors()).free_RVs}
    assert names == {"mu", "tau_study"}
