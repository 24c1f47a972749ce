"""Cleaning of trial data: the contract of data/raw/trials/<trial>/.

patients (one row per patient) and sessions (long: patient x session) are
validated against trial.yaml, items are scored, and derived variables are added:
patient means (between part), within-patient deviations, lag-1 values on the
trial's session grid, and change scores. Missing sessions stay missing: every
patient gets a row for every session on the grid, with NaN where nothing was
measured, so that later models can handle missingness in the likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analyses import check_analysis
from .config import dataset_identity, validate_metadata
from .errors import ConfigError, DataError, spreadsheet_row
from .io import find_table, read_table, read_yaml
from .scoring import score_error_variance, score_measure
from .tables import (
    drop_identifiers,
    identifier_strings,
    in_range,
    numeric_column,
    require_columns,
    require_rows,
    to_contract_names,
)


@dataclass(frozen=True)
class Trial:
    name: str
    patients: pd.DataFrame
    sessions: pd.DataFrame
    info: dict[str, Any]


def load_trial_metadata(folder: Path) -> dict[str, Any]:
    path = folder / "trial.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: missing; a trial folder needs trial.yaml to say which "
                          "column plays which role (see README, 'Data contracts')")
    meta = validate_metadata(read_yaml(path), "trial", str(path))
    source = str(path)
    for role in ("alliance", "outcome"):
        if meta["roles"][role] not in meta["measures"]:
            raise ConfigError(f"{source}: roles.{role} = '{meta['roles'][role]}' is not one of "
                              f"the measures ({', '.join(meta['measures'])})")
    for role in ("mediators", "moderators"):
        for m in meta["roles"].get(role, []):
            if m not in meta["measures"]:
                raise ConfigError(f"{source}: roles.{role} names '{m}', which is not one of "
                                  f"the measures ({', '.join(meta['measures'])})")
    for name, spec in meta["measures"].items():
        low, high = spec["range"]
        if not low < high:
            raise ConfigError(f"{source}: measures.{name}.range must be [low, high], low < high")
        items = spec.get("items", [])
        unknown = [i for i in spec.get("reverse", []) if i not in items]
        if unknown:
            raise ConfigError(f"{source}: measures.{name}.reverse lists {', '.join(unknown)}, "
                              "which are not among its items")
        for sub, cols in spec.get("subscales", {}).items():
            unknown = [i for i in cols if i not in items]
            if unknown:
                raise ConfigError(f"{source}: measures.{name}.subscales.{sub} lists "
                                  f"{', '.join(unknown)}, which are not among its items")
    if "arm" in meta:
        if meta["arm"]["reference"] not in meta["arm"]["levels"]:
            raise ConfigError(f"{source}: arm.reference '{meta['arm']['reference']}' is not one "
                              f"of arm.levels ({', '.join(map(str, meta['arm']['levels']))})")
    return meta


def clean_patients(raw: pd.DataFrame, meta: dict[str, Any], file: Path) -> pd.DataFrame:
    df = to_contract_names(raw, meta["columns"], file)
    require_columns(df, ["patient"], file, " (map your own name in trial.yaml columns)")
    require_rows(df["patient"].notna(), df, "patient", file, "patient identifier is empty")
    out = pd.DataFrame({"patient": identifier_strings(df["patient"])})
    dup = out["patient"].duplicated().to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((out["patient"] == out["patient"].iloc[pos]).to_numpy())[0])
        raise DataError(file, "this patient identifier appears more than once (first at row "
                              f"{spreadsheet_row(first)})",
                        row=spreadsheet_row(pos), column="patient")
    if "arm" in meta:
        require_columns(df, ["arm"], file, " (trial.yaml declares an arm)")
        levels = [str(x) for x in meta["arm"]["levels"]]
        arm = identifier_strings(df["arm"])
        require_rows(arm.isin(levels), df, "arm", file,
                     f"unknown arm; trial.yaml allows {', '.join(levels)}")
        out["arm"] = arm
        out["treated"] = (arm != str(meta["arm"]["reference"])).astype(int)
    for role in ("therapist", "site"):
        if role in df.columns:
            require_rows(df[role].notna(), df, role, file, f"{role} is empty")
            out[role] = identifier_strings(df[role])
    for cov, (low, high) in meta["baseline"].items():
        require_columns(df, [cov], file, " (declared under baseline in trial.yaml)")
        values = numeric_column(df, cov, file)
        require_rows(in_range(values, low, high), df, cov, file,
                     f"outside the declared range [{low:g}, {high:g}]")
        out[cov] = values
    if "therapist" in out and "site" in out:
        sites = out.groupby("therapist")["site"].nunique()
        crossed = sites[sites > 1]
        if len(crossed):
            t = crossed.index[0]
            pos = int(np.flatnonzero((out["therapist"] == t).to_numpy())[0])
            raise DataError(file, f"therapist '{t}' works at several sites; therapists must be "
                                  "nested in sites", row=spreadsheet_row(pos), column="site")
    return out


def clean_sessions(raw: pd.DataFrame, meta: dict[str, Any], patients: pd.DataFrame,
                   file: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Validated, scored sessions, and the item-based error SD of each item-scored measure."""
    df = to_contract_names(raw, meta["columns"], file)
    require_columns(df, ["patient", "session"], file, " (map your own names in trial.yaml)")
    require_rows(df["patient"].notna(), df, "patient", file, "patient identifier is empty")
    df["patient"] = identifier_strings(df["patient"])
    known = set(patients["patient"])
    require_rows(df["patient"].isin(known), df, "patient", file,
                 "patient not listed in patients")
    session = numeric_column(df, "session", file)
    require_rows(np.isfinite(session) & (session == np.round(session)) & (session >= 0),
                 df, "session", file, "session must be a whole number >= 0")
    df["session"] = session.astype(int)
    dup = df.duplicated(["patient", "session"]).to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        raise DataError(file, "this patient has session "
                              f"{df['session'].iloc[pos]} more than once",
                        row=spreadsheet_row(pos), column="session")

    out = df[["patient", "session"]].copy()
    errors: dict[str, Any] = {}
    for name, spec in meta["measures"].items():
        low, high = spec["range"]
        if "column" in spec:
            col = spec["column"]
            require_columns(df, [col], file, f" (measures.{name}.column in trial.yaml)")
            values = numeric_column(df, col, file)
            require_rows(in_range(values, low, high), df, col, file,
                         f"outside the declared range [{low:g}, {high:g}] of {name}")
            out[name] = values
        else:
            items = spec["items"]
            require_columns(df, items, file, f" (measures.{name}.items in trial.yaml)")
            numeric = pd.DataFrame({i: numeric_column(df, i, file) for i in items})
            for item in items:
                require_rows(in_range(numeric[item], low, high), df, item, file,
                             f"item outside its response range [{low:g}, {high:g}]")
            scores = score_measure(numeric, items, spec["reverse"], spec["subscales"], low,
                                   high, spec["score"], spec["min_items"])
            out[name] = scores["total"]
            for sub in spec["subscales"]:
                out[f"{name}_{sub}"] = scores[sub]
            error = score_error_variance(numeric, spec["reverse"], low, high, spec["score"])
            if error is not None:
                errors[name] = error
    return out, errors


