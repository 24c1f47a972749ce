"""Posterior checks of one fitted model: prior and posterior predictive checks, LOO-PIT,
Pareto-k, prior sensitivity by power-scaling. Pure functions on arrays and DataTrees,
plus `run_checks`, which the fit stages call with the model they sampled.

How replicated data are made, for every model alike: the model names, as tensors, the
per-draw quantities its data depend on once the random effects it integrates out are
put back (e.g. each row's expected value and the SDs of the random levels); PyMC
evaluates them for prior draws and for a thinned set of posterior draws, and the
model's own `simulate` draws the data from them (models/*.py, next to each model).

Replicates of trial outcomes are conditional on the measures the model treats as
given (the observed alliance in growth models, the treatment, covariates): the check
asks whether the outcome model fits, not whether the alliance is predicted.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pytensor.graph.traversal import ancestors
from pytensor.tensor.random.op import RandomVariable
from scipy import optimize

from .io import write_csv, write_json
from .models.predictive import Predictive
from .models.structure import population_variables

PPC_STATISTICS = ("mean", "sd", "min", "max")
PARETO_K_RELIABLE = 0.7
QUANTILE_LEVELS = np.linspace(0.01, 0.99, 99)


@dataclass(frozen=True)
class CheckSettings:
    """How many draws the checks use and when they flag (config `checks`)."""

    predictive_draws: int = 400
    ppc_p: float = 0.01  # flag a test statistic with p < ppc_p or p > 1 - ppc_p
    # flag priors whose simulated data fall outside the possible range more often than
    # this; the data-scaled weakly informative priors of the trial models put 13-28% of
    # simulated sessions outside a bounded questionnaire's range on the default trials
    prior_outside: float = 0.3
    pit_prob: float = 0.99  # LOO-PIT fails its uniformity test at p < 1 - pit_prob
    sensitivity_threshold: float = 0.05  # power-scaling (Kallioinen et al. 2023)
    pit_max_high_k: float = 0.1  # LOO-PIT is not judged above this share of k > 0.7
    # replicate sets per posterior draw from which loo_dependence estimates how the units'
    # LOO-PIT values depend on each other: a well-identified population parameter's
    # direction stands about `sets` above the noise, so 20 clear the Marchenko-Pastur edge
    # (1 + sqrt(units / draws))^2 up to about 10 units per thinned draw
    pit_dependence_sets: int = 20
    pit_null_draws: int = 2000  # simulated null sets that calibrate the LOO-PIT p-value

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> CheckSettings:
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


# ---- evaluating a model's parts per draw -------------------------------------------


def thin_indices(post: xr.Dataset, n: int, seed: int) -> np.ndarray:
    """n draws picked at random (without replacement), as flat chain-major indices."""
    total = post.sizes["chain"] * post.sizes["draw"]
    return np.sort(np.random.default_rng(seed).choice(total, size=min(n, total),
                                                      replace=False))


def thin(post: xr.Dataset, pick: np.ndarray) -> xr.Dataset:
    """The picked draws of every variable, as one chain."""
    stacked = post.stack(sample=("chain", "draw")).isel(sample=pick)
    out = stacked.drop_vars(["sample", "chain", "draw"]).rename(sample="draw")
    return out.expand_dims(chain=[0]).transpose("chain", "draw", ...)


def registered(model: pm.Model, parts: dict[str, pt.TensorVariable]) -> list[str]:
    """Names of the Deterministics that hold `parts` in `model`, added on first use
    (after sampling, so the sampled model is unchanged)."""
    registry = getattr(model, "check_part_names", {})
    model.check_part_names = registry
    names = []
    for key, tensor in parts.items():
        if id(tensor) not in registry:
            name, i = f"check_part[{key}]", 0
            while name in model.named_vars:
                i += 1
                name = f"check_part[{key}]{i}"
            with model:
                pm.Deterministic(name, tensor)
            registry[id(tensor)] = name
        names.append(registry[id(tensor)])
    return names


def as_arrays(ds: xr.Dataset, parts: dict[str, pt.TensorVariable],
              names: list[str]) -> dict[str, np.ndarray]:
    return {k: ds[n].to_numpy().reshape((-1, *ds[n].shape[2:]))
            for k, n in zip(parts, names, strict=True)}


def part_values(model: pm.Model, parts: dict[str, pt.TensorVariable],
                draws: xr.Dataset) -> dict[str, np.ndarray]:
    """The parts evaluated at each draw of the free variables: {name: (draws, ...)}."""
    names = registered(model, parts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = pm.sample_posterior_predictive(xr.DataTree(children={"posterior": xr.DataTree(
            draws)}), var_names=names, model=model, progressbar=False,
            return_inferencedata=True)
    return as_arrays(tree["posterior_predictive"].to_dataset(), parts, names)


def prior_part_values(model: pm.Model, parts: dict[str, pt.TensorVariable], n: int,
                      seed: int) -> dict[str, np.ndarray]:
    """The parts under draws from the prior: {name: (n, ...)}."""
    names = registered(model, parts)
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = pm.sample_prior_predictive(draws=n, var_names=names, random_seed=seed)
    return as_arrays(prior["prior"].to_dataset(), parts, names)


# ---- test statistics and distributions ---------------------------------------------


def statistic(name: str, values: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """A test statistic of each row of `values` (draws, n) or of one data vector."""
    v = np.atleast_2d(values)
    if name == "cluster_sd":  # SD of study (or patient) means: spread of study effects
        n_groups = int(group.max()) + 1
        counts = np.bincount(group, minlength=n_groups)
        keep = counts > 0
        means = np.stack([np.bincount(group, row, n_groups)[keep] / counts[keep]
                          for row in v])
        return means.std(axis=1, ddof=1)
    return {"mean": np.mean, "sd": lambda x, axis: np.std(x, axis=axis, ddof=1),
            "min": np.min, "max": np.max}[name](v, axis=1)


def ppc_table(observed: np.ndarray, replicated: np.ndarray, group: np.ndarray | None,
              statistics: tuple[str, ...], kind: str) -> pd.DataFrame:
    """Per statistic: observed value, replicated mean and 95% interval, and the
    predictive p-value P(T(y_rep) >= T(y))."""
    rows = []
    for name in statistics:
        t_obs = float(statistic(name, observed, group)[0])
        t_rep = statistic(name, replicated, group)
        rows.append({"kind": kind, "statistic": name, "observed": t_obs,
                     "replicated_mean": float(t_rep.mean()),
                     "replicated_q2.5": float(np.quantile(t_rep, 0.025)),
                     "replicated_q97.5": float(np.quantile(t_rep, 0.975)),
                     "p_value": float((t_rep >= t_obs).mean())})
    return pd.DataFrame(rows)


def quantile_curves(observed: np.ndarray, replicated: np.ndarray, kind: str,
                    n_curves: int = 50) -> pd.DataFrame:
    """Quantile functions of the data and of n replicated datasets, for the overlay plot
    (quantiles only: no row of the data is written out)."""
    rows = [pd.DataFrame({"kind": "observed", "replicate": -1, "level": QUANTILE_LEVELS,
                          "value": np.quantile(observed, QUANTILE_LEVELS)})]
    for i, rep in enumerate(replicated[:n_curves]):
        rows.append(pd.DataFrame({"kind": kind, "replicate": i, "level": QUANTILE_LEVELS,
                                  "value": np.quantile(rep, QUANTILE_LEVELS)}))
    return pd.concat(rows, ignore_index=True)


def outside_share(replicated: np.ndarray, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(((replicated < low) | (replicated > high)).mean())


# ---- LOO-PIT -------------------------------------------------------------------------


def log_mean_exp(x: np.ndarray, w: np.ndarray | None = None) -> float:
    """log of the (weighted) mean of exp(x), computed stably (SciPy's logsumexp)."""
    from scipy.special import logsumexp

    b = np.full(x.shape, 1.0 / x.size) if w is None else w / w.sum()
    return float(logsumexp(x, b=b))


def relative_efficiency(posterior: xr.Dataset) -> float:
    """The draws' relative efficiency for PSIS, as ArviZ's loo takes it: the mean over
    every posterior value of its ESS for the mean, divided by the number of draws (1
    for a single chain). Autocorrelated draws carry less information than as many
    independent ones, which the Pareto fit of the weights' tail allows for."""
    n = posterior.sizes["chain"] * posterior.sizes["draw"]
    if posterior.sizes["chain"] == 1:
        return 1.0
    ess = posterior.azstats.ess(method="mean")
    return float(np.hstack([ess[v].to_numpy().ravel() for v in ess.data_vars]).mean() / n)


def psis_weights(loglik: np.ndarray, r_eff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised PSIS weights (draws, units) of leaving each unit out, and Pareto k;
    `r_eff` the draws' relative efficiency (relative_efficiency)."""
    da = xr.DataArray(loglik.T[:, None, :], dims=("unit", "chain", "draw"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log_w, k = da.azstats.psislw(dim=["chain", "draw"], r_eff=r_eff)
    lw = log_w.transpose("unit", ...).to_numpy().reshape(loglik.shape[1], -1).T
    w = np.exp(lw - lw.max(axis=0))
    return w / w.sum(axis=0), np.asarray(k)


def is_integer_valued(values: np.ndarray) -> bool:
    """Data recorded as whole numbers (e.g. an HRSD total): replicates are rounded too,
    and the PIT is randomised within ties (Czado, Gneiting and Held 2009)."""
    return bool(np.all(values == np.round(values)))


def unit_indicator(group: np.ndarray) -> Any:
    """Sparse (values, units) matrix whose product with values gives each unit's mean,
    units in the order of np.unique(group)."""
    from scipy import sparse

    units, index = np.unique(group, return_inverse=True)
    counts = np.bincount(index).astype(float)
    return sparse.csr_matrix((1.0 / counts[index], (np.arange(len(index)), index)),
                             shape=(len(index), len(units)))


def unit_loo_pit(observed_mean: np.ndarray, replicated_mean: np.ndarray,
                 weights: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """LOO-PIT of each unit's mean value (a study's effects, a patient's sessions:
    `observed_mean` (units,), `replicated_mean` (draws, units), see unit_indicator) under
    the predictive that leaves the whole unit out: P(mean of y_rep_u <= mean of y_u | data
    without u), one value per unit.

    Why per unit and not per value: the values of one unit share its leave-one-out
    weights and its left-out latent effects, so a patient's sessions have PIT values that
    move together, and a test built for independent uniforms rejects a correct model far
    more often than its level (tests/unit/test_checks.py measures it). Across units the
    remaining dependence is that of LOO-PIT values, each predictive conditioned on nearly
    the same data, which `loo_dependence` estimates and `uniformity` allows for.
    Within-unit misfit is left to the predictive checks' statistics.

    Pareto-smoothed PIT (arviz-stats `loo_pit(pareto_pit=True)`): a unit mean beyond
    every replicate gets a tail probability from a generalised Pareto fit instead of 0 or
    1, which an order-statistic test would read as certain misfit. With `rng` (data
    recorded as whole numbers) ties are broken at random: P(y_rep < y) + U P(y_rep = y)
    (Czado, Gneiting and Held 2009)."""
    from arviz_stats.base import array_stats

    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    return np.asarray(array_stats.loo_pit(
        replicated_mean.T, observed_mean, log_weights.T, chain_axis=None, draw_axis=-1,
        random_state=rng if rng is not None else 0, pareto_pit=True), dtype=float)


@dataclass(frozen=True)
class LooDependence:
    """Approximate joint law of the units' LOO-PIT z-scores Φ⁻¹(PIT) under a correct
    model: N(0, R) with R = diag(scale) (I - A diag(1 - (1 - shrink)²) A') diag(scale),
    A (units, r) orthonormal. No columns in A: independent standard normals."""

    scale: np.ndarray
    basis: np.ndarray
    shrink: np.ndarray

    @classmethod
    def independent(cls, units: int) -> LooDependence:
        return cls(np.ones(units), np.zeros((units, 0)), np.zeros(0))

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws (n, units) of the z-scores."""
        e = rng.standard_normal((n, len(self.scale)))
        return (e - ((e @ self.basis) * self.shrink) @ self.basis.T) * self.scale


def loo_dependence(replicate_means: np.ndarray) -> LooDependence:
    """How the units' LOO-PIT values depend on each other, from replicated unit means
    (sets, draws, units): several replicate sets per posterior draw, each drawing new
    unit-level effects.

    Why: every leave-one-unit-out predictive is centred on population parameters fitted
    to the other units, so a unit above the fit pulls the others' predictives up and
    their PIT values down. The z-scores are negatively correlated, the ECDF stays closer
    to the diagonal than independent uniforms' would, and a test calibrated for
    independent values (POT-C included) rejects a correct model far less often than its
    level (tests/unit/test_checks.py measures both). In a linear Gaussian model with hat
    matrix H, the leave-one-out residuals have correlation
    -H_ij v_j / sqrt(v_i (1 - h_ii) v_j (1 - h_jj)), and H_ij v_j = C_ij, the posterior
    covariance of the two units' expected means m_u(θ). So C and the conditional
    variances v come from the replicates: the sets' mean per draw estimates m_u(θ) with
    noise v/sets, whose spread across the sets gives v.

    C is low-rank (one direction per population parameter) while its estimate from a few
    hundred draws carries noise in every direction, so only the eigen-directions of the
    standardised sample covariance above the Marchenko–Pastur edge (1 + √(units/draws))²
    are kept, their sizes corrected for the spiked-covariance bias (Baik, Ben Arous and
    Péché 2005; Paul 2007). Where the replicates do not vary within a draw, nothing can be
    said and the values are taken as independent."""
    sets, draws, units = replicate_means.shape
    if sets < 2 or draws < 3:
        return LooDependence.independent(units)
    m = replicate_means.mean(axis=0)
    v = replicate_means.var(axis=0, ddof=1).mean(axis=0)
    if not np.all(v > 0):
        return LooDependence.independent(units)
    noise = v / sets
    standard = (m - m.mean(axis=0)) / np.sqrt(noise * (draws - 1))
    _, s, vt = np.linalg.svd(standard, full_matrices=False)
    gamma = units / (draws - 1)
    lam = s**2
    kept = lam > (1 + np.sqrt(gamma)) ** 2
    x = lam[kept] - 1 - gamma
    spike = (x + np.sqrt(np.maximum(x**2 - 4 * gamma, 0))) / 2
    b = vt[kept].T
    c_diag = noise * ((b**2) @ spike)
    d = v - c_diag
    if not kept.any() or not np.all(d > 0):
        return LooDependence.independent(units)
    # R = G - F F' with G = diag(v / d), F = diag(sqrt(noise / d)) B diag(sqrt(spike));
    # its square root through the thin SVD of G^-1/2 F
    w = np.sqrt(noise / v)[:, None] * b * np.sqrt(spike)
    a, sigma, _ = np.linalg.svd(w, full_matrices=False)
    shrink = 1 - np.sqrt(1 - np.clip(sigma**2, 0, 1))
    return LooDependence(np.sqrt(v / d), a, shrink)


def ecdf_band(n: int, prob: float, n_sim: int = 1000, seed: int = 0,
              grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simultaneous `prob` band for the ECDF of n uniform values at the grid points
    (Säilynoja, Bürkner and Vehtari 2022, simulation method): the pointwise binomial
    level is lowered until that share of simulated uniform samples stays inside."""
    from scipy import stats

    grid = np.linspace(0, 1, 101)[1:-1] if grid is None else grid
    rng = np.random.default_rng(seed)
    sims = np.sort(rng.uniform(size=(n_sim, n)), axis=1)
    counts = np.stack([np.searchsorted(s, grid, side="right") for s in sims])
    # the smallest tail probability of each simulated ECDF under Binomial(n, grid)
    cdf = stats.binom.cdf(counts, n, grid)
    sf = stats.binom.sf(counts - 1, n, grid)
    gamma = np.quantile(2 * np.minimum(cdf, sf).min(axis=1), 1 - prob)
    lower = stats.binom.ppf(gamma / 2, n, grid) / n
    upper = stats.binom.ppf(1 - gamma / 2, n, grid) / n
    return grid, lower, upper


@functools.lru_cache(maxsize=64)
def default_grid_band(n: int, prob: float, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """ecdf_band on its default grid, kept: the same number of units is checked again
    and again (every model of a review, every simulated fit), and the band is fixed by
    (n, prob, seed). Read-only arrays, as they are shared."""
    band = ecdf_band(n, prob, seed=seed)
    for a in band:
        a.flags.writeable = False
    return band


def uniformity(values: np.ndarray, prob: float, seed: int = 0,
               dependence: LooDependence | None = None,
               null_draws: int = 2000) -> dict[str, Any]:
    """Are PIT values in [0, 1] uniform? The statistic is Tesso and Vehtari's (2026, arXiv
    2603.02928) pointwise order test with the truncated Cauchy combination (arviz-stats
    `uniformity_test(method="pot_c")`); its p-value is calibrated by simulation against
    `null_draws` sets of values with the dependence of LOO-PIT values (`dependence`, see
    `loo_dependence`; independent uniforms without it), because POT-C's own p-value
    assumes exchangeable values and is far too conservative for LOO-PIT (the Cauchy
    combination is valid under dependence, not exact). Fails at p < 1 - prob. The ECDF
    and the simultaneous `prob` band of independent uniforms are returned for the plot."""
    from arviz_stats.base import array_stats
    from scipy import stats

    values = np.asarray(values, dtype=float)
    grid, lower, upper = default_grid_band(len(values), prob, seed)
    ecdf = np.searchsorted(np.sort(values), grid, side="right") / len(values)
    dependence = dependence or LooDependence.independent(len(values))
    raw = float(array_stats.uniformity_test(values, method="pot_c")[0])
    null = stats.norm.cdf(dependence.sample(null_draws, np.random.default_rng(seed)))
    null_p = array_stats.uniformity_test(null, method="pot_c")[0]
    p_value = float((1 + np.sum(null_p <= raw)) / (null_draws + 1))
    return {"grid": grid, "ecdf": ecdf, "lower": lower, "upper": upper,
            "p_value": p_value, "pot_c_p_value": raw, "dependence_rank": dependence.rank,
            "passed": bool(p_value >= 1 - prob),
            "max_outside": float(np.max(np.maximum(lower - ecdf, ecdf - upper).clip(0)))}


# ---- prior sensitivity ---------------------------------------------------------------


def summed(group: xr.Dataset) -> xr.Dataset:
    """One (chain, draw) variable: the sum of every term of a log density group."""
    total = 0.0
    for da in group.data_vars.values():
        total = total + da.sum([d for d in da.dims if d not in ("chain", "draw")])
    return xr.Dataset({"total": total.transpose("chain", "draw")})


def summed_log_prior(posterior: xr.Dataset, model: pm.Model, names: list[str]
                     ) -> xr.Dataset:
    """The summed log prior of the free variables `names` at every posterior draw, as
    `summed(pm.compute_log_prior(..., var_names=names))` gives it, in one call.

    PyMC's compute_log_prior calls its compiled function once per draw, and in PyTensor's
    Python mode (python_mode_beside_the_sampler) the Python overhead of 8,000 calls is
    most of the power-scaling check's time wherever the priors are cheap to evaluate.
    Here the graph is vectorised over the draws (a leading batch dimension on every value
    it reads) and evaluated once. Values on the constrained scale without Jacobian, as
    PyMC takes them (the posterior holds constrained values)."""
    from pymc.model.transform.conditioning import remove_value_transforms
    from pytensor.graph.replace import vectorize_graph

    umodel = remove_value_transforms(model)
    terms = umodel.logp(vars=[umodel.named_vars[n] for n in names], sum=False)
    # one output per variable, added here: added in the graph, PyTensor merges them into
    # one addition of as many inputs, more than Python mode (NumPy's ufuncs) can take
    sums = [pt.sum(t) for t in terms]
    sizes = posterior.sizes["chain"], posterior.sizes["draw"]
    total = np.zeros(sizes[0] * sizes[1])
    values = [v for v in umodel.value_vars if v in set(ancestors(sums))]
    if sums:
        batched = [v.type.clone(shape=(None, *v.type.shape))(v.name) for v in values]
        replace = dict(zip(values, batched, strict=True))
        fn = pm.pytensorf.compile(batched, vectorize_graph(sums, replace),
                                  on_unused_input="ignore")
        arrays = [posterior[umodel.values_to_rvs[v].name].to_numpy() for v in values]
        for term in fn(*[a.reshape(-1, *a.shape[2:]).astype(v.dtype)
                         for a, v in zip(arrays, values, strict=True)]):
            # in the order summed() adds compute_log_prior's variables
            total = total + np.broadcast_to(term, total.shape)
    return xr.Dataset({"total": (("chain", "draw"), total.reshape(sizes))},
                      coords={d: posterior[d] for d in ("chain", "draw")})


def sensitivity(idata: xr.DataTree, model: pm.Model, quantities: xr.Dataset,
                threshold: float) -> pd.DataFrame:
    """Power-scaling sensitivity of each reported scalar quantity (Kallioinen et al.
    2023): the change in its posterior when the prior or the likelihood is raised to a
    power near 1. Diagnosis 'prior-data conflict' or 'strong prior / weak likelihood'
    where the prior sensitivity reaches the threshold.

    Only the population-level priors are scaled (models/structure.py).
    Per-patient, per-study or per-therapist latent arrays are left out: scaling them
    changes the hierarchical structure, not the prior information, and would flag every
    parameter of a multilevel model."""
    scalars = [n for n, da in quantities.data_vars.items() if da.ndim == 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log_prior = summed_log_prior(idata["posterior"].to_dataset(), model,
                                     population_variables(model))
        tree = xr.DataTree(children={
            "posterior": xr.DataTree(quantities[scalars]),
            "log_likelihood": xr.DataTree(summed(idata["log_likelihood"].to_dataset())),
            "log_prior": xr.DataTree(log_prior)})
        table = az.psense_summary(tree, threshold=threshold, round_to=6)
    return table.reset_index().rename(columns={"index": "parameter"})


# ---- the priors as built ---------------------------------------------------------------

# How each distribution's arguments read (PyTensor's own parameter order).
PRIOR_FORMATS: dict[str, Callable[[list[str]], str]] = {
    "normal": lambda a: f"Normal(μ = {a[0]}, σ = {a[1]})",
    "halfnormal": lambda a: f"HalfNormal(σ = {a[1]})",
    "beta": lambda a: f"Beta(α = {a[0]}, β = {a[1]})",
    "exponential": lambda a: f"Exponential(scale = {a[0]})",
    "t": lambda a: f"StudentT(ν = {a[0]}, μ = {a[1]}, σ = {a[2]})",
    "halfcauchy": lambda a: f"HalfCauchy(β = {a[1]})",
    "uniform": lambda a: f"Uniform({a[0]}, {a[1]})",
}


def _argument_text(arg: pt.TensorVariable, random: set) -> str:
    """A distribution argument as text: its value(s) when fixed, else the variables it
    depends on."""
    if arg.owner is not None and isinstance(arg.owner.op, RandomVariable):
        return prior_text(arg, random)  # e.g. an LKJ prior's SD distribution
    free = sorted({v.name for v in ancestors([arg]) if v in random and v.name})
    if free:
        return "f(" + ", ".join(free) + ")"
    values = np.unique(np.round(np.asarray(arg.eval(), dtype=float), 4))
    shown = [f"{v:.4g}" for v in values]
    return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"


def prior_text(rv: pt.TensorVariable, random: set) -> str:
    """One random variable's distribution with its arguments, e.g. 'Normal(μ = 0, σ = 2.5)'."""
    node = rv.owner
    op = node.op
    args = [_argument_text(a, random) for a in op.dist_params(node)]
    name = type(op).__name__.removesuffix("RV").lstrip("_")
    if name == "LKJCholeskyCov":
        return f"LKJCholeskyCov(n = {args[0]}, η = {args[1]}; SDs ~ {args[2]})"
    fmt = PRIOR_FORMATS.get(getattr(op, "name", None) or "")
    return fmt(args) if fmt else f"{name}({', '.join(args)})"


def prior_table(model: pm.Model) -> pd.DataFrame:
    """The population-level priors of a model as it was built (models/structure.py):
    each one's distribution and the arguments it got (after any scaling by the data,
    e.g. priors set in units of a measure's SD). Read from the model graph itself, so
    what a report prints is what was sampled."""
    shapes = model.eval_rv_shapes()
    random = set(model.basic_RVs)
    population = set(population_variables(model))
    rows = [{"parameter": rv.name, "values": int(np.prod(shapes[rv.name])),
             "prior": prior_text(rv, random)}
            for rv in model.free_RVs if rv.name in population]
    return pd.DataFrame(rows, columns=["parameter", "values", "prior"])


# ---- all checks of one model ---------------------------------------------------------


def loo_pit_test(predictive: Predictive, post_parts: dict[str, np.ndarray],
                 post_rep: np.ndarray, weights: np.ndarray, settings: CheckSettings,
                 rng: np.random.Generator, seed: int) -> dict[str, Any]:
    """LOO-PIT of the block's units and its uniformity test (`uniformity`), calibrated for
    the values' dependence (`loo_dependence`). `post_rep`: replicates of the thinned
    posterior draws `post_parts`, `weights` their leave-one-unit-out weights.

    `pit_dependence_sets` - 1 further replicate sets per draw are drawn; the PIT uses them
    all, with each draw's weight shared among its sets: from one set of a few hundred
    replicates, the Pareto-smoothed tails pull the PIT values' normal scores in (by about
    1.5% against the exact leave-one-out PIT, bench/RESULTS.md), enough to make the
    calibrated test conservative."""
    p = predictive
    discrete = is_integer_valued(p.observed)
    indicator = unit_indicator(p.group)
    means = [np.asarray(post_rep @ indicator)]
    for _ in range(settings.pit_dependence_sets - 1):
        rep = p.simulate(post_parts, rng)
        means.append(np.asarray((np.round(rep) if discrete else rep) @ indicator))
    pit_values = unit_loo_pit(indicator.T @ p.observed, np.concatenate(means),
                              np.tile(weights, (len(means), 1)) / len(means),
                              rng if discrete else None)
    dependence = loo_dependence(np.stack(means))
    return uniformity(pit_values, settings.pit_prob, seed, dependence,
                      settings.pit_null_draws)


def check_block(observed_name: str, predictive: Predictive, prior_parts: dict[str, np.ndarray],
                post_parts: dict[str, np.ndarray], loglik: np.ndarray, pick: np.ndarray,
                settings: CheckSettings, rng: np.random.Generator, seed: int,
                r_eff: float = 1.0) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Prior and posterior predictive checks and LOO-PIT of one block of data.

    `loglik` (all draws x units) gives the PSIS weights; `pick` the draws replicated.
    LOO-PIT is called unreliable, and not judged, where more than `pit_max_high_k` of
    the units have Pareto k > 0.7 (their leave-one-out weights cannot be trusted)."""
    p = predictive
    y, g, c = p.observed, p.group, p.cluster
    stats_ = PPC_STATISTICS + (("cluster_sd",) if c is not None else ())
    prior_rep = p.simulate(prior_parts, rng)
    post_rep = p.simulate(post_parts, rng)
    discrete = is_integer_valued(y)
    if discrete:
        prior_rep, post_rep = np.round(prior_rep), np.round(post_rep)
    ppc = pd.concat([ppc_table(y, prior_rep, c, stats_, "prior"),
                     ppc_table(y, post_rep, c, stats_, "posterior")], ignore_index=True)
    curves = pd.concat([quantile_curves(y, prior_rep, "prior").query("kind == 'prior'"),
                        quantile_curves(y, post_rep, "posterior")], ignore_index=True)
    weights, k = psis_weights(loglik, r_eff)
    weights = weights[pick]
    weights /= weights.sum(axis=0)
    share_high_k = float((k > PARETO_K_RELIABLE).mean())
    reliable = share_high_k <= settings.pit_max_high_k and not p.conditional_on_units
    test = loo_pit_test(p, post_parts, post_rep, weights, settings, rng, seed)
    pit = pd.DataFrame({"grid": test["grid"], "ecdf": test["ecdf"], "lower": test["lower"],
                        "upper": test["upper"]})
    post_rows = ppc[ppc["kind"] == "posterior"]
    outside = outside_share(prior_rep, p.bounds)
    problems = []
    if outside > settings.prior_outside:
        problems.append(f"{observed_name}: prior predictive puts {outside:.0%} of values "
                        f"outside [{p.bounds[0]:g}, {p.bounds[1]:g}]")
    for _, row in post_rows.iterrows():
        if row["p_value"] < settings.ppc_p or row["p_value"] > 1 - settings.ppc_p:
            problems.append(f"{observed_name}: posterior predictive {row['statistic']} "
                            f"p = {row['p_value']:.3f}")
    if share_high_k > settings.pit_max_high_k:
        problems.append(f"{observed_name}: LOO-PIT not judged, Pareto k > 0.7 for "
                        f"{share_high_k:.0%} of {p.group_name}s")
    elif reliable and not test["passed"]:
        problems.append(f"{observed_name}: LOO-PIT of the {p.group_name}s is not uniform "
                        f"(p = {test['p_value']:.3g} < {1 - settings.pit_prob:.2g})")
    summary = {
        "label": p.label, "values": int(len(y)), "units": int(len(np.unique(g))),
        "unit": p.group_name, "integer_valued": discrete,
        "prior_predictive": {"bounds": [float(b) for b in p.bounds], "share_outside": outside,
                             "q1": float(np.quantile(prior_rep, 0.01)),
                             "q99": float(np.quantile(prior_rep, 0.99))},
        "posterior_predictive": {r["statistic"]: r["p_value"] for _, r in post_rows.iterrows()},
        "loo_pit": {"passed": test["passed"] if reliable else None,
                    "reliable": reliable,
                    "replicates_conditional_on_units": p.conditional_on_units,
                    "test": "pot_c, calibrated for LOO dependence",
                    "p_value": test["p_value"], "pot_c_p_value": test["pot_c_p_value"],
                    "dependence_rank": test["dependence_rank"],
                    "level": 1 - settings.pit_prob, "values_per": p.group_name,
                    "max_outside": test["max_outside"],
                    "band": settings.pit_prob, "max_pareto_k": float(np.max(k)),
                    "share_pareto_k_above_0.7": share_high_k},
        "warnings": problems,
    }
    tables = {"ppc": ppc, "ppc_curves": curves, "loo_pit": pit}
    return summary, {name: t.assign(data=observed_name) for name, t in tables.items()}


def run_checks(model: pm.Model, predictives: dict[str, Predictive], idata: xr.DataTree,
               loglik: np.ndarray, quantities: xr.Dataset, settings: CheckSettings,
               seed: int, model_name: str) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Every check of one model: for each block of its data (`predictives`, e.g. the
    outcome and the alliance) the prior and posterior predictive checks and LOO-PIT,
    then the prior sensitivity of the reported quantities (`quantities`: their draws).

    `loglik` is the pointwise log-likelihood (draws, units), units as in each block's
    `group`. Returns the summary for checks.json and tidy tables.
    """
    rng = np.random.default_rng(seed)
    n = settings.predictive_draws
    post = idata["posterior"].to_dataset()
    pick = thin_indices(post, n, seed)
    parts = {f"{b}:{k}": t for b, p in predictives.items() for k, t in p.parts.items()}
    prior_values = prior_part_values(model, parts, n, seed)
    post_values = part_values(model, parts, thin(post, pick))
    blocks, tables = {}, []
    r_eff = relative_efficiency(post)
    for b, p in predictives.items():
        mine = {k: f"{b}:{k}" for k in p.parts}
        own = loglik if p.loglik is None else post[p.loglik].to_numpy().reshape(
            post.sizes["chain"] * post.sizes["draw"], -1)
        blocks[b], t = check_block(
            b, p, {k: prior_values[v] for k, v in mine.items()},
            {k: post_values[v] for k, v in mine.items()}, own, pick, settings, rng, seed,
            r_eff)
        tables.append(t)
    sens = sensitivity(idata, model, quantities, settings.sensitivity_threshold)
    flagged = sens.loc[sens["diagnosis"] != "✓", "parameter"].tolist()
    # both the prior and the likelihood move the posterior (Kallioinen et al. 2023): the
    # data sit in the prior's tail, so the estimate is a compromise between the two
    conflict = sens.loc[sens["diagnosis"].astype(str).str.contains("conflict"),
                        "parameter"].tolist()
    problems = [w for block in blocks.values() for w in block["warnings"]]
    if conflict:
        problems.append("potential prior-data conflict: " + ", ".join(conflict) + " (the "
                        "posterior moves with both the prior and the likelihood; check the "
                        "priors against this dataset's scale)")
    if others := [q for q in flagged if q not in conflict]:
        problems.append("prior sensitivity: " + ", ".join(others))
    summary = {"model": model_name, "predictive_draws": int(len(pick)), "data": blocks,
               "sensitivity_flagged": flagged, "prior_data_conflict": conflict,
               "warnings": problems, "passed": not problems}
    out = {name: pd.concat([t[name] for t in tables], ignore_index=True)
           for name in ("ppc", "ppc_curves", "loo_pit")}
    out["sensitivity"] = sens
    out["priors"] = prior_table(model)
    return summary, {name: table.assign(model=model_name) for name, table in out.items()}


CHECK_TABLES = ("ppc", "ppc_curves", "loo_pit", "sensitivity", "priors")


def write_check_outputs(checks: list[tuple[dict[str, Any], dict[str, pd.DataFrame]]],
                        out_dir, about: dict[str, Any]) -> None:
    """checks.json (one entry per model) and the tidy tables ppc.csv, ppc_curves.csv,
    loo_pit.csv, sensitivity.csv and priors.csv (model column first)."""
    out_dir = Path(out_dir)
    for name in CHECK_TABLES:
        table = pd.concat([tables[name] for _, tables in checks], ignore_index=True)
        first = [c for c in ("model", "data") if c in table.columns]
        write_csv(table[[*first, *[c for c in table.columns if c not in first]]],
                  out_dir / f"{name}.csv")
    models = {s["model"]: s for s, _ in checks}
    write_json({**about, "passed": all(s["passed"] for s in models.values()),
                "models": models}, out_dir / "checks.json")


def stacking_weights(pointwise: np.ndarray) -> np.ndarray:
    """Stacking weights (Yao et al. 2018) from pointwise leave-out elpd (units, models):
    the weights on the simplex maximising sum_i log sum_k w_k exp(elpd_ik)."""
    top = pointwise.max(axis=1, keepdims=True)
    dens = np.exp(pointwise - top)

    def loss(z):
        w = np.exp(z - z.max())
        w /= w.sum()
        return -np.sum(np.log(dens @ w))

    z = optimize.minimize(loss, np.zeros(pointwise.shape[1]), method="BFGS").x
    w = np.exp(z - z.max())
    return w / w.sum()


def compare_models(logliks: dict[str, np.ndarray], unit: str) -> pd.DataFrame:
    """PSIS-LOO comparison of models of the same data, each log-likelihood given as
    (chains, draws, units) over the same units: elpd, its SE, the difference from the
    best model and its SE, p_loo, the largest Pareto k and stacking weights."""
    trees = {name: xr.DataTree(children={
        "posterior": xr.DataTree(xr.Dataset({"_": (("chain", "draw"), ll[..., 0] * 0)})),
        "log_likelihood": xr.DataTree(xr.Dataset({"loglik": (("chain", "draw", unit), ll)}))})
        for name, ll in logliks.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(trees, method="stacking", round_to="none")
        kmax = {name: float(np.max(az.loo(t, pointwise=True).pareto_k))
                for name, t in trees.items()}
    table = table.reset_index().rename(columns={"index": "model", "elpd": "elpd_loo"})
    table["max_pareto_k"] = table["model"].map(kmax)
    table["unit"] = unit
    keep = ["model", "rank", "elpd_loo", "se", "elpd_diff", "dse", "p", "weight",
            "max_pareto_k", "unit"]
    return table[[c for c in keep if c in table.columns]].rename(columns={"p": "p_loo"})
