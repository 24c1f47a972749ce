"""The trial contract: scoring, the session grid with missing sessions kept, derived
variables, change scores, and errors naming file, row, column and reason."""

import numpy as np
import pandas as pd
import pytest
import yaml
from allianceflow.errors import ConfigError, DataError
from allianceflow.trial_stage import clean_trial
from allianceflow.trials import load_trial

META = {
    "columns": {"session": "visit"},
    "arm": {"reference": "SP", "levels": ["SP", "CBASP"]},
    "baseline": {"age": [18, 80]},
    "measures": {
        "alliance": {"items": ["w1", "w2", "w3"], "reverse": ["w3"], "range": [1, 5],
                     "subscales": {"bond": ["w1", "w2"]}},
        "dep": {"column": "hrsd", "range": [0, 52], "higher_is_better": False},
    },
    "roles": {"alliance": "alliance", "outcome": "dep"},
    "change": {"from": 1, "to": 3},
}


def write_trial(folder, patients, sessions, meta=META):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(patients).to_csv(folder / "patients.csv", index=False)
    pd.DataFrame(sessions).to_csv(folder / "sessions.csv", index=False)
    (folder / "trial.yaml").write_text(yaml.safe_dump(meta))
    return folder


def good_data():
    patients = {"patient": ["p1", "p2"], "arm": ["SP", "CBASP"], "age": [30, 41],
                "therapist": ["t1", "t2"], "site": ["s1", "s1"]}
    sessions = {"patient": ["p1", "p1", "p1", "p2", "p2"], "visit": [1, 2, 3, 1, 3],
                "w1": [3, 4, 5, 2, 3], "w2": [3, 4, 5, 2, 3], "w3": [3, 2, 1, 4, 3],
                "hrsd": [20, 18, 10, 25, 22]}
    return patients, sessions


def test_clean_trial_grid_and_derived(tmp_path):
    trial = load_trial(write_trial(tmp_path / "t", *good_data()))
    s = trial.sessions.set_index(["patient", "session"])
    assert len(s) == 6  # 2 patients x 3 sessions, p2's session 2 kept as missing
    assert np.isnan(s.loc[("p2", 2), "alliance"]) and not s.loc[("p2", 2), "observed"]
    # w3 reversed: p1 session 1 items 3, 3, 3 -> 3; session 3: 5, 5, 5 -> 5.
    assert s.loc[("p1", 1), "alliance"] == 3 and s.loc[("p1", 3), "alliance"] == 5
    assert s.loc[("p1", 1), "alliance_bond"] == 3
    assert s.loc[("p1", 2), "alliance_pmean"] == pytest.approx(4.0)
    assert s.loc[("p1", 3), "alliance_within"] == pytest.approx(1.0)
    assert s.loc[("p1", 2), "dep_lag1"] == 20
    assert np.isnan(s.loc[("p2", 3), "dep_lag1"])  # previous session missing: lag missing
    p = trial.patients.set_index("patient")
    assert p.loc["p1", "dep_change"] == -10 and p.loc["p2", "dep_change"] == -3
    assert p.loc["p2", "treated"] == 1 and p.loc["p1", "treated"] == 0
    assert trial.info["levels"] == ["therapist", "site"]


@pytest.mark.parametrize("change, file, row, column, words", [
    (("patients", "arm", 1, "CBT"), "patients.csv", 3, "arm", "unknown arm"),
    (("patients", "age", 0, 12), "patients.csv", 2, "age", "outside the declared range"),
    (("patients", "patient", 1, "p1"), "patients.csv", 3, "patient", "more than once"),
    (("sessions", "hrsd", 2, 60), "sessions.csv", 4, "hrsd", "outside the declared range"),
    (("sessions", "w2", 0, 7), "sessions.csv", 2, "w2", "response range"),
    (("sessions", "visit", 1, 1), "sessions.csv", 3, "session", "more than once"),
    (("sessions", "visit", 1, 1.5), "sessions.csv", 3, "session", "whole number"),
    (("sessions", "patient", 4, "p9"), "sessions.csv", 6, "patient", "not listed"),
])
def test_bad_trial_input(tmp_path, change, file, row, column, words):
    patients, sessions = good_data()
    table, col, pos, value = change
    target = patients if table == "patients" else sessions
    target[col] = list(target[col])
    target[col][pos] = value
    with pytest.raises(DataError) as err:
        load_trial(write_trial(tmp_path / "t", patients, sessions))
    e = err.value
    assert e.file.endswith(file) and e.row == row and e.column == column
    assert words in e.reason


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["roles"].update(outcome="bdi"), "roles.outcome = 'bdi'"),
    (lambda m: m["arm"].update(reference="TAU"), "arm.reference 'TAU'"),
    (lambda m: m["measures"]["alliance"].update(reverse=["w9"]), "not among its items"),
    (lambda m: m.update(colums={}), "unknown key 'colums'"),
    (lambda m: m["measures"]["dep"].update(column="bdi"), "measures.dep.column"),
])
def test_metadata_mistakes_stop_before_models(tmp_path, edit, words):
    meta = yaml.safe_load(yaml.safe_dump(META))
    edit(meta)
    with pytest.raises((ConfigError, DataError), match=words.replace(".", r"\.")
                       .replace("(", r"\(")):
        load_trial(write_trial(tmp_path / "t", *good_data(), meta=meta))


@pytest.mark.parametrize("table, column", [
    ("patients", "patient_name"), ("patients", "E-mail"), ("sessions", "PhoneNumber"),
    ("patients", "date_of_birth"),
])
def test_identifier_columns_are_refused_unless_dropped(tmp_path, table, column):
    patients, sessions = good_data()
    data = {"patients": patients, "sessions": sessions}
    n = len(data[table]["patient"])
    data[table][column] = [f"secret-{i}@example.org" for i in range(n)]
    folder = write_trial(tmp_path / "t", data["patients"], data["sessions"])
    with pytest.raises(DataError, match=f"{column} look like direct identifiers.*`drop:`") as e:
        load_trial(folder)
    assert e.value.file.endswith(f"{table}.csv") and e.value.column == column

    # declared under drop: removed on reading; nothing of it reaches the cleaned outputs
    write_trial(folder, data["patients"], data["sessions"], {**META, "drop": [column]})
    clean_trial(folder, tmp_path / "clean")
    for out in (tmp_path / "clean").iterdir():
        text = out.read_text()
        assert column not in text and "secret-" not in text, out.name


def test_identifier_like_role_columns_are_allowed(tmp_path):
    patients, sessions = good_data()
    patients["site_name"] = patients.pop("site")
    meta = {**META, "columns": {**META["columns"], "site": "site_name"}}
    trial = load_trial(write_trial(tmp_path / "t", patients, sessions, meta))
    assert list(trial.patients["site"]) == ["s1", "s1"]


@pytest.mark.parametrize("table, change", [
    ("patients", lambda p, s: p["patient"].__setitem__(1, "p1")),       # duplicate patient
    ("sessions", lambda p, s: s["patient"].__setitem__(0, "zz-9")),    # unknown patient
    ("sessions", lambda p, s: s["visit"].__setitem__(1, 1)),           # session twice
])
def test_errors_name_the_row_not_the_patient(tmp_path, table, change):
    patients, sessions = good_data()
    change(patients, sessions)
    with pytest.raises(DataError) as e:
        load_trial(write_trial(tmp_path / "t", patients, sessions))
    assert e.value.row is not None and e.value.file.endswith(f"{table}.csv")
    for patient_id in ("p1", "p2", "zz-9"):
        assert f"'{patient_id}'" not in str(e.value)
