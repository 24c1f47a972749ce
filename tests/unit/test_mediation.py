"""Mediation models and stage: the pieces that can be checked without sampling."""

import json

import numpy as np
import pandas as pd
import pytensor
import pytest
import xarray as xr
import yaml
from allianceflow.analyses import check_analysis
from allianceflow.analysis_stage import effect_probabilities
from allianceflow.errors import ConfigError
from allianceflow.models import sequential_mediation as seq
from allianceflow.models import within_mediation as wm
from allianceflow.models.gaussian import compound_symmetric_loglik
from allianceflow.report_trial import effect_table, truth_table
from allianceflow.reports import trial_fit_lines
from allianceflow.trials import load_trial
from scipy import stats


def test_compound_symmetric_loglik_matches_dense_normal():
    rng = np.random.default_rng(0)
    patient = np.array([0, 0, 0, 1, 1, 2])
    resid = rng.normal(size=6)
    sigma, sd_level = 0.7, 1.3
    got = compound_symmetric_loglik(pytensor.shared(resid), patient, 3, sigma, sd_level).eval()
    for p in range(3):
        r = resid[patient == p]
        cov = sigma**2 * np.eye(len(r)) + sd_level**2
        assert got[p] == pytest.approx(stats.multivariate_normal(np.zeros(len(r)), cov).logpdf(r))


def test_lagged_rows_follow_the_session_grid():
    # person 1 misses session 2: x_1 pairs with m at session 2 (missing), so no row
    sessions = pd.DataFrame({
        "patient": ["p"] * 4 + ["q"] * 4, "session": [1, 2, 3, 4] * 2,
        "x": [1, 2, 3, 4, 5, 6, 7, 8], "m": [10, np.nan, 30, 40, 50, 60, 70, 80],
        "y": [100, 200, 300, 400, 500, 600, 700, np.nan]})
    rows = wm.lagged_rows(sessions, wm.WithinSpec(x="x", m="m", y="y", lag=1))
    p = rows[rows["person"] == "p"]
    assert list(p["x"]) == [2, 3]          # x1 -> m2 missing; x4 has no m5
    assert list(p["m"]) == [30, 40]
    assert list(p["y"].fillna(-1)) == [400, -1]  # y at t + 2
    q = rows[rows["person"] == "q"]
    assert list(q["y"].fillna(-1)) == [700, -1, -1]


def test_centring_separates_within_and_between():
    rows = pd.DataFrame({"person": ["b", "b", "a", "a", "a"], "time": [1, 2, 1, 2, 3],
                         "x": [1.0, 3.0, 10.0, 11.0, 12.0], "m": [0.0, 2.0, 5.0, 5.0, 8.0],
                         "y": [1.0, 2.0, 3.0, 4.0, 5.0]})
    d = wm.prepare(rows, wm.WithinSpec(x="x", m="m", y="y"))
    for j in range(d.n_persons):
        assert d.x[d.person == j].sum() == pytest.approx(0)
        assert d.m_within[d.person == j].sum() == pytest.approx(0)
    assert d.m.tolist() == rows["m"].tolist()  # the m equation sees m as measured
    assert d.x_mean.sum() == pytest.approx(0)
    assert d.x_mean[1] - d.x_mean[0] == pytest.approx(2.0 - 11.0)  # persons sorted: a, b


def draws_of(**values) -> xr.Dataset:
    return xr.Dataset({k: (("chain", "draw"), np.full((1, 2), v)) for k, v in values.items()})


def test_sequential_indirect_effects_are_products_along_chains():
    spec = seq.SequentialSpec(x="arm", mediators=("al", "iip"), y="dep", start=1, end=5)
    assert seq.chains(spec.mediators) == [("al",), ("iip",), ("al", "iip")]
    post = draws_of(**{"a[al]": 0.3, "a[iip]": -0.05, "d[al->iip]": -0.4, "b[al]": -2.0,
                       "b[iip]": 5.0, "c_prime": -2.0})
    d = seq.derived_quantities(post, spec)
    assert float(d["indirect[al]"][0, 0]) == pytest.approx(-0.6)
    assert float(d["indirect[iip]"][0, 0]) == pytest.approx(-0.25)
    assert float(d["indirect[al->iip]"][0, 0]) == pytest.approx(-0.6)
    assert float(d["total"][0, 0]) == pytest.approx(-3.45)
    assert float(d["pm"][0, 0]) == pytest.approx(1.45 / 3.45)


