"""The real Snakemake workflow on tiny data in a temporary folder.

Builds a throwaway project (Snakefile, workflow/, config/) with small raw data in
all three formats (CSV, Excel, SPSS), runs it with config/test.yaml, and checks
the outputs others depend on, the reports, idempotence and that data/raw is untouched.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from .conftest import checksums, snakemake


def visible_text(page: str) -> str:
    """A report without its embedded images: base64 data can spell 'P000' by chance."""
    return re.sub(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+", "", page)

pytestmark = pytest.mark.slow
SUMMARY_COLUMNS = ["model", "parameter", "mean", "sd", "q2.5", "q97.5", "r_hat", "ess_bulk",
                   "ess_tail", "mcse_mean", "mcse_sd"]


def test_outputs_follow_the_contract(project):
    work, _, _ = project
    for review in ("konstantopoulos2011", "synthetic_small_review"):
        fits = work / "data" / "fits" / "meta" / review
        summary = pd.read_csv(fits / "summary.csv")
        assert list(summary.columns) == SUMMARY_COLUMNS
        params = set(summary["parameter"])
        assert {"mu", "tau_study", "tau_es", "i2_study", "i2_es", "pred_low",
                "pred_high"} <= params
        diag = json.loads((fits / "diagnostics.json").read_text())
        for d in diag["models"].values():
            assert {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "min_bfmi",
                    "pareto_k", "passed"} <= set(d)
        assert (fits / "posterior.nc").stat().st_size > 0
        prov = json.loads((fits / "provenance.json").read_text())
        assert "pymc" in prov["packages"] and prov["settings"]["sampler"]["seed"] == 1
    small = pd.read_csv(work / "data/fits/meta/synthetic_small_review/summary.csv")
    assert "mu_r" in set(small["parameter"])  # correlations are back-transformed
    # Declared moderators get one meta-regression each and one with all of them.
    assert {"metareg_rater", "metareg_timing", "metareg_treatment", "metareg_all"} <= set(
        small["model"])
    assert "beta[rater:therapist]" in set(small.query("model == 'metareg_all'")["parameter"])
    # Publication bias: three adjusted models and their stacking average.
    assert {"pet", "peese", "selection", "bias_averaged"} <= set(small["model"])
    weights = small[small["parameter"].str.startswith("weight[")]["mean"]
    assert len(weights) == 4 and weights.sum() == pytest.approx(1.0, abs=1e-6)
    trial = work / "data" / "clean" / "trials" / "synthetic_small_trial"
    sessions = pd.read_csv(trial / "sessions.csv")
    assert len(sessions) == 30 * 6  # full grid: missing sessions kept as rows
    assert {"alliance_within", "alliance_pmean", "hrsd_lag1", "alliance_bond"} <= set(sessions)


@pytest.mark.parametrize("review", ["konstantopoulos2011", "synthetic_small_review"])
def test_funnel_influence_and_cumulative_tables(project, review):
    work, _, _ = project
    fits = work / "data" / "fits" / "meta" / review
    effects = pd.read_csv(work / "data/clean/meta" / review / "effects.csv",
                          dtype={"study": str})
    funnel = pd.read_csv(fits / "funnel.csv")
    assert len(funnel) == len(effects) and funnel["p_one_sided"].between(0, 1).all()
    loso = pd.read_csv(fits / "loso.csv", dtype={"left_out": str})
    assert set(loso["left_out"]) == {"(none)", *effects["study"]}
    mu = loso[loso["parameter"] == "mu"].set_index("left_out")
    assert (mu.drop("(none)")["n_studies"] == effects["study"].nunique() - 1).all()
    cumulative = pd.read_csv(fits / "cumulative.csv")
    cum_mu = cumulative[cumulative["parameter"] == "mu"]
    assert cum_mu["year"].is_monotonic_increasing
    assert cum_mu["n_studies"].is_monotonic_increasing
    assert cum_mu["n_studies"].iloc[-1] == effects["study"].nunique()
    # the last cumulative step is the full data: same estimate as leaving nothing out
    assert cum_mu["mean"].iloc[-1] == pytest.approx(mu.loc["(none)", "mean"], abs=0.02)


def test_reports_and_index(project):
    work, _, _ = project
    index = (work / "reports" / "index.html").read_text()
    for name in ("konstantopoulos2011", "synthetic_small_review", "synthetic_small_trial",
                 "synthetic_small_weekly"):
        assert f"{name}.html" in index
    assert index.count("synthetic</span>") >= 2 and "real</span>" in index
    html = (work / "reports" / "meta" / "konstantopoulos2011.html").read_text()
    summary = pd.read_csv(work / "data/fits/meta/konstantopoulos2011/summary.csv")
    mu = summary.query("model == 'three_level' and parameter == 'mu'").iloc[0]
    for value in (mu["mean"], mu["q2.5"], mu["q97.5"]):
        assert f"{value:.3f}" in html, f"headline number {value:.3f} missing from the report"
    averaged = summary.query("model == 'bias_averaged' and parameter == 'mu'").iloc[0]
    assert f"{averaged['mean']:.3f}" in html
    for section in ("Publication bias", "leave one study out", "Cumulative meta-analysis",
                    "Heterogeneity", "Moderators"):
        assert section in html, f"section '{section}' missing from the review report"
    assert "Priors as sampled (<code>priors.csv</code>" in html
    assert "SYNTHETIC DATA" in (work / "reports/meta/synthetic_small_review.html").read_text()
    assert (work / "reports/meta/konstantopoulos2011.ipynb").exists()
    # Reports never print patient-level rows: no patient identifier appears.
    trial_html = (work / "reports/trials/synthetic_small_trial.html").read_text()
    assert not re.search(r"\bP0\d\d\b", visible_text(trial_html))


SEQUENTIAL = {"a[alliance]", "a[iip]", "d[alliance->iip]", "b[alliance]", "b[iip]", "c_prime",
              "indirect[alliance]", "indirect[iip]", "indirect[alliance->iip]",
              "indirect_total", "total", "pm", "prob_gt0[indirect_total]"}
WITHIN = {"a", "b", "c_prime", "c", "cov_ab", "me", "pme", "sd_a", "sd_b", "sd_c_prime",
          "sigma_m", "sigma_y", "a_between", "me_between", "prob_gt0[me]"}
GROWTH = {"alliance_within", "alliance_between", "alliance_trend:time", "intercept", "time",
          "arm", "arm:time", "beta[hrsd_baseline]", "beta[hrsd_baseline]:time", "sd_intercept",
          "sd_slope", "sigma", "sd_alliance_within", "reliability_within",
          "prob_gt0[alliance_within]"}
MODERATION = GROWTH | {"alliance_within:adherence", "alliance_within:competence",
                       "alliance_within:arm", "alliance_between:arm", "alliance_within[CBASP]"}
EARLY = {"early_alliance", "early_alliance_per_sd", "early_alliance:time", "arm",
         "sd_early_alliance", "prob_gt0[early_alliance]"}
RICLPM = {"ar[alliance]", "cl[alliance->emotion_regulation]",
          "cl[emotion_regulation->depression]", "cl[depression->alliance]",
          "indirect[alliance->emotion_regulation->depression]", "sd_ri[depression]",
          "cor_ri[alliance,depression]", "sd_innovation[alliance]", "sd_first[alliance]"}
HEADLINE = {"sequential_mediation": "indirect_total", "within_mediation": "me",
            "growth": "alliance_within", "moderation": "alliance_within",
            "early_alliance": "early_alliance",
            "riclpm": "indirect[alliance->emotion_regulation->depression]"}


@pytest.mark.parametrize("trial, analysis, names", [
    ("synthetic_small_trial", "sequential_mediation", SEQUENTIAL),
    ("synthetic_small_weekly", "within_mediation", WITHIN),
    ("synthetic_small_trial", "growth", GROWTH),
    ("synthetic_small_trial", "moderation", MODERATION),
    ("synthetic_small_trial", "early_alliance", EARLY),
    ("synthetic_small_weekly", "riclpm", RICLPM),
])
def test_trial_analysis_outputs_and_report(project, trial, analysis, names):
    work, _, _ = project
    fits = work / "data" / "fits" / "trials" / trial / analysis
    summary = pd.read_csv(fits / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert names <= set(summary["parameter"])
    assert set(summary["model"]) == {analysis}
    diag = json.loads((fits / "diagnostics.json").read_text())
    used = diag["models"][analysis]["used"]
    if analysis != "early_alliance":  # there: patients with an outcome after session 3
        assert used["patients"] == (30 if trial == "synthetic_small_trial" else 40)
    assert (fits / "posterior.nc").stat().st_size > 0
    # the report shows the numbers of summary.csv, and the index the headline
    html = (work / "reports" / "trials" / f"{trial}.html").read_text()
    headline = HEADLINE[analysis]
    row = summary.set_index("parameter").loc[headline]
    for value in (row["mean"], row["q2.5"], row["q97.5"]):
        assert f"{value:.3f}" in html, f"{headline} {value:.3f} missing from the report"
    assert f"{analysis} ({analysis.replace('_', ' ')})" in html and "Not built yet" not in html
    index = (work / "reports" / "index.html").read_text()
    assert html_lib.escape(f"{analysis}: {headline} = {row['mean']:.3f}") in index
    # the priors as sampled, rank plots and the provenance block of this analysis
    priors = pd.read_csv(fits / "priors.csv")
    assert len(priors) >= 3 and set(priors["model"]) == {analysis}
    assert html_lib.escape(priors["prior"].iloc[0]) in html
    assert "<strong>Rank plots</strong> per chain" in html
    provenance = json.loads((fits / "provenance.json").read_text())
    assert 'id="Provenance"' in html
    assert provenance["git_commit"] in html and provenance["created_utc"] in html
    # cross-validation by patient: config/test.yaml refits every patient, in 2 folds
    kfold = pd.read_csv(fits / "kfold.csv")
    assert len(kfold) == used["patients"] and (kfold["method"] == "exact").all()
    assert sorted(kfold["fold"].unique()) == [0, 1]
    assert np.isfinite(kfold["elpd_exact"]).all()
    assert "Cross-validation by patient" in html
    assert f"{kfold['elpd'].sum():.1f} (SE" in html
    # no patient identifiers (P001..., A001...) anywhere in the report
    assert not re.search(r"\b[PA]0\d\d\b", visible_text(html))


def test_raw_data_untouched_and_second_run_does_nothing(project, built_copy):
    work, before, _ = project
    assert checksums(work / "data" / "raw") == before
    # the second run in a copy: the shared project stays read-only for the other workers
    again = snakemake(built_copy, "--configfile", "config/test.yaml")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_bad_config_stops_before_any_job(project, tmp_path):
    work = tmp_path / "work"  # the project's code and config, in a folder of its own
    work.mkdir()
    for item in ("Snakefile", "workflow", "config"):
        src = project[0] / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler:\n  chians: 2\n")
    run = snakemake(work, "--configfile", str(bad), "-n")
    assert run.returncode != 0
    assert "unknown key 'sampler.chians'" in run.stdout + run.stderr


def test_failing_report_cell_fails_its_rule_with_the_error_in_the_log(built_copy):
    work = built_copy
    template = work / "workflow/notebooks/trial.ipynb"
    nb = json.loads(template.read_text())
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "broken",
                        "metadata": {}, "outputs": [],
                        "source": "raise RuntimeError('deliberately broken report cell')"})
    template.write_text(json.dumps(nb))
    run = snakemake(work, "--configfile", "config/test.yaml")
    assert run.returncode != 0
    log = (work / "logs/report/trials/synthetic_small_trial.log").read_text()
    assert "RuntimeError: deliberately broken report cell" in log
    assert not (work / "reports/trials/synthetic_small_trial.html").exists()


def test_snakemake_report_collects_outputs_by_category(built_copy):
    work = built_copy
    run = snakemake(work, "--configfile", "config/test.yaml", "--report", "workflow-report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    page = (work / "workflow-report.html").read_text()
    for text in ("Meta-analysis", "Reports", "konstantopoulos2011", "leave-one-study-out"):
        assert text in page, text


def check_blocks(fits) -> dict:
    checks = json.loads((fits / "checks.json").read_text())
    for model in checks["models"].values():
        assert model["data"], "a model without checked data"
        for block in model["data"].values():
            assert 0 <= block["prior_predictive"]["share_outside"] <= 1
            assert set(block["posterior_predictive"]) >= {"mean", "sd", "min", "max"}
    ppc = pd.read_csv(fits / "ppc.csv")
    assert set(ppc["kind"]) == {"prior", "posterior"} and ppc["p_value"].between(0, 1).all()
    pit = pd.read_csv(fits / "loo_pit.csv")
    assert (pit["lower"] <= pit["upper"]).all() and pit["ecdf"].between(0, 1).all()
    assert len(pd.read_csv(fits / "sensitivity.csv")) > 0
    return checks


def test_model_checks_for_every_fit_and_in_every_report(project):
    work, _, _ = project
    fits = work / "data" / "fits"
    for review in ("konstantopoulos2011", "synthetic_small_review"):
        checks = check_blocks(fits / "meta" / review)
        assert {"random_effects", "three_level", "pet", "selection"} <= set(checks["models"])
        comparison = pd.read_csv(fits / "meta" / review / "comparison.csv")
        assert {"random_effects", "three_level"} <= set(comparison["model"])
        assert comparison["weight"].sum() == pytest.approx(1.0, abs=1e-6)
        loso = pd.read_csv(fits / "meta" / review / "loso.csv", dtype={"left_out": str})
        elpd = loso[loso["parameter"] == "elpd_left_out"]
        assert set(elpd["left_out"]) == set(loso["left_out"]) - {"(none)"}
        html = (work / "reports" / "meta" / f"{review}.html").read_text()
        assert "Model checks" in html and "Model comparison" in html and "LOO-PIT" in html
    for trial, analysis in (("synthetic_small_trial", "growth"),
                            ("synthetic_small_trial", "sequential_mediation"),
                            ("synthetic_small_weekly", "riclpm")):
        checks = check_blocks(fits / "trials" / trial / analysis)
        blocks = checks["models"][analysis]["data"]
        assert {"growth": {"outcome", "alliance"}, "sequential_mediation":
                {"alliance", "iip", "hrsd"}, "riclpm": {"alliance", "emotion_regulation",
                                                         "depression"}}[analysis] == set(blocks)
    html = (work / "reports" / "trials" / "synthetic_small_trial.html").read_text()
    assert html.count("Model checks") >= 4 and "Prior sensitivity" in html
    # growth and moderation model the same outcome sessions: compared on their elpd
    comparison = pd.read_csv(fits / "trials" / "synthetic_small_trial" / "comparison.csv")
    assert set(comparison["analysis"]) == {"growth", "moderation"}
    assert comparison["weight"].sum() == pytest.approx(1.0, abs=1e-6)
    assert "Comparing analyses of the same data" in html
    weekly = pd.read_csv(fits / "trials" / "synthetic_small_weekly" / "comparison.csv")
    assert weekly.empty  # RI-CLPM and within-person mediation model different data
    assert "Model checks</th>" in (work / "reports" / "index.html").read_text()


def test_simulation_based_calibration_target(built_copy):
    work = built_copy
    run = snakemake(work, "sbc", "--configfile", "config/test.yaml")  # target first
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for family, jobs in (("meta_random_effects", 2), ("within_mediation", 2)):
        assert len(list((work / "data" / "sbc" / family).glob("batch_*.csv"))) == jobs
        ranks = pd.read_csv(work / "data" / "sbc" / family / "ranks.csv")
        assert sorted(ranks["simulation"].unique()) == [0, 1, 2, 3]
        assert ranks["rank"].between(0, ranks["max_rank"]).all()
        summary = pd.read_csv(work / "data" / "sbc" / family / "summary.csv")
        assert (summary["simulations"] == 4).all()
    page = (work / "reports" / "sbc.html").read_text()
    assert "Simulation-based calibration" in page and "within_mediation" in page
