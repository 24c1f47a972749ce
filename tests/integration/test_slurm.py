"""The workflow on a real (single-node) SLURM cluster, through the SLURM executor plugin
and the project's slurm profile, against the local run of the same data.

The cluster is brought up by the test (tests/hpc/cluster.py) from Debian's packages and
stopped by the PIDs it recorded. Where the packages cannot be installed (no root or no
apt), the test is skipped with the reason; `make test` on the CI machine runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import snakemake
from .slurm_cluster import SlurmCluster, install_packages

pytestmark = pytest.mark.slow
# The smallest target that sends every rule kind through sbatch: one review and the weekly
# trial with one of its analyses (within-person mediation, and its K-fold refits); more
# analyses would add their fit time and test nothing new.
DATASETS = ("meta/konstantopoulos2011", "trials/synthetic_small_weekly")
ANALYSIS = "within_mediation"
RULES = {"clean_review", "clean_trial", "fit_review", "influence_review", "report_review",
         "fit_trial_analysis", "kfold_trial_analysis", "compare_trial", "report_trial",
         "index"}
FITTED = ("data/fits/meta/konstantopoulos2011/summary.csv",
          "data/fits/meta/konstantopoulos2011/loso.csv",
          "data/fits/meta/konstantopoulos2011/cumulative.csv",
          f"data/fits/trials/synthetic_small_weekly/{ANALYSIS}/summary.csv")
DETERMINISTIC = ("data/fits/meta/konstantopoulos2011/funnel.csv",
                 "data/clean/meta/konstantopoulos2011/effects.csv",
                 "data/clean/trials/synthetic_small_weekly/sessions.csv",
                 "data/clean/trials/synthetic_small_weekly/patients.csv")


def shared_compile_cache() -> Path:
    """The PyTensor compile folder the tests share (tests/conftest.py sets it)."""
    flags = dict(f.split("=", 1) for f in os.environ["PYTENSOR_FLAGS"].split(",") if "=" in f)
    return Path(flags["base_compiledir"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = install_packages()
    if why:
        pytest.skip(why)
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        try:
            c.start()
        except FileExistsError as exc:
            pytest.skip(str(exc))
        yield c
    finally:
        c.stop()
    assert all(p.poll() is not None for p in c.processes.values())


def test_workflow_runs_through_sbatch_and_matches_the_local_run(project, cluster, tmp_path):
    local, _, _ = project
    work = tmp_path / "hpc"
    work.mkdir()
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = local / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    for dataset in DATASETS:
        shutil.copytree(local / "data/raw" / dataset, work / "data/raw" / dataset)
    trial = work / "data/raw/trials/synthetic_small_weekly/trial.yaml"
    info = yaml.safe_load(trial.read_text())
    info["analyses"] = [a for a in info["analyses"] if a["name"] == ANALYSIS]
    trial.write_text(yaml.safe_dump(info, sort_keys=False))
    # The workflow's own compile cache, .cache/pytensor in the project, as a user has it
    # after a first run: seeded from the cache the local build filled (same models, data
    # and settings), so that the nodes load the compiled models instead of compiling
    # them again; the fit logs below say whether they did.
    shutil.copytree(shared_compile_cache(), work / ".cache/pytensor")

    run = snakemake(work, "--workflow-profile", "workflow/profiles/slurm",
                    "--configfile", "config/test.yaml", "--slurm-status-command", "squeue",
                    # the first status check 5 s after a submission, not the profile's 20
                    # (sized for a shared cluster's controller): the test's jobs take
                    # seconds, and each step of its chain of jobs waited for a check
                    "--slurm-init-seconds-before-status-checks", "5",
                    "--jobs", "4",
                    env={k: v for k, v in cluster.env.items() if k != "PYTENSOR_FLAGS"})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]

    # every rule but the local target went to SLURM, and SLURM saw each submission
    submitted = {int(j) for j in re.findall(r"SLURM jobid (\d+)", output)}
    assert submitted, output[-3000:]
    assert submitted == set(cluster.submitted_job_ids())
    rules_run = re.findall(r"^\s*(?:local)?rule (\w+):", output, flags=re.M)
    assert set(rules_run) - {"all"} == RULES
    # the two cleaning jobs form one group: one submission for both
    assert len(submitted) == len([r for r in rules_run if r != "all"]) - 1
    states = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], env=cluster.env,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    finished = {int(i): s for i, s in (line.split() for line in states if line.strip())}
    assert all(finished.get(j) == "COMPLETED" for j in submitted), finished

    # Same data, seed and settings give the same results, but not always bit for bit: in
    # one CI run the pet, peese and selection rows differed by up to 1.2e-4 (relative;
    # 1e-6 posterior SDs) while all else was identical. Posterior summaries must agree
    # within a quarter of a posterior SD (a wrong model, prior or dataset on the cluster
    # would miss by far more); the deterministic tables must be identical.
    for path in FITTED:
        ours, theirs = pd.read_csv(work / path), pd.read_csv(local / path)
        assert ours.shape == theirs.shape
        keys = [c for c in ("left_out", "year", "model", "parameter") if c in theirs]
        pd.testing.assert_frame_equal(ours[keys], theirs[keys])
        has_sd = theirs["sd"].notna()
        gap = (ours["mean"] - theirs["mean"]).abs()[has_sd]
        assert (gap <= 0.25 * theirs["sd"][has_sd]).all(), path
    for path in DETERMINISTIC:
        pd.testing.assert_frame_equal(pd.read_csv(work / path), pd.read_csv(local / path))
    assert (work / "reports/index.html").exists()
    # every model each fit job on the cluster sampled came from the project's cache
    for log in ("fit/meta/konstantopoulos2011", "influence/meta/konstantopoulos2011",
                f"fit/trials/synthetic_small_weekly/{ANALYSIS}",
                f"kfold/trials/synthetic_small_weekly/{ANALYSIS}"):
        text = (work / "logs" / f"{log}.log").read_text()
        compiled = re.findall(r"compiled model \((\w+)\): (.*)", text)
        assert compiled, log
        for compiler, line in compiled:
            how, _, where = line.partition(" in ")
            cache = work / ".cache/pytensor" / compiler.lower()
            assert how == "loaded from the cache" and Path(where).resolve() == cache.resolve(), (
                log, line)
    # SLURM's own job logs go to the profile's slurm-logdir (the plugin deletes those of
    # successful jobs unless --slurm-keep-successful-logs is given)
    assert f"(log: {work / 'logs/slurm'}" in output
