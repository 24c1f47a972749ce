"""The Bayesian models against a frequentist REML fit written in the tests
(tests/reference/reml.py), first checked number by number against metafor.

With many studies (synthetic_alliance_outcome: 295 studies, 450 effects) the weakly
informative priors carry almost no weight, so posterior means and REML estimates
should coincide up to Monte-Carlo error. Tolerances:
- fixed effects (mu, each beta): |posterior mean - REML| < 0.25 REML SE. Monte-Carlo
  error of the posterior mean at these draws is about 0.03 SE; a prior or likelihood
  error that moved the estimate by a quarter of its SE would fail;
- tau_study: posterior median within 10% of the REML SD (between-study SD, 295
  studies, well identified);
- tau_es: within 20% (the within-study SD rests on the 89 studies with several
  effect sizes and is less precisely identified: its posterior SD is ~40% of it).
"""

import numpy as np
import pandas as pd
import pytest
from allianceflow.effects import load_review
from allianceflow.fitting import SamplerSettings, sample
from allianceflow.models.meta import (
    MetaPriors,
    build_model,
    complete_rows,
    model_specs,
    moderator_design,
)

from ..conftest import ROOT, validation_file
from ..reference.reml import reml


def test_reml_reference_reproduces_metafor():
    d = pd.read_csv(validation_file("konstantopoulos2011.csv"))
    e = pd.DataFrame({"study": d["district"].astype(str), "yi": d["yi"], "vi": d["vi"]})
    three = reml(e)
    # metafor 4.x: rma.mv(yi, vi, random = ~ 1 | district/school, data = dat)
    assert three.beta[0] == pytest.approx(0.1847, abs=5e-5)
    assert three.se[0] == pytest.approx(0.0846, abs=5e-5)
    assert three.sigma2_study == pytest.approx(0.0651, abs=5e-5)
    assert three.sigma2_es == pytest.approx(0.0327, abs=5e-5)
    two = reml(e, three_level=False)
    assert two.beta[0] == pytest.approx(0.1279, abs=5e-5)
    assert two.se[0] == pytest.approx(0.0439, abs=5e-5)
    assert two.sigma2_study == pytest.approx(0.0884, abs=5e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["random_effects", "three_level", "metareg_all"])
def test_posterior_means_agree_with_reml_many_studies(model):
    review = load_review(ROOT / "data" / "raw" / "meta" / "synthetic_alliance_outcome")
    spec = next(s for s in model_specs(review.info["three_level"], review.info["moderators"])
                if s.name == model)
    data = complete_rows(review.effects, spec)
    x = moderator_design(data, spec.moderators)[0] if spec.moderators else None
    ref = reml(data, x, spec.three_level)
    idata = sample(build_model(spec, data, MetaPriors()),
                   SamplerSettings(chains=2, draws=500, tune=500, seed=5))
    post = idata["posterior"]
    means = [post["mu"].to_numpy().mean()]
    if spec.moderators:
        means += list(post["beta"].to_numpy().reshape(-1, len(ref.beta) - 1).mean(axis=0))
    z = (np.array(means) - ref.beta) / ref.se
    assert np.all(np.abs(z) < 0.25), f"posterior means off by {z} REML SEs"
    tau = np.median(post["tau_study"].to_numpy())
    assert tau == pytest.approx(np.sqrt(ref.sigma2_study), rel=0.10)
    if spec.three_level:
        assert np.median(post["tau_es"].to_numpy()) == pytest.approx(np.sqrt(ref.sigma2_es),
                                                                   rel=0.20)
