"""New studies, a new review and a new trial wave regenerate exactly what they affect.

Each test copies the built test project (outputs, Snakemake's records and timestamps
included; the new wave's copy is shared with the interrupted-run tests, conftest.new_week),
changes the raw data as a user would, and checks: the dry run schedules
exactly the expected jobs; after the run, every other dataset's outputs are unchanged
(contents and modification times); and a review's history gains a row.
"""

from __future__ import annotations

import pandas as pd
import pytest
from allianceflow import synthetic

from .conftest import CONFIG, WEEKLY, outputs_of, scheduled_jobs, snakemake, snapshot

pytestmark = pytest.mark.slow


META_REVIEW = "synthetic_small_review"


def test_new_study_rebuilds_only_its_review(built_copy):
    work = built_copy
    untouched = (outputs_of("meta", "konstantopoulos2011")
                 + outputs_of("trials", "synthetic_small_trial")
                 + outputs_of("trials", "synthetic_small_weekly"))
    before = snapshot(work, untouched)
    table = work / "data/raw/meta" / META_REVIEW / "effects.xlsx"
    effects = pd.read_excel(table)
    new = effects.iloc[[0]].assign(study="S999", es_id=1, year=2026, r=0.35, n=120)
    pd.concat([effects, new], ignore_index=True).to_excel(table, index=False)

    assert scheduled_jobs(work) == {"clean_review": 1, "fit_review": 1, "influence_review": 1,
                                    "report_review": 1, "index": 1, "all": 1}
    run = snakemake(work, *CONFIG)
    assert run.returncode == 0, run.stderr[-3000:]
    assert snapshot(work, untouched) == before
    history = pd.read_csv(work / "data/fits/meta" / META_REVIEW / "history.csv")
    assert len(history) == 2 and history["studies_added"].iloc[-1] == "S999"
    assert history["n_studies"].iloc[-1] == history["n_studies"].iloc[0] + 1
    summary = pd.read_csv(work / "data/fits/meta" / META_REVIEW / "summary.csv")
    mu_r = summary.query("model == 'three_level' and parameter == 'mu_r'")["mean"].iloc[0]
    assert history["mean"].iloc[-1] == pytest.approx(mu_r)
    html = (work / "reports/meta" / f"{META_REVIEW}.html").read_text()
    assert "1 study added (S999)" in html
    # a touched but unchanged file reruns nothing
    table.touch()
    assert "Nothing to be done" in snakemake(work, *CONFIG, "--dry-run").stdout


def test_new_review_folder_builds_only_itself(built_copy):
    work = built_copy
    untouched = (outputs_of("meta", "konstantopoulos2011") + outputs_of("meta", META_REVIEW)
                 + outputs_of("trials", "synthetic_small_trial"))
    before = snapshot(work, untouched)
    review = synthetic.iip_alliance_review(seed=9, n_studies=10, n_effects=14)
    review.name = "synthetic_new_review"
    synthetic.write_dataset(review, work / "data" / "raw")

    assert scheduled_jobs(work) == {"clean_review": 1, "fit_review": 1, "influence_review": 1,
                                    "report_review": 1, "index": 1, "all": 1}
    run = snakemake(work, *CONFIG)
    assert run.returncode == 0, run.stderr[-3000:]
    assert snapshot(work, untouched) == before
    assert "synthetic_new_review.html" in (work / "reports/index.html").read_text()
    assert len(pd.read_csv(work / "data/fits/meta/synthetic_new_review/history.csv")) == 1


def test_new_trial_wave_rebuilds_only_its_trial(project, new_week):
    work, built = new_week
    # its two analyses are refitted (the cleaned sessions changed) and cross-validated,
    # then compared; nothing else
    assert built["jobs"] == {"clean_trial": 1, "fit_trial_analysis": 2,
                             "kfold_trial_analysis": 2, "compare_trial": 1,
                             "report_trial": 1, "index": 1, "all": 1}
    assert built["after"] == built["before"]  # the other datasets: contents and times
    new = pd.read_csv(work / f"data/clean/trials/{WEEKLY}/sessions.csv")
    old = pd.read_csv(project[0] / f"data/clean/trials/{WEEKLY}/sessions.csv")
    assert new["session"].max() == old["session"].max() + 1
    assert len(new) > len(old)
    assert "Nothing to be done" in snakemake(work, *CONFIG, "--dry-run").stdout


def test_model_code_change_reruns_the_fits_that_use_it(built_copy):
    work = built_copy
    code = work / "workflow/allianceflow/models/bias.py"
    code.write_text(code.read_text() + "\n# an edit to the publication-bias models\n")
    reviews = len(list((work / "data/raw/meta").iterdir()))
    assert scheduled_jobs(work) == {"fit_review": reviews, "report_review": reviews,
                                    "index": 1, "all": 1}


@pytest.mark.parametrize("module, fits", [
    ("within_mediation.py", 1),  # the weekly trial's within-person mediation
    ("growth.py", 2),  # the small trial's growth and moderation analyses
    ("riclpm.py", 1),
])
def test_trial_model_code_change_reruns_only_the_fits_of_its_type(built_copy, module, fits):
    work = built_copy
    code = work / "workflow/allianceflow/models" / module
    code.write_text(code.read_text() + "\n# an edit to this model\n")
    # one job per trial analysis: only the analyses of this type rerun and are
    # cross-validated again, then their trial's comparison and report
    assert scheduled_jobs(work) == {"fit_trial_analysis": fits, "kfold_trial_analysis": fits,
                                    "compare_trial": 1, "report_trial": 1, "index": 1,
                                    "all": 1}


def test_prior_change_reruns_fits_and_influence_only(built_copy):
    work = built_copy
    config = work / "config" / "test_prior.yaml"
    config.write_text((work / "config/test.yaml").read_text()
                      + "meta:\n  priors:\n    tau_sd: 0.3\n")
    jobs = scheduled_jobs(work, "--configfile", str(config))
    reviews = len(list((work / "data/raw/meta").iterdir()))
    # meta-analysis priors do not touch the trials' mediation fits
    assert jobs == {"fit_review": reviews, "influence_review": reviews,
                    "report_review": reviews, "index": 1, "all": 1}


def test_draws_of_one_analysis_type_rerun_only_its_fits(built_copy):
    work = built_copy
    config = work / "config" / "test_draws.yaml"
    config.write_text("sampler:\n  draws_by_analysis: {riclpm: 350}\n")
    jobs = scheduled_jobs(work, "--configfile", "config/test.yaml", str(config))
    # the reviews and the other analyses keep their settings, so nothing of theirs reruns
    assert jobs == {"fit_trial_analysis": 1, "kfold_trial_analysis": 1, "compare_trial": 1,
                    "report_trial": 1, "index": 1, "all": 1}
