"""Report pieces for the model checks of a fit folder (checks.json, ppc.csv,
ppc_curves.csv, loo_pit.csv, sensitivity.csv, comparison.csv, kfold.csv): tables and
plots read from those files, nothing recomputed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .report_parts import banner_html

STAT_LABELS = {"mean": "mean", "sd": "SD", "min": "minimum", "max": "maximum",
               "cluster_sd": "SD of study / patient means"}


def read_checks(fit_dir: str | Path) -> dict[str, Any]:
    """checks.json and the check tables of one fit folder."""
    fit_dir = Path(fit_dir)
    out: dict[str, Any] = {"summary": json.loads((fit_dir / "checks.json").read_text())}
    for name in ("ppc", "ppc_curves", "loo_pit", "sensitivity", "comparison"):
        path = fit_dir / f"{name}.csv"
        out[name] = pd.read_csv(path) if path.exists() else None
    return out


def conflict_banner(summary: dict[str, Any]) -> str:
    """Red banner naming each model and quantity with a prior-data conflict, or ''."""
    found = {m: s["prior_data_conflict"] for m, s in summary["models"].items()
             if s.get("prior_data_conflict")}
    if not found:
        return ""
    items = "".join(f"<li>{m}: {', '.join(q)}</li>" for m, q in found.items())
    return banner_html(
        "Potential prior-data conflict (power-scaling, Kallioinen et al. 2023): for these "
        "quantities the posterior moves when either the prior or the likelihood is "
        "scaled, as it does when the data sit in the prior's tail, so the estimate is "
        "partly the prior's. Read the priors table below; where a prior does not suit "
        "this dataset's scale, set its own (for a review: <code>priors:</code> in "
        f"review.yaml) and rebuild.<ul>{items}</ul>", "red")


def checks_banner(summary: dict[str, Any]) -> str:
    """The prior-data conflict banner (conflict_banner), then an amber banner listing
    every check warning, or a one-line all-clear."""
    lines = [f"{m}: {w}" for m, s in summary["models"].items() for w in s["warnings"]]
    return conflict_banner(summary) + warnings_banner(lines)


def warnings_banner(lines: list[str]) -> str:
    if not lines:
        return banner_html("Every model check passed: prior and posterior predictive "
                           "checks, LOO-PIT and prior sensitivity.", "green")
    items = "".join(f"<li>{line}</li>" for line in lines)
    return banner_html("Model checks to read before the results (they do not stop the "
                       f"run, unlike the convergence gate):<ul>{items}</ul>", "amber")


def checks_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per model and block of data: what was checked and how it came out."""
    rows = []
    for model, s in summary["models"].items():
        for block, b in s["data"].items():
            p = b["posterior_predictive"]
            rows.append({
                "model": model, "data": f"{block} ({b['label']})",
                "values / units": f"{b['values']} / {b['units']} {b['unit']}",
                "prior predictive outside range": f"{b['prior_predictive']['share_outside']:.1%}",
                "smallest PPC p": f"{min(p.values()):.3f}",
                "largest PPC p": f"{max(p.values()):.3f}",
                "LOO-PIT": loo_pit_status(b["loo_pit"]),
                "max Pareto k": f"{b['loo_pit']['max_pareto_k']:.2f}",
                "prior-sensitive": ", ".join(s["sensitivity_flagged"]) or "none",
            })
    return pd.DataFrame(rows)


def loo_pit_status(pit: dict[str, Any]) -> str:
    if pit.get("replicates_conditional_on_units"):
        return "shown, not judged (replicates keep each unit's latent effects)"
    if not pit.get("reliable", True):
        return "not judged (Pareto k)"
    test = f"p = {pit['p_value']:.2g}" if "p_value" in pit else ""
    return f"uniform ({test})" if pit["passed"] else f"NOT uniform ({test})"


def blocks(curves: pd.DataFrame) -> list[tuple[str, str]]:
    return list(curves[["model", "data"]].drop_duplicates().itertuples(index=False, name=None))


