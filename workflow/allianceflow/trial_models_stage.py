"""Fits of the trial models a trial.yaml asks for: growth (and moderation), early
alliance and RI-CLPM. Each returns a Fit that analysis_stage writes out.

Options in trial.yaml (defaults in brackets):
  growth / moderation: outcome [roles.outcome], alliance [roles.alliance], covariates
      [every baseline covariate], therapist and site [yes where the trial has them],
      moderators [none; measures or baseline covariates moderating the within effect],
      by_arm [no; yes for moderation in a trial with arms], measurement_error [yes: use
      the item-based error SD of the alliance score where it has items], start and end
      [trial.yaml change, else the first and last sessions], decomposition [latent; or
      observed: OLS patient means and trends, see models/growth.py].
  early_alliance: outcome, alliance, covariates, therapist, site, measurement_error as
      above; session [3], the early session; end [change.to, else the last session].
  riclpm: variables (2 to 4 measures, in the order of the indirect effect reported);
      start and end.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import xarray as xr

from .analyses import by_arm_default, session_window
from .fitting import Fit, LeaveOut, SamplerSettings, sample, with_patient_loglik
from .models import early_alliance as early
from .models import growth, riclpm

SHOWN_PATIENTS = 6  # anonymous patients whose trajectories the growth report draws


def error_sd(analysis: dict[str, Any], info: dict[str, Any], measure: str) -> float:
    if not analysis.get("measurement_error", True):
        return 0.0
    return float(info.get("measurement_error", {}).get(measure, {}).get("error_sd", 0.0))


def common_options(analysis: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    alliance = analysis.get("alliance", info["roles"]["alliance"])
    return {
        "outcome": analysis.get("outcome", info["roles"]["outcome"]),
        "alliance": alliance,
        "arm": bool(info.get("arm")),
        "covariates": tuple(analysis.get("covariates", info["baseline"])),
        "therapist": bool(analysis.get("therapist", "therapist" in info["levels"])),
        "site": bool(analysis.get("site", "site" in info["levels"])),
        "error_sd": error_sd(analysis, info, alliance),
    }


def growth_spec(analysis: dict[str, Any], info: dict[str, Any]) -> growth.GrowthSpec:
    start, end = session_window(analysis, info)
    return growth.GrowthSpec(**common_options(analysis, info), start=start, end=end,
                             moderators=tuple(analysis.get("moderators", [])),
                             by_arm=by_arm_default(analysis, info),
                             decomposition=analysis.get("decomposition", "latent"))


def early_spec(analysis: dict[str, Any], info: dict[str, Any]) -> early.EarlySpec:
    _, end = session_window(analysis, info)
    return early.EarlySpec(**common_options(analysis, info),
                           session=int(analysis.get("session", 3)), end=end)


def riclpm_spec(analysis: dict[str, Any], info: dict[str, Any]) -> riclpm.RiclpmSpec:
    start, end = session_window(analysis, info)
    return riclpm.RiclpmSpec(variables=tuple(analysis["variables"]), start=start, end=end)


def fit_growth(analysis, info, sessions, patients, settings: SamplerSettings) -> Fit:
    spec = growth_spec(analysis, info)
    data = growth.prepare(sessions, patients, spec)
    shown = growth.shown_patients(data, SHOWN_PATIENTS, settings.seed)
    model = growth.build_model(data, spec, shown)
    idata = sample(model, settings, log_likelihood=False)
    post = idata["posterior"].to_dataset()
    with_patient_loglik(idata, post["loglik_patient"])
    arm = info.get("arm")
    arm_name = "+".join(str(a) for a in arm["levels"] if a != arm["reference"]) if arm else None
    grid = [s for s in info["sessions"] if spec.start <= s <= spec.end]
    traj = growth.shown_trajectories(post, growth.course_time(np.array(grid), spec.start,
                                                              spec.end), settings.seed)
    draws = xr.merge([post[[v for v in post.data_vars
                            if not v.startswith(("z_", "shown_", "loglik"))]],
                      growth.derived_quantities(post, spec, arm_name),
                      xr.Dataset({"trajectory": traj.rename(time="session")
                                  .assign_coords(session=grid)})])
    observed = shown_observed(data, shown, grid, spec)
    has_y, has_a = ~np.isnan(data.y), ~np.isnan(data.alliance)
    used = {"patients": data.n_patients, "patients_excluded": data.n_excluded,
            "outcome_sessions": int(has_y.sum()), "alliance_sessions": int(has_a.sum()),
            "sessions_with_both": int((has_y & has_a).sum()),
            "alliance_error_sd": spec.error_sd, "decomposition": spec.decomposition}
    if spec.decomposition == "observed":
        used["patients_with_under_2_alliance_sessions"] = data.n_too_few_alliance
    return Fit(idata, draws, growth.reported_parameters(data, spec, draws), used,
               asdict(spec), {"shown_observed": observed}, model,
               growth.predictive(data, spec, model, info.get("ranges", {})))


def shown_observed(data: growth.GrowthData, shown: np.ndarray, grid: list[int],
                   spec: growth.GrowthSpec) -> xr.Dataset:
    """The shown patients' observed outcome per session (NaN where missed), indexed
    0..k-1: no identifiers."""
    values = np.full((len(shown), len(grid)), np.nan)
    session = np.rint(data.f * (spec.end - spec.start) + spec.start).astype(int)
    col = {s: j for j, s in enumerate(grid)}
    for k, p in enumerate(shown):
        rows = (data.patient == p) & ~np.isnan(data.y)
        for s, y in zip(session[rows], data.y[rows], strict=True):
            values[k, col[s]] = y
    return xr.Dataset({"outcome": (("shown", "session"), values)},
                      coords={"session": grid})


def fit_early(analysis, info, sessions, patients, settings: SamplerSettings) -> Fit:
    spec = early_spec(analysis, info)
    data = early.prepare(sessions, patients, spec)
    model = early.build_model(data, spec)
    idata = sample(model, settings, log_likelihood=False)
    post = idata["posterior"].to_dataset()
    with_patient_loglik(idata, post["loglik_patient"])
    draws = post[[v for v in post.data_vars
                  if not v.startswith(("z_", "loglik"))]]
    used = {"patients": data.n_patients, "patients_excluded": data.n_excluded,
            "patients_without_later_outcome": data.n_no_outcome,
            "early_alliance_missed": int(np.isnan(data.early).sum()),
            "outcome_sessions": int(len(data.y)), "alliance_error_sd": spec.error_sd,
            "early_alliance_centre": data.early_centre}
    return Fit(idata, draws, early.reported_parameters(data, draws), used, asdict(spec),
               model=model, predictive=early.predictive(data, spec, model,
                                                        info.get("ranges", {})))


def fit_riclpm(analysis, info, sessions, patients, settings: SamplerSettings) -> Fit:
    spec = riclpm_spec(analysis, info)
    data = riclpm.prepare(sessions, spec)
    model = riclpm.build_model(data, spec)
    idata = sample(model, settings, log_likelihood=False)
    post = idata["posterior"].to_dataset()
    with_patient_loglik(idata, riclpm.observed_loglik(post, data))
    derived = riclpm.derived_quantities(post, data, spec)
    draws = xr.merge([post[["phi", "mu"]], derived])
    seen = ~np.isnan(data.values)
    used = {"patients": int(data.values.shape[0]), "patients_excluded": data.n_excluded,
            "occasions": data.occasions, "observed_cells": int(seen.sum()),
            "sampled_missing_cells": int(len(riclpm.latent_cells(data))),
            "transitions": int(data.last.sum())}
    return Fit(idata, draws, riclpm.reported_parameters(spec, derived), used, asdict(spec),
               model=model, predictive=riclpm.predictive(data, spec, model,
                                                         info.get("ranges", {})))


FITS = {"growth": fit_growth, "moderation": fit_growth, "early_alliance": fit_early,
        "riclpm": fit_riclpm}


# ---- the same models built for leave-patients-out refits (trial_kfold) -----------------


def growth_leave_out(analysis, info, sessions, patients) -> LeaveOut:
    spec = growth_spec(analysis, info)
    data = growth.prepare(sessions, patients, spec)
    has_y = growth.outcome_rows(data)
    return LeaveOut(growth.build_model(data, spec, weighted=True), data.n_patients,
                    lambda post: post["loglik_patient"],
                    (data.patient[has_y], data.f[has_y], data.y[has_y], data.patient,
                     data.f, data.alliance))


def early_leave_out(analysis, info, sessions, patients) -> LeaveOut:
    spec = early_spec(analysis, info)
    data = early.prepare(sessions, patients, spec)
    return LeaveOut(early.build_model(data, spec, weighted=True), data.n_patients,
                    lambda post: post["loglik_patient"],
                    (data.patient, data.g, data.y, data.early))


def riclpm_leave_out(analysis, info, sessions, patients) -> LeaveOut:
    spec = riclpm_spec(analysis, info)
    data = riclpm.prepare(sessions, spec)
    return LeaveOut(riclpm.build_model(data, spec, weighted=True), data.values.shape[0],
                    lambda post: riclpm.observed_loglik(post, data),
                    (data.values * data.sds + data.means, data.last))


LEAVE_OUTS = {"growth": growth_leave_out, "moderation": growth_leave_out,
              "early_alliance": early_leave_out, "riclpm": riclpm_leave_out}
