"""Simulation-based calibration: the rank test, and a small SBC run of the random-effects
meta-analysis that passes, next to a deliberately broken simulator that the test catches."""

import numpy as np
import pandas as pd
import pytest
from allianceflow.fitting import SamplerSettings
from allianceflow.models.meta import MetaPriors
from allianceflow.sbc import (
    Step,
    batch_simulations,
    meta_case,
    rank_uniformity,
    run_batch,
    summarise_family,
)


def test_rank_test_accepts_uniform_ranks_and_rejects_skewed_ones():
    rng = np.random.default_rng(1)
    assert rank_uniformity(rng.integers(0, 101, 200), 100, 0.95)["passed"]
    assert not rank_uniformity(rng.integers(30, 101, 200), 100, 0.95)["passed"]
    assert not rank_uniformity(rng.integers(40, 61, 200), 100, 0.95)["passed"]  # too central


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
