"""Row-level checks shared by every input table; each failure names file, row, column."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, spreadsheet_row


def numeric_column(df: pd.DataFrame, col: str, file: str | Path) -> pd.Series:
    """Column as floats; the first value that is not a number is reported."""
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() & df[col].notna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(file, f"'{df[col].iloc[pos]}' is not a number",
                        row=spreadsheet_row(pos), column=col)
    return values.astype(float)


def require_rows(mask, df: pd.DataFrame, col: str, file: str | Path, reason: str) -> None:
    """Raise for the first row where `mask` is False, saying how many rows are affected."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.all():
        pos = int(np.flatnonzero(~mask)[0])
        # patient identifiers stay out of messages and logs: the row locates the cell
        shown = "withheld" if col == "patient" else repr(df[col].iloc[pos])
        raise DataError(file, f"{reason} (value: {shown}); "
                              f"{int((~mask).sum())} row(s) affected",
                        row=spreadsheet_row(pos), column=col)


def require_columns(df: pd.DataFrame, columns: list[str], file: str | Path, hint: str = "") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(file, f"required column(s) missing: {', '.join(missing)}"
                              f" (columns present: {', '.join(map(str, df.columns))}){hint}")


def identifier_strings(series: pd.Series) -> pd.Series:
    """Identifiers as clean strings; floats like 101.0 (from Excel/SPSS) become '101'."""
    def one(v):
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip()
    return series.map(one, na_action="ignore")


def in_range(values: pd.Series, low: float, high: float) -> np.ndarray:
    """True where missing or inside [low, high]."""
    return (values.isna() | ((values >= low) & (values <= high))).to_numpy()


def to_contract_names(raw: pd.DataFrame, columns_map: dict[str, str], file: str | Path,
                      all_present: bool = False) -> pd.DataFrame:
    """Rename a dataset's own column names to the contract's (metadata `columns:` mapping).

    With `all_present`, every mapped column must exist in this file (a review has one
    table); trials map names across two tables, so there a missing one is not an error.
    """
    if all_present:
        missing = [v for v in columns_map.values() if v not in raw.columns]
        if missing:
            raise DataError(file, f"review.yaml maps to column(s) not in the file: "
                                  f"{', '.join(missing)}")
    clashes = [f"'{v}' -> {k}" for k, v in columns_map.items()
               if v in raw.columns and k != v and k in raw.columns]
    if clashes:
        raise DataError(file, f"the metadata's columns: mapping ({', '.join(clashes)}) would "
                              "give two columns the same name, as the file also has a column "
                              "named like the target; rename or remove one of them")
    to_contract = {v: k for k, v in columns_map.items()}
    renamed = raw.rename(columns=to_contract).reset_index(drop=True)
    twice = sorted({c for c in renamed.columns if list(renamed.columns).count(c) > 1})
    if twice:
        raise DataError(file, f"column(s) {', '.join(map(str, twice))} appear more than once "
                              "(after applying the metadata's columns: mapping)")
    return renamed


# Tokens of column names that identify a person directly (GDPR/HIPAA direct identifiers).
IDENTIFIER_TOKENS = {"name", "firstname", "lastname", "surname", "fullname", "email", "mail",
                     "phone", "telephone", "mobile", "address", "street", "postcode",
                     "zipcode", "zip", "dob", "birthdate", "birthday", "ssn", "initials"}
IDENTIFIER_PHRASES = ("date_of_birth", "birth_date", "e_mail", "first_name", "last_name",
                      "social_security", "phone_number")


def looks_like_identifier(column: str) -> bool:
    """True for column names like `name`, `E-mail`, `phone_no`, `DateOfBirth`, `dob`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(column)).lower()
    snake = re.sub(r"[^a-z0-9]+", "_", snake).strip("_")
    return (any(p in snake for p in IDENTIFIER_PHRASES)
            or bool(IDENTIFIER_TOKENS & set(snake.split("_")))
            or snake.replace("_", "") in IDENTIFIER_TOKENS)


def drop_identifiers(raw: pd.DataFrame, drop: list[str], roles: dict[str, str],
                     file: str | Path, source: str) -> pd.DataFrame:
    """Remove the columns trial.yaml lists under `drop`; refuse undeclared identifiers.

    A column mapped to the therapist, site or arm role may have an identifier-like name
    (e.g. `site_name`); one holding the patient identifier may not.
    """
    allowed = {v for k, v in roles.items() if k in ("therapist", "site", "arm")}
    kept = raw.drop(columns=[c for c in drop if c in raw.columns])
    suspect = [c for c in kept.columns if looks_like_identifier(c) and c not in allowed]
    if suspect:
        raise DataError(file, f"column(s) {', '.join(suspect)} look like direct identifiers "
                              "(names, e-mail, phone, address, date of birth); remove them "
                              f"from the file or list them under `drop:` in {source}, "
                              "which removes them on reading", column=suspect[0])
    return kept
