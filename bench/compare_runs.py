"""Two finished runs of the workflow side by side: each model's ESS margins over the gate
and largest R-hat, and each reported quantity's change in Monte Carlo standard errors.

    .venv/bin/python bench/compare_runs.py BEFORE_PROJECT AFTER_PROJECT

A project is a folder in which `make run` (or the same Snakemake command) finished; its
`data/fits/**/diagnostics.json` and `summary.csv` are read. For every summary row with a
posterior (an R-hat), the change of the mean is divided by the Monte Carlo SE of the
difference, sqrt(sd_1^2 / ess_1 + sd_2^2 / ess_2) with the bulk ESS, so that two runs
sampling the same posterior give values like a standard normal's: over a few hundred rows
a largest |z| near 3.5 is expected, and a value far above says that the posterior moved.
Rows whose SD is zero (constant by construction) are counted apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def diagnostics(project: Path) -> pd.DataFrame:
    """One row per fitted model: its fit folder, name, gate figures and pass/fail."""
    rows = []
    for path in sorted((project / "data" / "fits").rglob("diagnostics.json")):
        fit = str(path.parent.relative_to(project / "data" / "fits"))
        for rec in json.loads(path.read_text())["models"].values():
            rows.append({"fit": fit, "model": rec["model"], "passed": rec["passed"],
                         "min_ess_bulk": rec["min_ess_bulk"],
                         "min_ess_tail": rec["min_ess_tail"], "max_rhat": rec["max_rhat"],
                         "divergences": rec["divergences"]})
    return pd.DataFrame(rows)


def summaries(project: Path) -> pd.DataFrame:
    frames = []
    for path in sorted((project / "data" / "fits").rglob("summary.csv")):
        frame = pd.read_csv(path)
        frame.insert(0, "fit", str(path.parent.relative_to(project / "data" / "fits")))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def mc_z(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Rows with a posterior in both runs, the change of the mean in MC SEs (z) and in
    posterior SDs."""
    keys = ["fit", "model", "parameter"]
    both = before.dropna(subset=["r_hat"]).merge(after.dropna(subset=["r_hat"]), on=keys,
                                                  suffixes=("_1", "_2"))
    se = np.sqrt(both["sd_1"] ** 2 / both["ess_bulk_1"] + both["sd_2"] ** 2 / both["ess_bulk_2"])
    both["z"] = (both["mean_2"] - both["mean_1"]) / se.where(se > 0)
    both["change_in_sd"] = (both["mean_2"] - both["mean_1"]) / both["sd_1"].where(both["sd_1"] > 0)
    return both


def main(before_dir: str, after_dir: str) -> None:
    before, after = Path(before_dir), Path(after_dir)
    d1, d2 = diagnostics(before), diagnostics(after)
    gate = d2.merge(d1, on=["fit", "model"], suffixes=("", "_before"), how="outer")
    for side in ("", "_before"):
        gate[f"bulk_margin{side}"] = gate[f"min_ess_bulk{side}"] / 400
        gate[f"tail_margin{side}"] = gate[f"min_ess_tail{side}"] / 400
    # the largest R-hat too: taken over every sampled quantity, its noise grows as the
    # draws shrink, so fewer draws can reach the R-hat gate with the ESS margin still wide
    cols = ["fit", "model", "min_ess_bulk_before", "min_ess_tail_before", "min_ess_bulk",
            "min_ess_tail", "tail_margin", "bulk_margin", "max_rhat_before", "max_rhat",
            "divergences", "passed"]
    with pd.option_context("display.width", 220, "display.max_rows", 200):
        print("Gate figures per model (before, after; margin = after's min ESS / 400):")
        print(gate[cols].round({**dict.fromkeys(cols, 2), "max_rhat_before": 4,
                                "max_rhat": 4}).to_string(index=False))
        print(f"models: {len(gate)}; passed after: {int(gate['passed'].sum())}; "
              f"smallest margin after: {gate[['bulk_margin', 'tail_margin']].min().min():.2f}")
        z = mc_z(summaries(before), summaries(after))
        constant = z["z"].isna().sum()
        finite = z.dropna(subset=["z"])
        print(f"\nSummary rows compared: {len(z)} ({constant} with SD 0 in both, left out)")
        print(f"|z| largest {finite['z'].abs().max():.2f}, mean of z^2 "
              f"{(finite['z'] ** 2).mean():.2f}, |z| > 3: {(finite['z'].abs() > 3).sum()}, "
              f"largest change in posterior SDs {finite['change_in_sd'].abs().max():.3f}")
        worst = finite.reindex(finite["z"].abs().sort_values(ascending=False).index).head(8)
        print(worst[["fit", "model", "parameter", "mean_1", "mean_2", "sd_1", "ess_bulk_1",
                     "ess_bulk_2", "z"]].round(4).to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
