"""Building blocks shared by the trial growth models: patients' correlated level and slope,
therapist and site intercepts, and the patient-level design (arm and baseline covariates).

Therapist and site intercepts are non-centred, scaled by how much their patients' data say
about them (group_intercepts): few patients per therapist inform them weakly, and the
centred form then has funnels that NUTS cannot cross; a site of many patients informs its
intercept strongly, and the plain non-centred form then has a ridge. Patients' outcome
levels and slopes are integrated out (gaussian.intercept_slope_loglik); the alliance's are
written through standard normals given the patient's own scores
(gaussian.intercept_slope_given_data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt


@dataclass(frozen=True)
class PatientDesign:
    """Patient-level predictors: the arm (1 = not the reference level) and standardised
    baseline covariates, for the analysed patients in order."""

    x: np.ndarray  # patients x predictors
    names: list[str]
    centres: dict[str, float]  # covariate means and SDs used to standardise, for readers
    scales: dict[str, float]


def patient_design(patients: pd.DataFrame, arm: bool, covariates: tuple[str, ...]
                   ) -> PatientDesign:
    cols, names, centres, scales = [], [], {}, {}
    if arm:
        cols.append(patients["treated"].to_numpy(dtype=float))
        names.append("arm")
    for cov in covariates:
        v = patients[cov].to_numpy(dtype=float)
        centres[cov], scales[cov] = float(v.mean()), float(v.std()) or 1.0
        cols.append((v - centres[cov]) / scales[cov])
        names.append(f"beta[{cov}]")
    x = np.column_stack(cols) if cols else np.zeros((len(patients), 0))
    return PatientDesign(x=np.array(x, dtype=float), names=names, centres=centres,
                         scales=scales)


def complete_patients(patients: pd.DataFrame, arm: bool, covariates: tuple[str, ...]
                      ) -> pd.Series:
    """Patients with the arm and every covariate known (the others cannot be analysed)."""
    needed = (["treated"] if arm else []) + list(covariates)
    return patients[needed].notna().all(axis=1) if needed else pd.Series(True, patients.index)


def lkj2_corr(name: str, eta: float):
    """The correlation of a 2 x 2 LKJ(eta) matrix: (rho + 1) / 2 ~ Beta(eta, eta)."""
    return pm.Deterministic(name, 2 * pm.Beta(f"{name}_01", eta, eta) - 1)


def pair_prior(names: tuple[str, str, str], scales: tuple[float, float], eta: float = 2.0):
    """SDs and correlation of a (level, slope) pair: HalfNormal(scale) SDs, LKJ(eta)."""
    return (pm.HalfNormal(names[0], scales[0]), pm.HalfNormal(names[1], scales[1]),
            lkj2_corr(names[2], eta))


def group_intercepts(name: str, index: np.ndarray, scale: float, information=None):
    """A random intercept per group (therapist, site): one value per element of `index`
    (group codes 0..G-1). SD prior HalfNormal(scale).

    Without `information`, non-centred: v = sd z, z ~ N(0, 1). That is right while the
    data say little about each group (sd small against the data's standard error of a
    group's level), and it has a ridge in the other case (z = v / sd, so z and sd move
    together), reached in the tail of the SD's posterior when there are few groups (a
    trial's sites).

    With `information` (per element of `index`: how precisely its data fix a shift of
    its level given the other parameters, e.g. gaussian.intercept_slope_level_information),
    each group's offset is scaled by its data: with h the group's total information and
    s = sqrt(1 + sd^2 h),
        z ~ N(0, s),   v = z sd / s,
    which is v ~ N(0, sd) exactly (a change of variables, so prior draws and simulation-
    based calibration stay right), non-centred as sd^2 h -> 0 and centred in units of
    the data's standard error (v = z / sqrt(h)) as sd^2 h grows."""
    groups = int(index.max()) + 1
    sd = pm.HalfNormal(name, scale)
    if information is None:
        z = pm.Normal(f"z_{name}", 0.0, 1.0, shape=groups)
        return (sd * z)[index]
    h = pt.inc_subtensor(pt.zeros(groups)[index], information)
    spread = pt.sqrt(1 + sd**2 * h)
    z = pm.Normal(f"z_{name}", 0.0, spread, shape=groups)
    return (z * sd / spread)[index]


def group_codes(patients: pd.DataFrame, column: str) -> np.ndarray | None:
    """Codes 0..G-1 of a grouping column, or None when it is absent or has one level."""
    if column not in patients:
        return None
    codes = np.array(pd.factorize(patients[column], sort=True)[0], dtype=np.int64)
    return codes if codes.max() > 0 else None


def fixed_effects(names: list[str], scale: float, prefix: str = "", suffix: str = ""):
    """Normal(0, scale) coefficients, one scalar per name, stacked into a vector."""
    if not names:
        return pt.zeros(0)
    return pt.stack([pm.Normal(f"{prefix}{n}{suffix}", 0.0, scale) for n in names])


def patient_weight(n_patients: int, weighted: bool):
    """pm.Data `patient_weight`, 1 per patient (0 leaves a patient out: the K-fold refits
    of trial_kfold swap it), or None for a plain fit, whose graph then carries no
    weights (so that its draws are the same with or without K-fold)."""
    return pm.Data("patient_weight", np.ones(n_patients)) if weighted else None


def weighted_total(ll, weight):
    """The sum of per-patient log-likelihoods, each times its weight where there are weights."""
    return ll.sum() if weight is None else (weight * ll).sum()
