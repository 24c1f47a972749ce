"""Fits of the mediation analyses a trial.yaml asks for (written out by analysis_stage).

Analysis types (trial.yaml `analyses`):
  sequential_mediation: x (arm or a 0/1 patient column), m (mediators in causal order),
      y; change between `change.from` and `change.to`; optional `covariates` (default:
      every baseline covariate) and `site` (default: yes where the trial has sites).
  within_mediation: x, m, y (measures); optional `lag` (0), `centre` (true) and
      `time` (true: a linear session trend in both equations).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import xarray as xr

from .fitting import Fit, LeaveOut, sample, with_patient_loglik
from .models import sequential_mediation as seq
from .models import within_mediation as within


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


def fit_sequential(analysis, info, sessions, patients, settings):
    spec = sequential_spec(analysis, info)
    data = seq.prepare(sessions, patients, spec)
    model = seq.build_model(data, spec)
    idata = sample(model, settings, log_likelihood=False)
    post = idata["posterior"].to_dataset()
    with_patient_loglik(idata, seq.patient_loglik(post, data, spec))
    post = post.drop_vars([v for v in post.data_vars if v.startswith("loglik")])
    draws = xr.merge([post, seq.derived_quantities(post, spec)])
    names = seq.reported_parameters(spec)
    used = {"patients": data.n_patients, "patients_excluded": data.n_excluded,
            "observations": {k: int(len(r.value)) for k, r in data.measures.items()}}
    return Fit(idata, draws, names, used, asdict(spec), model=model,
               predictive=seq.predictive(data, spec, model, info.get("ranges", {})),
               ratios=seq.RATIOS)


def fit_within(analysis, info, sessions, settings):
    spec = within_spec(analysis)
    rows = within.lagged_rows(sessions, spec)
    data = within.prepare(rows, spec)
    model = within.build_model(data, spec)
    idata = sample(model, settings, log_likelihood=False)
    post = idata["posterior"].to_dataset()
    with_patient_loglik(idata, within.person_loglik(model, post, data))
    post = post.drop_vars(["z"])
    has_y = ~np.isnan(data.y)
    draws = xr.merge([post, within.derived_quantities(post, spec)])
    used = {"patients": data.n_persons, "rows_m": int(len(data.m)),
            "rows_y": int(has_y.sum()), "lag": spec.lag}
    return Fit(idata, draws, within.reported_parameters(spec), used, asdict(spec),
               model=model, predictive=within.predictive(data, spec, model,
                                                         info.get("ranges", {})),
               constant=within.constant_quantities(post), ratios=within.RATIOS)


def fit_within_analysis(analysis, info, sessions, patients, settings):
    return fit_within(analysis, info, sessions, settings)


FITS = {"sequential_mediation": fit_sequential, "within_mediation": fit_within_analysis}


# ---- the same models built for leave-patients-out refits (trial_kfold) -----------------


def sequential_leave_out(analysis, info, sessions, patients) -> LeaveOut:
    spec = sequential_spec(analysis, info)
    data = seq.prepare(sessions, patients, spec)
    return LeaveOut(seq.build_model(data, spec, weighted=True), data.n_patients,
                    lambda post: seq.patient_loglik(post, data, spec),
                    tuple(a for r in data.measures.values() for a in (r.patient, r.f, r.value)))


def within_leave_out(analysis, info, sessions, patients) -> LeaveOut:
    spec = within_spec(analysis)
    data = within.prepare(within.lagged_rows(sessions, spec), spec)
    model = within.build_model(data, spec, weighted=True)
    return LeaveOut(model, data.n_persons, lambda post: within.person_loglik(model, post, data),
                    (data.person, data.x, data.m, data.y))


LEAVE_OUTS = {"sequential_mediation": sequential_leave_out,
              "within_mediation": within_leave_out}
