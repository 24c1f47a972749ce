"""Sampling efficiency of the growth model against brms (Stan), on the same data.

The model both fit is the growth model with the observed decomposition (each patient's
OLS alliance level and trend plugged in, the residual as the within part; random
intercept and slope; arm x time and baseline severity x time) on the default synthetic
CBASP trial, with the same priors; brms cannot express the latent decomposition, so the
comparison is of the sampler and the likelihood (ours integrates the patients' levels and
slopes out; brms samples them). Both run 4 chains of 1000 draws after 1000 warm-up steps,
2 at a time on 2 cores. Printed: wall seconds to compile and to sample, divergences, the
smallest bulk and tail ESS over the compared parameters (computed by ArviZ for both) and
bulk ESS per second of sampling, with the ratio ours / brms; and the posterior means side
by side. Needs R with brms and rstan (Debian: r-cran-brms r-cran-rstan libboost-dev;
`make bench` installs them where it can).

Run: .venv/bin/python bench/growth_vs_brms.py [--draws N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from allianceflow.models import growth
from allianceflow.trials import load_trial

ROOT = Path(__file__).resolve().parents[1]

# ours -> brms names
PARAMETERS = {"intercept": "b_Intercept", "time": "b_f", "arm": "b_x", "arm:time": "b_f:x",
              "beta[hrsd_baseline]": "b_base", "beta[hrsd_baseline]:time": "b_f:base",
              "alliance_between": "b_level_c", "alliance_trend:time": "b_f:trend_c",
              "alliance_within": "b_within", "sd_intercept": "sd_patient__Intercept",
              "sd_slope": "sd_patient__f", "corr_intercept_slope": "cor_patient__Intercept__f",
              "sigma": "sigma"}


def bench_data():
    trial = load_trial(ROOT / "data/raw/trials/synthetic_cbasp_rct")
    spec = growth.GrowthSpec(outcome="hrsd", alliance="alliance", start=1, end=20, arm=True,
                             covariates=("hrsd_baseline",), decomposition="observed")
    data = growth.prepare(trial.sessions, trial.patients, spec)
    level, trend = data.observed_parts
    has = ~np.isnan(data.y) & ~np.isnan(data.alliance)
    p = data.patient
    rows = pd.DataFrame({
        "patient": p, "f": data.f, "y": data.y, "x": data.design.x[p, 0],
        "base": data.design.x[p, 1], "level_c": level[p] - data.alliance_centre,
        "trend_c": trend[p] - data.trend_centre,
        "within": data.alliance - level[p] - trend[p] * (data.f - 0.5)})[has]
    return spec, data, rows


def ours(spec, data, draws, seed):
    import nutpie

    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(growth.build_model(data, spec))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    tree = nutpie.sample(compiled, draws=draws, tune=1000, chains=4, cores=2, seed=seed,
                         progress_bar=False, target_accept=0.95)
    sample_s = time.perf_counter() - start
    post = tree["posterior"].to_dataset()
    divergences = int(tree["sample_stats"].to_dataset()["diverging"].sum())
    return post[list(PARAMETERS)], compile_s, sample_s, divergences


def theirs(rows, settings, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out / "data.csv", index=False)
    (out / "settings.json").write_text(json.dumps(settings))
    run = subprocess.run(["Rscript", str(ROOT / "bench/growth_brms.R"), str(out / "data.csv"),
                          str(out / "settings.json"), str(out)], capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"brms failed:\n{run.stderr[-3000:]}")
    draws = pd.read_csv(out / "draws.csv")
    timing = json.loads((out / "timing.json").read_text())
    data = {}
    for ours_name, their_name in PARAMETERS.items():
        col = draws.pivot(index=".iteration", columns=".chain", values=their_name)
        data[ours_name] = (("chain", "draw"), col.to_numpy().T)
    return xr.Dataset(data), timing


FIXED = [n for n in PARAMETERS if not n.startswith(("sd_", "corr_", "sigma"))]


def efficiency(post: xr.Dataset) -> dict[str, float]:
    """Smallest bulk and tail ESS over all compared parameters, and over the fixed
    effects alone (a correlation whose SD sits near zero can dominate the first)."""
    bulk = az.ess(post, sample_dims=["chain", "draw"], method="bulk")
    tail = az.ess(post, sample_dims=["chain", "draw"], method="tail")
    return {"min bulk ESS": min(float(bulk[n]) for n in PARAMETERS),
            "min tail ESS": min(float(tail[n]) for n in PARAMETERS),
            "min bulk ESS, fixed": min(float(bulk[n]) for n in FIXED),
            "median bulk ESS": float(np.median([float(bulk[n]) for n in PARAMETERS]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if not shutil.which("Rscript"):
        sys.exit("Rscript not found: install R with brms and rstan (Debian: apt-get install "
                 "r-cran-brms r-cran-rstan libboost-dev), or run `make bench` as root")
    spec, data, rows = bench_data()
    y = rows["y"]
    a = data.alliance[~np.isnan(data.alliance)]
    settings = {"mean_y": float(y.mean()), "s_y": float(data.y[~np.isnan(data.y)].std()),
                "s_a": float(a.std()), "chains": 4, "draws": args.draws, "tune": 1000,
                "cores": 2, "seed": args.seed, "target_accept": 0.95}
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_growth_"))
    print(f"data: synthetic_cbasp_rct, {data.n_patients} patients, {len(rows)} sessions with "
          f"outcome and alliance; 4 chains x {args.draws} draws (+1000 warm-up), 2 cores")
    p_ours, c_ours, s_ours, d_ours = ours(spec, data, args.draws, args.seed)
    p_brms, timing = theirs(rows, settings, out)
    e_ours, e_brms = efficiency(p_ours), efficiency(p_brms)
    table = pd.DataFrame({
        "compile s": [c_ours, timing["compile_s"]],
        "sample s": [s_ours, timing["sample_s"]],
        "divergences": [d_ours, timing["divergences"]],
        **{k: [e_ours[k], e_brms[k]] for k in e_ours},
    }, index=["allianceflow (PyMC, nutpie)", "brms (rstan)"])
    for k in ("min bulk ESS", "min bulk ESS, fixed", "median bulk ESS"):
        table[f"{k} / sample s"] = table[k] / table["sample s"]
    pd.set_option("display.width", 250)
    print(table.round(1).T.to_string())
    ratio = table.iloc[0] / table.iloc[1]
    print("ratio ours / brms: sampling time {:.3f}; bulk ESS per second of sampling: "
          "smallest {:.0f}, smallest over fixed effects {:.0f}, median {:.0f}; compile time "
          "{:.2f}".format(ratio["sample s"], ratio["min bulk ESS / sample s"],
                          ratio["min bulk ESS, fixed / sample s"],
                          ratio["median bulk ESS / sample s"], ratio["compile s"]))
    means = pd.DataFrame({"ours": [float(p_ours[n].mean()) for n in PARAMETERS],
                          "brms": [float(p_brms[n].mean()) for n in PARAMETERS],
                          "brms sd": [float(p_brms[n].std()) for n in PARAMETERS]},
                         index=list(PARAMETERS))
    means["diff / sd"] = (means["ours"] - means["brms"]) / means["brms sd"]
    print(means.round(3).to_string())
    print(f"(brms files in {out})")


if __name__ == "__main__":
    main()
