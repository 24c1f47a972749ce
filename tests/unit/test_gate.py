"""The convergence gate: a deliberately broken fit fails with figures named."""

import numpy as np
import pandas as pd
import xarray as xr
from allianceflow.fitting import GateThresholds, diagnostics, gate_message, summarise


def fake_idata(shift: float, diverging: int = 0):
    """Four chains; chain 0 is shifted by `shift` (chains that disagree)."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(4, 500))
    mu[0] += shift
    div = np.zeros((4, 500), bool)
    div.flat[:diverging] = True
    energy = rng.normal(size=(4, 500)).cumsum(axis=1) * 0.05 + rng.normal(size=(4, 500))
    post = xr.Dataset({"mu": (("chain", "draw"), mu)})
    stats = xr.Dataset({"diverging": (("chain", "draw"), div),
                        "energy": (("chain", "draw"), energy)})
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})


def test_good_fit_passes():
    idata = fake_idata(0.0)
    s = summarise(idata["posterior"].to_dataset(), ["mu"], "m")
    d = diagnostics(idata, s, GateThresholds(), "m")
    assert d["passed"] and d["failures"] == []
    assert (d["chains"], d["draws"]) == (4, 500)  # the sample the figures are of


def test_broken_fit_fails_with_figures():
    idata = fake_idata(3.0, diverging=5)
    s = summarise(idata["posterior"].to_dataset(), ["mu"], "m")
    d = diagnostics(idata, s, GateThresholds(), "m")
    assert not d["passed"]
    text = gate_message(d, "review x")
    assert "model 'm'" in text and "R-hat" in text and "5 divergent" in text
    assert isinstance(s, pd.DataFrame) and s.loc[0, "r_hat"] > 1.2


def test_a_real_fit_stopped_too_early_fails_its_gate_with_a_clear_message(tmp_path):
    """fit_review with 2 x 15 draws: the job stops, naming the review, the models and
    the figures that failed, after writing its diagnostics."""
    import json

    import pytest
    import yaml
    from allianceflow.config import validate_config
    from allianceflow.fitting import GateFailure
    from allianceflow.io import write_csv, write_json
    from allianceflow.meta_stage import fit_review

    from tests.conftest import ROOT

    rng = np.random.default_rng(2)
    effects = pd.DataFrame({"study": [f"s{i}" for i in range(12)], "es_id": "1",
                            "yi": rng.normal(0.3, 0.2, 12), "vi": rng.uniform(0.01, 0.05, 12)})
    write_csv(effects, tmp_path / "effects.csv")
    write_json({"name": "tiny", "effect_type": "yi_vi", "measure": "SMD", "three_level": False,
                "moderators": [], "direction": 1}, tmp_path / "review.json")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["sampler"] = {"chains": 2, "draws": 15, "tune": 15, "seed": 3}
    config["checks"] = {"policy": "fail", "predictive_draws": 50}
    config = validate_config(config, ROOT / "config" / "config.schema.yaml", "config")
    with pytest.raises(GateFailure) as failure:
        fit_review(tmp_path / "effects.csv", tmp_path / "review.json", tmp_path / "fit", config)
    text = str(failure.value)
    assert "tiny: model 'random_effects' failed its convergence gate" in text
    assert "min bulk ESS" in text
    diag = json.loads((tmp_path / "fit" / "diagnostics.json").read_text())
    assert diag["passed"] is False and not diag["models"]["random_effects"]["passed"]


def with_constants(idata, **values):
    """idata's posterior with further (chain, draw, k) variables: every element drawn
    at random except those given a constant value (index -> value)."""
    rng = np.random.default_rng(1)
    post = idata["posterior"].to_dataset()
    for name, fixed in values.items():
        x = rng.normal(size=(4, 500, 3))
        for index, value in fixed.items():
            x[:, :, index] = value
        post[name] = (("chain", "draw", f"{name}_dim"), x)
    return xr.DataTree.from_dict({"posterior": post,
                                  "sample_stats": idata["sample_stats"].to_dataset()})


def test_an_undefined_r_hat_fails_the_gate_wherever_it_comes_and_names_the_quantity():
    """A quantity that does not vary has no R-hat or ESS (NaN). With the built-in max
    a NaN counted only where it came first: behind mu's R-hat it passed."""
    idata = with_constants(fake_idata(0.0), w={1: 0.5})
    s = summarise(idata["posterior"].to_dataset(), ["mu"], "m")
    d = diagnostics(idata, s, GateThresholds(), "m")
    assert not d["passed"]
    assert any("undefined (NaN) for w[1]" in f for f in d["failures"])
    assert "w[1]" in gate_message(d, "review x")
    # a reported derived quantity that is constant fails the same way
    post = idata["posterior"].to_dataset()
    post["flat"] = post["mu"] * 0 + 2.0
    s = summarise(post, ["mu", "flat"], "m")
    d = diagnostics(fake_idata(0.0), s, GateThresholds(), "m")
    assert not d["passed"] and any("for flat" in f for f in d["failures"])


