"""The benchmark cases: the data, our model, and the reference fits of the same data
with the same priors (brms through bench/r/brms_fit.R; metafor or lme4 through
bench/r/ml_fit.R).

Each case gives `rows` (the table the R side reads), `build()` (our PyMC model),
`compare` (our parameter -> the reference's name) and the reference settings. Priors are
written out from the same numbers our models scale theirs by, so that both sides fit
the same posterior where the two models are the same.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from allianceflow import synthetic
from allianceflow.models import growth
from allianceflow.models.meta import MetaPriors, ModelSpec, build_model
from allianceflow.trials import load_trial

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT.parent / "shared" / "validation"


@dataclass
class Case:
    name: str
    about: str
    rows: pd.DataFrame
    build: Callable[[], Any]  # -> pm.Model
    compare: dict[str, str]  # our name -> brms name
    brms: dict[str, Any] | None = None  # formula and priors for bench/r/brms_fit.R
    ml: dict[str, Any] | None = None  # settings for bench/r/ml_fit.R
    ml_compare: dict[str, str] = field(default_factory=dict)  # our name -> ML name


def _prior(prior: str, cls: str, coef: str = "", resp: str = "", group: str = ""):
    return {"prior": prior, "class": cls, "coef": coef, "resp": resp, "group": group}


# ---- M1: three-level meta-analysis, Konstantopoulos (2011) --------------------------


def konstantopoulos() -> pd.DataFrame:
    d = pd.read_csv(VALIDATION / "konstantopoulos2011.csv")
    return pd.DataFrame({"study": d["district"].astype(str), "es_id": d["school"].astype(str),
                         "yi": d["yi"], "vi": d["vi"]})


def meta_case(name: str, effects: pd.DataFrame, about: str) -> Case:
    priors = MetaPriors()
    rows = effects.rename(columns={"study": "district", "es_id": "school"})
    return Case(
        name=name, about=about, rows=rows,
        build=lambda: build_model(ModelSpec("three_level", True), effects, priors),
        compare={"mu": "b_Intercept", "tau_study": "sd_district__Intercept",
                 "tau_es": "sd_district:school__Intercept"},
        brms={"formula": "bf(yi | se(sqrt(vi)) ~ 1 + (1 | district/school))",
              "priors": [_prior(f"normal(0, {priors.mu_sd})", "Intercept"),
                         _prior(f"normal(0, {priors.tau_sd})", "sd")]},
        ml={"tool": "metafor", "random": "~ 1 | district/school",
            "keep": ["mu", "sd_district", "sd_school"]},
        ml_compare={"mu": "mu", "tau_study": "sd_district", "tau_es": "sd_school"})


def m1() -> Case:
    return meta_case("M1", konstantopoulos(), "three-level meta-analysis, Konstantopoulos "
                     "(2011): 56 schools in 11 districts (shared/validation)")


# ---- M2: growth model, 300 patients x 12 sessions, therapist level ------------------

GROWTH_COMPARE = {
    "intercept": "b_Intercept", "time": "b_f", "arm": "b_x", "arm:time": "b_f:x",
    "beta[hrsd_baseline]": "b_base", "beta[hrsd_baseline]:time": "b_f:base",
    "alliance_between": "b_level_c", "alliance_trend:time": "b_f:trend_c",
    "alliance_within": "b_within", "sd_intercept": "sd_patient__Intercept",
    "sd_slope": "sd_patient__f", "corr_intercept_slope": "cor_patient__Intercept__f",
    "sd_therapist": "sd_therapist__Intercept", "sigma": "sigma"}
GROWTH_ML = {"intercept": "(Intercept)", "time": "f", "arm": "x", "arm:time": "f:x",
             "beta[hrsd_baseline]": "base", "beta[hrsd_baseline]:time": "f:base",
             "alliance_between": "level_c", "alliance_trend:time": "f:trend_c",
             "alliance_within": "within", "sd_intercept": "patient:(Intercept)",
             "sd_slope": "patient:f", "corr_intercept_slope": "patient:(Intercept):f",
             "sd_therapist": "therapist:(Intercept)", "sigma": "Residual"}


@cache
def growth_trial(n_patients: int, n_sessions: int, seed: int = 300):
    """A synthetic CBASP-shaped trial (allianceflow.synthetic, fixed seed)."""
    ds = synthetic.cbasp_rct(seed=seed, n_patients=n_patients, n_sessions=n_sessions,
                             n_sites=1, therapists_per_site=max(4, n_patients // 25))
    ds.name = f"bench_growth_{n_patients}x{n_sessions}"
    folder = synthetic.write_dataset(ds, tempfile.mkdtemp(prefix="bench_"))
    return load_trial(folder)


def growth_case(name: str, n_patients: int, n_sessions: int) -> Case:
    """The growth model with the observed decomposition (each patient's OLS alliance
    level and trend plugged in, the residual as the within part), random intercept and
    slope per patient, a therapist intercept: a model brms and lme4 can express too.
    (Ours integrates the patients' levels and slopes out; brms samples them.)"""
    trial = growth_trial(n_patients, n_sessions)
    spec = growth.GrowthSpec(outcome="hrsd", alliance="alliance", start=1, end=n_sessions,
                             arm=True, covariates=("hrsd_baseline",), therapist=True,
                             decomposition="observed")
    data = growth.prepare(trial.sessions, trial.patients, spec)
    level, trend = data.observed_parts
    has = growth.outcome_rows(data)
    p = data.patient
    rows = pd.DataFrame({
        "patient": p, "therapist": data.therapist[p], "f": data.f, "y": data.y,
        "x": data.design.x[p, 0], "base": data.design.x[p, 1],
        "level_c": level[p] - data.alliance_centre, "trend_c": trend[p] - data.trend_centre,
        "within": data.alliance - level[p] - trend[p] * (data.f - 0.5)})[has]
    y_all = data.y[~np.isnan(data.y)]
    s_y = float(y_all.std())
    s_a = float(data.alliance[~np.isnan(data.alliance)].std())
    fixed = ["f", "x", "f:x", "base", "f:base"]
    priors = ([_prior(f"normal({y_all.mean()}, {2 * s_y})", "b", "Intercept")]
              + [_prior(f"normal(0, {s_y})", "b", c) for c in fixed]
              + [_prior(f"normal(0, {s_y / s_a})", "b", c)
                 for c in ("level_c", "f:trend_c", "within")]
              + [_prior(f"normal(0, {s_y})", "sd", group="patient"),
                 _prior(f"normal(0, {s_y / 2})", "sd", group="therapist"),
                 _prior(f"normal(0, {s_y})", "sigma"), _prior("lkj(2)", "cor")])
    return Case(
        name=name, about=f"growth model (observed decomposition, therapist level), synthetic "
        f"trial of {data.n_patients} patients x {n_sessions} sessions, {len(rows)} rows",
        rows=rows, build=lambda: growth.build_model(data, spec), compare=GROWTH_COMPARE,
        brms={"formula": "bf(y ~ 0 + Intercept + f + x + f:x + base + f:base + level_c"
              " + f:trend_c + within + (1 + f | patient) + (1 | therapist))",
              "priors": priors},
        ml={"tool": "lme4", "formula": "y ~ f + x + f:x + base + f:base + level_c + f:trend_c"
            " + within + (1 + f | patient) + (1 | therapist)"},
        ml_compare=GROWTH_ML)


def m2() -> Case:
    return growth_case("M2", 300, 12)


# ---- M3: within-person mediation, Bolger & Laurenceau (2013) ch. 9 -------------------


def m3() -> Case:
    """bmlm's 1-1-1 model. Ours: correlated random a, b, c' (LKJ(4)), random intercepts
    of m and y integrated out and uncorrelated with the paths. brms: the same as a
    multivariate model, the paths sharing one correlation block across the two
    equations (`|p|`) and each intercept its own term."""
    from allianceflow.models import within_mediation as wm  # imports the checks (ArviZ)

    d = pd.read_csv(VALIDATION / "blch9.csv")
    spec = wm.WithinSpec(x="x", m="m", y="y", centre=False, time=False)
    rows = pd.DataFrame({"person": d["id"], "time": d["time"], "x": d["x"], "m": d["m"],
                         "y": d["y"]})
    data = wm.prepare(rows, spec)
    sx, sm, sy = data.x.std(), data.m_within.std(), data.y.std()
    msd = data.m.std()
    priors = [
        _prior(f"normal({data.m.mean()}, {2 * msd})", "b", "Intercept", "m"),
        _prior(f"normal({data.y.mean()}, {2 * sy})", "b", "Intercept", "y"),
        _prior(f"normal(0, {sm / sx})", "b", "x", "m"),
        _prior(f"normal(0, {sy / sm})", "b", "m", "y"),
        _prior(f"normal(0, {sy / sx})", "b", "x", "y"),
        _prior(f"normal(0, {sm / sx})", "sd", "x", "m", "person"),
        _prior(f"normal(0, {sy / sm})", "sd", "m", "y", "person"),
        _prior(f"normal(0, {sy / sx})", "sd", "x", "y", "person"),
        _prior(f"normal(0, {msd})", "sd", "Intercept", "m", "person"),
        _prior(f"normal(0, {sy})", "sd", "Intercept", "y", "person"),
        _prior(f"normal(0, {msd})", "sigma", resp="m"),
        _prior(f"normal(0, {sy})", "sigma", resp="y"),
        _prior("lkj(4)", "cor")]
    return Case(
        name="M3", about="within-person mediation (bmlm's 1-1-1 model), Bolger & "
        "Laurenceau (2013) ch. 9: 100 persons x 21 days (shared/validation)",
        rows=rows.assign(person=rows["person"].astype(str)),
        build=lambda: wm.build_model(data, spec),
        compare={"a": "b_m_x", "b": "b_y_m", "c_prime": "b_y_x", "sd_a": "sd_person__m_x",
                 "sd_b": "sd_person__y_m", "sd_c_prime": "sd_person__y_x",
                 "corr_ab": "cor_person__m_x__y_m", "sigma_m": "sigma_m",
                 "sigma_y": "sigma_y"},
        brms={"formula": "bf(m ~ 0 + Intercept + x + (1 | person) + (0 + x | p | person))"
              " + bf(y ~ 0 + Intercept + x + m + (1 | person) + (0 + x + m | p | person))"
              " + set_rescor(FALSE)", "priors": priors})


def derived(case: str, post):
    """Our quantities compared that the model derives (e.g. the SD of a from the
    covariance of the paths)."""
    if case == "M3":
        from allianceflow.models import within_mediation as wm

        spec = wm.WithinSpec(x="x", m="m", y="y", centre=False, time=False)
        return wm.derived_quantities(post, spec)
    return None


# ---- scaling ------------------------------------------------------------------------


def synthetic_review(n_effects: int) -> pd.DataFrame:
    """A synthetic review of n_effects effect sizes in about n_effects / 1.5 studies."""
    n_studies = max(2, int(n_effects / 1.5))
    ds = synthetic.alliance_outcome_review(seed=n_effects, n_studies=n_studies,
                                           n_effects=n_effects)
    t = ds.tables["effects"]
    z = np.arctanh(t["r"].to_numpy(float))
    return pd.DataFrame({"study": t["study"].astype(str), "es_id": np.arange(len(t)).astype(str),
                         "yi": z, "vi": 1.0 / (t["n"].to_numpy(float) - 3)})


CASES: dict[str, Callable[[], Case]] = {"M1": m1, "M2": m2, "M3": m3}
for _n in (100, 1000, 10000):
    CASES[f"meta_{_n}"] = (lambda n=_n: meta_case(
        f"meta_{n}", synthetic_review(n), f"three-level meta-analysis, {n} synthetic effects"))
for _n in (100, 1000, 5000):
    CASES[f"growth_{_n}"] = (lambda n=_n: growth_case(f"growth_{n}", n, 12))
