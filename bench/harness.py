"""Measuring one fit: a child process per fit (ours or the reference), its wall time
and peak memory taken by the parent, and the same efficiency figures computed by ArviZ
from either side's draws."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr


def measured(cmd: list[str], log: Path, env: dict[str, str] | None = None,
             cwd: Path | None = None, limit_s: float | None = None) -> dict[str, Any]:
    """Run `cmd`; its wall seconds and peak resident memory (MiB, the largest of the
    process and the children it waited for, as wait4 reports it). With `limit_s`, a run
    still going after that long is stopped (its whole process group: rstan's chains run
    in child processes) and returned with `finished` False instead of raising."""
    start = time.perf_counter()
    stopped = False
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=limit_s is not None)
        flags = 0 if limit_s is None else os.WNOHANG
        while not (waited := os.wait4(proc.pid, flags))[0]:
            if time.perf_counter() - start > limit_s:
                os.killpg(proc.pid, signal.SIGKILL)
                stopped, flags = True, 0
            else:
                time.sleep(0.2)
    _, status, usage = waited
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode and not stopped:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{tail}")
    return {"wall_s": time.perf_counter() - start, "peak_mib": usage.ru_maxrss / 1024,
            "finished": not stopped}


def draws_table(path: Path, names: dict[str, str]) -> xr.Dataset:
    """A draws.csv (one column per parameter, .chain, .iteration) as (chain, draw)
    arrays under our names; `names`: our name -> the column."""
    draws = pd.read_csv(path)
    data = {}
    for ours, theirs in names.items():
        col = draws.pivot(index=".iteration", columns=".chain", values=theirs)
        data[ours] = (("chain", "draw"), col.to_numpy().T)
    return xr.Dataset(data)


def efficiency(post: xr.Dataset, sample_s: float) -> dict[str, float]:
    """Smallest bulk and tail ESS and largest R-hat over the compared parameters
    (population-level effects and SDs), and bulk ESS per second of sampling."""
    import arviz as az  # here, not at the top: the fit processes import this module, and
    # their whole-process time is measured (ArviZ with its plotting takes over a second)
    bulk = az.ess(post, sample_dims=["chain", "draw"], method="bulk")
    tail = az.ess(post, sample_dims=["chain", "draw"], method="tail")
    rhat = az.rhat(post, sample_dims=["chain", "draw"])
    min_bulk = min(float(bulk[n]) for n in post.data_vars)
    return {"min_bulk_ess": min_bulk, "min_tail_ess": min(float(tail[n]) for n in post.data_vars),
            "max_rhat": max(float(rhat[n]) for n in post.data_vars),
            "min_bulk_ess_per_s": min_bulk / sample_s,
            "worst_parameter": min(post.data_vars, key=lambda n: float(bulk[n]))}


def means(post: xr.Dataset) -> dict[str, float]:
    return {n: float(post[n].mean()) for n in post.data_vars}


def r_available() -> str | None:
    """None when R with brms, rstan, metafor and lme4 loads; else what is missing."""
    check = ("for (p in c('brms', 'rstan', 'metafor', 'lme4', 'jsonlite')) "
             "if (!requireNamespace(p, quietly = TRUE)) cat(p, '')")
    try:
        run = subprocess.run(["Rscript", "-e", check], capture_output=True, text=True)
    except FileNotFoundError:
        return "Rscript"
    return run.stdout.strip() or None


def write_settings(path: Path, settings: dict[str, Any]) -> None:
    path.write_text(json.dumps(settings, indent=1, default=float))


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")