def test_within_indirect_effect_includes_the_covariance():
    post = draws_of(a=0.2, b=0.15, c_prime=0.1)
    post["sd_person"] = (("chain", "draw", "effect"), np.tile([0.25, 0.2, 0.1], (1, 2, 1)))
    corr = np.eye(3)
    corr[0, 1] = corr[1, 0] = 0.5
    post["corr_person"] = (("chain", "draw", "effect", "effect_"), np.tile(corr, (1, 2, 1, 1)))
    post["u"] = (("chain", "draw", "person", "effect"), np.zeros((1, 2, 4, 3)))
    d = wm.derived_quantities(post, wm.WithinSpec(x="x", m="m", y="y", centre=False))
    assert float(d["cov_ab"][0, 0]) == pytest.approx(0.025)
    assert float(d["me"][0, 0]) == pytest.approx(0.2 * 0.15 + 0.025)
    assert float(d["c"][0, 0]) == pytest.approx(0.1 + 0.055)
    assert float(d["pme"][0, 0]) == pytest.approx(0.055 / 0.155)


INFO = {"name": "t", "measures": ["al", "iip", "dep"], "scores": ["al", "iip", "dep"],
        "arm": {"reference": "A", "levels": ["A", "B"]}, "change": {"from": 1, "to": 5},
        "baseline": ["age"], "levels": []}


@pytest.mark.parametrize("analysis, info_change, message", [
    ({"x": "arm", "m": ["al", "ipp"], "y": "dep"}, {}, "ipp, which are not measures"),
    ({"x": "arm", "m": ["al"], "y": "dep"}, {"change": None}, "needs `change"),
    ({"x": "arm", "m": ["al"], "y": "dep"}, {"arm": None}, "declares no arm"),
    ({"x": "arm", "m": ["al"], "y": "dep", "covariates": ["sex"]}, {}, "sex are not baseline"),
    ({"m": ["al"], "y": "dep"}, {}, "needs x"),
])
def test_sequential_analysis_mistakes_are_named(analysis, info_change, message):
    a = {"name": "s", "type": "sequential_mediation", **analysis}
    with pytest.raises(ConfigError, match=message):
        check_analysis(a, {**INFO, **info_change}, "trial.yaml")


def test_within_analysis_mistakes_are_named():
    a = {"name": "w", "type": "within_mediation", "x": "al", "m": "iip", "y": "dep", "lag": -1}
    with pytest.raises(ConfigError, match="lag must be"):
        check_analysis(a, INFO, "trial.yaml")
    with pytest.raises(ConfigError, match="m must be one measure"):
        check_analysis({**a, "lag": 1, "m": ["iip"]}, INFO, "trial.yaml")


