"""Cleaning of meta-analytic effect sizes: the contract of data/raw/meta/<review>/.

One row per effect size; the effect is given as r and n (analysed as Fisher z
with sampling variance 1/(n - 3)), yi and vi, or yi and sei.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import dataset_identity, validate_metadata
from .errors import ConfigError, DataError, spreadsheet_row
from .io import find_table, read_table, read_yaml
from .tables import identifier_strings, numeric_column, require_rows, to_contract_names

EFFECT_TYPES = {"r": ("r", "n"), "yi_vi": ("yi", "vi"), "yi_sei": ("yi", "sei")}


def fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher's z = atanh(r): variance-stabilising transform of a correlation."""
    return np.arctanh(np.asarray(r, dtype=float))


def fisher_z_variance(n: np.ndarray) -> np.ndarray:
    """Sampling variance of Fisher's z for a sample of n: 1 / (n - 3)."""
    return 1.0 / (np.asarray(n, dtype=float) - 3.0)


def z_to_r(z: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(z, dtype=float))


@dataclass(frozen=True)
class Review:
    """A cleaned review: tidy effects and what they mean."""

    name: str
    effects: pd.DataFrame  # study, es_id, yi, vi, [year], [moderators...]
    info: dict[str, Any]


def detect_effect_type(columns: list[str], file: str | Path) -> str:
    present = [t for t, cols in EFFECT_TYPES.items() if all(c in columns for c in cols)]
    if not present:
        raise DataError(
            file,
            "no effect columns found: give r and n, or yi and vi, or yi and sei "
            f"(columns present: {', '.join(columns)})",
        )
    if len(present) > 1:
        raise DataError(file, f"ambiguous effect columns: both {' and '.join(present)} given; "
                              "keep one kind per review")
    return present[0]


def clean_effects(df: pd.DataFrame, meta: dict[str, Any], kind: str,
                  file: str | Path) -> pd.DataFrame:
    """Validate effect rows (already in the contract's column names) into the analysis table.

    Output columns: study, es_id, yi, vi, sei, then year and moderators where given;
    for correlations also r and n. yi is on the analysis scale (Fisher z for r).
    """
    study = df["study"]
    require_rows(study.notna().to_numpy() & (study.astype(str).str.strip() != ""), df, "study",
             file, "study identifier is empty")
    out = pd.DataFrame({"study": identifier_strings(study)})

    if kind == "r":
        r = numeric_column(df, "r", file)
        n = numeric_column(df, "n", file)
        require_rows(np.isfinite(r), df, "r", file, "correlation is missing or not finite")
        require_rows(np.abs(r) < 1, df, "r", file,
                     "a correlation must lie strictly between -1 and 1")
        require_rows(np.isfinite(n), df, "n", file, "sample size is missing or not finite")
        require_rows(n == np.round(n), df, "n", file, "sample size must be a whole number")
        require_rows(n > 3, df, "n", file, "sample size must exceed 3 (Fisher z variance 1/(n-3))")
        out["yi"] = fisher_z(r)
        out["vi"] = fisher_z_variance(n)
        out["r"] = r
        out["n"] = n.astype(int)
    else:
        yi = numeric_column(df, "yi", file)
        require_rows(np.isfinite(yi), df, "yi", file, "effect is missing or not finite")
        col = "vi" if kind == "yi_vi" else "sei"
        s = numeric_column(df, col, file)
        require_rows(np.isfinite(s), df, col, file, "value is missing or not finite")
        require_rows(s > 0, df, col, file, "sampling variance / standard error must be positive")
        out["yi"] = yi
        out["vi"] = s if kind == "yi_vi" else s**2
    out["sei"] = np.sqrt(out["vi"])

    if "es_id" in df.columns:
        require_rows(df["es_id"].notna().to_numpy(), df, "es_id", file, "es_id is empty")
        out["es_id"] = identifier_strings(df["es_id"])
    else:
        out["es_id"] = (out.groupby("study").cumcount() + 1).astype(str)
    dup = out.duplicated(["study", "es_id"], keep="first").to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        raise DataError(file, f"duplicate effect size: study '{out['study'].iloc[pos]}' "
                              f"already has es_id '{out['es_id'].iloc[pos]}'",
                        row=spreadsheet_row(pos), column="es_id")

    if "year" in df.columns:
        year = numeric_column(df, "year", file)
        ok = year.isna() | ((year == np.round(year)) & (year > 1900) & (year < 2100))
        require_rows(ok.to_numpy(), df, "year", file,
                     "year must be a whole number between 1900 and 2100")
        out["year"] = year.astype("Int64")

    for mod in meta.get("moderators", []):
        name = mod["name"]
        if mod["type"] == "continuous":
            values = numeric_column(df, name, file)
            require_rows(values.isna().to_numpy() | np.isfinite(values), df, name, file,
                     "moderator value is not finite")
            out[name] = values
        else:
            values = df[name].astype("string").str.strip()
            out[name] = values
    first = ["study", "es_id", "yi", "vi", "sei"]
    return out[first + [c for c in out.columns if c not in first]]


def check_moderators(meta: dict[str, Any], columns: list[str], source: str) -> None:
    """Moderators must name columns; reference levels must exist (checked before any fit)."""
    for mod in meta.get("moderators", []):
        if mod["name"] not in columns:
            raise ConfigError(f"{source}: moderator '{mod['name']}' is not a column of effects "
                              f"(columns: {', '.join(columns)})")
        if mod["type"] == "continuous" and "reference" in mod:
            raise ConfigError(f"{source}: moderator '{mod['name']}' is continuous and takes no "
                              "reference level")


def check_reference_levels(meta: dict[str, Any], effects: pd.DataFrame, source: str) -> None:
    for mod in meta.get("moderators", []):
        if mod["type"] != "categorical":
            continue
        levels = sorted(effects[mod["name"]].dropna().unique())
        ref = mod.get("reference")
        if ref is not None and str(ref) not in levels:
            raise ConfigError(f"{source}: reference level '{ref}' of moderator '{mod['name']}' "
                              f"does not occur in the data (levels: {', '.join(levels)})")


def load_review(folder: str | Path) -> Review:
    """Read, validate and clean one review folder (data/raw/meta/<review>/)."""
    folder = Path(folder)
    meta_path = folder / "review.yaml"
    raw_meta = read_yaml(meta_path) if meta_path.exists() else {}
    meta = validate_metadata(raw_meta, "review", str(meta_path))
    table = find_table(folder, "effects")
    df = to_contract_names(read_table(table), meta["columns"], table, all_present=True)
    check_moderators(meta, list(df.columns), str(meta_path))
    if "study" not in df.columns:
        raise DataError(table, "required column 'study' is missing "
                               "(map your own name with review.yaml columns: {study: ...})")
    kind = detect_effect_type(list(df.columns), table)
    effects = clean_effects(df, meta, kind, table)
    check_reference_levels(meta, effects, str(meta_path))
    n_per_study = effects.groupby("study").size()
    info = {
        **dataset_identity(folder.name, meta),
        "effect_type": kind,
        "scale": "fisher_z" if kind == "r" else "raw",
        "measure": "r" if kind == "r" else meta.get("measure", "yi"),
        "n_studies": int(n_per_study.size),
        "n_effects": int(len(effects)),
        "three_level": bool((n_per_study > 1).any()),
        "moderators": meta["moderators"],
        "priors": meta["priors"],
        "direction": -1 if meta["expected_direction"] == "negative" else 1,
        "source_file": table.name,
    }
    return Review(name=folder.name, effects=effects, info=info)