def session_grid(sessions: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """Every patient x every scheduled session; unobserved cells are missing (NaN)."""
    schedule = np.sort(sessions["session"].unique())
    grid = pd.MultiIndex.from_product([patients["patient"], schedule],
                                      names=["patient", "session"]).to_frame(index=False)
    full = grid.merge(sessions, on=["patient", "session"], how="left")
    full["observed"] = full.set_index(["patient", "session"]).index.isin(
        sessions.set_index(["patient", "session"]).index)
    return full


def add_derived(full: pd.DataFrame, measures: list[str]) -> pd.DataFrame:
    """Patient mean, within-patient deviation and lag-1 value of every measure."""
    full = full.sort_values(["patient", "session"]).reset_index(drop=True)
    by = full.groupby("patient", sort=False)
    for m in measures:
        full[f"{m}_pmean"] = by[m].transform("mean")
        full[f"{m}_within"] = full[m] - full[f"{m}_pmean"]
        full[f"{m}_lag1"] = by[m].shift(1)
    return full


def change_scores(full: pd.DataFrame, measures: list[str], start: int, end: int,
                  source: str) -> pd.DataFrame:
    """Per patient: value at `start` (baseline), at `end`, and change = end - start."""
    schedule = set(full["session"])
    for s, key in ((start, "from"), (end, "to")):
        if s not in schedule:
            raise ConfigError(f"{source}: change.{key} = {s} is not a session in the data "
                              f"(sessions: {min(schedule)}..{max(schedule)})")
    wide = full.set_index(["patient", "session"])[measures]
    first = wide.xs(start, level="session")
    last = wide.xs(end, level="session")
    out = pd.DataFrame(index=first.index)
    for m in measures:
        out[f"{m}_s{start}"] = first[m]
        out[f"{m}_s{end}"] = last[m]
        out[f"{m}_change"] = last[m] - first[m]
    return out.reset_index()


def load_trial(folder: str | Path) -> Trial:
    folder = Path(folder)
    meta = load_trial_metadata(folder)
    pfile = find_table(folder, "patients")
    sfile = find_table(folder, "sessions")
    source = str(folder / "trial.yaml")
    patients = clean_patients(
        drop_identifiers(read_table(pfile), meta["drop"], meta["columns"], pfile, source),
        meta, pfile)
    sessions, measurement_error = clean_sessions(
        drop_identifiers(read_table(sfile), meta["drop"], meta["columns"], sfile, source),
        meta, patients, sfile)
    measures = list(meta["measures"])
    scored = [c for c in sessions.columns if c not in ("patient", "session")]
    full = add_derived(session_grid(sessions, patients), scored)
    if "change" in meta:
        changes = change_scores(full, scored, meta["change"]["from"], meta["change"]["to"],
                                str(folder / "trial.yaml"))
        patients = patients.merge(changes, on="patient", how="left")
    info = {
        **dataset_identity(folder.name, meta),
        "n_patients": int(len(patients)),
        "n_session_rows": int(len(sessions)),
        "sessions": sorted(int(s) for s in full["session"].unique()),
        "measures": measures,
        "ranges": {name: list(spec["range"]) for name, spec in meta["measures"].items()},
        "scores": scored,
        "roles": meta["roles"],
        "arm": meta.get("arm"),
        "baseline": list(meta.get("baseline", {})),
        "change": meta.get("change"),
        "analyses": meta["analyses"],
        "levels": [r for r in ("therapist", "site") if r in patients.columns],
        "measurement_error": measurement_error,
        "source_files": [pfile.name, sfile.name],
    }
    for analysis in info["analyses"]:
        check_analysis(analysis, info, str(folder / "trial.yaml"))
    return Trial(name=folder.name, patients=patients, sessions=full, info=info)