def test_cleaning_stops_on_a_bad_mediation_analysis(root, copy_tree, tmp_path):
    folder = copy_tree(root / "data/raw/trials/synthetic_cbasp_rct", tmp_path / "trial")
    meta = yaml.safe_load((folder / "trial.yaml").read_text())
    meta["analyses"][0]["m"] = ["alliance", "interpersonal"]
    (folder / "trial.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ConfigError, match="sequential_mediation.*interpersonal"):
        load_trial(folder)


def test_probabilities_only_for_effects():
    d = draws_of(a=1.0, me=-1.0, sd_a=1.0, sigma_y=1.0, pme=1.0)
    rows = effect_probabilities(d, ["a", "me", "sd_a", "sigma_y", "pme"], "w")
    assert dict(zip(rows["parameter"], rows["mean"], strict=True)) == {
        "prob_gt0[a]": 1.0, "prob_gt0[me]": 0.0}


def summary_rows():
    return pd.DataFrame({
        "model": "w", "parameter": ["a", "me", "prob_gt0[me]"], "mean": [0.2, -0.05, 0.01],
        "sd": [0.03, 0.01, np.nan], "q2.5": [0.14, -0.07, np.nan],
        "q97.5": [0.26, -0.03, np.nan], "r_hat": [1.0, 1.0, np.nan],
        "ess_bulk": [3000, 2500, np.nan], "ess_tail": [3000, 2500, np.nan]})


def test_report_tables_read_the_summary():
    t = effect_table(summary_rows())
    assert list(t["parameter"]) == ["a", "me"]
    assert t.set_index("parameter").loc["me", "P(>0)"] == 0.01
    truth = truth_table(summary_rows(), {"note": "x", "a": 0.25, "me": -0.05, "b": 1.0})
    assert truth.set_index("parameter")["inside 95% interval"].to_dict() == {
        "a": True, "me": True}


def test_index_status_and_headline_per_trial(tmp_path):
    info = {"analyses": [{"name": "w", "type": "within_mediation"},
                         {"name": "g", "type": "growth"}]}
    (tmp_path / "w").mkdir()
    summary_rows().to_csv(tmp_path / "w" / "summary.csv", index=False)
    (tmp_path / "w" / "diagnostics.json").write_text(json.dumps(
        {"passed": False, "policy": "warn", "models": {}}))
    statuses, lines = trial_fit_lines(tmp_path, info)
    assert statuses == ["warned"]
    assert lines == ["w: me = -0.050 [-0.070, -0.030]"]


def small_sequential_data(rng, rows: list[int], rows_m2: list[int], x: list[float]):
    """Two mediators and an outcome; sessions of m1 and y for the patients in `rows`, of
    m2 for those in `rows_m2` (uneven on purpose), one covariate."""
    from allianceflow.models import sequential_mediation as seq

    spec = seq.SequentialSpec(x="arm", mediators=("m1", "m2"), y="y", start=0, end=4,
                              covariates=("age",))
    measures = {}
    for k in ("m1", "m2", "y"):
        patient = np.array(rows_m2 if k == "m2" else rows)
        measures[k] = seq.MeasureRows(patient=patient, f=rng.uniform(0, 1, patient.size),
                                      value=rng.normal(0, 1, patient.size))
    return spec, seq.SequentialData(x=np.array(x), w=rng.normal(size=(len(x), 1)),
                                    w_names=["age"], measures=measures, n_patients=len(x),
                                    n_excluded=0)


def test_sequential_patient_loglik_integrates_the_latent_changes_exactly():
    """The per-patient marginal used for LOO against a dense multivariate normal built
    from the path model: changes (I - D)^-1 (c + r), sessions level + f change + noise."""
    import xarray as xr
    from allianceflow.models import sequential_mediation as seq
    from scipy import stats

    rng = np.random.default_rng(8)
    spec, data = small_sequential_data(rng, [0, 0, 0, 1, 2, 2], [0, 1, 1, 1], [0.0, 1.0, 1.0])
    n_p, measures = data.n_patients, data.measures
    p = {"alpha[m1]": 0.2, "a[m1]": 0.5, "alpha[m2]": -0.1, "a[m2]": 0.3, "d[m1->m2]": 0.7,
         "alpha[y]": 0.4, "c_prime": -0.2, "b[m1]": 0.6, "b[m2]": -0.5}
    sd_change = {"m1": 0.8, "m2": 0.5, "y": 0.6}
    level = {"m1": 0.3, "m2": -0.2, "y": 1.0}
    sigma = {"m1": 0.4, "m2": 0.7, "y": 0.5}
    sd_level = {"m1": 0.9, "m2": 0.2, "y": 0.6}
    g = {"m1": np.array([0.1]), "m2": np.array([-0.3]), "y": np.array([0.2])}
    post = {k: ((), v) for k, v in p.items()}
    for k in ("m1", "m2", "y"):
        post |= {f"sd_change[{k}]": ((), sd_change[k]), f"mu_level[{k}]": ((), level[k]),
                 f"sigma[{k}]": ((), sigma[k]), f"sd_level[{k}]": ((), sd_level[k]),
                 f"g[{k}]": (("g_dim",), g[k])}
    ds = xr.Dataset({k: (("chain", "draw", *dims), np.reshape(v, (1, 1, *np.shape(v))))
                     for k, (dims, v) in post.items()})
    got = seq.patient_loglik(ds, data, spec).to_numpy()[0, 0]

    d = np.array([[0, 0, 0], [p["d[m1->m2]"], 0, 0], [p["b[m1]"], p["b[m2]"], 0]])
    inv = np.linalg.inv(np.eye(3) - d)
    s_cov = inv @ np.diag([sd_change[k] ** 2 for k in ("m1", "m2", "y")]) @ inv.T
    for i in range(n_p):
        c = np.array([p["alpha[m1]"] + p["a[m1]"] * data.x[i],
                      p["alpha[m2]"] + p["a[m2]"] * data.x[i],
                      p["alpha[y]"] + p["c_prime"] * data.x[i]])
        c += np.array([g[k][0] for k in ("m1", "m2", "y")]) * data.w[i, 0]
        m = inv @ c
        rows = [(ki, k, j) for ki, k in enumerate(("m1", "m2", "y"))
                for j in np.flatnonzero(measures[k].patient == i)]
        f = np.zeros((len(rows), 3))
        mean, cov, values = [], np.zeros((len(rows), len(rows))), []
        for r, (ki, k, j) in enumerate(rows):
            f[r, ki] = measures[k].f[j]
            mean.append(level[k] + measures[k].f[j] * m[ki])
            values.append(measures[k].value[j])
            for r2, (ki2, _, _) in enumerate(rows):
                if ki2 == ki:
                    cov[r, r2] += sd_level[k] ** 2 + (sigma[k] ** 2 if r == r2 else 0)
        cov += f @ s_cov @ f.T
        expected = stats.multivariate_normal(mean, cov).logpdf(values)
        assert got[i] == pytest.approx(expected, rel=1e-9)


def test_sequential_model_integrates_the_latent_changes_as_patient_loglik_does():
    """The sampled model's likelihood (PyTensor, changes integrated out) against the
    numpy per-patient marginal used for LOO (itself checked against a dense multivariate
    normal above): each patient's share, found by zeroing their weight alone, at a
    random point, with a patient who has no sessions of one mediator."""
    import pymc as pm
    import xarray as xr
    from allianceflow.models import sequential_mediation as seq

    rng = np.random.default_rng(8)
    spec, data = small_sequential_data(rng, [0, 0, 0, 1, 2, 2, 3, 4, 4], [0, 1, 1, 1, 4],
                                       [0.0, 1.0, 1.0, 0.0, 1.0])
    n_p = data.n_patients
    model = seq.build_model(data, spec, weighted=True)
    point = {k: v + rng.normal(0, 0.5, np.shape(v))
             for k, v in model.initial_point(random_seed=3).items()}
    logp = model.compile_logp()

    def at(weight):
        with model:
            pm.set_data({"patient_weight": weight})
        return float(logp(point))

    shares = np.array([at(np.ones(n_p)) - at(np.where(np.arange(n_p) == j, 0.0, 1.0))
                       for j in range(n_p)])
    values = model.compile_fn(model.replace_rvs_by_values(model.free_RVs),
                              inputs=model.value_vars, on_unused_input="ignore")(point)
    post = xr.Dataset({rv.name: (("chain", "draw", *[f"{rv.name}_{i}" for i in range(np.ndim(v))]),
                                 np.reshape(v, (1, 1, *np.shape(v))))
                       for rv, v in zip(model.free_RVs, values, strict=True)})
    np.testing.assert_allclose(shares, seq.patient_loglik(post, data, spec)[0, 0], rtol=1e-10)


def test_a_proportion_mediated_is_read_by_its_median_and_only_where_bounded():
    """pm = indirect / total: where the total's 95% interval includes zero the ratio's
    draws run to both infinities; the rows say so and the report does not print an
    interval for it."""
    from allianceflow.fitting import ratio_rows
    from allianceflow.report_trial import proportion_mediated

    rng = np.random.default_rng(3)
    for total_mean, bounded in ((1.0, 1.0), (0.1, 0.0)):
        total = rng.normal(total_mean, 0.2, (2, 2000))
        indirect = rng.normal(0.5, 0.1, (2, 2000))
        draws = xr.Dataset({"total": (("chain", "draw"), total),
                            "pm": (("chain", "draw"), indirect / total)})
        rows = ratio_rows(draws, seq.RATIOS, "sequential_mediation").set_index("parameter")
        assert rows.loc["bounded[pm]", "mean"] == bounded
        assert rows.loc["median[pm]", "mean"] == pytest.approx(np.median(indirect / total))
        summary = pd.concat([rows, pd.DataFrame({"q2.5": [0.3], "q97.5": [0.7]}, index=["pm"])])
        text = proportion_mediated(summary, "pm")
        assert ("no bounded interval" in text) == (not bounded)
        assert ("0.30 to 0.70" in text) == bool(bounded)
    assert seq.RATIOS == {"pm": "total"} and wm.RATIOS == {"pme": "c"}
