"""Sequential (serial) mediation of a treatment effect on latent change scores.

Questions like Klein et al. (2020): does CBASP (vs SP) reduce depression through better
alliance, which lowers interpersonal problems? Change is defined between the sessions
`from` and `to` of trial.yaml. Observed change scores (value at `to` minus value at
`from`) would drop every patient who left early and carry the measurement error of two
sessions into the paths (attenuating them); so each patient's change in each measure k
is a latent variable, measured by all of their sessions in [from, to]:

    y_k,it = level_k,i + f_t change_k,i + e_k,it,   f_t = (t - from) / (to - from)
    level_k,i ~ Normal(mu_level_k, sd_level_k),      e_k,it ~ Normal(0, sigma_k)

The level is Gaussian and enters linearly, so it is integrated out exactly: the
sessions of one patient and measure are jointly normal with compound-symmetric
covariance sigma_k^2 I + sd_level_k^2 1 1' (closed form below). Missed sessions and
dropout are handled by the likelihood (missing at random given the observed sessions).

The path model on the latent changes, mediators m_1..m_K in their causal order:
    change_m_k = alpha_k + a[m_k] x + sum_{j<k} d[m_j->m_k] change_m_j + g_k'w + r_k
    change_y   = alpha_y + c_prime x + sum_k b[m_k] change_m_k + g_y'w + r_y
x is the treatment (1 = the arm that is not the reference level), w the baseline
covariates (standardised) and site dummies; r ~ Normal(0, sd_change).

The latent changes are integrated out too: they are Gaussian and linear in the path
model, (I - D) change_i = c_i + r_i, so change_i ~ N(m_i, L L') with m_i = (I - D)^-1 c_i
and L = (I - D)^-1 diag(sd_change); given them the sessions are independent across
measures. Each patient's likelihood is then a closed form in a few sums of their
sessions (gaussian.latent_normal_correction), and no per-patient latent is sampled.
Sampled as latents (centred), the changes made a funnel with sd_change: in simulation-
based calibration 35 of 100 prior draws had divergent transitions and sd_change[hrsd]
failed the rank test; non-centred, they mixed so poorly when sessions measure change
precisely that posterior means drifted 0.2-0.3 bootstrap SEs from OLS
(tests/validation/test_sequential_vs_ols.py).

Derived quantities, next to the model that defines them: the specific indirect effect
of every ordered chain of mediators, e.g. indirect[alliance] = a[alliance] b[alliance],
indirect[alliance->iip] = a[alliance] d[alliance->iip] b[iip]; indirect_total, the
direct effect c_prime, total = c_prime + indirect_total and pm = indirect_total / total.

Priors scale with each measure's SD s_k over the sessions used: a[m] ~ Normal(0, s_m)
(a treatment moving the mean change by one SD of the measure is very large);
d[i->j] ~ Normal(0, s_j / s_i); b[m] ~ Normal(0, s_y / s_m); c_prime ~ Normal(0, s_y);
covariate effects Normal(0, s_k) per SD of the covariate; intercepts Normal(0, s_k);
sd_change, sd_level and sigma ~ HalfNormal(s_k); mu_level ~ Normal(mean_k, 2 s_k).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from .gaussian import (
    compound_symmetric_loglik,
    compound_symmetric_scores,
    latent_normal_correction,
    simulate_random_slopes,
)
from .multilevel import patient_weight, weighted_total
from .predictive import Predictive


@dataclass(frozen=True)
class SequentialSpec:
    x: str  # "arm" or a patient-level 0/1 column
    mediators: tuple[str, ...]
    y: str
    start: int
    end: int
    covariates: tuple[str, ...] = ()
    site: bool = False


@dataclass(frozen=True)
class MeasureRows:
    patient: np.ndarray  # index into the analysed patients
    f: np.ndarray  # (session - start) / (end - start)
    value: np.ndarray


@dataclass(frozen=True)
class SequentialData:
    x: np.ndarray
    w: np.ndarray  # patients x covariates (standardised; site dummies)
    w_names: list[str]
    measures: dict[str, MeasureRows]
    n_patients: int
    n_excluded: int  # patients without treatment or covariates


def chains(mediators: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every ordered chain of mediators an indirect effect can run through."""
    return [c for k in range(1, len(mediators) + 1) for c in combinations(mediators, k)]


