"""Plots and tables of the review report: publication bias, influence, cumulative
evidence, moderators and heterogeneity. Every number comes from a file in
data/fits/meta/<review>/ (summary.csv, funnel.csv, loso.csv, cumulative.csv,
posterior.nc); nothing is refitted here.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from .models.bias import AVERAGED_MODELS
from .report_parts import rank_plots

ADJUSTED_COLOURS = {"random_effects": "#0d6efd", "pet": "#d63384", "peese": "#fd7e14",
                    "selection": "#198754", "bias_averaged": "#212529"}
INTERVAL_COLOURS = ["#0d6efd", "#6f42c1", "#adb5bd", "#dc3545", "#20c997", "#ffc107"]


def _estimate(summary: pd.DataFrame, model: str, name: str = "mu") -> pd.Series | None:
    rows = summary[(summary["model"] == model) & (summary["parameter"] == name)]
    return None if rows.empty else rows.iloc[0]


def bias_table(summary: pd.DataFrame, correlation: bool) -> pd.DataFrame:
    """Unadjusted and bias-adjusted pooled effects with the stacking weight of each."""
    name = "mu_r" if correlation else "mu"
    rows = []
    for model in (*AVERAGED_MODELS, "bias_averaged"):
        est = _estimate(summary, model, name)
        if est is None:
            continue
        weight = _estimate(summary, "bias_averaged", f"weight[{model}]")
        rows.append({"model": model, name: f"{est['mean']:.3f}",
                     "95% interval": f"[{est['q2.5']:.3f}, {est['q97.5']:.3f}]",
                     "stacking weight": "" if weight is None else f"{weight['mean']:.2f}"})
    return pd.DataFrame(rows)


def funnel_plot(funnel: pd.DataFrame, summary: pd.DataFrame, measure_label: str):
    """Effects against their standard error (inverted axis), coloured by one-sided p-value
    interval, with the unadjusted pooled effect's pseudo-95% funnel and the
    bias-adjusted estimates marked. Analysis scale (Fisher z for correlations)."""
    fig, ax = plt.subplots(figsize=(8.0, 6.2), dpi=110)
    labels = list(dict.fromkeys(sorted(funnel["p_interval"], key=lambda s: (s[0] != "p", s))))
    for colour, label in zip(INTERVAL_COLOURS, labels, strict=False):
        part = funnel[funnel["p_interval"] == label]
        ax.plot(part["yi"], part["sei"], "o", ms=3.5, alpha=0.7, color=colour,
                label=f"one-sided {label}" if label.startswith("p<") else
                f"one-sided p {label}")
    top = float(funnel["sei"].max()) * 1.05
    re = _estimate(summary, "random_effects")
    se_grid = np.linspace(0, top, 50)
    ax.plot(re["mean"] - 1.96 * se_grid, se_grid, color="#6c757d", lw=0.8, ls="--")
    ax.plot(re["mean"] + 1.96 * se_grid, se_grid, color="#6c757d", lw=0.8, ls="--",
            label="pseudo-95% region around the unadjusted estimate")
    for model, colour in ADJUSTED_COLOURS.items():
        est = _estimate(summary, model)
        if est is not None:
            ax.axvline(est["mean"], color=colour, lw=1.4,
                       ls="--" if model == "bias_averaged" else "-",
                       label=f"{model.replace('_', ' ')}: {est['mean']:.3f}")
    ax.set_ylim(top, 0)
    ax.set_xlabel(f"effect size ({measure_label})")
    ax.set_ylabel("standard error (larger studies at the top)")
    ax.set_title("Funnel plot with unadjusted and bias-adjusted pooled estimates")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3,
              frameon=False)
    fig.tight_layout()
    return fig


def cumulative_plot(cumulative: pd.DataFrame, correlation: bool, label: str):
    """Pooled estimate and 95% interval as studies accrue in order of publication year."""
    name = "mu_r" if correlation else "mu"
    rows = cumulative[cumulative["parameter"] == name].sort_values("year")
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    ax.fill_between(rows["year"], rows["q2.5"], rows["q97.5"], color="#0d6efd", alpha=0.2,
                    step="post", label="95% credible interval")
    ax.step(rows["year"], rows["mean"], where="post", color="#0d6efd", label="posterior mean")
    ax.axhline(0, color="black", lw=0.6, ls=":")
    for _, r in rows.iloc[:: max(1, len(rows) // 8)].iterrows():
        ax.annotate(f"k={int(r['n_studies'])}", (r["year"], r["q97.5"]), fontsize=7,
                    xytext=(0, 3), textcoords="offset points", ha="center")
    ax.set_xlabel("publication year (all studies up to and including this year)")
    ax.set_ylabel(f"pooled {label}")
    ax.set_title("Cumulative meta-analysis")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def influence_table(loso: pd.DataFrame, correlation: bool, top: int = 10) -> pd.DataFrame:
    """The studies whose omission moves the pooled estimate most."""
    name = "mu_r" if correlation else "mu"
    rows = loso[loso["parameter"] == name]
    full = rows[rows["left_out"] == "(none)"].iloc[0]
    each = rows[rows["left_out"] != "(none)"].copy()
    each["change"] = each["mean"] - full["mean"]
    each = each.reindex(each["change"].abs().sort_values(ascending=False).index).head(top)
    return pd.DataFrame({
        "study left out": each["left_out"], f"pooled {name}": each["mean"].round(3),
        "95% interval": [f"[{a:.3f}, {b:.3f}]" for a, b in zip(each["q2.5"], each["q97.5"],
                                                               strict=True)],
        "change": each["change"].round(4), "method": each["method"],
        "Pareto k": each["pareto_k"].round(2),
    })


def loso_plot(loso: pd.DataFrame, correlation: bool, label: str):
    """Pooled estimate with each study left out, sorted; the full-data estimate marked."""
    name = "mu_r" if correlation else "mu"
    rows = loso[loso["parameter"] == name]
    full = rows[rows["left_out"] == "(none)"].iloc[0]
    each = rows[rows["left_out"] != "(none)"].sort_values("mean").reset_index(drop=True)
    n = len(each)
    fig, ax = plt.subplots(figsize=(7.5, min(max(3.5, 0.16 * n + 1.2), 9.0)), dpi=110)
    y = np.arange(n)
    ax.hlines(y, each["q2.5"], each["q97.5"], color="#6c757d", lw=0.7)
    ax.plot(each["mean"], y, "o", ms=2.5 if n > 60 else 3.5, color="#212529")
    ax.axvspan(full["q2.5"], full["q97.5"], color="#0d6efd", alpha=0.15,
               label="all studies: 95% interval")
    ax.axvline(full["mean"], color="#0d6efd", lw=1.3, label=f"all studies: {full['mean']:.3f}")
    if n <= 40:
        ax.set_yticks(y, each["left_out"], fontsize=7)
    else:
        ax.set_yticks([])
        ax.set_ylabel(f"{n} studies, each left out once (sorted)")
    ax.set_xlabel(f"pooled {label} without the study")
    ax.set_title("Leave-one-study-out")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def moderator_plot(summary: pd.DataFrame, measure_label: str):
    """Moderator effects (differences from the reference level, analysis scale) with 95%
    intervals, one row per meta-regression and coefficient; None without moderators."""
    rows = summary[summary["parameter"].str.startswith("beta[")
                   & summary["model"].str.startswith("metareg_")]
    if rows.empty:
        return None
    rows = rows.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.4), dpi=110)
    y = np.arange(len(rows))[::-1]
    ax.hlines(y, rows["q2.5"], rows["q97.5"], color="#0d6efd", lw=1.5)
    ax.plot(rows["mean"], y, "o", color="#0d6efd")
    ax.axvline(0, color="black", lw=0.6, ls=":")
    ax.set_yticks(y, [f"{p[5:-1]}  ({m})" for m, p in zip(rows["model"], rows["parameter"],
                                                          strict=True)], fontsize=8)
    ax.set_xlabel(f"difference in {measure_label} from the reference level (95% interval)")
    ax.set_title("Moderator effects")
    fig.tight_layout()
    return fig


def sd_density_plot(posterior_nc: str, model: str, measure_label: str):
    """Posterior densities of the heterogeneity SDs of one model (from posterior.nc)."""
    tree = xr.open_datatree(posterior_nc, engine="h5netcdf")
    post = tree[f"{model}/posterior"].to_dataset()
    fig, ax = plt.subplots(figsize=(7.5, 3.4), dpi=110)
    for name, colour, text in [("tau_study", "#0d6efd", "between studies (τ_study)"),
                               ("tau_es", "#fd7e14", "between effect sizes within studies "
                                                     "(τ_es)")]:
        if name not in post:
            continue
        x = post[name].to_numpy().ravel()
        grid = np.linspace(0, np.quantile(x, 0.999) * 1.1, 300)
        ax.plot(grid, stats.gaussian_kde(x)(grid), color=colour, label=text)
        ax.fill_between(grid, stats.gaussian_kde(x)(grid), color=colour, alpha=0.15)
    tree.close()
    ax.set_xlim(left=0)
    ax.set_xlabel(f"heterogeneity SD ({measure_label})")
    ax.set_ylabel("posterior density")
    ax.set_title(f"Heterogeneity — {model.replace('_', '-')} model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bias_sentence(summary: pd.DataFrame, info: dict[str, Any]) -> str:
    """One sentence on the bias-adjusted estimate, in the report's plain language."""
    corr = info["effect_type"] == "r"
    name = "mu_r" if corr else "mu"
    avg = _estimate(summary, "bias_averaged", name)
    if avg is None:
        return ""
    weights = {m: _estimate(summary, "bias_averaged", f"weight[{m}]") for m in AVERAGED_MODELS}
    best = max((m for m in weights if weights[m] is not None),
               key=lambda m: weights[m]["mean"])
    return (f"Averaging the unadjusted model with the PET, PEESE and selection models by "
            f"stacking weights gives {avg['mean']:.3f} (95% interval {avg['q2.5']:.3f} to "
            f"{avg['q97.5']:.3f}); the largest weight ({weights[best]['mean']:.2f}) goes to "
            f"the {best.replace('_', '-')} model. This is a predictive mixture, weighted by "
            f"how well each model predicts a left-out effect size, not a posterior model "
            f"probability: it does not say which model is true, its pooled effect means "
            f"something slightly different in each model, and effect sizes of the same "
            f"study are treated as independent units.")


