"""The meta-analysis stages: clean one review folder, fit its models, write tidy outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .effects import load_review
from .errors import AllianceFlowError
from .fitting import (
    GateThresholds,
    SamplerSettings,
    diagnostics,
    gate_message,
    point_rows,
    sample,
    summarise,
)
from .io import atomic_path, write_csv, write_json
from .models.meta import (
    MetaPriors,
    build_model,
    complete_rows,
    derived_quantities,
    model_specs,
    reported_parameters,
    scalar_draws,
)
from .provenance import provenance


class GateFailure(AllianceFlowError):
    """A model did not pass its convergence gate under policy 'fail'."""


def clean_review(raw_folder: str | Path, out_effects: str | Path, out_info: str | Path) -> None:
    review = load_review(raw_folder)
    write_csv(review.effects, out_effects)
    write_json(review.info, out_info)


def fit_review(effects_csv: str | Path, info_json: str | Path, out_dir: str | Path,
               config: dict[str, Any]) -> pd.DataFrame:
    """Fit every applicable model of one review; write summary, diagnostics, posterior.

    Outputs (names fixed by DESIGN.md): summary.csv, diagnostics.json,
    posterior.nc (one group per model), provenance.json.
    """
    out_dir = Path(out_dir)
    effects = pd.read_csv(effects_csv, dtype={"study": str, "es_id": str})
    info = json.loads(Path(info_json).read_text())
    settings = SamplerSettings.from_config(config["sampler"])
    thresholds = GateThresholds.from_config(config["checks"])
    priors = MetaPriors(**config["meta"]["priors"])
    correlation = info["effect_type"] == "r"

    summaries, diags, trees = [], {}, {}
    for spec in model_specs(info["three_level"], info["moderators"]):
        name = spec.name
        data = complete_rows(effects, spec)
        idata = sample(build_model(spec, data, priors), settings)
        post = idata["posterior"].to_dataset()
        derived = derived_quantities(post, data["vi"].to_numpy(), correlation, settings.seed)
        draws = xr.merge([scalar_draws(post), derived])
        summary = summarise(draws, reported_parameters(spec, draws, correlation), name)
        theta = derived["theta_new"].to_numpy().ravel()
        reported = np.tanh(post["mu"].to_numpy().ravel()) if correlation else \
            post["mu"].to_numpy().ravel()
        points = {"pred_low": float(np.quantile(theta, 0.025)),
                  "pred_high": float(np.quantile(theta, 0.975))}
        for t in [0.0, *config["meta"]["thresholds"]]:
            points[f"prob_gt[{t:g}]"] = float((reported > t).mean())
        summary = pd.concat([summary, point_rows(name, points)], ignore_index=True)
        summaries.append(summary)
        diags[name] = diagnostics(idata, summary, thresholds, name)
        diags[name]["n_effects_used"] = int(len(data))
        idata["posterior"] = xr.DataTree(xr.merge([post, derived.drop_vars("theta_new")]))
        trees[name] = idata

    table = pd.concat(summaries, ignore_index=True)
    passed = all(d["passed"] for d in diags.values())
    diag_doc = {"review": info["name"], "policy": thresholds.policy, "passed": passed,
                "models": diags}
    write_csv(table, out_dir / "summary.csv")
    write_json(diag_doc, out_dir / "diagnostics.json")
    root = xr.DataTree.from_dict({f"{m}/{g}": t[g].to_dataset() for m, t in trees.items()
                                  for g in t.children})
    with atomic_path(out_dir / "posterior.nc") as tmp:
        root.to_netcdf(tmp, engine="h5netcdf")
    write_json(provenance([effects_csv, info_json],
                          {"sampler": settings.__dict__, "priors": priors.__dict__,
                           "checks": thresholds.__dict__}),
               out_dir / "provenance.json")
    if not passed and thresholds.policy == "fail":
        raise GateFailure("; ".join(gate_message(d, info["name"]) for d in diags.values()
                                    if not d["passed"]))
    return table
