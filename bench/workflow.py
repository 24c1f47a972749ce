"""Rebuild times of the workflow itself, in a copy of the project (its tracked files and
the default raw data), with this machine's .venv and `make run`'s Snakemake command:

1. full default rebuild from raw data with an empty compiled-model cache;
2. no-op rebuild (nothing changed: Snakemake checks and runs nothing);
3. add-one-study rebuild: one new study appended to a review's raw table (in the copy
   only), so that exactly that review's fits and reports and the index rerun;
4. the compiled-model cache: the reviews' fits rerun with PyTensor's cache emptied
   (cold) and as left by the runs before (warm).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REVIEW = "synthetic_iip_alliance"  # the review a study is added to
GOAL_FULL_S = 15 * 60
GOAL_ADD_ONE_S = 2 * 60


def project_copy(dest: Path) -> Path:
    """The tracked files of this checkout (data/raw included), copied to dest."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def snakemake(project: Path, log: Path, *extra: str) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "snakemake"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("PYTENSOR_FLAGS", None)  # the workflow's own cache folder, as in `make run`
    record = harness.measured([str(exe), "--workflow-profile", "workflow/profiles/default",
                               "--cores", "2", *extra], log, env=env, cwd=project)
    record["jobs"] = jobs_run(log)
    return record


def jobs_run(log: Path) -> int:
    """The jobs Snakemake started (its log's rule headers, the target rule `all` aside)."""
    rules = re.findall(r"^\s*(?:local)?rule (\w+):", log.read_text(), flags=re.M)
    return sum(r != "all" for r in rules)


def add_one_study(project: Path) -> str:
    """Append a new study (a copy of the first study's row under a new name, a year
    later than any) to the review's raw effects table in the copy."""
    path = project / "data" / "raw" / "meta" / REVIEW / "effects.csv"
    effects = pd.read_csv(path)
    new = effects.iloc[[0]].copy()
    new["study"] = "BENCH_ADDED"
    new["year"] = int(effects["year"].max()) + 1
    pd.concat([effects, new]).to_csv(path, index=False, lineterminator="\n")
    return "BENCH_ADDED"


def verdict(seconds: float, goal: float) -> str:
    return "met" if seconds <= goal else f"missed by {(seconds - goal) / 60:.1f} min"


def rebuild_times(work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    project = project_copy(work / "project")
    runs = {}
    print("  workflow: full default rebuild (empty compiled-model cache)", flush=True)
    runs["full"] = snakemake(project, work / "full.log")
    print("  workflow: no-op rebuild", flush=True)
    runs["noop"] = snakemake(project, work / "noop.log")
    add_one_study(project)
    print("  workflow: add-one-study rebuild", flush=True)
    runs["add_one_study"] = snakemake(project, work / "add.log")
    refit = ("--forcerun", "fit_review", "--until", "fit_review")
    print("  workflow: reviews refitted, warm cache", flush=True)
    runs["refit_warm"] = snakemake(project, work / "warm.log", *refit)
    shutil.rmtree(project / ".cache", ignore_errors=True)
    print("  workflow: reviews refitted, cold cache", flush=True)
    runs["refit_cold"] = snakemake(project, work / "cold.log", *refit)
    return {"runs": runs, "lines": table(runs)}


def table(runs: dict[str, dict[str, Any]]) -> list[str]:
    labels = {"full": "full default rebuild from raw data, empty cache",
              "noop": "no-op rebuild", "add_one_study": f"add one study to {REVIEW}",
              "refit_warm": "the reviews' fits rerun, warm compiled-model cache",
              "refit_cold": "the reviews' fits rerun, cold compiled-model cache"}
    lines = ["| rebuild | jobs run | wall (min) | peak memory of a job (MiB) |",
             "|---|---|---|---|"]
    for key, label in labels.items():
        r = runs[key]
        lines.append(f"| {label} | {r['jobs']} | {r['wall_s'] / 60:.2f} | "
                     f"{r['peak_mib']:.0f} |")
    full, add = runs["full"]["wall_s"], runs["add_one_study"]["wall_s"]
    cache = runs["refit_cold"]["wall_s"] / runs["refit_warm"]["wall_s"]
    lines += ["", f"Goals: full rebuild ≤ {GOAL_FULL_S // 60} min: {verdict(full, GOAL_FULL_S)}; "
              f"add-one-study ≤ {GOAL_ADD_ONE_S // 60} min: {verdict(add, GOAL_ADD_ONE_S)}. "
              f"Cold ÷ warm cache for the refits: {cache:.2f}."]
    return lines
