"""A review's history: one row per build whose data changed, naming the studies added."""

import pandas as pd
from allianceflow.history import updated_history
from allianceflow.report_meta import history_change


def table(mu: float) -> pd.DataFrame:
    return pd.DataFrame({"model": ["three_level"] * 3, "parameter": ["mu", "tau_study", "tau_es"],
                         "mean": [mu, 0.1, 0.05], "q2.5": [mu - 0.1, 0.05, 0.01],
                         "q97.5": [mu + 0.1, 0.2, 0.1]})


def effects(studies: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"study": studies, "yi": 0.1, "vi": 0.01})


def roundtrip(history: pd.DataFrame, tmp_path) -> pd.DataFrame:
    history.to_csv(tmp_path / "history.csv", index=False)
    return pd.read_csv(tmp_path / "history.csv", dtype=str)


def test_history_grows_only_when_the_data_change(tmp_path):
    first = updated_history(None, effects(["a", "a", "b"]), "sha1", table(0.20), False,
                            "three_level")
    assert len(first) == 1 and first.loc[0, "n_studies"] == 2 and first.loc[0, "n_effects"] == 3
    first = roundtrip(first, tmp_path)
    # same data (new settings or code): no row
    assert updated_history(first, effects(["a", "a", "b"]), "sha1", table(0.21), False,
                           "three_level") is None
    second = updated_history(first, effects(["a", "a", "b", "c"]), "sha2", table(0.25), False,
                             "three_level")
    assert len(second) == 2
    last = second.iloc[-1]
    assert last["studies_added"] == "c" and last["studies_removed"] == ""
    assert float(last["mean"]) == 0.25 and last["parameter"] == "mu"
    text = history_change(roundtrip(second, tmp_path))
    assert "1 study added (c)" in text and "0.200" in text and "0.250" in text