def chain_name(chain: tuple[str, ...]) -> str:
    return f"indirect[{'->'.join(chain)}]"


def prepare(sessions: pd.DataFrame, patients: pd.DataFrame, spec: SequentialSpec,
            treated: str = "treated") -> SequentialData:
    """Patients with treatment and covariates; their sessions in [start, end] per measure."""
    x_col = treated if spec.x == "arm" else spec.x
    cols = [x_col, *spec.covariates] + (["site"] if spec.site else [])
    keep = patients.dropna(subset=cols).reset_index(drop=True)
    index = pd.Series(np.arange(len(keep)), index=keep["patient"].to_numpy())
    blocks = [((keep[c] - keep[c].mean()) / keep[c].std()).to_numpy(dtype=float)[:, None]
              for c in spec.covariates]
    names = list(spec.covariates)
    if spec.site:
        dummies = pd.get_dummies(keep["site"].astype(str), drop_first=True, dtype=float)
        blocks.append(dummies.to_numpy())
        names += [f"site[{s}]" for s in dummies.columns]
    w = np.hstack(blocks) if blocks else np.zeros((len(keep), 0))
    window = sessions[(sessions["session"] >= spec.start) & (sessions["session"] <= spec.end)
                      & sessions["patient"].isin(index.index)]
    measures = {}
    for k in (*spec.mediators, spec.y):
        rows = window.dropna(subset=[k])
        measures[k] = MeasureRows(
            patient=np.array(index[rows["patient"]].to_numpy(), dtype=np.int64),
            f=np.array((rows["session"] - spec.start) / (spec.end - spec.start), dtype=float),
            value=np.array(rows[k], dtype=float))
    return SequentialData(x=np.array(keep[x_col], dtype=float), w=np.array(w, dtype=float),
                          w_names=names, measures=measures, n_patients=len(keep),
                          n_excluded=len(patients) - len(keep))


def build_model(data: SequentialData, spec: SequentialSpec, weighted: bool = False
                ) -> pm.Model:
    """`weighted`: a weight per patient on the likelihood (K-fold refits)."""
    sd = {k: float(r.value.std()) for k, r in data.measures.items()}
    mean = {k: float(r.value.mean()) for k, r in data.measures.items()}
    coords = {"patient": np.arange(data.n_patients)}
    measures = (*spec.mediators, spec.y)
    with pm.Model(coords=coords) as model:
        mean_change: dict[str, pt.TensorVariable] = {}  # E[change_k] given x and w
        # factor[k][j]: how much change k moves with a one-SD residual r_j (L above;
        # 0 where it cannot)
        factor: dict[str, list] = {}
        parts: dict[str, dict[str, pt.TensorVariable]] = {}
        ll, q, b = 0.0, [], []
        for ki, k in enumerate(measures):
            s = sd[k]
            is_y = k == spec.y
            pred = pm.Normal(f"alpha[{k}]", 0.0, s)
            pred += pm.Normal("c_prime" if is_y else f"a[{k}]", 0.0, s) * data.x
            moved = [0] * len(measures)
            for j in (spec.mediators if is_y else spec.mediators[:spec.mediators.index(k)]):
                name = f"b[{j}]" if is_y else f"d[{j}->{k}]"
                coef = pm.Normal(name, 0.0, s / sd[j])
                pred += coef * mean_change[j]
                moved = [m if isinstance(f, int) else m + coef * f
                         for m, f in zip(moved, factor[j], strict=True)]
            if data.w.shape[1]:
                pred += pt.dot(data.w, pm.Normal(f"g[{k}]", 0.0, s, shape=data.w.shape[1]))
            mean_change[k] = pred
            moved[ki] = pm.HalfNormal(f"sd_change[{k}]", s)
            factor[k] = moved
            rows = data.measures[k]
            mu_level = pm.Normal(f"mu_level[{k}]", mean[k], 2 * s)
            sigma, sd_level = pm.HalfNormal(f"sigma[{k}]", s), pm.HalfNormal(f"sd_level[{k}]", s)
            value = pm.Data(f"value[{k}]", rows.value)  # data, so that SBC can swap them
            resid = value - mu_level - rows.f * pred[rows.patient]  # at the mean change
            ll += compound_symmetric_loglik(resid, rows.patient, data.n_patients, sigma,
                                            sd_level)
            q_k, b_k = compound_symmetric_scores(resid, rows.f, rows.patient,
                                                 data.n_patients, sigma, sd_level)
            q.append(q_k)
            b.append(b_k)
            parts[k] = {"mu_level": mu_level, "sigma": sigma, "sd_level": sd_level}
        # the latent changes integrated out: each patient's whole likelihood
        ll += latent_normal_correction(q, b, [factor[k] for k in measures])
        pm.Potential("loglik", weighted_total(ll, patient_weight(data.n_patients, weighted)))
        # each patient's changes ~ N(mean, L L'): for mixed replicates and SBC
        chol = pt.stack([pt.stack([pt.as_tensor(f, dtype="float64") for f in factor[k]])
                         for k in measures])
        cov = chol @ chol.T
        model.change_parts = {"mean": pt.stack([mean_change[k] for k in measures], axis=1),
                              "chol": chol}
        model.measure_parts = parts
        model.mixed_parts = {k: {
            "mean": parts[k]["mu_level"] + data.measures[k].f
            * mean_change[k][data.measures[k].patient],
            "sigma": parts[k]["sigma"], "sd_level": parts[k]["sd_level"],
            "cov_u": cov[ki:ki + 1, ki:ki + 1]} for ki, k in enumerate(measures)}
    return model


