"""Random-intercept cross-lagged panel model (RI-CLPM; Hamaker, Kuiper & Grasman, 2015),
the lagged model recommended for alliance-outcome dynamics (Falkenstroem et al., 2017,
2022): a lagged outcome in a plain random-intercept model is biased (Nickell), because
the random intercept and the lagged outcome are correlated.

Variables v = 1..K (e.g. alliance, emotion regulation, depression), patient i,
occasion t = 1..T (the trial's sessions from `start` to `end`):
    y_vit = mu_vt + RI_vi + w_vit
    RI_i ~ MVN(0, Sigma_RI)                       stable between-patient differences
    w_i1 ~ MVN(0, Psi_1)                          the first occasion, its own covariance
    w_it = Phi w_i,t-1 + zeta_it,  zeta ~ MVN(0, Sigma_zeta)       within-patient VAR(1)
mu_vt are free occasion means; Phi holds the autoregressive paths ar[v] = Phi[v, v] and
the cross-lagged paths cl[u->v] = Phi[v, u] (u at t-1 on v at t), equal over occasions.
The first occasion is handled explicitly: w_i1 has no predecessor, so it gets its own
free covariance instead of a stationarity assumption or a dropped row.

The random intercepts are integrated out exactly (riclpm_loglik): sampled as latents,
their mean trades off against the occasion means along a direction that NUTS crossed
slowly (bulk ESS 20 for mu in 2 x 300 draws on the default adolescent trial).

Missing data, in the likelihood: after a patient's last observed occasion nothing is
modelled (dropout; missing at random given the observed past); a cell missing before it
(a missed week, or one measure skipped) is a latent value sampled with the rest, so the
chain of transitions stays complete and no observed value is discarded.

Scales: each variable is standardised by its mean and SD over all observed cells before
fitting, so that one set of priors fits any questionnaire; Phi and the SDs are reported
back on the raw scales (cl[u->v] per raw point of u, in raw points of v). Priors on the
standardised scale: mu_vt = level_v + dev_vt, level ~ N(0, 1), dev ~ N(0, 1)
summing to zero over occasions; autoregressive paths ar ~ N(0, 0.4) and cross-lagged
paths cl ~ N(0, 0.2); SDs HalfNormal(1); LKJ(2) on each correlation matrix.
The model separates stable between-patient differences from within-patient deviations
that fluctuate around them, so Phi should be stable (spectral radius below 1): with
N(0, 0.5) on every entry, 29% of the prior's mass for three variables was on explosive
deviations that grow without bound over the occasions (and in simulation-based
calibration those draws took 3-7 times as long to fit); with these priors 4% is.
Within-person cross-lagged effects are small (Orth et al., 2022, Psychological Methods:
.03, .07 and .12 for small, medium and large in RI-CLPMs), so N(0, 0.2) stays weak.

Derived next to the model: the indirect effect along the order of `variables`, the
product of the cross-lags of the chain, e.g. indirect[alliance->emotion_regulation->
depression] = cl[alliance->emotion_regulation] * cl[emotion_regulation->depression]
(alliance at t on depression at t + 2 through emotion regulation at t + 1). Its lag is
the number of arrows: 2 for three variables, 3 for four.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .multilevel import patient_weight, weighted_total
from .predictive import Predictive
from .structure import MISSING_CELLS


@dataclass(frozen=True)
class RiclpmSpec:
    variables: tuple[str, ...]
    start: int
    end: int
    lkj_eta: float = 2.0


@dataclass(frozen=True)
class RiclpmData:
    values: np.ndarray  # patients x occasions x variables, standardised; NaN = missing
    last: np.ndarray  # per patient, index of the last occasion with anything observed
    occasions: list[int]
    means: np.ndarray  # per variable, used to standardise
    sds: np.ndarray
    n_excluded: int  # patients with nothing observed in the window


def prepare(sessions: pd.DataFrame, spec: RiclpmSpec) -> RiclpmData:
    window = sessions[(sessions["session"] >= spec.start) & (sessions["session"] <= spec.end)]
    occasions = sorted(int(s) for s in window["session"].unique())
    cube = np.stack([window.pivot(index="patient", columns="session", values=v)
                     .reindex(columns=occasions).to_numpy(dtype=float)
                     for v in spec.variables], axis=-1)
    seen = ~np.isnan(cube).all(axis=2)
    keep = seen.any(axis=1)
    cube, seen = cube[keep], seen[keep]
    means = np.nanmean(cube, axis=(0, 1))
    sds = np.nanstd(cube, axis=(0, 1))
    last = np.array([np.flatnonzero(row).max() for row in seen])
    return RiclpmData(values=np.array((cube - means) / sds), last=last, occasions=occasions,
                      means=means, sds=sds, n_excluded=int((~keep).sum()))


def latent_cells(data: RiclpmData) -> np.ndarray:
    """Indices (patient, occasion, variable) of cells missing before the patient's last
    observed occasion: these are sampled."""
    n, t, _ = data.values.shape
    inside = np.arange(t)[None, :] <= data.last[:, None]
    return np.argwhere(np.isnan(data.values) & inside[:, :, None])


AR_PRIOR_SD, CL_PRIOR_SD = 0.4, 0.2  # standardised scale; see the module's note


def phi_prior_sd(k: int) -> np.ndarray:
    """Prior SDs of Phi: AR_PRIOR_SD on the diagonal, CL_PRIOR_SD off it."""
    return np.where(np.eye(k, dtype=bool), AR_PRIOR_SD, CL_PRIOR_SD)


def covariance_chol(name: str, k: int, eta: float):
    chol, _, _ = pm.LKJCholeskyCov(name, n=k, eta=eta, sd_dist=pm.HalfNormal.dist(1.0),
                                   compute_corr=True, store_in_trace=False)
    return chol


def riclpm_loglik(d, last: np.ndarray, phi, cov_first, cov_innovation, cov_ri,
                  n_occasions: int, k: int):
    """Per-patient log density of d = y - mu (patients x occasions x K) up to each
    patient's last occasion, with the random intercepts integrated out.

    Given RI, w_t = d_t - RI, and the first occasion and the transitions are
    d_1 - RI ~ N(0, Psi) and g_t = d_t - Phi d_t-1 = B RI + zeta_t, B = I - Phi. The
    density is quadratic in RI, so with RI ~ N(0, Sigma_RI) it integrates in closed form:
    A_m = Sigma_RI^-1 + Psi^-1 + m B' Sigma_zeta^-1 B (m = the patient's transitions),
    b = Psi^-1 d_1 + B' Sigma_zeta^-1 sum_t g_t, and
        log p = -1/2 [(1 + m) K log 2 pi + log|Psi| + m log|Sigma_zeta| + log|Sigma_RI|
                      + log|A_m| + d_1' Psi^-1 d_1 + sum_t g_t' Sigma_zeta^-1 g_t - b' A_m^-1 b]
    A_m depends on the patient only through m, so T small K x K inverses serve everyone.
    """
    t = n_occasions
    inv_first = pt.linalg.inv(cov_first)
    inv_zeta = pt.linalg.inv(cov_innovation)
    inv_ri = pt.linalg.inv(cov_ri)
    b_mat = pt.eye(k) - phi
    g = d[:, 1:, :] - pt.dot(d[:, :-1, :], phi.T)
    active = (np.arange(1, t)[None, :] <= last[:, None]).astype(float)  # n x (t-1)
    g = g * active[:, :, None]
    m = active.sum(axis=1).astype(int)
    d1 = d[:, 0, :]
    s1 = (pt.dot(d1, inv_first) * d1).sum(axis=1)
    s2 = (pt.dot(g, inv_zeta) * g).sum(axis=(1, 2))
    b = pt.dot(d1, inv_first) + pt.dot(pt.dot(g.sum(axis=1), inv_zeta), b_mat)
    core = inv_ri + inv_first
    per_step = b_mat.T @ inv_zeta @ b_mat
    a_inv = pt.stack([pt.linalg.inv(core + j * per_step) for j in range(t)])
    a_logdet = pt.stack([pt.log(pt.linalg.det(core + j * per_step)) for j in range(t)])
    ainv_b = (a_inv[m] * b[:, None, :]).sum(axis=2)
    quad = s1 + s2 - (b * ainv_b).sum(axis=1)
    logdet = (pt.log(pt.linalg.det(cov_first)) + m * pt.log(pt.linalg.det(cov_innovation))
              + pt.log(pt.linalg.det(cov_ri)) + a_logdet[m])
    return -0.5 * ((1 + m) * k * np.log(2 * np.pi) + logdet + quad)


def occasion_covariance(phi: np.ndarray, cov_first: np.ndarray, cov_innovation: np.ndarray,
                        cov_ri: np.ndarray, t: int) -> np.ndarray:
    """Covariance of a patient's stacked values per draw (draws, t k, t k), occasion-major:
    Var(w_1) = Psi, Var(w_t) = Phi Var(w_t-1) Phi' + Sigma_zeta,
    Cov(w_s, w_t) = Phi^(s-t) Var(w_t) for s >= t, plus Sigma_RI in every block."""
    draws, k, _ = phi.shape
    var = [cov_first]
    for _ in range(1, t):
        var.append(phi @ var[-1] @ phi.swapaxes(1, 2) + cov_innovation)
    cov = np.empty((draws, t * k, t * k))
    for a in range(t):
        block = var[a]
        for b in range(a, t):
            cov[:, b * k:(b + 1) * k, a * k:(a + 1) * k] = block
            cov[:, a * k:(a + 1) * k, b * k:(b + 1) * k] = block.swapaxes(1, 2)
            block = phi @ block
    return cov + np.tile(cov_ri, (1, t, t))


def observed_loglik(post: xr.Dataset, data: RiclpmData, chunk: int = 500) -> xr.DataArray:
    """Each patient's log density of their observed cells (standardised scale) up to their
    last occasion, per draw, with the random intercepts and the cells missing before it
    integrated out: the marginal of the multivariate normal above. Given the sampled
    missing cells, a left-out patient's cells would have no density of their own; this is
    the per-patient density that leave-one-patient-out (PSIS and exact refits) needs."""
    n, t, k = data.values.shape
    inside = np.arange(t)[None, :] <= data.last[:, None]
    seen = (~np.isnan(data.values) & inside[:, :, None]).reshape(n, t * k)
    values = np.nan_to_num(data.values).reshape(n, t * k)
    patterns, which = np.unique(seen, axis=0, return_inverse=True)

    def flat(name):
        v = post[name].to_numpy()
        return v.reshape(-1, *v.shape[2:])

    mu = flat("mu").reshape(-1, t * k)
    phi, covs = flat("phi"), [flat(f"cov_{c}_std") for c in ("first", "innovation", "ri")]
    out = np.empty((len(mu), n))
    for start in range(0, len(mu), chunk):
        sl = slice(start, start + chunk)
        cov = occasion_covariance(phi[sl], *(c[sl] for c in covs), t)
        for p, pattern in enumerate(patterns):
            idx = np.flatnonzero(pattern)
            members = np.flatnonzero(which.ravel() == p)
            sub = cov[:, idx][:, :, idx]
            _, logdet = np.linalg.slogdet(sub)
            resid = values[members][None, :, idx] - mu[sl][:, None, idx]
            quad = np.einsum("smi,sij,smj->sm", resid, np.linalg.inv(sub), resid)
            out[sl, members] = -0.5 * (len(idx) * np.log(2 * np.pi) + logdet[:, None] + quad)
    return xr.DataArray(out.reshape(post.sizes["chain"], post.sizes["draw"], n),
                        dims=("chain", "draw", "patient"))


def build_model(data: RiclpmData, spec: RiclpmSpec, weighted: bool = False) -> pm.Model:
    """`weighted`: a weight per patient on the likelihood (K-fold refits)."""
    n, t, k = data.values.shape
    coords = {"variable": list(spec.variables), "from_variable": list(spec.variables),
              "occasion": data.occasions, "patient": np.arange(n)}
    holes = latent_cells(data)
    with pm.Model(coords=coords) as model:
        # occasion means as a level per variable plus zero-sum deviations over occasions:
        # the level trades off against the intercepts' mean, the deviations do not, and
        # sampled jointly as free means they mixed slowly (bulk ESS 43 in 2 x 300 draws)
        level = pm.Normal("mu_level", 0.0, 1.0, dims="variable")
        dev = pm.ZeroSumNormal("mu_deviation", 1.0, dims=("variable", "occasion"))
        mu = pm.Deterministic("mu", level[None, :] + dev.T, dims=("occasion", "variable"))
        phi = pm.Normal("phi", 0.0, phi_prior_sd(k), dims=("variable", "from_variable"))
        covs = {}
        for name in ("ri", "first", "innovation"):
            chol = covariance_chol(f"cov_{name}", k, spec.lkj_eta)
            covs[name] = pm.Deterministic(f"cov_{name}_std", chol @ chol.T,
                                          dims=("variable", "from_variable"))
        values = pm.Data("values", np.nan_to_num(data.values))  # data: SBC swaps them
        weight = patient_weight(n, weighted)  # K-fold refits: 0 leaves a patient out
        if len(holes):
            # their density is the model's own (the likelihood below): no prior of their own
            filled = pm.Flat(MISSING_CELLS, shape=len(holes))
            values = pt.set_subtensor(values[holes[:, 0], holes[:, 1], holes[:, 2]], filled)
            if weight is not None:
                # a left-out patient's missing cells would be improper: standard normal
                pm.Potential("left_out_cells",
                             -0.5 * ((1 - weight[holes[:, 0]]) * filled**2).sum())
        ll = riclpm_loglik(values - mu[None, :, :], data.last, phi, covs["first"],
                           covs["innovation"], covs["ri"], t, k)
        pm.Potential("loglik", weighted_total(ll, weight))
        model.predictive_parts = {"mu": mu, "phi": phi, **{f"cov_{k}": v for k, v in covs.items()}}
    return model


def simulate_cube(parts: dict[str, np.ndarray], n_patients: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Replicated standardised values (draws, patients, occasions, variables): random
    intercepts, the first occasion's deviation, then the VAR(1) of the deviations."""
    mu, phi = parts["mu"], parts["phi"]
    draws, t, k = mu.shape

    def normal(cov):  # (draws, patients, k) from Normal(0, cov) per draw
        chol = np.linalg.cholesky(cov)
        return np.einsum("sij,spj->spi", chol, rng.standard_normal((draws, n_patients, k)))

    ri = normal(parts["cov_ri"])
    w = normal(parts["cov_first"])
    cube = np.empty((draws, n_patients, t, k))
    cube[:, :, 0] = mu[:, None, 0] + ri + w
    for j in range(1, t):
        w = np.einsum("sij,spj->spi", phi, w) + normal(parts["cov_innovation"])
        cube[:, :, j] = mu[:, None, j] + ri + w
    return cube


def predictive(data: RiclpmData, spec: RiclpmSpec, model: pm.Model,
               ranges: dict[str, list[float]]) -> dict[str, Predictive]:
    """Replicated observed cells of each variable, on its raw scale: every patient's
    intercepts and within-patient course drawn again."""
    n = data.values.shape[0]
    blocks = {}
    for v, name in enumerate(spec.variables):
        seen = ~np.isnan(data.values[:, :, v])
        patient = np.nonzero(seen)[0]

        def simulate(parts, rng, v=v, seen=seen):
            cube = simulate_cube(parts, n, rng)[:, :, :, v]
            return cube[:, seen] * data.sds[v] + data.means[v]

        blocks[name] = Predictive(
            observed=data.values[:, :, v][seen] * data.sds[v] + data.means[v],
            group=patient, cluster=patient, parts=model.predictive_parts, simulate=simulate,
            label=name, bounds=tuple(ranges.get(name, (-np.inf, np.inf))),
            group_name="patient")
    return blocks


def derived_quantities(post: xr.Dataset, data: RiclpmData, spec: RiclpmSpec) -> xr.Dataset:
    """Raw-scale paths, SDs and correlations, and the indirect effect along the chain of
    variables (lag: one session per arrow)."""
    names = list(spec.variables)
    sd = dict(zip(names, data.sds, strict=True))
    phi = post["phi"]
    out: dict[str, xr.DataArray] = {}
    for v in names:
        out[f"ar[{v}]"] = phi.sel(variable=v, from_variable=v, drop=True)
    for u in names:
        for v in names:
            if u != v:
                out[f"cl[{u}->{v}]"] = (phi.sel(variable=v, from_variable=u, drop=True)
                                        * sd[v] / sd[u])
    for label in ("ri", "innovation", "first"):
        cov = post[f"cov_{label}_std"]

        def entry(i, j, cov=cov):
            return cov.isel(variable=i, from_variable=j, drop=True)

        for i, u in enumerate(names):
            out[f"sd_{label}[{u}]"] = np.sqrt(entry(i, i)) * sd[u]
            for j in range(i + 1, len(names)):
                out[f"cor_{label}[{u},{names[j]}]"] = entry(i, j) / np.sqrt(entry(i, i)
                                                                            * entry(j, j))
    if len(names) >= 3:
        chain = "->".join(names)
        effect = 1
        for u, v in zip(names[:-1], names[1:], strict=True):
            effect = effect * out[f"cl[{u}->{v}]"]
        out[f"indirect[{chain}]"] = effect
    return xr.Dataset(out)


def reported_parameters(spec: RiclpmSpec, derived: xr.Dataset) -> list[str]:
    order = ("ar[", "cl[", "indirect[", "sd_innovation[", "cor_innovation[", "sd_ri[",
             "cor_ri[", "sd_first[", "cor_first[")
    return [n for prefix in order for n in derived.data_vars if n.startswith(prefix)]
