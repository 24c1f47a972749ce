"""Report pieces for the trial models (growth, moderation, early alliance, RI-CLPM): the
within- vs between-patient effect plot, anonymous patients' trajectories, the early
alliance effect plot and the cross-lagged path diagram. Everything is read from
data/fits/; no patient identifier is ever shown."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from .report_trial import _arrow, _box, _label, mediation_sentence

GROWTH_EFFECTS = {
    "alliance_within": "within-patient: a session's alliance above the patient's own "
                       "trajectory",
    "alliance_between": "between-patient: a patient's mean alliance",
    "alliance_trend:time": "between-patient: a patient's alliance change over the course "
                           "(effect on the outcome's change)",
}


def growth_effect_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The alliance effects of a growth or moderation model, in display order."""
    rows = summary[summary["parameter"].str.startswith("alliance_")
                   & ~summary["parameter"].str.startswith(("alliance_intercept",
                                                           "alliance_time", "alliance_arm"))
                   & summary["r_hat"].notna()]
    return rows[["parameter", "mean", "q2.5", "q97.5"]].reset_index(drop=True)


def alliance_effects_plot(summary: pd.DataFrame, analysis: dict[str, Any]):
    """Posterior means and 95% intervals of the within and between alliance effects."""
    rows = growth_effect_rows(summary).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(rows) + 1.4))
    y = np.arange(len(rows))
    colour = ["#1f4e79" if "within" in p else "#b5651d" for p in rows["parameter"]]
    ax.hlines(y, rows["q2.5"], rows["q97.5"], color=colour, lw=2.5)
    ax.scatter(rows["mean"], y, color=colour, zorder=3)
    ax.axvline(0, color="#b02a37", ls="--", lw=1)
    ax.set_yticks(y, rows["parameter"])
    outcome = analysis.get("outcome", "outcome")
    ax.set_xlabel(f"effect on {outcome} per point of alliance (95% interval)")
    ax.set_title("Within-patient (blue) and between-patient (brown) alliance effects",
                 fontsize=10)
    fig.tight_layout()
    return fig


