"""Report pieces for trial analyses: mediation tables, path diagrams, indirect-effect
densities and anonymous person-level effects. Everything is read from data/fits/."""

from __future__ import annotations

import re
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

PLOT_SEED = 20261122  # which anonymous persons a forest shows; fixed so reports rebuild equal


def effect_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Posterior mean, SD, 95% interval, P(> 0) and convergence figures per parameter."""
    probs = summary[summary["parameter"].str.startswith("prob_gt0[")]
    p_above = {re.sub(r"^prob_gt0\[(.*)\]$", r"\1", p): v
               for p, v in zip(probs["parameter"], probs["mean"], strict=True)}
    rows = summary[~summary["parameter"].str.startswith("prob_gt0[")].copy()
    rows["P(>0)"] = rows["parameter"].map(p_above)
    cols = ["parameter", "mean", "sd", "q2.5", "q97.5", "P(>0)", "r_hat", "ess_bulk"]
    return rows[cols].round({"mean": 3, "sd": 3, "q2.5": 3, "q97.5": 3, "P(>0)": 3,
                             "r_hat": 3, "ess_bulk": 0}).reset_index(drop=True)


def _label(rows: pd.DataFrame, name: str) -> str:
    r = rows.loc[name]
    d = 3 if abs(r["mean"]) < 0.1 else 2
    return f"{r['mean']:.{d}f} [{r['q2.5']:.{d}f}, {r['q97.5']:.{d}f}]"


def _arrow(ax, start, end, text, where=0.5, offset=(0.0, 0.0), color="#333"):
    """An arrow with its label `where` along it (0 = start), on a white patch."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    shrink = 28 + 30 * abs(dx) / np.hypot(dx, dy)  # boxes are wider than tall
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "lw": 1.4, "color": color,
                            "shrinkA": shrink, "shrinkB": shrink})
    if not text:
        return
    at = (start[0] + where * (end[0] - start[0]) + offset[0],
          start[1] + where * (end[1] - start[1]) + offset[1])
    ax.text(*at, text, ha="center", va="center", fontsize=8.5, zorder=3, color=color,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#ccc", "lw": 0.5})


def _box(ax, xy, text):
    ax.text(*xy, text, ha="center", va="center", fontsize=10,
            bbox={"boxstyle": "round,pad=0.5", "fc": "#e8f0fa", "ec": "#1f4e79"})


def path_diagram(summary: pd.DataFrame, analysis: dict[str, Any]):
    """Boxes for x, mediators and y; arrows labelled posterior mean [95% interval]."""
    rows = summary.set_index("parameter")
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    if analysis["type"] == "within_mediation":
        lag = int(analysis.get("lag", 0))
        t = ("t", f"t+{lag}", f"t+{2 * lag}") if lag else ("t", "t", "t")
        x, m, y = (0.1, 0.25), (0.5, 0.8), (0.9, 0.25)
        _box(ax, x, f"{analysis['x']} ({t[0]})\nwithin-person")
        _box(ax, m, f"{analysis['m']} ({t[1]})")
        _box(ax, y, f"{analysis['y']} ({t[2]})")
        _arrow(ax, x, m, f"a = {_label(rows, 'a')}")
        _arrow(ax, m, y, f"b = {_label(rows, 'b')}")
        _arrow(ax, x, y, f"c' = {_label(rows, 'c_prime')}")
        ax.set_title(f"Within-person paths; indirect effect me = a·b + cov(a_j, b_j) = "
                     f"{_label(rows, 'me')}", fontsize=10)
        return fig
    mediators = analysis["m"] if isinstance(analysis["m"], list) else [analysis["m"]]
    # x bottom left, y bottom right, mediators along the top in causal order; labels of
    # arrows that cross sit near their ends rather than at the crossing
    x, y = (0.1, 0.15), (0.9, 0.15)
    spots = np.linspace(0.25, 0.75, len(mediators)) if len(mediators) > 1 else [0.5]
    pos = {m: (sx, 0.85) for m, sx in zip(mediators, spots, strict=True)}
    _box(ax, x, f"{analysis['x']}\n(treatment)")
    _box(ax, y, f"{analysis['y']} change")
    for i, m in enumerate(mediators):
        _box(ax, pos[m], f"{m} change")
        near_x = i == 0
        _arrow(ax, x, pos[m], f"a = {_label(rows, f'a[{m}]')}", 0.5 if near_x else 0.3)
        last = i == len(mediators) - 1
        _arrow(ax, pos[m], y, f"b = {_label(rows, f'b[{m}]')}", 0.5 if last else 0.7)
        for j in mediators[:i]:
            _arrow(ax, pos[j], pos[m], f"d = {_label(rows, f'd[{j}->{m}]')}",
                   offset=(0, 0.07))
    _arrow(ax, x, y, f"c' (direct) = {_label(rows, 'c_prime')}")
    ax.set_title(f"Paths between latent changes; total indirect effect "
                 f"{_label(rows, 'indirect_total')}, total effect {_label(rows, 'total')}",
                 fontsize=10)
    return fig


def indirect_names(posterior: xr.Dataset, analysis: dict[str, Any]) -> list[str]:
    if analysis["type"] == "within_mediation":
        return [n for n in ("me", "me_between") if n in posterior]
    return [n for n in posterior.data_vars if n.startswith("indirect")]


def indirect_densities(posterior: xr.Dataset, analysis: dict[str, Any]):
    """Posterior densities (histograms) of each indirect effect, zero marked."""
    names = indirect_names(posterior, analysis)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name in names:
        v = posterior[name].to_numpy().ravel()
        lo, hi = np.quantile(v, [0.005, 0.995])
        ax.hist(v[(v >= lo) & (v <= hi)], bins=60, density=True, histtype="step", lw=1.8,
                label=f"{name}: {v.mean():.3f}")
    ax.axvline(0, color="#b02a37", ls="--", lw=1)
    unit = f"{analysis['y']} units" + (" of change" if analysis["type"] ==
                                        "sequential_mediation" else "")
    ax.set_xlabel(f"indirect effect ({unit})")
    ax.set_ylabel("posterior density")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def person_forest(posterior: xr.Dataset, n_show: int = 30):
    """a_j b_j for a random, anonymous sample of persons, sorted, with 95% intervals."""
    draws = posterior["me_person"].stack(sample=("chain", "draw")).to_numpy()  # person x S
    rng = np.random.default_rng(PLOT_SEED)
    pick = rng.choice(draws.shape[0], size=min(n_show, draws.shape[0]), replace=False)
    sub = draws[pick]
    mean, lo, hi = sub.mean(1), np.quantile(sub, 0.025, 1), np.quantile(sub, 0.975, 1)
    order = np.argsort(mean)
    fig, ax = plt.subplots(figsize=(7, 0.2 * len(pick) + 1.2))
    yy = np.arange(len(pick))
    ax.errorbar(mean[order], yy, xerr=[mean[order] - lo[order], hi[order] - mean[order]],
                fmt="o", ms=3, color="#1f4e79", ecolor="#9bb", lw=1)
    ax.axvline(0, color="#b02a37", ls="--", lw=1)
    overall = posterior["me"].to_numpy().mean()
    ax.axvline(overall, color="#333", lw=1, label=f"average me = {overall:.3f}")
    ax.set_yticks([])
    ax.set_ylabel(f"{len(pick)} persons drawn at random (anonymous)")
    ax.set_xlabel("person-level indirect effect a_j · b_j (95% interval)")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


def truth_table(summary: pd.DataFrame, truth: dict[str, Any] | None) -> pd.DataFrame | None:
    """Generating value beside the estimate, for the parameters the truth names."""
    if not truth:
        return None
    rows = summary.set_index("parameter")
    out = []
    for name, value in truth.items():
        if name in rows.index and isinstance(value, int | float):
            r = rows.loc[name]
            out.append({"parameter": name, "truth": value, "estimate": round(r["mean"], 3),
                        "q2.5": round(r["q2.5"], 3), "q97.5": round(r["q97.5"], 3),
                        "inside 95% interval": bool(r["q2.5"] <= value <= r["q97.5"])})
    return pd.DataFrame(out) if out else None


def proportion_mediated(rows: pd.DataFrame, ratio: str) -> str:
    """The proportion mediated by its median and central interval, or, where the total
    effect's interval includes zero, that it has no bounded interval (fitting.ratio_rows)."""
    if rows.loc[f"bounded[{ratio}]", "mean"] < 1:
        return (" The proportion mediated has no bounded interval: the total effect's 95% "
                "interval includes zero, so the ratio can take any size.")
    return (f" Proportion mediated: median {rows.loc[f'median[{ratio}]', 'mean']:.2f} "
            f"(95% interval {rows.loc[ratio, 'q2.5']:.2f} to {rows.loc[ratio, 'q97.5']:.2f}).")


def mediation_sentence(summary: pd.DataFrame, analysis: dict[str, Any]) -> str:
    rows = summary.set_index("parameter")
    if analysis["type"] == "within_mediation":
        p = rows.loc["prob_gt0[me]", "mean"]
        return (f"Within persons, {analysis['x']} relates to {analysis['y']} through "
                f"{analysis['m']} with an average indirect effect of {_label(rows, 'me')} "
                f"(posterior probability of a positive effect {p:.3f})."
                + proportion_mediated(rows, "pme"))
    p = rows.loc["prob_gt0[indirect_total]", "mean"]
    return (f"The treatment effect on change in {analysis['y']} is {_label(rows, 'total')}, "
            f"of which {_label(rows, 'indirect_total')} runs through the mediators "
            f"(posterior probability of a positive total indirect effect {p:.3f}); "
            f"direct effect {_label(rows, 'c_prime')}." + proportion_mediated(rows, "pm"))