def predictive(data: SequentialData, spec: SequentialSpec, model: pm.Model,
               ranges: dict[str, list[float]]) -> dict[str, Predictive]:
    """Replicated sessions of every measure: each patient's change drawn again from the
    path model (given treatment and covariates) and their level around it (mixed
    replicates: a replicate does not know the patient's own change, so LOO-PIT by
    patient can be judged)."""
    blocks = {}
    for k, rows in data.measures.items():
        blocks[k] = Predictive(
            observed=rows.value, group=rows.patient, cluster=rows.patient,
            parts=model.mixed_parts[k],
            simulate=lambda v, rng, rows=rows: simulate_random_slopes(
                v, rows.f[:, None], rows.patient, data.n_patients, rng),
            label=k, bounds=tuple(ranges.get(k, (-np.inf, np.inf))), group_name="patient")
    return blocks


def path_names(spec: SequentialSpec) -> list[str]:
    names = [f"a[{m}]" for m in spec.mediators]
    names += [f"d[{j}->{k}]" for i, k in enumerate(spec.mediators) for j in spec.mediators[:i]]
    return names + [f"b[{m}]" for m in spec.mediators] + ["c_prime"]


# the proportion mediated and its denominator: near-zero totals make it unbounded
RATIOS = {"pm": "total"}


def derived_quantities(post: xr.Dataset, spec: SequentialSpec) -> xr.Dataset:
    """Specific indirect effects of every chain, their sum, total and proportion mediated."""
    out = {}
    for chain in chains(spec.mediators):
        effect = post[f"a[{chain[0]}]"] * post[f"b[{chain[-1]}]"]
        for j, k in zip(chain[:-1], chain[1:], strict=True):
            effect = effect * post[f"d[{j}->{k}]"]
        out[chain_name(chain)] = effect
    out["indirect_total"] = sum(out.values())
    out["total"] = post["c_prime"] + out["indirect_total"]
    out["pm"] = out["indirect_total"] / out["total"]
    return xr.Dataset(out)


def reported_parameters(spec: SequentialSpec) -> list[str]:
    measures = (*spec.mediators, spec.y)
    return (path_names(spec) + [chain_name(c) for c in chains(spec.mediators)]
            + ["indirect_total", "total", "pm"]
            + [f"{p}[{k}]" for p in ("sd_change", "sigma", "sd_level") for k in measures])


