"""The trial cleaning stage: one trial folder in, tidy tables and a summary of what is there."""

from __future__ import annotations

from pathlib import Path

from .io import write_csv, write_json
from .trials import load_trial


def clean_trial(raw_folder: str | Path, out_dir: str | Path) -> None:
    """Write sessions.csv (full patient x session grid), patients.csv and trial.json."""
    trial = load_trial(raw_folder)
    out_dir = Path(out_dir)
    write_csv(trial.sessions, out_dir / "sessions.csv")
    write_csv(trial.patients, out_dir / "patients.csv")
    write_json(trial.info, out_dir / "trial.json")
