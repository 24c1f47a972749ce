"""Sampling, tidy summaries and the convergence gate, shared by every model."""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import scipy.linalg  # noqa: F401  loads the OpenBLAS that Numba's linear algebra calls
import xarray as xr
from threadpoolctl import threadpool_limits

from .compiled import compile_model
from .errors import AllianceFlowError

# Numba's fastmath lets LLVM contract and reorder floating-point operations, and it did so
# differently when nutpie's functions were compiled afresh and when they came from
# PyTensor's cache; NUTS turns such last-bit differences into different draws, so the same
# seed gave different summaries on a cold and on a warm cache. Without fastmath both are
# bit-identical, and sampling was as fast (sequential mediation model: 16 s either way).
pytensor.config.numba__fastmath = False

# The chains run on threads of their own, and their log-density calls SciPy's OpenBLAS (the
# matrix products and small inverses, through Numba). OpenBLAS then hands work to its own
# thread, which spins while it waits: on 2 cores one SBC job of the RI-CLPM had that thread
# using about a third of the CPU time beside its two chains. One BLAS thread ends it.
BLAS_THREADS_WHILE_SAMPLING = 1

SUMMARY_COLUMNS = ["model", "parameter", "mean", "sd", "q2.5", "q97.5",
                   "r_hat", "ess_bulk", "ess_tail", "mcse_mean", "mcse_sd"]


@dataclass
class Fit:
    """One fitted trial analysis, ready to be written out: the sampler's output, the
    draws of every reported quantity, the names to summarise and what the model used."""

    idata: xr.DataTree
    draws: xr.Dataset
    names: list[str]
    used: dict[str, Any]
    spec: dict[str, Any]
    extra: dict[str, xr.Dataset] = field(default_factory=dict)  # more groups of posterior.nc
    model: pm.Model | None = None  # the model sampled, for the checks
    predictive: dict[str, Any] = field(default_factory=dict)  # checks.Predictive per block
    # quantities the model holds constant by construction, left out of the gate by name
    constant: list[str] = field(default_factory=list)
    # reported ratios and their denominators (e.g. the proportion mediated: ratio_rows)
    ratios: dict[str, str] = field(default_factory=dict)



class GateFailure(AllianceFlowError):
    """A model did not pass its convergence gate under policy 'fail'."""


@dataclass(frozen=True)
class SamplerSettings:
    backend: str = "nutpie"
    compiler: str = "numba"  # nutpie's: "numba" or "jax" (compiled.compile_model)
    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    target_accept: float = 0.95
    seed: int = 20261122
    threads: int = 2

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SamplerSettings:
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


@dataclass(frozen=True)
class GateThresholds:
    max_rhat: float = 1.01
    min_ess_bulk: float = 400
    min_ess_tail: float = 400
    max_divergences: int = 0
    min_bfmi: float = 0.3
    policy: str = "fail"

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> GateThresholds:
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


def python_mode_beside_the_sampler(job: Callable) -> Callable:
    """Run `job` (one workflow job: a fit with its checks, refits, SBC) with every PyTensor
    function it compiles besides the sampler's in PyTensor's Python mode (FAST_COMPILE:
    NumPy per operation, nothing compiled). The sampler's own functions are compiled by
    `compiled.compile_model`, which names its mode and so keeps Numba or JAX.

    Under PyTensor's default (Numba) the predictive draws, pointwise log-likelihoods,
    log-priors and initial points were compiled like the model: a cold early-alliance job
    on the test data took 124 s against 92 s in Python mode, the default moderation job
    320 s against 296 s, with the same outputs to the last byte (bench/by_hand.md). They
    are called a few thousand times at most, too few to pay back a compile; the one that
    was slow per call in Python mode, the log-prior over every draw, takes only the terms
    power-scaling uses (`models.structure.population_variables`), in one call over all
    the draws (`checks.summed_log_prior`)."""
    return pytensor.config.change_flags(mode="FAST_COMPILE")(job)


def chain_seed(seed: int, chains: int) -> int:
    """The seed nutpie gets from `pm.sample(random_seed=seed, chains=chains)`: PyMC spawns
    one generator per chain and hands nutpie the first one's draw. Kept so that a fit
    sampled here gives the same draws as through `pm.sample`."""
    return int(np.random.default_rng(seed).spawn(chains)[0].integers(2**30))