def patient_loglik(post: xr.Dataset, data: SequentialData, spec: SequentialSpec,
                   chunk: int = 500) -> xr.DataArray:
    """Each patient's log-likelihood with their latent changes integrated out, per draw:
    the per-patient density that leave-one-patient-out PSIS needs (Vehtari et al. 2016),
    and the same density the model samples with (here in numpy, vectorised over draws;
    the two are tested equal).

    Changes: (I - D) Delta = c_i + r, r ~ N(0, diag(sd_change^2)), c_i from the
    intercepts, treatment and covariates; so Delta ~ N(m_i, S). Sessions of measure k:
    mu_level_k + f Delta_k + level_k + e. With C the block-diagonal compound-symmetric
    covariance of level and e, Q = F'C^-1 F (diagonal), b = F'C^-1 r (r = data - mean):
        log p = -1/2 [n log 2 pi + log|C| + log|I + Q S| + r'C^-1 r - b' S (I + Q S)^-1 b]
    Everything per patient comes from sums of f, f^2, y, f y, y^2 per measure.
    """
    measures = (*spec.mediators, spec.y)
    k_all = len(measures)
    n_p = data.n_patients
    sums = {}
    for k, rows in data.measures.items():
        def per(v, rows=rows):
            return np.bincount(rows.patient, v, minlength=n_p)
        f, y = rows.f, rows.value
        sums[k] = [per(np.ones_like(f)), per(f), per(f * f), per(y), per(f * y), per(y * y)]
    flat = {name: post[name].to_numpy().reshape(-1, *post[name].shape[2:])
            for name in post.data_vars
            if name.startswith(("alpha[", "a[", "d[", "b[", "c_prime", "g[", "sd_change[",
                                "mu_level[", "sigma[", "sd_level["))}
    n_draws = next(iter(flat.values())).shape[0]
    out = np.empty((n_draws, n_p))
    for start in range(0, n_draws, chunk):
        sl = slice(start, min(start + chunk, n_draws))
        nd = sl.stop - sl.start
        d_mat = np.zeros((nd, k_all, k_all))  # D[k, j]: effect of change j on change k
        c = np.zeros((nd, n_p, k_all))
        for ki, k in enumerate(measures):
            is_y = k == spec.y
            c[:, :, ki] = (flat[f"alpha[{k}]"][sl, None]
                           + flat["c_prime" if is_y else f"a[{k}]"][sl, None] * data.x)
            if data.w.shape[1]:
                c[:, :, ki] += flat[f"g[{k}]"][sl] @ data.w.T
            for ji, j in enumerate(spec.mediators if is_y else spec.mediators[:ki]):
                d_mat[:, ki, ji] = flat[f"b[{j}]" if is_y else f"d[{j}->{k}]"][sl]
        inv = np.linalg.inv(np.eye(k_all) - d_mat)  # (nd, K, K)
        m = np.einsum("skj,spj->spk", inv, c)  # mean changes (nd, P, K)
        sd2 = np.stack([flat[f"sd_change[{k}]"][sl] ** 2 for k in measures], axis=1)
        cov = np.einsum("skj,sj,slj->skl", inv, sd2, inv)  # S (nd, K, K)
        q = np.zeros((nd, n_p, k_all))
        b = np.zeros((nd, n_p, k_all))
        total = np.zeros((nd, n_p))
        for ki, k in enumerate(measures):
            n, sf, sff, sy, sfy, syy = sums[k]
            mu = flat[f"mu_level[{k}]"][sl, None]
            s2 = flat[f"sigma[{k}]"][sl, None] ** 2
            t2 = flat[f"sd_level[{k}]"][sl, None] ** 2
            mk = m[:, :, ki]
            sr = sy - n * mu - mk * sf
            sfr = sfy - mu * sf - mk * sff
            srr = (syy + n * mu**2 + mk**2 * sff - 2 * mu * sy - 2 * mk * sfy
                   + 2 * mu * mk * sf)
            denom = s2 + n * t2
            q[:, :, ki] = (sff - t2 * sf**2 / denom) / s2
            b[:, :, ki] = (sfr - t2 * sf * sr / denom) / s2
            logdet_c = np.where(n > 0, (n - 1) * np.log(s2) + np.log(denom), 0.0)
            total += n * np.log(2 * np.pi) + logdet_c + (srr - t2 * sr**2 / denom) / s2
        inner = np.eye(k_all) + q[..., :, None] * cov[:, None, :, :]  # I + Q S
        _, logdet = np.linalg.slogdet(inner)
        sb = np.einsum("skl,spl->spk", cov, b)  # S b
        solved = np.linalg.solve(inner, b[..., None])[..., 0]  # (I + Q S)^-1 b
        quad = np.einsum("spk,spk->sp", sb, solved)  # b' S (I + Q S)^-1 b
        out[sl] = -0.5 * (total + logdet - quad)
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    return xr.DataArray(out.reshape(chains, draws, n_p), dims=("chain", "draw", "patient"))
