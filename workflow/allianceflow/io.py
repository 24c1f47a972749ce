"""Reading raw tables (CSV, Excel, SPSS) and metadata, writing outputs atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .errors import ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".xlsx", ".sav")


def find_table(folder: str | Path, stem: str) -> Path:
    """The one file `<stem>.csv|.xlsx|.sav` in `folder`; error if none or several."""
    folder = Path(folder)
    found = [folder / f"{stem}{s}" for s in TABLE_SUFFIXES if (folder / f"{stem}{s}").exists()]
    if not found:
        raise DataError(folder, f"no {stem} table found (expected {stem}.csv, .xlsx or .sav)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(folder, f"several {stem} tables found ({names}); keep exactly one")
    return found[0]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a raw table. CSV (UTF-8, byte-order mark tolerated), Excel (first sheet), SPSS.

    SPSS value labels are applied, so categorical codes arrive as their labels
    (e.g. arm 1 -> "CBASP") just as a researcher sees them in SPSS.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, encoding="utf-8-sig")
        elif suffix == ".xlsx":
            df = pd.read_excel(path, sheet_name=0, engine="openpyxl")
        elif suffix == ".sav":
            import pyreadstat

            df, _ = pyreadstat.read_sav(str(path), apply_value_formats=True)
        else:
            raise DataError(path, f"unsupported file type '{suffix}' (use .csv, .xlsx or .sav)")
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not valid UTF-8 text ({exc.reason} at byte {exc.start}); "
                              "save the file as UTF-8 CSV") from None
    except pd.errors.EmptyDataError:
        raise DataError(path, "the file is empty") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a user-facing error
        raise DataError(path, f"could not be read as {suffix[1:]}: {exc}") from None
    if df.empty:
        raise DataError(path, "the table has a header but no rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it into place only on success.

    A run killed half-way never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the suffix: some writers (papermill) check it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")
