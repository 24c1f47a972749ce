"""Code and workflow style gates that CI enforces: ruff and snakemake --lint."""

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

BIN = Path(sys.executable).parent


def test_ruff_clean():
    run = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_snakemake_lint_clean():
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    run = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_dry_run_on_default_data():
    """The default data build a complete job graph (config valid, every dataset found)."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    run = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "2", "--workflow-profile",
                          "workflow/profiles/default"], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
