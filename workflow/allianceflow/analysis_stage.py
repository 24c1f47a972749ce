"""The trial-analysis stage: one analysis of one trial (from its trial.yaml) in, tidy
outputs out: summary.csv, diagnostics.json, posterior.nc and provenance.json.

The fit itself comes from mediation_stage or trial_models_stage, by analysis type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from . import mediation_stage, trial_models_stage
from .analyses import check_analysis, find_analysis
from .checks import CheckSettings, run_checks, write_check_outputs
from .fitting import (
    GateFailure,
    GateThresholds,
    SamplerSettings,
    diagnostics,
    gate_message,
    point_rows,
    python_mode_beside_the_sampler,
    ratio_rows,
    summarise,
)
from .io import atomic_path, write_csv, write_json
from .provenance import provenance

FITS = {**mediation_stage.FITS, **trial_models_stage.FITS}
LEAVE_OUTS = {**mediation_stage.LEAVE_OUTS, **trial_models_stage.LEAVE_OUTS}

# quantities that are not effects: no probability of being above zero for these
NOT_EFFECTS = ("sd_", "sigma", "pm", "time_", "alpha", "corr_", "cor_", "reliability",
               "intercept", "alliance_intercept", "mu")


def effect_probabilities(draws: xr.Dataset, names: list[str], model: str) -> pd.DataFrame:
    """P(effect > 0) for every path and effect (rows `prob_gt0[<parameter>]`)."""
    values = {f"prob_gt0[{n}]": float((draws[n] > 0).mean()) for n in names
              if not n.startswith(NOT_EFFECTS)}
    return point_rows(model, values)


@python_mode_beside_the_sampler
def fit_trial_analysis(sessions_csv: str | Path, patients_csv: str | Path,
                       info_json: str | Path, analysis_name: str, out_dir: str | Path,
                       config: dict[str, Any]) -> pd.DataFrame:
    out_dir = Path(out_dir)
    info = json.loads(Path(info_json).read_text())
    analysis = find_analysis(info, analysis_name)
    check_analysis(analysis, info, f"{info['name']}/trial.yaml")
    sessions = pd.read_csv(sessions_csv, dtype={"patient": str})
    patients = pd.read_csv(patients_csv, dtype={"patient": str})
    settings = SamplerSettings.from_config(config["sampler"])
    thresholds = GateThresholds.from_config(config["checks"])
    model = analysis["type"]
    fit = FITS[model](analysis, info, sessions, patients, settings)
    summary = summarise(fit.draws, fit.names, model)
    summary = pd.concat([summary, effect_probabilities(fit.draws, fit.names, model),
                         ratio_rows(fit.draws, fit.ratios, model)], ignore_index=True)
    diag = diagnostics(fit.idata, summary, thresholds, model, constant=fit.constant)
    diag["used"] = fit.used
    ll = fit.idata["log_likelihood"].to_dataset()["patient"]
    checks = run_checks(fit.model, fit.predictive, fit.idata,
                        ll.to_numpy().reshape(ll.sizes["chain"] * ll.sizes["draw"], -1),
                        fit.draws[fit.names], CheckSettings.from_config(config["checks"]),
                        settings.seed, model)
    diag_doc = {"trial": info["name"], "analysis": analysis_name, "policy": thresholds.policy,
                "passed": diag["passed"], "models": {model: diag}}
    write_csv(summary, out_dir / "summary.csv")
    write_json(diag_doc, out_dir / "diagnostics.json")
    write_check_outputs([checks], out_dir, {"trial": info["name"], "analysis": analysis_name})
    root = xr.DataTree.from_dict({"posterior": fit.draws,
                                  "sample_stats": fit.idata["sample_stats"].to_dataset(),
                                  "log_likelihood": fit.idata["log_likelihood"].to_dataset(),
                                  **fit.extra})
    with atomic_path(out_dir / "posterior.nc") as tmp:
        root.to_netcdf(tmp, engine="h5netcdf")
    write_json(provenance([sessions_csv, patients_csv, info_json],
                          {"sampler": settings.__dict__, "analysis": analysis,
                           "spec": fit.spec, "checks": thresholds.__dict__}),
               out_dir / "provenance.json")
    if not diag["passed"] and thresholds.policy == "fail":
        raise GateFailure(gate_message(diag, f"{info['name']}/{analysis_name}"))
    return summary