def _nutpie_sample(compiled, settings: SamplerSettings, seed: int) -> xr.DataTree:
    import nutpie

    with threadpool_limits(BLAS_THREADS_WHILE_SAMPLING, "blas"):
        return nutpie.sample(
            compiled, draws=settings.draws, tune=settings.tune, chains=settings.chains,
            cores=min(settings.threads, settings.chains),
            seed=seed, progress_bar=False,
            target_accept=settings.target_accept,
        )


def sample(model: pm.Model, settings: SamplerSettings,
           log_likelihood: bool = True) -> xr.DataTree:
    """NUTS draws (nutpie by default), with pointwise log-likelihood for LOO.

    With nutpie the model is compiled by `compiled.compile_model` with the settings'
    compiler (Numba by default, its callbacks cached on disk, where
    pm.sample's own route through nutpie recompiles them in every process); the result is
    what pm.sample returns for the same seed and compiler."""
    if settings.backend == "nutpie":
        from pymc.backends.arviz import patch_nutpie_idata

        compiled = compile_model(model, compiler=settings.compiler)
        start = time.perf_counter()
        idata = _nutpie_sample(compiled, settings, chain_seed(settings.seed, settings.chains))
        patch_nutpie_idata(idata, model, sampling_time=time.perf_counter() - start)
        if log_likelihood:
            idata = pm.compute_log_likelihood(idata, model=model, progressbar=False,
                                              extend_inferencedata=True)
        return idata
    kwargs: dict[str, Any] = dict(
        draws=settings.draws, tune=settings.tune, chains=settings.chains,
        cores=min(settings.threads, settings.chains), random_seed=settings.seed,
        progressbar=False, idata_kwargs={"log_likelihood": log_likelihood}, model=model,
        nuts_sampler="pymc", target_accept=settings.target_accept,
        compute_convergence_checks=False,
    )
    with warnings.catch_warnings(), threadpool_limits(BLAS_THREADS_WHILE_SAMPLING, "blas"):
        warnings.simplefilter("ignore", FutureWarning)
        return pm.sample(**kwargs)


@dataclass
class LeaveOut:
    """A trial model built for leave-patients-out refits: `model` has a pm.Data
    `patient_weight` (one per unit, 0 = left out); `loglik` gives each unit's
    log-likelihood (chain, draw, unit) from a posterior, in the order of the fit's
    log_likelihood group; `data`: the arrays that log-likelihood covers and conditions
    on (two analyses with the same arrays model the same data and can be compared)."""
    model: pm.Model
    n_units: int
    loglik: Callable[[xr.Dataset], xr.DataArray]
    data: tuple[np.ndarray, ...] = ()

    def signature(self) -> str:
        digest = hashlib.sha256()
        for array in self.data:
            a = np.ascontiguousarray(np.asarray(array, dtype=float))
            digest.update(str(a.shape).encode())
            digest.update(np.nan_to_num(a, nan=-1e300).tobytes())
        return digest.hexdigest()[:16]


class Refitter:
    """One model compiled once and sampled again with new data values (pm.Data names).

    With nutpie the compiled model is reused through `with_data`; with the PyMC
    sampler the data are swapped with `pm.set_data`. Returns the posterior and the
    sampler statistics as Datasets.
    """

    def __init__(self, model: pm.Model, settings: SamplerSettings):
        self.model = model
        self.settings = settings
        self.compiled = None
        if settings.backend == "nutpie":
            self.compiled = compile_model(model, compiler=settings.compiler)

    def fit(self, **data: np.ndarray) -> tuple[xr.Dataset, xr.Dataset]:
        s = self.settings
        if self.compiled is not None:
            tree = _nutpie_sample(self.compiled.with_data(**data), s, s.seed)
        else:
            with self.model:
                pm.set_data(data)
            tree = sample(self.model, s, log_likelihood=False)
        return tree["posterior"].to_dataset(), tree["sample_stats"].to_dataset()


def with_patient_loglik(idata: xr.DataTree, ll: xr.DataArray) -> None:
    """Set the per-patient log-likelihood (chain, draw, one unit dimension) as the
    log_likelihood group, variable `patient` over `patient_id` (LOO by patient)."""
    dim = [d for d in ll.dims if d not in ("chain", "draw")][0]
    idata["log_likelihood"] = xr.DataTree(ll.rename("patient").rename({dim: "patient_id"})
                                          .to_dataset())


