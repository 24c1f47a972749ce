"""Effect-size conversion and the review contract: good input cleans, bad input names
file, row, column and reason."""

import numpy as np
import pandas as pd
import pytest
from allianceflow.effects import fisher_z, fisher_z_variance, load_review, z_to_r
from allianceflow.errors import ConfigError, DataError


def test_fisher_z_known_values():
    # atanh(.5) = 0.5 * ln(3) = 0.549306...; variance for n = 103 is 1/100.
    assert fisher_z(np.array([0.5]))[0] == pytest.approx(0.5 * np.log(3), abs=1e-12)
    assert fisher_z_variance(np.array([103]))[0] == pytest.approx(0.01)
    r = np.array([-0.9, -0.124, 0.0, 0.278, 0.95])
    np.testing.assert_allclose(z_to_r(fisher_z(r)), r, atol=1e-12)


def test_r_and_n_clean_to_fisher_z(tmp_review):
    df = pd.DataFrame({"study": ["a", "a", "b"], "r": [0.3, 0.2, -0.1], "n": [53, 53, 23]})
    review = load_review(tmp_review(df))
    e = review.effects
    np.testing.assert_allclose(e["yi"], np.arctanh([0.3, 0.2, -0.1]))
    np.testing.assert_allclose(e["vi"], [1 / 50, 1 / 50, 1 / 20])
    assert list(e["es_id"]) == ["1", "2", "1"]
    assert review.info["three_level"] and review.info["effect_type"] == "r"
    assert review.info["n_studies"] == 2 and review.info["n_effects"] == 3


def test_yi_sei_becomes_variance(tmp_review):
    df = pd.DataFrame({"study": ["a", "b"], "yi": [0.2, 0.4], "sei": [0.1, 0.2]})
    e = load_review(tmp_review(df, "measure: SMD\n")).effects
    np.testing.assert_allclose(e["vi"], [0.01, 0.04])
    assert not load_review(tmp_review(df)).info["three_level"]


def test_own_column_names_via_review_yaml(tmp_review):
    df = pd.DataFrame({"Author": ["x", "y"], "corr": [0.1, 0.2], "N": [30, 40]})
    yaml_text = "columns: {study: Author, r: corr, n: N}\n"
    e = load_review(tmp_review(df, yaml_text)).effects
    assert list(e["study"]) == ["x", "y"]
    assert e["n"].tolist() == [30, 40]


def test_excel_input(tmp_review):
    df = pd.DataFrame({"study": [1, 2], "yi": [0.1, 0.3], "vi": [0.02, 0.03]})
    e = load_review(tmp_review(df, fmt="xlsx")).effects
    assert list(e["study"]) == ["1", "2"]  # numeric ids become clean strings, not '1.0'


@pytest.mark.parametrize(
    "frame, row, column, words",
    [
        ({"study": ["a", "b"], "r": [0.2, 1.0], "n": [50, 50]}, 3, "r", "between -1 and 1"),
        ({"study": ["a", "b"], "r": [0.2, -1.2], "n": [50, 50]}, 3, "r", "between -1 and 1"),
        ({"study": ["a", "b"], "r": [0.2, 0.1], "n": [3, 50]}, 2, "n", "exceed 3"),
        ({"study": ["a", "b"], "r": [0.2, 0.1], "n": [50, 40.5]}, 3, "n", "whole number"),
        ({"study": ["a", "b"], "r": ["0.2", "high"], "n": [50, 50]}, 3, "r", "not a number"),
        ({"study": ["a", "b"], "r": [0.2, np.nan], "n": [50, 50]}, 3, "r", "missing"),
        ({"study": ["a", "b"], "yi": [0.2, 0.1], "vi": [0.1, 0.0]}, 3, "vi", "positive"),
        ({"study": ["a", "b"], "yi": [np.inf, 0.1], "vi": [0.1, 0.1]}, 2, "yi", "not finite"),
        ({"study": ["a", None], "yi": [0.2, 0.1], "vi": [0.1, 0.1]}, 3, "study", "empty"),
        ({"study": ["a", "a"], "es_id": [1, 1], "yi": [0.2, 0.1], "vi": [0.1, 0.1]}, 3,
         "es_id", "duplicate"),
    ],
)
def test_bad_effects_name_file_row_column(tmp_review, frame, row, column, words):
    folder = tmp_review(pd.DataFrame(frame))
    with pytest.raises(DataError) as err:
        load_review(folder)
    e = err.value
    assert e.file.endswith("effects.csv")
    assert (e.row, e.column) == (row, column)
    assert words in e.reason
    assert f"row {row}" in str(e) and f"column '{column}'" in str(e)


def test_missing_study_and_effect_columns(tmp_review):
    with pytest.raises(DataError, match="required column 'study'"):
        load_review(tmp_review(pd.DataFrame({"r": [0.1], "n": [20]})))
    with pytest.raises(DataError, match="no effect columns"):
        load_review(tmp_review(pd.DataFrame({"study": ["a"], "d": [0.1]})))
    with pytest.raises(DataError, match="ambiguous"):
        load_review(tmp_review(pd.DataFrame({"study": ["a"], "r": [0.1], "n": [20],
                                             "yi": [0.1], "vi": [0.1]})))


def test_metadata_mistakes_are_config_errors(tmp_review):
    df = pd.DataFrame({"study": ["a", "b"], "r": [0.1, 0.2], "n": [20, 30],
                       "rater": ["patient", "observer"]})
    with pytest.raises(ConfigError, match="moderator 'timing' is not a column"):
        load_review(tmp_review(df, "moderators: [{name: timing, type: categorical}]\n"))
    with pytest.raises(ConfigError, match="reference level 'therapist'"):
        load_review(tmp_review(
            df, "moderators: [{name: rater, type: categorical, reference: therapist}]\n"))
    with pytest.raises(ConfigError, match="unknown key 'modrators'"):
        load_review(tmp_review(df, "modrators: []\n"))
    with pytest.raises(ConfigError, match="generator"):
        load_review(tmp_review(df, "synthetic: true\n"))


def test_raw_files_are_never_modified(tmp_review):
    df = pd.DataFrame({"study": ["a", "b"], "r": [0.1, 0.2], "n": [20, 30]})
    folder = tmp_review(df)
    before = (folder / "effects.csv").read_bytes()
    load_review(folder)
    assert (folder / "effects.csv").read_bytes() == before
