"""The sequential mediation model against a frequentist reference: OLS path estimates on
observed change scores with a nonparametric bootstrap (the classic serial-mediation
analysis, e.g. PROCESS model 6).

The two estimate the same paths only when observed change equals latent change, so the
data here (generated in the test, seed fixed) have complete sessions and measurement
noise of 2% of each change's SD: OLS on change scores is then unbiased up to an
attenuation below 0.1% and the latent-change posterior should agree with it. Tolerance:
every path, specific indirect effect and the total effect within 0.3 bootstrap SEs of
OLS. The posterior and OLS differ by the prior (weak), by the latent model's use of the
middle sessions, and by Monte-Carlo error (about 0.03 SE at these draws); at this seed
the largest difference is 0.08 SE (a[m1], shrunk by its prior).
"""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from allianceflow.fitting import SamplerSettings, sample
from allianceflow.models import sequential_mediation as seq

pytestmark = pytest.mark.slow
TRUE = {"a[m1]": 0.5, "a[m2]": 0.2, "d[m1->m2]": 0.4, "b[m1]": 0.3, "b[m2]": 0.6,
        "c_prime": 0.25}
N, SESSIONS, SEED = 400, 4, 606


def simulate() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(SEED)
    x = rng.permutation(np.arange(N) % 2).astype(float)
    d1 = TRUE["a[m1]"] * x + rng.normal(0, 1, N)
    d2 = TRUE["a[m2]"] * x + TRUE["d[m1->m2]"] * d1 + rng.normal(0, 1, N)
    dy = (TRUE["c_prime"] * x + TRUE["b[m1]"] * d1 + TRUE["b[m2]"] * d2
          + rng.normal(0, 1, N))
    f = np.linspace(0, 1, SESSIONS)
    rows = []
    for i in range(N):
        levels = rng.normal([3.0, 2.0, 20.0], [0.5, 0.5, 3.0])
        for t in range(SESSIONS):
            change = np.array([d1[i], d2[i], dy[i]]) * f[t]
            noise = rng.normal(0, 0.02 * np.array([d1.std(), d2.std(), dy.std()]))
            m1, m2, y = levels + change + noise
            rows.append({"patient": f"S{i:03d}", "session": t + 1, "m1": m1, "m2": m2, "y": y})
    patients = pd.DataFrame({"patient": [f"S{i:03d}" for i in range(N)], "treated": x})
    return pd.DataFrame(rows), patients


def ols_paths(ch: pd.DataFrame) -> dict[str, float]:
    def fit(y, *cols):
        X = np.column_stack([np.ones(len(ch)), *[ch[c] for c in cols]])
        return np.linalg.lstsq(X, ch[y].to_numpy(), rcond=None)[0][1:]

    a1, = fit("m1", "treated")
    a2, d12 = fit("m2", "treated", "m1")
    cp, b1, b2 = fit("y", "treated", "m1", "m2")
    p = {"a[m1]": a1, "a[m2]": a2, "d[m1->m2]": d12, "b[m1]": b1, "b[m2]": b2, "c_prime": cp}
    p |= {"indirect[m1]": a1 * b1, "indirect[m2]": a2 * b2, "indirect[m1->m2]": a1 * d12 * b2}
    p["total"] = cp + p["indirect[m1]"] + p["indirect[m2]"] + p["indirect[m1->m2]"]
    return p


def test_posterior_means_agree_with_bootstrapped_ols():
    sessions, patients = simulate()
    wide = sessions.pivot(index="patient", columns="session")
    change = pd.DataFrame({k: wide[(k, SESSIONS)] - wide[(k, 1)] for k in ("m1", "m2", "y")})
    change = change.join(patients.set_index("patient")["treated"])
    ols = ols_paths(change)
    rng = np.random.default_rng(1)
    boots = pd.DataFrame([ols_paths(change.iloc[rng.integers(0, N, N)]) for _ in range(400)])
    boot_se = boots.std()

    spec = seq.SequentialSpec(x="treated", mediators=("m1", "m2"), y="y", start=1,
                              end=SESSIONS)
    data = seq.prepare(sessions, patients, spec, treated="treated")
    idata = sample(seq.build_model(data, spec),
                   SamplerSettings(chains=2, draws=1000, tune=1000, seed=3),
                   log_likelihood=False)
    assert int(idata["sample_stats"]["diverging"].sum()) == 0
    post = idata["posterior"].to_dataset()
    draws = xr.merge([post, seq.derived_quantities(post, spec)])
    for name, value in ols.items():
        bayes = float(draws[name].mean())
        assert abs(bayes - value) < 0.3 * boot_se[name], (
            f"{name}: posterior mean {bayes:.4f}, OLS {value:.4f}, bootstrap SE "
            f"{boot_se[name]:.4f}")
