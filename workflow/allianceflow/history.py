"""A review's build history (data/fits/meta/<review>/history.csv): one row per build in
which its cleaned data changed, for the living view of the report."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = ["built_utc", "data_sha256", "n_studies", "n_effects", "studies_added",
                   "studies_removed", "model", "parameter", "mean", "q2.5", "q97.5",
                   "tau_study", "tau_es", "studies"]
HISTORY_TEXT = ["built_utc", "data_sha256", "studies_added", "studies_removed", "model",
                "parameter", "studies"]


def updated_history(previous: pd.DataFrame | None, effects: pd.DataFrame, data_sha256: str,
                    table: pd.DataFrame, correlation: bool, model: str) -> pd.DataFrame | None:
    """The review's history with one row added for this build, or None when the data are
    those of the last row (a rebuild for new settings or code adds no row).

    history.csv is deliberately not a declared Snakemake output (Snakemake deletes
    outputs before rerunning a job): the fit job appends to it. The cleaned effects'
    checksum identifies the data; `studies` (';'-separated) lets the next build name the
    studies added or removed.
    """
    if previous is not None and len(previous) and previous["data_sha256"].iloc[-1] == data_sha256:
        return None
    studies = list(dict.fromkeys(effects["study"].astype(str)))
    before = (set(previous["studies"].iloc[-1].split(";"))
              if previous is not None and len(previous) else set())
    rows = table[table["model"] == model].set_index("parameter")
    name = "mu_r" if correlation else "mu"
    row = {
        "built_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data_sha256": data_sha256, "n_studies": len(studies), "n_effects": len(effects),
        "studies_added": ";".join(s for s in studies if s not in before) if before else "",
        "studies_removed": ";".join(sorted(before - set(studies))),
        "model": model, "parameter": name, "mean": rows.loc[name, "mean"],
        "q2.5": rows.loc[name, "q2.5"], "q97.5": rows.loc[name, "q97.5"],
        "tau_study": rows.loc["tau_study", "mean"],
        "tau_es": rows.loc["tau_es", "mean"] if "tau_es" in rows.index else np.nan,
        "studies": ";".join(studies),
    }
    new = pd.DataFrame([row], columns=HISTORY_COLUMNS)
    return new if previous is None else pd.concat([previous, new], ignore_index=True)
