"""Priors that follow the measure (models/meta_priors.py), and a prior-data conflict that
cannot be missed. A simulated review of pre-post standardised mean changes, pooled at -2
with a heterogeneity SD of 1.5 (far from Fisher z's scale): with the priors of its
measure the posterior mean agrees with REML within 0.5 REML SE; with Fisher z's priors
it does not, and power-scaling flags the conflict, the check warns and the report says
so in a red banner."""

import json

import numpy as np
import pandas as pd
import pytest
from allianceflow.checks import CheckSettings, run_checks
from allianceflow.errors import ConfigError
from allianceflow.fitting import SamplerSettings, sample
from allianceflow.models.meta import ModelSpec, build_model, pointwise_loglik, predictive
from allianceflow.models.meta_priors import MetaPriors, measure_key, review_priors
from allianceflow.report_checks import checks_banner
from allianceflow.reports import checks_status

from ..reference.reml import reml


def pre_post_review(seed: int = 8, studies: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 120, studies)
    theta = rng.normal(-2.0, 1.5, studies)
    vi = 2 * (1 - 0.5) / n + theta**2 / (2 * n)  # g of a change, pre-post r = .5
    return pd.DataFrame({"study": [f"s{i}" for i in range(studies)], "es_id": "1",
                         "yi": rng.normal(theta, np.sqrt(vi)), "vi": vi})


def test_measures_are_known_by_their_usual_names():
    assert measure_key("Hedges' g") == "smd" and measure_key("SMCR") == "smc"
    assert measure_key("r") == "fisher_z" and measure_key("log OR") == "log_ratio"
    priors, source = review_priors("SMC", {"tau_sd": 2.0}, {"mu_sd": 3.0}, "review.yaml")
    assert (priors.mu_sd, priors.tau_sd, priors.beta_sd) == (3.0, 2.0, 1.0)
    assert source["from"]["mu_sd"] == "review.yaml" and source["from"]["tau_sd"] == "config"
    assert source["from"]["beta_sd"] == "measure smc"
    with pytest.raises(ConfigError, match="measure 'ratio of means' has no default priors"):
        review_priors("ratio of means", {}, {"mu_sd": 1.0}, "review.yaml")
    assert review_priors("ratio of means", {}, dict(mu_sd=1, tau_sd=1, beta_sd=1), "x")[0]


@pytest.mark.slow
def test_a_review_far_from_fisher_z_gets_its_measures_priors_or_a_conflict_flag(tmp_path):
    effects = pre_post_review()
    ref = reml(effects, three_level=False)
    spec = ModelSpec("random_effects", False)
    settings = SamplerSettings(chains=2, draws=1000, tune=1000, seed=3)
    results = {}
    for label, priors in (("smc", review_priors("SMC", {}, {}, "review.yaml")[0]),
                          ("fisher_z", MetaPriors())):
        model = build_model(spec, effects, priors)
        idata = sample(model, settings)
        post = idata["posterior"].to_dataset()
        summary, _ = run_checks(model, {"effects": predictive(spec, effects, model, False)},
                                idata, pointwise_loglik(idata), post[["mu", "tau_study"]],
                                CheckSettings(predictive_draws=200), 4, label)
        z = (float(post["mu"].mean()) - ref.beta[0]) / ref.se[0]
        results[label] = z, summary
    z, summary = results["smc"]
    assert abs(z) < 0.5, f"posterior mean {z:.2f} REML SEs from REML"
    assert not summary["prior_data_conflict"]
    z, summary = results["fisher_z"]
    assert abs(z) > 0.5  # shrunk toward zero by N(0, 0.5): the test has something to find
    assert "mu" in summary["prior_data_conflict"]
    assert any(w.startswith("potential prior-data conflict: ") for w in summary["warnings"])
    banner = checks_banner({"models": {"random_effects": summary}})
    assert "Potential prior-data conflict" in banner and "#f8d7da" in banner  # red
    (tmp_path / "checks.json").write_text(json.dumps({"models": {"random_effects": summary}}))
    assert "potential prior-data conflict in 1 model" in checks_status(
        [tmp_path / "checks.json"])
