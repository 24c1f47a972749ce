"""The built test project shared by the integration tests (built once per session)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from allianceflow import synthetic
from filelock import FileLock

from ..conftest import ROOT

# A guard against a run that hangs, not a speed test (speed is measured in bench/): the
# test project's full build took 11 to 16 min alone on 2 cores, and longer beside the other
# pytest worker.
SNAKEMAKE_TIMEOUT_S = 2700


def snakemake(workdir: Path, *args: str, timeout: int = SNAKEMAKE_TIMEOUT_S,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the project's Snakemake (local profile unless `args` name another one)."""
    exe = Path(sys.executable).parent / "snakemake"
    env = dict(env or os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    profile = [] if "--workflow-profile" in args else ["--workflow-profile",
                                                        "workflow/profiles/default"]
    cmd = ["timeout", "-k", "30", str(timeout), str(exe), *profile, "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def build_project(work: Path) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """Write the test datasets into a new project at `work` and run the workflow on them."""
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    raw = work / "data" / "raw"
    # A real review (CSV), a small synthetic review (Excel), two small synthetic trials
    # (SPSS: sequential mediation, growth, moderation, early alliance; CSV: weekly, RI-CLPM
    # and lagged within-person mediation).
    k = raw / "meta" / "konstantopoulos2011"
    shutil.copytree(ROOT / "data" / "raw" / "meta" / "konstantopoulos2011", k)
    small = synthetic.alliance_outcome_review(seed=5, n_studies=25, n_effects=35)
    small.name = "synthetic_small_review"
    synthetic.write_dataset(small, raw, fmt="xlsx")
    trial = synthetic.cbasp_rct(seed=6, n_patients=30, n_sessions=6, n_sites=2,
                                therapists_per_site=2)
    trial.name = "synthetic_small_trial"
    synthetic.write_dataset(trial, raw, fmt="sav")
    weekly = synthetic.internet_adolescent_trial(seed=7, n_patients=40, n_weeks=6)
    weekly.name = "synthetic_small_weekly"
    synthetic.write_dataset(weekly, raw)
    before = checksums(raw)
    return before, snakemake(work, "--configfile", "config/test.yaml")


def shared_folder(tmp_path_factory, worker_id) -> Path:
    """The run's temporary folder that every pytest-xdist worker sees."""
    shared = tmp_path_factory.getbasetemp()
    return shared.parent if worker_id != "master" else shared


@pytest.fixture(scope="session")
def project(tmp_path_factory, worker_id):
    """The built test project, read-only for the tests (they change copies: built_copy).

    Built once for the whole run: under pytest-xdist the integration modules run on
    several workers (tests/conftest.py), and the first to need the project builds it in
    the run's shared temporary folder while the others wait on its lock."""
    shared = shared_folder(tmp_path_factory, worker_id)
    work, record = shared / "project", shared / "project.json"
    with FileLock(shared / "project.lock"):
        if not record.exists():
            work.mkdir()
            before, run = build_project(work)
            record.write_text(json.dumps({"before": before, "returncode": run.returncode,
                                          "stdout": run.stdout, "stderr": run.stderr}))
        built = json.loads(record.read_text())
    run = subprocess.CompletedProcess(["snakemake"], built["returncode"], built["stdout"],
                                      built["stderr"])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return work, built["before"], run


@pytest.fixture
def built_copy(project, tmp_path):
    """A copy of the built project (outputs, Snakemake's records, modification times)."""
    work, _, _ = project
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)  # copy2 keeps modification times
    return copy


CONFIG = ("--configfile", "config/test.yaml")


def scheduled_jobs(work: Path, *config: str) -> dict[str, int]:
    """Rule -> number of jobs, from the 'Job stats' table of a dry run."""
    run = snakemake(work, *(config or CONFIG), "--dry-run")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = run.stdout + run.stderr
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M))
    jobs.pop("total", None)
    return {rule: int(n) for rule, n in jobs.items()}


def snapshot(work: Path, dataset_paths: list[str]) -> dict[str, list]:
    """Path -> (modification time, SHA-256) of every file the glob patterns match."""
    files = {}
    for pattern in dataset_paths:
        for p in sorted(work.glob(pattern)):
            if p.is_file():
                files[str(p.relative_to(work))] = [p.stat().st_mtime_ns, sha256(p)]
    assert files, dataset_paths
    return files


def outputs_of(kind: str, name: str) -> list[str]:
    return [f"data/clean/{kind}/{name}/*", f"data/fits/{kind}/{name}/*",
            f"reports/{kind}/{name}.*"]


WEEKLY = "synthetic_small_weekly"
NOT_WEEKLY = (outputs_of("meta", "konstantopoulos2011")
              + outputs_of("meta", "synthetic_small_review")
              + outputs_of("trials", "synthetic_small_trial"))


def add_a_week(work: Path) -> None:
    """A new trial wave: every patient still in at the last week gets one more week."""
    table = work / "data/raw/trials" / WEEKLY / "sessions.csv"
    sessions = pd.read_csv(table)
    wave = sessions[sessions["week"] == sessions["week"].max()].copy()
    wave["week"] += 1
    pd.concat([sessions, wave], ignore_index=True).to_csv(table, index=False)


@pytest.fixture(scope="session")
def new_week(project, tmp_path_factory, worker_id):
    """A copy of the built project given a new wave of the weekly trial (a week more for
    every patient still in) and rebuilt by the same command, with what the dry run
    scheduled and the other datasets' outputs before and after. Built once for the run,
    like `project`: the new-data test checks what the rebuild did, the interrupted-run
    tests compare their resumed runs with it."""
    shared = shared_folder(tmp_path_factory, worker_id)
    work, record = shared / "new_week", shared / "new_week.json"
    with FileLock(shared / "new_week.lock"):
        if not record.exists():
            shutil.copytree(project[0], work, symlinks=True)  # modification times kept
            before = snapshot(work, NOT_WEEKLY)
            add_a_week(work)
            jobs = scheduled_jobs(work)
            run = snakemake(work, *CONFIG)
            record.write_text(json.dumps({
                "jobs": jobs, "returncode": run.returncode,
                "output": run.stdout[-3000:] + run.stderr[-3000:], "before": before,
                "after": snapshot(work, NOT_WEEKLY) if run.returncode == 0 else None}))
        built = json.loads(record.read_text())
    assert built["returncode"] == 0, built["output"]
    return work, built
