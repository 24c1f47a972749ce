"""Recovery on the synthetic trials: the stored mediation truth inside the 95% intervals.

synthetic_cbasp_rct is generated with a sequential path model on patient-level change
(truth.yaml, block `sequential_mediation`, under the summary's parameter names); the
sessions carry measurement noise, dropout after session 6 (likelier with low alliance)
and 5% missed sessions, which the latent-change model handles in its likelihood.
synthetic_internet_adolescent is generated RI-CLPM-style with rho_E = 0, so the lag-1
within-person mediation is correctly specified with a = cl_AE, b = cl_ED, me = a*b
(block `within_mediation`).

Levels. The quantities the issue names (the indirect effects, the total effect, me) at
95%. The remaining paths are checked together (six at once would miss at least once
about 26% of the time for a correct model), each at 99%.
"""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from allianceflow.analyses import find_analysis
from allianceflow.fitting import SamplerSettings, sample, summarise
from allianceflow.mediation_stage import sequential_spec, within_spec
from allianceflow.models import sequential_mediation as seq
from allianceflow.models import within_mediation as wm
from allianceflow.trials import load_trial

from ..conftest import ROOT

pytestmark = pytest.mark.slow
SETTINGS = SamplerSettings(chains=2, draws=1000, tune=1000, seed=5)


def trial_and_truth(name):
    folder = ROOT / "data" / "raw" / "trials" / name
    return load_trial(folder), yaml.safe_load((folder / "truth.yaml").read_text())


def with_tails(draws: xr.Dataset, names: list[str], model: str) -> pd.DataFrame:
    s = summarise(draws, names, model).set_index("parameter")
    for n in names:
        s.loc[n, "q0.5"], s.loc[n, "q99.5"] = np.quantile(draws[n].to_numpy(), [0.005, 0.995])
    return s


def covered(s, name, value, level=0.95):
    lo, hi = ("q2.5", "q97.5") if level == 0.95 else ("q0.5", "q99.5")
    assert s.loc[name, lo] <= value <= s.loc[name, hi], (name, value, s.loc[name].to_dict())


def test_sequential_mediation_recovered():
    trial, truth = trial_and_truth("synthetic_cbasp_rct")
    spec = sequential_spec(find_analysis(trial.info, "sequential_mediation"), trial.info)
    data = seq.prepare(trial.sessions, trial.patients, spec)
    idata = sample(seq.build_model(data, spec), SETTINGS, log_likelihood=False)
    assert int(idata["sample_stats"]["diverging"].sum()) == 0
    post = idata["posterior"].to_dataset()
    draws = xr.merge([post, seq.derived_quantities(post, spec)])
    t = {k: v for k, v in truth["sequential_mediation"].items() if k != "note"}
    s = with_tails(draws, list(t), "sequential_mediation")
    for name, value in t.items():
        covered(s, name, value, 0.95 if name.startswith(("indirect", "total")) else 0.99)
    # the serial path is detected, with the sign of the truth
    assert s.loc["indirect[alliance->iip]", "q97.5"] < 0


def test_lagged_within_person_mediation_recovered():
    trial, truth = trial_and_truth("synthetic_internet_adolescent")
    spec = within_spec(find_analysis(trial.info, "within_mediation"))
    data = wm.prepare(wm.lagged_rows(trial.sessions, spec), spec)
    idata = sample(wm.build_model(data, spec), SETTINGS, log_likelihood=False)
    assert int(idata["sample_stats"]["diverging"].sum()) == 0
    post = idata["posterior"].to_dataset()
    draws = xr.merge([post, wm.derived_quantities(post, spec)])
    t = truth["within_mediation"]
    s = with_tails(draws, ["a", "b", "me", "cov_ab"], "within_mediation")
    for name in ("a", "b", "me", "cov_ab"):
        covered(s, name, t[name])
    # small bias: the posterior mean of me within 20% of the truth
    assert abs(s.loc["me", "mean"] - t["me"]) < 0.2 * abs(t["me"])