def predictive_plot(curves: pd.DataFrame, model: str, block: str, label: str):
    """Distribution overlay: ECDFs (as quantile curves) of the observed data and of
    replicated datasets, from the prior (left) and the posterior (right)."""
    rows = curves[(curves["model"] == model) & (curves["data"] == block)]
    observed = rows[rows["kind"] == "observed"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, kind, colour in zip(axes, ("prior", "posterior"), ("#9e9e9e", "#6baed6"),
                                strict=True):
        for _, rep in rows[rows["kind"] == kind].groupby("replicate"):
            ax.plot(rep["value"], rep["level"], color=colour, lw=0.6, alpha=0.5)
        ax.plot(observed["value"], observed["level"], color="black", lw=2, label="observed")
        ax.set_title(f"{kind} predictive", fontsize=10)
        ax.set_xlabel(label)
        if kind == "posterior":
            lo, hi = observed["value"].min(), observed["value"].max()
            pad = 0.3 * (hi - lo if hi > lo else 1.0)
            ax.set_xlim(lo - pad, hi + pad)
    axes[0].set_ylabel("cumulative share")
    axes[1].legend(loc="lower right", fontsize=8, frameon=False)
    fig.suptitle(f"{model}: {block}, observed (black) vs 50 replicated datasets", fontsize=10)
    fig.tight_layout()
    return fig


def statistics_plot(ppc: pd.DataFrame, model: str, block: str):
    """Posterior predictive test statistics: replicated 95% interval and mean, with the
    observed value and the predictive p-value."""
    rows = ppc[(ppc["model"] == model) & (ppc["data"] == block) & (ppc["kind"] == "posterior")]
    fig, axes = plt.subplots(1, len(rows), figsize=(2.1 * len(rows), 2.4))
    for ax, (_, r) in zip(np.atleast_1d(axes), rows.iterrows(), strict=True):
        ax.plot([0, 0], [r["replicated_q2.5"], r["replicated_q97.5"]], color="#6baed6", lw=6)
        ax.plot(0, r["replicated_mean"], "o", color="#2171b5")
        ax.plot(0, r["observed"], "D", color="black")
        ax.set_xticks([])
        ax.margins(y=0.15)
        ax.set_title(f"{STAT_LABELS.get(r['statistic'], r['statistic'])}\np = {r['p_value']:.2f}",
                     fontsize=8)
    fig.suptitle(f"{model}: {block} — test statistics (◆ observed, bar 95% of replicates)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def loo_pit_plot(pit: pd.DataFrame, model: str, block: str, band: float, status: str = ""):
    """LOO-PIT ECDF (one value per unit) minus the uniform ECDF, with the simultaneous
    band of independent uniforms; the pass/fail is that of POT-C calibrated for the
    values' dependence (`status`, checks.uniformity)."""
    rows = pit[(pit["model"] == model) & (pit["data"] == block)]
    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    ax.fill_between(rows["grid"], rows["lower"] - rows["grid"], rows["upper"] - rows["grid"],
                    color="#c6dbef", label=f"{band:.0%} simultaneous band")
    ax.plot(rows["grid"], rows["ecdf"] - rows["grid"], color="black", lw=1.5,
            label="LOO-PIT ECDF, one value per unit")
    ax.axhline(0, color="#777", lw=0.6)
    ax.set_xlabel("PIT value")
    ax.set_ylabel("ECDF − uniform")
    ax.set_title(f"{model}: {block} — LOO-PIT" + (f"\n{status}" if status else ""),
                 fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.28),
              ncol=2)
    fig.tight_layout()
    return fig


def sensitivity_table(sens: pd.DataFrame) -> pd.DataFrame:
    out = sens.rename(columns={"prior": "prior sensitivity",
                               "likelihood": "likelihood sensitivity"})
    return out.round(3)


def comparison_table(comparison: pd.DataFrame) -> pd.DataFrame:
    cols = ["model", "elpd_loo", "se", "elpd_diff", "dse", "p_loo", "weight", "max_pareto_k"]
    return comparison[cols].round(2)


def kfold_sentence(loso: pd.DataFrame, comparison: pd.DataFrame | None) -> str:
    """The leave-one-study-out elpd of the main model from its refits (loso.csv),
    next to the PSIS estimate of the same quantity."""
    rows = loso[loso["parameter"] == "elpd_left_out"]
    if rows.empty:
        return "No leave-one-study-out refits were recorded."
    model = rows["model"].iloc[0]
    exact = int((rows["method"] == "exact").sum())
    text = (f"Leave-one-study-out elpd of `{model}` from its refits (K-fold with K = "
            f"{len(rows)} studies; {exact} refitted exactly, the rest by PSIS with "
            f"Pareto k ≤ 0.7): **{rows['mean'].sum():.2f}**")
    if comparison is not None and model in set(comparison["model"]):
        psis = float(comparison.loc[comparison["model"] == model, "elpd_loo"].iloc[0])
        text += f"; the PSIS-LOO estimate from the full fit is {psis:.2f}."
    return text + "."


def elpd_with_se(values: pd.Series) -> str:
    return f"{values.sum():.1f} (SE {np.sqrt(len(values) * values.var(ddof=1)):.1f})"


def patient_cv_table(kfold: pd.DataFrame) -> pd.DataFrame:
    """Leave-patients-out cross-validation of one trial analysis (kfold.csv), in
    aggregate: PSIS-LOO by patient, the patients refitted, and the elpd with their
    exact values in place of PSIS."""
    refit = kfold[kfold["method"] == "exact"]
    row = {"patients": len(kfold), "elpd, PSIS-LOO": elpd_with_se(kfold["elpd_psis"]),
           "Pareto k > 0.7": int((kfold["pareto_k"] > 0.7).sum()),
           "max Pareto k": f"{kfold['pareto_k'].max():.2f}",
           "refitted (folds)": f"{len(refit)} ({refit['fold'].nunique()})"}
    if len(refit):
        row |= {"elpd, exact where refitted": elpd_with_se(kfold["elpd"]),
                "refitted: PSIS → exact": f"{refit['elpd_psis'].sum():.1f} → "
                                          f"{refit['elpd_exact'].sum():.1f}",
                "refits: divergences, max R-hat": f"{int(refit['fold_divergences'].max())}, "
                                                  f"{refit['fold_max_rhat'].max():.3f}"}
    return pd.DataFrame([row])


def trial_comparison_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """comparison.csv as shown: one block of rows per group of analyses of the same data."""
    out = comparison.copy()
    out["group"] = out.groupby("group", sort=False).ngroup() + 1
    for col in ("elpd", "se", "elpd_diff", "dse"):
        out[col] = out[col].map(lambda x: f"{x:.1f}")
    out["weight"] = out["weight"].map(lambda x: f"{x:.2f}")
    return out[["group", "analysis", "elpd", "se", "elpd_diff", "dse", "weight", "patients",
                "refitted"]]


def show_patient_cv(kfold_csv: str | Path) -> None:
    from IPython.display import Markdown, display

    kfold = pd.read_csv(kfold_csv)
    refit = int((kfold["method"] == "exact").sum())
    display(Markdown(
        "**Cross-validation by patient** (`kfold.csv`): the expected log predictive density "
        "of a left-out patient's data, summed over patients; PSIS-LOO from the fit, and "
        + ("exact refits without the patients whose PSIS estimate was not reliable (or, "
           "with `checks.kfold: all`, K-fold over every patient)." if refit else
           "no refit was needed: every Pareto k is at or below the threshold.")))
    display(patient_cv_table(kfold).style.hide(axis="index"))


def show_checks(fit_dir: str | Path, plot_models: list[str] | None = None) -> None:
    """The checks section of a report: banner, overview table, then for each model in
    `plot_models` (all by default) and each block of its data the predictive overlay,
    the test statistics and the LOO-PIT, and the prior-sensitivity table."""
    from IPython.display import HTML, Markdown, display

    checks = read_checks(fit_dir)
    summary = checks["summary"]
    display(HTML(checks_banner(summary)))
    display(checks_table(summary).style.hide(axis="index"))
    for model, block in blocks(checks["ppc_curves"]):
        if plot_models is not None and model not in plot_models:
            continue
        label = summary["models"][model]["data"][block]["label"]
        predictive_plot(checks["ppc_curves"], model, block, label)
        plt.show()
        statistics_plot(checks["ppc"], model, block)
        plt.show()
        pit = summary["models"][model]["data"][block]["loo_pit"]
        loo_pit_plot(checks["loo_pit"], model, block, pit["band"], loo_pit_status(pit))
        plt.show()
    display(Markdown("**Prior sensitivity** (power-scaling of the population-level priors "
                     "and of the likelihood; flagged where the prior sensitivity reaches "
                     "the threshold)"))
    display(sensitivity_table(checks["sensitivity"]).style.hide(axis="index"))


# ---- simulation-based calibration (reports/sbc.html) -------------------------------------


def sbc_overview(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per family: parameters tested, how many passed, simulations, coverage."""
    rows = []
    for family, s in summaries.items():
        rows.append({"family": family, "simulations": int(s["simulations"].max()),
                     "parameters": len(s), "passed": int(s["passed"].sum()),
                     "failed": ", ".join(s.loc[~s["passed"], "parameter"]) or "none",
                     "95% interval coverage (mean)": f"{s['coverage_95'].mean():.1%}",
                     "simulations with divergences": int(
                         s["simulations_with_divergences"].max())})
    return pd.DataFrame(rows)


def sbc_ecdf_plot(ecdf: pd.DataFrame, summary: pd.DataFrame, family: str, prob: float):
    """Rank ECDF minus the uniform ECDF per parameter, with the simultaneous band; a
    parameter outside its band is drawn red."""
    names = list(dict.fromkeys(ecdf["parameter"]))
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.0 * nrow), squeeze=False,
                             sharex=True)
    passed = summary.set_index("parameter")["passed"]
    for ax, name in zip(axes.ravel(), names, strict=False):
        rows = ecdf[ecdf["parameter"] == name]
        ax.fill_between(rows["grid"], rows["lower"] - rows["grid"],
                        rows["upper"] - rows["grid"], color="#c6dbef")
        ax.plot(rows["grid"], rows["ecdf"] - rows["grid"],
                color="black" if passed[name] else "#b02a37", lw=1.2)
        ax.axhline(0, color="#777", lw=0.5)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.supxlabel("fractional rank of the prior draw", fontsize=8)
    fig.supylabel("ECDF − uniform", fontsize=8)
    fig.suptitle(f"{family}: rank ECDF, simultaneous bands (family-wise {prob:.0%})",
                 fontsize=10)
    fig.tight_layout()
    return fig