def history_change(history: pd.DataFrame) -> str:
    """What changed since the previous build of the review, in one paragraph."""
    if len(history) < 2:
        return ("This is the first recorded build of this review; later builds with new or "
                "changed data will be compared with it here.")
    prev, last = history.iloc[-2], history.iloc[-1]
    added = [s for s in str(last["studies_added"] or "").split(";") if s and s != "nan"]
    removed = [s for s in str(last["studies_removed"] or "").split(";") if s and s != "nan"]
    shown = ", ".join(added[:10]) + (f" and {len(added) - 10} more" if len(added) > 10 else "")
    parts = [f"Since the previous build ({prev['built_utc']}): "]
    def studies(n: int) -> str:
        return f"{n} study" if n == 1 else f"{n} studies"
    parts.append(f"{studies(len(added))} added ({shown}); " if added else "no studies added; ")
    if removed:
        parts.append(f"{studies(len(removed))} removed ({', '.join(removed[:10])}); ")
    parts.append(f"effect sizes {int(prev['n_effects'])} → {int(last['n_effects'])}; "
                 f"pooled {last['parameter']} {float(prev['mean']):.3f} "
                 f"[{float(prev['q2.5']):.3f}, {float(prev['q97.5']):.3f}] → "
                 f"{float(last['mean']):.3f} [{float(last['q2.5']):.3f}, "
                 f"{float(last['q97.5']):.3f}] ({last['model'].replace('_', '-')} model).")
    return "".join(parts)


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """One line per recorded build (the study lists are summarised as counts)."""
    def count(cell) -> int:
        return len([s for s in str(cell).split(";") if s and s != "nan"])
    return pd.DataFrame({
        "built (UTC)": history["built_utc"], "studies": history["n_studies"],
        "effect sizes": history["n_effects"],
        "added": [count(c) for c in history["studies_added"]],
        "removed": [count(c) for c in history["studies_removed"]],
        "pooled": history["mean"].astype(float).round(3),
        "95% interval": [f"[{float(a):.3f}, {float(b):.3f}]"
                         for a, b in zip(history["q2.5"], history["q97.5"], strict=True)],
        "τ_study": history["tau_study"].astype(float).round(3),
        "data sha256": history["data_sha256"].str[:12] + "…",
    })


