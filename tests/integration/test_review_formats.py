"""Any review in the contract's format runs through cleaning, every model, influence and
cumulative analyses without code changes: here yi/sei, one effect per study (so the
two-level model is the main one), no es_id and no year, and selection expected negative."""

import json

import numpy as np
import pandas as pd
import pytest
from allianceflow.config import validate_config
from allianceflow.meta_influence import influence_review
from allianceflow.meta_stage import clean_review, fit_review
from allianceflow.reports import render_notebook

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def test_two_level_review_without_es_id_or_year(tmp_review, tmp_path):
    rng = np.random.default_rng(4)
    k = 14
    sei = rng.uniform(0.08, 0.3, k)
    effects = pd.DataFrame({"author": [f"Author{i} ({2000 + i})" for i in range(k)],
                            "yi": rng.normal(-0.3, np.sqrt(sei**2 + 0.01)).round(3),
                            "sei": sei.round(3)})
    folder = tmp_review(effects, "measure: SMD\nexpected_direction: negative\n"
                                 "columns: {study: author}\n", name="plain")
    clean_review(folder, tmp_path / "effects.csv", tmp_path / "review.json")
    info = json.loads((tmp_path / "review.json").read_text())
    assert not info["three_level"] and info["direction"] == -1
    config = validate_config({"sampler": {"chains": 2, "draws": 300, "tune": 300, "seed": 2},
                              "checks": {"policy": "warn"}},
                             ROOT / "config" / "config.schema.yaml")
    table = fit_review(tmp_path / "effects.csv", tmp_path / "review.json", tmp_path / "fits",
                       config)
    assert set(table["model"]) == {"random_effects", "pet", "peese", "selection",
                                   "bias_averaged"}
    assert {"prob_lt[-0.1]", "prob_lt[-0.2]"} <= set(table["parameter"])
    mu = table.query("model == 'random_effects' and parameter == 'mu'").iloc[0]
    assert mu["q2.5"] < -0.3 < mu["q97.5"]
    loso, cumulative = influence_review(tmp_path / "effects.csv", tmp_path / "review.json",
                                        tmp_path / "fits", config)
    assert loso["model"].unique().tolist() == ["random_effects"]
    assert (loso["method"] == "exact").all() and loso["left_out"].nunique() == k + 1
    assert cumulative.empty  # no year column: no cumulative analysis, and no error
    assert (tmp_path / "fits" / "cumulative.csv").exists()
    fits = tmp_path / "fits"
    render_notebook(ROOT / "workflow" / "notebooks" / "review.ipynb", tmp_path / "plain.ipynb",
                    tmp_path / "plain.html",
                    {"review": "plain", "effects_csv": str(tmp_path / "effects.csv"),
                     "info_json": str(tmp_path / "review.json"),
                     "summary_csv": str(fits / "summary.csv"),
                     "diagnostics_json": str(fits / "diagnostics.json"),
                     "provenance_json": str(fits / "provenance.json"),
                     "funnel_csv": str(fits / "funnel.csv"),
                     "posterior_nc": str(fits / "posterior.nc"),
                     "loso_csv": str(fits / "loso.csv"),
                     "cumulative_csv": str(fits / "cumulative.csv"), "truth_yaml": ""})
    html = (tmp_path / "plain.html").read_text()
    assert "No `year` column" in html or "No <code>year</code> column" in html
    assert "declares no moderators" in html and "is below zero" in html
