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
    write_json({"name": "tiny", "effect_type": "yi_vi", "three_level": False,
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
