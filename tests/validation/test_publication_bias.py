"""Recovery of the publication-bias models on data simulated here with known truth.

1. Selection: 300 published correlations from a world with mu = 0.10 (Fisher z),
   tau = 0.10, where an estimate is published with probability 1, 0.6, 0.3 or 0.1
   as its one-sided p-value is < .025, .025-.05, .05-.5 or > .5 (the model's own
   step function). The selection model's posterior means must lie within 3 posterior
   SDs of mu, tau and each omega; the unadjusted model must be visibly biased (its
   interval above the truth), or the check would not show that the adjustment does
   anything; and stacking must give the selection model most of the weight.
2. PET and PEESE: effects generated with a small-study term b * se (or b * v) and no
   selection; each model's posterior mean must lie within 3 posterior SDs of mu and of
   its slope (a z-check at 99.7%: several such checks at one seed should not fail by
   chance, while a wrong likelihood or a sign error misses by far more).
"""

import numpy as np
import pandas as pd
import pytest
from allianceflow.fitting import SamplerSettings, sample
from allianceflow.meta_stage import averaged_rows
from allianceflow.models.meta import MetaPriors, build_model, model_specs, scalar_draws
from scipy import stats

pytestmark = pytest.mark.slow

SETTINGS = SamplerSettings(chains=2, draws=600, tune=600, seed=8)
CUTS = (0.025, 0.05, 0.5)
OMEGA = {"p<0.025": 1.0, "0.025-0.05": 0.6, "0.05-0.5": 0.3, "0.5-1": 0.1}
MU, TAU = 0.10, 0.10


def published_studies(seed: int = 2026, k: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < k:
        n = int(rng.integers(20, 250))
        se = 1 / np.sqrt(n - 3)
        y = rng.normal(MU + rng.normal(0, TAU), se)
        p = stats.norm.sf(y / se)
        keep = 1.0 if p < .025 else 0.6 if p < .05 else 0.3 if p < .5 else 0.1
        if rng.uniform() < keep:
            rows.append({"study": f"s{len(rows)}", "yi": y, "vi": se**2})
    return pd.DataFrame(rows)


def interval(draws) -> tuple[float, float]:
    x = np.asarray(draws).ravel()
    return float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975))


def test_selection_model_recovers_truth_that_the_naive_model_misses():
    effects = published_studies()
    specs = {s.name: s for s in model_specs(False, [], CUTS)}
    trees = {name: sample(build_model(specs[name], effects, MetaPriors()), SETTINGS)
             for name in ("random_effects", "pet", "peese", "selection")}
    post = scalar_draws(trees["selection"]["posterior"].to_dataset())
    truth = {"mu": MU, "tau_study": TAU} | {f"omega[{k}]": w for k, w in OMEGA.items()
                                             if k != "p<0.025"}
    for name, value in truth.items():
        x = post[name].to_numpy().ravel()
        z = (x.mean() - value) / x.std()
        assert abs(z) < 3, f"{name}: mean {x.mean():.3f}, truth {value}, z = {z:.2f}"
    naive_lo, _ = interval(trees["random_effects"]["posterior"]["mu"])
    assert naive_lo > MU, "the simulated selection should bias the unadjusted estimate"
    rows = averaged_rows(trees, correlation=False, thresholds=[], direction=1, seed=1)
    weight = rows.set_index("parameter").loc["weight[selection]", "mean"]
    assert weight > 0.5


@pytest.mark.parametrize("kind,slope", [("pet", 1.2), ("peese", 6.0)])
def test_small_study_models_recover_intercept_and_slope(kind, slope):
    rng = np.random.default_rng(7)
    n = rng.integers(15, 400, size=250)
    v = 1 / (n - 3)
    x = np.sqrt(v) if kind == "pet" else v
    y = rng.normal(MU + slope * x + rng.normal(0, TAU, n.size), np.sqrt(v))
    effects = pd.DataFrame({"study": [f"s{i}" for i in range(n.size)], "yi": y, "vi": v})
    spec = next(s for s in model_specs(False, [], CUTS) if s.name == kind)
    post = sample(build_model(spec, effects, MetaPriors()), SETTINGS)["posterior"]
    for name, truth in (("mu", MU), (f"{kind}_slope", slope)):
        x = post[name].to_numpy().ravel()
        z = (x.mean() - truth) / x.std()
        assert abs(z) < 3, f"{name}: mean {x.mean():.3f}, truth {truth}, z = {z:.2f}"