def summarise(draws: xr.Dataset, names: list[str], model: str) -> pd.DataFrame:
    """Tidy rows (model, parameter, mean, sd, q2.5, q97.5, r_hat, ess_bulk, ess_tail,
    mcse_mean, mcse_sd), from ArviZ's summary with the central 95% interval.

    Works on any Dataset with (chain, draw) dims, so derived quantities get
    their own R-hat and ESS like sampled ones.
    """
    ds = draws[names]
    for name in names:
        extra = [d for d in ds[name].dims if d not in ("chain", "draw")]
        if extra:
            raise ValueError(f"summarise expects scalar parameters; {name} has dims {extra}")
    table = az.summary(ds, kind="all", ci_prob=0.95, ci_kind="eti", round_to="none")
    table = table.rename(columns={"eti95_lb": "q2.5", "eti95_ub": "q97.5"})
    table = table.rename_axis("parameter").reset_index().assign(model=model)
    return table[SUMMARY_COLUMNS].reset_index(drop=True)


def point_rows(model: str, values: dict[str, float]) -> pd.DataFrame:
    """Rows for single numbers (interval bounds, probabilities): value in `mean`."""
    rows = [{"model": model, "parameter": k, "mean": v} for k, v in values.items()]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def ratio_rows(draws: xr.Dataset, ratios: dict[str, str], model: str) -> pd.DataFrame:
    """For a ratio whose denominator can be near zero (a proportion mediated): its
    posterior median (`median[<ratio>]`) and whether its interval is bounded
    (`bounded[<ratio>]`: 1 where the denominator's central 95% interval excludes zero).
    Where it includes zero the ratio's draws run to both infinities, its mean and SD
    say nothing and its quantiles are not an interval of plausible values (as Fieller's
    interval for a ratio is then unbounded)."""
    values = {}
    for ratio, denominator in ratios.items():
        low, high = np.quantile(draws[denominator].to_numpy(), [0.025, 0.975])
        values[f"median[{ratio}]"] = float(draws[ratio].median())
        values[f"bounded[{ratio}]"] = float(low > 0 or high < 0)
    return point_rows(model, values)


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def element_label(name: str, da: xr.DataArray, index: tuple[int, ...]) -> str:
    """`name` for a scalar, `name[a, b]` for one element, with the coordinate values
    where its dims have them (as the summary names them, e.g. `omega[p < .025]`), else
    its positions."""
    if not index:
        return name
    parts = [str(da[d].values[i]) if d in da.coords else str(i)
             for d, i in zip(da.dims, index, strict=True)]
    return f"{name}[{', '.join(parts)}]"


def _extreme(values: xr.Dataset, pick: Callable, constant: frozenset[str] = frozenset()
             ) -> tuple[float, list[str]]:
    """The largest or smallest value (`pick`: np.max or np.min) over every element of
    every variable, each of its own shape (to_array would broadcast them all to one,
    which explodes with several per-patient arrays), and the elements that are NaN, by
    name. Elements named in `constant` (constant by construction, so without an R-hat
    or ESS) are left out. NumPy's max and min see every NaN; the built-in ones saw a NaN
    only where it came first."""
    best, undefined = [], []
    for name, da in values.data_vars.items():
        flat = da.to_numpy().ravel().astype(float)
        if not flat.size:
            continue
        def label(i: int, name: str = name, da: xr.DataArray = da) -> str:
            return element_label(name, da, np.unravel_index(i, da.shape))

        keep = np.ones(flat.size, dtype=bool)
        if any(c == name or c.startswith(f"{name}[") for c in constant):
            keep = np.array([label(i) not in constant for i in range(flat.size)])
        nan = np.isnan(flat) & keep
        undefined += [label(i) for i in np.flatnonzero(nan)]
        good = flat[keep & ~nan]
        if good.size:
            best.append(float(pick(good)))
    return (float(pick(best)) if best else math.nan), undefined


