"""Faults: a bad dataset does not stop the others, and the index says what failed.

Each test works on a copy of the built test project (conftest.built_copy) or of that
project given a new wave of the weekly trial (conftest.new_week).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from .conftest import CONFIG, WEEKLY, checksums, outputs_of, snakemake, snapshot

pytestmark = pytest.mark.slow


def test_bad_dataset_fails_alone_and_the_index_says_why(built_copy):
    work = built_copy
    others = (outputs_of("meta", "synthetic_small_review")
              + outputs_of("trials", "synthetic_small_trial")
              + outputs_of("trials", "synthetic_small_weekly"))
    before = snapshot(work, others)
    table = work / "data/raw/meta/konstantopoulos2011/effects.csv"
    effects = pd.read_csv(table)
    effects.loc[3, "yi"] = 0.1234567  # a new value elsewhere: the review must be rebuilt
    effects.loc[3, "vi"] = -0.5       # ... and this one is invalid (row 5 as a sheet shows it)
    effects.to_csv(table, index=False)
    raw_before = checksums(work / "data/raw")

    run = snakemake(work, *CONFIG)
    assert run.returncode != 0, "a failed dataset must make the command fail"
    assert checksums(work / "data/raw") == raw_before  # raw data never modified
    assert snapshot(work, others) == before  # the others are complete and untouched
    log = (work / "logs/clean/meta/konstantopoulos2011.log").read_text()
    assert "effects.csv, row 5, column 'vi'" in log
    # the index is rewritten: the bad review is failed, with the reason, and no link to
    # its stale report; the value itself is withheld
    index = (work / "reports/index.html").read_text()
    row = re.search(r"<tr><td>review</td><td>konstantopoulos2011<br>.*?</tr>", index)
    assert row, index[-3000:]
    assert "failed" in row.group(0) and "row 5, column" in row.group(0)
    assert "-0.5" not in row.group(0)
    for name in ("synthetic_small_review", "synthetic_small_trial", "synthetic_small_weekly"):
        assert f'href="{"meta" if "review" in name else "trials"}/{name}.html"' in index

    # fixing the data and running again completes, and the index is whole again
    effects.loc[3, "vi"] = 0.02
    effects.to_csv(table, index=False)
    run = snakemake(work, *CONFIG)
    assert run.returncode == 0, run.stderr[-3000:]
    index = (work / "reports/index.html").read_text()
    assert 'href="meta/konstantopoulos2011.html"' in index and ">failed<" not in index


@pytest.mark.parametrize("target", [
    "data/fits/trials/synthetic_small_weekly/within_mediation/summary.csv",
    "data/fits/meta/synthetic_small_review/summary.csv",
])
def test_same_seed_and_data_give_an_identical_summary(built_copy, project, target):
    work = built_copy
    (work / target).unlink()
    run = snakemake(work, target, *CONFIG)
    assert run.returncode == 0, run.stderr[-3000:]
    original, _, _ = project
    assert (work / target).read_bytes() == (original / target).read_bytes()
    provenance = (work / target).parent / "provenance.json"
    assert '"seed": 1' in provenance.read_text()  # config/test.yaml's seed, recorded


def start_snakemake(work, *args):
    """Snakemake in its own process group, as `snakemake()` runs it, without waiting; its
    output goes to killed-run.txt in the project."""
    exe = Path(sys.executable).parent / "snakemake"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out = (work / "killed-run.txt").open("w")
    return subprocess.Popen([str(exe), "--workflow-profile", "workflow/profiles/default",
                             "--cores", "2", *args], cwd=work, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


SUMMARY = f"data/fits/trials/{WEEKLY}/within_mediation/summary.csv"
REPORT = f"reports/trials/{WEEKLY}.html"


def test_a_failed_fit_is_retried_by_the_same_command(built_copy, project):
    """A fit that failed in a run whose other jobs finished (a gate failure, a job killed
    for memory) is made by the next run of the same command, although the index written
    after the failure is the newest file of the project."""
    work = built_copy
    fit = f"data/fits/trials/{WEEKLY}/within_mediation"
    # as on a first build: the fit and everything after it not made yet
    for path in [*(work / fit).iterdir(), work / f"data/fits/trials/{WEEKLY}/comparison.csv",
                 *(work / "reports/trials").glob(f"{WEEKLY}.*"), work / "reports/index.html"]:
        path.unlink()
    # a broken environment for one run: PyTensor refuses the flag, so the fit fails (the
    # index, which does not import PyTensor, is still written)
    broken = dict(os.environ, PYTENSOR_FLAGS=os.environ.get("PYTENSOR_FLAGS", "")
                  + ",floatX=float99")
    run = snakemake(work, *CONFIG, env=broken)
    assert run.returncode != 0
    assert not (work / SUMMARY).exists()
    assert "floatX" in (work / f"logs/fit/trials/{WEEKLY}/within_mediation.log").read_text()
    row = re.search(rf"<tr><td>trial</td><td>{WEEKLY}<br>.*?</tr>",
                    (work / "reports/index.html").read_text())
    assert row and "failed" in row.group(0), row

    run = snakemake(work, *CONFIG)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Nothing to be done" not in run.stdout + run.stderr
    original, _, _ = project
    assert (work / SUMMARY).read_bytes() == (original / SUMMARY).read_bytes()
    index = (work / "reports/index.html").read_text()
    assert f'href="trials/{WEEKLY}.html"' in index and ">failed<" not in index


# What the killed run has still to make: the job it is killed in and all after it (a
# missing file whose consumers are up to date is not made again).
AFTER_THE_FIT = (f"data/fits/trials/{WEEKLY}/within_mediation/*",
                 f"data/fits/trials/{WEEKLY}/comparison.csv")
AFTER_THE_RENDER = (f"reports/trials/{WEEKLY}.*", "reports/index.html")


@pytest.mark.parametrize("stage, outputs, log", [
    pytest.param("mid-fit", AFTER_THE_FIT + AFTER_THE_RENDER,
                 f"logs/fit/trials/{WEEKLY}/within_mediation.log", id="mid-fit"),
    pytest.param("mid-render", AFTER_THE_RENDER, f"logs/report/trials/{WEEKLY}.log",
                 id="mid-render"),
])
def test_sigkill_then_the_same_command_resumes(new_week, tmp_path, stage, outputs, log):
    """A run killed in the middle of a fit or of a report's render, then the same command
    again: it finishes what was left and gives what an uninterrupted run gave (the
    project with the weekly trial's new wave, `new_week`), with nothing half-written."""
    reference, _ = new_week
    work = tmp_path / "copy"
    shutil.copytree(reference, work, symlinks=True)
    for path in [work / log, *(p for pattern in outputs for p in work.glob(pattern))]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    proc = start_snakemake(work, *CONFIG)
    deadline = time.monotonic() + 600
    while not (work / log).exists():  # the job has started
        assert proc.poll() is None and time.monotonic() < deadline, (
            "the job never started: " + (work / "killed-run.txt").read_text()[-3000:])
        time.sleep(0.2)
    time.sleep(3)  # well inside the job (a fit or a render takes longer here)
    assert proc.poll() is None, f"the run ended before it could be killed {stage}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if stage == "mid-fit":  # nothing half-written under the final name
        assert not (work / SUMMARY).exists()
    # what `make run` does: clear the lock the killed run left, run the same command
    subprocess.run([sys.executable, "-m", "allianceflow", "clear-stale-locks"], cwd=work,
                   check=True)
    run = snakemake(work, *CONFIG)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # same seed and data: the same numbers as the uninterrupted build, and a fresh report
    assert (work / SUMMARY).read_bytes() == (reference / SUMMARY).read_bytes()
    assert (work / REPORT).stat().st_mtime > (work / SUMMARY).stat().st_mtime
    assert "within_mediation (within mediation)" in (work / REPORT).read_text()
    assert "Nothing to be done" in snakemake(work, *CONFIG, "--dry-run").stdout
