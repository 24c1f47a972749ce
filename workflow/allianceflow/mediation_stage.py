"""The mediation stage: one analysis of one trial (from its trial.yaml) in, tidy outputs out.

Analysis types (trial.yaml `analyses`):
  sequential_mediation: x (arm or a 0/1 patient column), m (mediators in causal order),
      y; change between `change.from` and `change.to`; optional `covariates` (default:
      every baseline covariate) and `site` (default: yes where the trial has sites).
  within_mediation: x, m, y (measures); optional `lag` (0), `centre` (true) and
      `time` (true: a linear session trend in both equations).
Outputs: summary.csv, diagnostics.json, posterior.nc, provenance.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .analyses import MEDIATION_TYPES, check_analysis, find_analysis
from .errors import ConfigError
from .fitting import (
    GateFailure,
    GateThresholds,
    SamplerSettings,
    diagnostics,
    gate_message,
    point_rows,
    sample,
    summarise,
)
from .io import atomic_path, write_csv, write_json
from .models import sequential_mediation as seq
from .models import within_mediation as within
from .provenance import provenance

# quantities that are not effects: no probability of being above zero for these
NOT_EFFECTS = ("sd_", "sigma", "pm", "time_", "alpha", "corr_")


def sequential_spec(analysis: dict[str, Any], info: dict[str, Any]) -> seq.SequentialSpec:
    m = analysis["m"] if isinstance(analysis["m"], list) else [analysis["m"]]
    return seq.SequentialSpec(
        x=analysis["x"], mediators=tuple(m), y=analysis["y"],
        start=int(info["change"]["from"]), end=int(info["change"]["to"]),
        covariates=tuple(analysis.get("covariates", info["baseline"])),
        site=bool(analysis.get("site", "site" in info["levels"])),
    )


def within_spec(analysis: dict[str, Any]) -> within.WithinSpec:
    return within.WithinSpec(x=analysis["x"], m=analysis["m"], y=analysis["y"],
                             lag=int(analysis.get("lag", 0)),
                             centre=bool(analysis.get("centre", True)),
                             time=bool(analysis.get("time", True)))


def effect_probabilities(draws: xr.Dataset, names: list[str], model: str) -> pd.DataFrame:
    """P(effect > 0) for every path and effect (rows `prob_gt0[<parameter>]`)."""
    values = {f"prob_gt0[{n}]": float((draws[n] > 0).mean()) for n in names
              if not n.startswith(NOT_EFFECTS)}
    return point_rows(model, values)


def fit_sequential(analysis, info, sessions, patients, settings):
    spec = sequential_spec(analysis, info)
    data = seq.prepare(sessions, patients, spec)
    idata = sample(seq.build_model(data, spec), settings, log_likelihood=False)
    post = idata["posterior"].to_dataset()
    loglik = seq.patient_loglik(post, spec).rename("patient").rename(patient="patient_id")
    idata["log_likelihood"] = xr.DataTree(loglik.to_dataset())
    post = post.drop_vars([v for v in post.data_vars if v.startswith(("loglik", "change["))])
    draws = xr.merge([post, seq.derived_quantities(post, spec)])
    names = seq.reported_parameters(spec)
    used = {"patients": data.n_patients, "patients_excluded": data.n_excluded,
            "observations": {k: int(len(r.value)) for k, r in data.measures.items()}}
    return idata, draws, names, used, asdict(spec)


def fit_within(analysis, info, sessions, settings):
    spec = within_spec(analysis)
    rows = within.lagged_rows(sessions, spec)
    data = within.prepare(rows, spec)
    idata = sample(within.build_model(data, spec), settings, log_likelihood=False)
    post = idata["posterior"].to_dataset()
    idata["log_likelihood"] = xr.DataTree(
        post["loglik_person"].rename("patient").rename(person="patient_id").to_dataset())
    post = post.drop_vars(["z", "loglik_person"])
    has_y = ~np.isnan(data.y)
    draws = xr.merge([post, within.derived_quantities(post, spec)])
    used = {"patients": data.n_persons, "rows_m": int(len(data.m)),
            "rows_y": int(has_y.sum()), "lag": spec.lag}
    return idata, draws, within.reported_parameters(spec), used, asdict(spec)


def fit_mediation(sessions_csv: str | Path, patients_csv: str | Path, info_json: str | Path,
                  analysis_name: str, out_dir: str | Path, config: dict[str, Any]) -> pd.DataFrame:
    out_dir = Path(out_dir)
    info = json.loads(Path(info_json).read_text())
    analysis = find_analysis(info, analysis_name)
    if analysis["type"] not in MEDIATION_TYPES:
        raise ConfigError(f"analysis '{analysis_name}' is a {analysis['type']} analysis, "
                          "not a mediation analysis")
    check_analysis(analysis, info, f"{info['name']}/trial.yaml")
    sessions = pd.read_csv(sessions_csv, dtype={"patient": str})
    patients = pd.read_csv(patients_csv, dtype={"patient": str})
    settings = SamplerSettings.from_config(config["sampler"])
    thresholds = GateThresholds.from_config(config["checks"])
    model = analysis["type"]
    if model == "sequential_mediation":
        idata, draws, names, used, spec = fit_sequential(analysis, info, sessions, patients,
                                                         settings)
    else:
        idata, draws, names, used, spec = fit_within(analysis, info, sessions, settings)
    summary = summarise(draws, names, model)
    summary = pd.concat([summary, effect_probabilities(draws, names, model)],
                        ignore_index=True)
    diag = diagnostics(idata, summary, thresholds, model)
    diag["used"] = used
    diag_doc = {"trial": info["name"], "analysis": analysis_name, "policy": thresholds.policy,
                "passed": diag["passed"], "models": {model: diag}}
    write_csv(summary, out_dir / "summary.csv")
    write_json(diag_doc, out_dir / "diagnostics.json")
    root = xr.DataTree.from_dict({"posterior": draws,
                                  "sample_stats": idata["sample_stats"].to_dataset(),
                                  "log_likelihood": idata["log_likelihood"].to_dataset()})
    with atomic_path(out_dir / "posterior.nc") as tmp:
        root.to_netcdf(tmp, engine="h5netcdf")
    write_json(provenance([sessions_csv, patients_csv, info_json],
                          {"sampler": settings.__dict__, "analysis": analysis, "spec": spec,
                           "checks": thresholds.__dict__}),
               out_dir / "provenance.json")
    if not diag["passed"] and thresholds.policy == "fail":
        raise GateFailure(gate_message(diag, f"{info['name']}/{analysis_name}"))
    return summary