def trajectory_plot(posterior: xr.Dataset, observed: xr.Dataset, outcome: str):
    """Expected outcome trajectories (mean, 90% band) of the anonymous shown patients,
    with their observed sessions."""
    traj = posterior["trajectory"]
    sessions = traj["session"].to_numpy()
    draws = traj.stack(sample=("chain", "draw")).transpose("shown", "session", "sample")
    k = draws.sizes["shown"]
    cols = 3
    fig, axes = plt.subplots((k + cols - 1) // cols, cols, figsize=(10, 3 * ((k + 2) // cols)),
                             sharex=True, sharey=True, squeeze=False)
    for j, ax in enumerate(axes.ravel()):
        if j >= k:
            ax.set_axis_off()
            continue
        v = draws.isel(shown=j).to_numpy()
        ax.fill_between(sessions, np.quantile(v, 0.05, 1), np.quantile(v, 0.95, 1),
                        color="#9bb7d4", alpha=0.6, lw=0)
        ax.plot(sessions, v.mean(1), color="#1f4e79")
        ax.plot(observed["session"], observed["outcome"].isel(shown=j), "o", ms=3.5,
                color="#333")
        ax.set_title(f"patient {j + 1} (anonymous)", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("session")
    for ax in axes[:, 0]:
        ax.set_ylabel(outcome)
    fig.suptitle("Expected trajectory (line, 90% band) and observed sessions (points) of "
                 f"{k} patients drawn at random", fontsize=10)
    fig.tight_layout()
    return fig


def early_alliance_plot(posterior: xr.Dataset, used: dict[str, Any],
                        analysis: dict[str, Any], arm: dict[str, Any] | None):
    """Expected end-of-treatment outcome against early alliance (reference arm and, where
    there is one, the other arm; covariates at their means), with 95% bands over +-2 SD
    of true early alliance. No patient data are drawn."""
    centre = used["early_alliance_centre"]
    sd = float(posterior["sd_early_alliance"].mean())
    grid = np.linspace(centre - 2 * sd, centre + 2 * sd, 41)
    flat = posterior.stack(sample=("chain", "draw"))
    fig, ax = plt.subplots(figsize=(7, 4))
    lines = [("reference arm" if not arm else str(arm["reference"]), 0.0)]
    if arm and "arm" in posterior:
        lines.append(("+".join(str(a) for a in arm["levels"] if a != arm["reference"]), 1.0))
    for (label, x), colour in zip(lines, ("#1f4e79", "#b5651d"), strict=False):
        base = flat["intercept"].to_numpy() + (x * flat["arm"].to_numpy() if x else 0)
        pred = base[None, :] + flat["early_alliance"].to_numpy()[None, :] * (grid - centre)[:, None]
        ax.fill_between(grid, np.quantile(pred, 0.025, 1), np.quantile(pred, 0.975, 1),
                        color=colour, alpha=0.2, lw=0)
        ax.plot(grid, pred.mean(1), color=colour, label=label)
    ax.set_xlabel(f"true {analysis.get('alliance', 'alliance')} at session "
                  f"{analysis.get('session', 3)}")
    ax.set_ylabel(f"expected {analysis.get('outcome', 'outcome')} at the end")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Early alliance and end-of-treatment outcome (95% bands)", fontsize=10)
    fig.tight_layout()
    return fig


def cross_lagged_diagram(summary: pd.DataFrame, variables: list[str]):
    """Variables at t-1 (left) and t (right); autoregressive and cross-lagged arrows
    labelled with posterior mean [95% interval]; cross-lags whose interval includes 0
    grey and unlabelled (their numbers are in the table)."""
    rows = summary.set_index("parameter")
    k = len(variables)
    fig, ax = plt.subplots(figsize=(10, 1.6 * k + 1))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ys = np.linspace(0.88, 0.12, k)
    left = {v: (0.1, y) for v, y in zip(variables, ys, strict=True)}
    right = {v: (0.9, y) for v, y in zip(variables, ys, strict=True)}
    for v in variables:
        _box(ax, left[v], f"{v}\n(t-1)")
        _box(ax, right[v], f"{v}\n(t)")
    for i, u in enumerate(variables):
        for j, v in enumerate(variables):
            name = f"ar[{v}]" if u == v else f"cl[{u}->{v}]"
            r = rows.loc[name]
            clear = r["q2.5"] > 0 or r["q97.5"] < 0
            # labels of longer arrows sit nearer their source, so that labels of arrows
            # from one box do not overlap; paths whose interval includes 0 are drawn grey
            # and left to the table
            where = 0.5 if u == v else (0.6 if abs(i - j) == 1 else 0.25)
            _arrow(ax, left[u], right[v], _label(rows, name) if clear or u == v else "",
                   where, color="#222" if clear else "#bbb")
    chain = "->".join(variables)
    title = "Within-patient lag-1 paths (random intercepts hold the stable differences)"
    if f"indirect[{chain}]" in rows.index:
        title += (f"\nlag-{len(variables) - 1} indirect effect {' → '.join(variables)}: "
                  + _label(rows, f"indirect[{chain}]"))
    ax.set_title(title, fontsize=10)
    return fig


def analysis_sentence(summary: pd.DataFrame, analysis: dict[str, Any]) -> str:
    rows = summary.set_index("parameter")
    kind = analysis["type"]
    if kind in ("growth", "moderation"):
        p = rows.loc["prob_gt0[alliance_within]", "mean"]
        return (f"Within patients, a session whose alliance is one point above the patient's "
                f"own trajectory goes with {_label(rows, 'alliance_within')} points of "
                f"{analysis.get('outcome', 'outcome')} (P(>0) = {p:.3f}); between patients, "
                f"one point of mean alliance goes with {_label(rows, 'alliance_between')}.")
    if kind == "early_alliance":
        p = rows.loc["prob_gt0[early_alliance]", "mean"]
        return (f"Each point of alliance at session {analysis.get('session', 3)} goes with "
                f"{_label(rows, 'early_alliance')} points of end-of-treatment "
                f"{analysis.get('outcome', 'outcome')}, adjusted for arm and baseline "
                f"(per SD of early alliance: {_label(rows, 'early_alliance_per_sd')}; "
                f"P(>0) = {p:.3f}).")
    if kind == "riclpm":
        v = analysis["variables"]
        chain = "->".join(v)
        if f"indirect[{chain}]" in rows.index:
            lag = len(v) - 1  # one session per arrow of the chain
            return (f"Within patients, {v[0]} at one session relates to {v[-1]} {lag} "
                    f"sessions later through {' then '.join(v[1:-1])} with a lag-{lag} "
                    f"indirect effect (the product of the cross-lags along that chain) of "
                    f"{_label(rows, f'indirect[{chain}]')}.")
        return (f"Within patients, {v[0]} at one session goes with "
                f"{_label(rows, f'cl[{v[0]}->{v[1]}]')} points of {v[1]} at the next.")
    return mediation_sentence(summary, analysis)