def history_plot(history: pd.DataFrame, label: str):
    """The pooled estimate at each build, as studies arrived (living meta-analysis)."""
    x = np.arange(len(history))
    mean, lo, hi = (history[c].astype(float) for c in ("mean", "q2.5", "q97.5"))
    fig, ax = plt.subplots(figsize=(7.5, 3.4), dpi=110)
    ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="o-", color="#0d6efd", capsize=3)
    ax.set_xticks(x, [f"{b[:10]}\nk={n}" for b, n in zip(history["built_utc"],
                                                           history["n_studies"], strict=True)],
                  fontsize=7)
    ax.set_xlabel("build (date, number of studies)")
    ax.set_ylabel(f"pooled {label}")
    ax.set_title("Living meta-analysis: the pooled estimate at each build")
    fig.tight_layout()
    return fig


def rank_plot(posterior_nc: str, model: str, names: tuple[str, ...] = ("mu", "tau_study",
                                                                      "tau_es")):
    """Rank plots of the main parameters of one model of a review."""
    tree = xr.open_datatree(posterior_nc, engine="h5netcdf")
    post = tree[f"{model}/posterior"].to_dataset().load()
    tree.close()
    return rank_plots(post, [n for n in names if n in post],
                           f"Rank plots — {model.replace('_', '-')} model")
