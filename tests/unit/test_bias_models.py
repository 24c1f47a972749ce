"""Publication-bias models checked without sampling: the selection-model density is a
density, reduces to the normal without selection, and the helpers say what they mean."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from allianceflow.errors import ConfigError
from allianceflow.models.bias import (
    check_cutpoints,
    interval_labels,
    mixture_draws,
    p_interval,
    selection_logp,
)
from allianceflow.models.meta import model_specs
from scipy import integrate, stats

CUTS = (0.025, 0.05, 0.5)


def selection_density(mean, sigma, se, omega, direction=1):
    y = pt.dvector("y")
    n = pt.ones_like(y)
    logp = selection_logp(direction * y, direction * mean * n, sigma * n, se * n,
                          pt.as_tensor(np.asarray(omega, float)), CUTS)
    return pytensor.function([y], pt.exp(logp))


@pytest.mark.parametrize("mean,sigma,se,omega,direction", [
    (0.1, 0.15, 0.1, [1.0, 0.5, 0.3, 0.1], 1),
    (0.3, 0.40, 0.3, [1.0, 0.9, 0.2, 0.05], 1),
    (-0.2, 0.12, 0.08, [1.0, 0.7, 0.7, 0.2], -1),
    (0.0, 0.05, 0.05, [1.0, 1.0, 1.0, 1.0], 1),
])
def test_selection_density_integrates_to_one(mean, sigma, se, omega, direction):
    f = selection_density(mean, sigma, se, omega, direction)
    # integrate piecewise between the density's jumps (the p-value cutpoints)
    jumps = sorted(direction * se * stats.norm.isf(np.array(CUTS)))
    edges = [mean - 12 * sigma, *jumps, mean + 12 * sigma]
    pieces = zip(edges, edges[1:], strict=False)
    total = sum(integrate.quad(lambda x: float(f(np.array([x]))[0]), a, b,
                               epsabs=1e-12, limit=200)[0] for a, b in pieces)
    assert total == pytest.approx(1.0, abs=1e-7)


def test_no_selection_is_the_normal_model():
    y = np.linspace(-0.5, 0.8, 9)
    f = selection_density(0.2, 0.15, 0.1, [1, 1, 1, 1])
    assert f(y) == pytest.approx(stats.norm(0.2, 0.15).pdf(y), rel=1e-10)


def test_p_intervals_follow_one_sided_p_values():
    # z = 2.5, 1.8, 1.0, -0.5 -> p < .025, .025-.05, .05-.5, .5-1
    yi, sei = np.array([0.25, 0.18, 0.10, -0.05]), np.full(4, 0.1)
    assert list(p_interval(yi, sei, CUTS)) == [0, 1, 2, 3]
    assert list(p_interval(-yi, sei, CUTS, direction=-1)) == [0, 1, 2, 3]
    assert interval_labels(CUTS) == ["p<0.025", "0.025-0.05", "0.05-0.5", "0.5-1"]


def test_cutpoints_must_increase_within_zero_one():
    with pytest.raises(ConfigError, match="selection_cutpoints"):
        check_cutpoints((0.05, 0.025))
    with pytest.raises(ConfigError, match="selection_cutpoints"):
        check_cutpoints((0.5, 1.0))


def test_mixture_takes_draws_in_proportion_to_weights():
    draws = {"a": np.zeros(4000), "b": np.ones(4000)}
    mixed = mixture_draws(draws, {"a": 0.25, "b": 0.75}, seed=1)
    assert len(mixed) == 4000
    assert mixed.mean() == pytest.approx(0.75, abs=0.02)
    assert mixture_draws(draws, {"a": 1.0, "b": 0.0}, seed=1).max() == 0.0


def test_bias_models_are_two_level_and_carry_the_direction():
    specs = {s.name: s for s in model_specs(True, [], CUTS, direction=-1)}
    for name in ("pet", "peese", "selection"):
        assert not specs[name].three_level
        assert specs[name].direction == -1
        assert specs[name].bias == name


def test_the_report_says_what_the_stacking_average_is_and_is_not():
    import pandas as pd
    from allianceflow.report_meta import bias_sentence

    rows = [{"model": "bias_averaged", "parameter": "mu", "mean": 0.2, "q2.5": 0.1,
             "q97.5": 0.3}]
    rows += [{"model": "bias_averaged", "parameter": f"weight[{m}]", "mean": w}
             for m, w in zip(("random_effects", "pet", "peese", "selection"),
                             (0.1, 0.6, 0.2, 0.1), strict=True)]
    text = bias_sentence(pd.DataFrame(rows), {"effect_type": "d"})
    assert "largest weight (0.60) goes to the pet model" in text
    assert "predictive mixture" in text and "not a posterior model probability" in text