def diagnostics(idata: xr.DataTree, summary: pd.DataFrame, thresholds: GateThresholds,
                model: str, constant: Collection[str] = ()) -> dict[str, Any]:
    """Convergence figures and the gate decision for one fitted model.

    R-hat and ESS are taken over every sampled quantity with chain/draw dims
    (latent study effects included) and the reported derived quantities. Where one is
    undefined (NaN) the gate fails and names the quantity, except for the quantities
    named in `constant` (element labels as element_label writes them): those the model
    defines as constant, whose R-hat and ESS do not exist.
    """
    post = idata["posterior"].to_dataset()
    rhat = az.rhat(post, sample_dims=["chain", "draw"])
    ess_b = az.ess(post, sample_dims=["chain", "draw"], method="bulk")
    ess_t = az.ess(post, sample_dims=["chain", "draw"], method="tail")
    constant = frozenset(constant)
    # summary rows with a posterior (point rows, e.g. probabilities, have no SD)
    s = summary[summary["sd"].notna() & ~summary["parameter"].isin(constant)]
    undefined = set(s.loc[s[["r_hat", "ess_bulk", "ess_tail"]].isna().any(axis=1),
                          "parameter"])
    extremes = []
    for values, pick, column in ((rhat, np.max, "r_hat"), (ess_b, np.min, "ess_bulk"),
                                 (ess_t, np.min, "ess_tail")):
        value, nan = _extreme(values, pick, constant)
        undefined.update(nan)
        extremes.append(float(pick([value, *s[column].dropna().to_numpy()])))
    max_rhat, min_bulk, min_tail = extremes
    stats = idata["sample_stats"].to_dataset()
    divergences = int(stats["diverging"].sum()) if "diverging" in stats else 0
    bfmi_values = np.asarray(az.bfmi(stats, sample_dims=["chain", "draw"])["energy"])
    pareto = pareto_k_counts(idata)
    failures = []
    if undefined:
        shown = sorted(undefined)
        failures.append("R-hat or ESS undefined (NaN) for " + ", ".join(shown[:5])
                        + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
                        + ": a quantity that does not vary across draws, or draws that"
                          " are not finite")
    if not max_rhat <= thresholds.max_rhat:
        failures.append(f"max R-hat {max_rhat:.3f} > {thresholds.max_rhat}")
    if not min_bulk >= thresholds.min_ess_bulk:
        failures.append(f"min bulk ESS {min_bulk:.0f} < {thresholds.min_ess_bulk}")
    if not min_tail >= thresholds.min_ess_tail:
        failures.append(f"min tail ESS {min_tail:.0f} < {thresholds.min_ess_tail}")
    if divergences > thresholds.max_divergences:
        failures.append(f"{divergences} divergent transitions "
                        f"(allowed {thresholds.max_divergences})")
    if not float(bfmi_values.min()) >= thresholds.min_bfmi:
        failures.append(f"min E-BFMI {float(bfmi_values.min()):.2f} < {thresholds.min_bfmi}")
    return {
        "model": model,
        # the sample the figures come from (draws per chain differ by analysis type:
        # config sampler.draws_by_analysis)
        "chains": int(post.sizes["chain"]),
        "draws": int(post.sizes["draw"]),
        "max_rhat": _finite_or_none(max_rhat),
        "min_ess_bulk": _finite_or_none(min_bulk),
        "min_ess_tail": _finite_or_none(min_tail),
        "divergences": divergences,
        "min_bfmi": _finite_or_none(float(bfmi_values.min())),
        "pareto_k": pareto,
        "thresholds": {k: getattr(thresholds, k) for k in thresholds.__dataclass_fields__},
        "constant_by_construction": sorted(constant),
        "passed": not failures,
        "failures": failures,
    }


def pareto_k_counts(idata: xr.DataTree) -> dict[str, Any]:
    """PSIS-LOO Pareto-k counts by the usual bands (good <= 0.7 < bad <= 1 < very bad)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loo = az.loo(idata, pointwise=True)
        k = np.asarray(loo.pareto_k).ravel()
    except Exception as exc:  # noqa: BLE001 - LOO is reported, never fatal here
        return {"error": str(exc)}
    return {
        "good": int((k <= 0.7).sum()),
        "bad": int(((k > 0.7) & (k <= 1.0)).sum()),
        "very_bad": int((k > 1.0).sum()),
        "max": float(np.nanmax(k)),
        "elpd_loo": float(loo.elpd),
        "se": float(loo.se),
    }


def gate_message(diag: dict[str, Any], where: str) -> str:
    return (f"{where}: model '{diag['model']}' failed its convergence gate: "
            + "; ".join(diag["failures"]))
