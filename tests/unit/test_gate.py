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