def test_quantities_constant_by_construction_are_left_out_by_name_only():
    idata = with_constants(fake_idata(0.0), w={0: 1.0})
    s = summarise(idata["posterior"].to_dataset(), ["mu"], "m")
    d = diagnostics(idata, s, GateThresholds(), "m", constant=["w[0]"])
    assert d["passed"], d["failures"]
    assert d["constant_by_construction"] == ["w[0]"]
    # the name leaves out that element, not the variable: another constant one fails
    idata = with_constants(fake_idata(0.0), w={0: 1.0, 2: 1.0})
    d = diagnostics(idata, s, GateThresholds(), "m", constant=["w[0]"])
    assert not d["passed"] and any("for w[2]" in f and "w[0]" not in f
                                   for f in d["failures"])
    # the figures reported are those of the quantities that vary
    assert d["max_rhat"] is not None and d["max_rhat"] < 1.01


def test_the_selection_models_top_weight_is_its_one_constant_quantity():
    """omega for the most significant interval is 1 by construction (the sum of the
    Dirichlet increments); the other weights vary and stay in the gate."""
    from allianceflow.models.bias import constant_quantities

    omega = np.random.default_rng(0).uniform(size=(2, 10, 3))
    omega[:, :, 0] = 1.0
    post = xr.Dataset({"omega": (("chain", "draw", "p_interval"), omega)},
                      coords={"p_interval": ["p < .025", ".025 < p < .05", "p > .05"]})
    assert constant_quantities(post) == ["omega[p < .025]"]
    assert constant_quantities(post.drop_vars("omega")) == []


def test_summary_rows_are_arviz_summary_with_the_monte_carlo_errors():
    """summarise is ArviZ's summary: the numbers of the hand-written version it replaced
    (NumPy mean, SD and quantiles, ArviZ's R-hat and ESS), plus MCSE of mean and SD."""
    import arviz as az
    import xarray as xr
    from allianceflow.fitting import summarise

    rng = np.random.default_rng(2)
    ds = xr.Dataset({"mu": (("chain", "draw"), rng.normal(size=(4, 400))),
                     "tau": (("chain", "draw"), rng.gamma(1.5, size=(4, 400)))})
    rows = summarise(ds, ["mu", "tau"], "m").set_index("parameter")
    for name in ("mu", "tau"):
        v = ds[name].to_numpy().ravel()
        expected = [v.mean(), v.std(ddof=1), np.quantile(v, 0.025), np.quantile(v, 0.975),
                    float(az.rhat(ds[name])), float(az.ess(ds[name], method="bulk")),
                    float(az.ess(ds[name], method="tail")),
                    float(az.mcse(ds[name], method="mean")), float(az.mcse(ds[name], method="sd"))]
        got = rows.loc[name, ["mean", "sd", "q2.5", "q97.5", "r_hat", "ess_bulk", "ess_tail",
                              "mcse_mean", "mcse_sd"]].to_numpy(float)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert (rows["model"] == "m").all()
