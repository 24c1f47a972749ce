"""Trial models (growth, early alliance, RI-CLPM): the closed-form likelihoods against dense
multivariate normals, data preparation, the item-based error SD, and the checks of the
analyses' role mappings. Nothing here samples."""

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from allianceflow.analyses import check_analysis
from allianceflow.errors import ConfigError
from allianceflow.models import early_alliance as early
from allianceflow.models import growth, riclpm
from allianceflow.models.gaussian import (
    intercept_slope_given_data,
    intercept_slope_level_information,
    intercept_slope_loglik,
    intercept_slope_posterior,
    intercept_slope_shift_terms,
)
from allianceflow.models.multilevel import group_intercepts
from allianceflow.reports import headline_parameter
from allianceflow.scoring import score_error_variance
from scipy import stats


def test_intercept_slope_likelihood_and_posterior_match_dense_algebra():
    rng = np.random.default_rng(1)
    patient = np.repeat([0, 1, 2], [4, 1, 6])
    f = rng.uniform(0, 1, 11)
    r, d = rng.normal(size=11), rng.uniform(0.5, 2, 11)
    s0, s1, rho = 0.7, 1.3, -0.4
    g = np.array([[s0**2, rho * s0 * s1], [rho * s0 * s1, s1**2]])
    ll = intercept_slope_loglik(pytensor.shared(r), f, pytensor.shared(d), patient, 3,
                                s0, s1, rho).eval()
    post = intercept_slope_posterior(pytensor.shared(r), f, pytensor.shared(d), patient, 3,
                                     s0, s1, rho).eval()
    for j in range(3):
        m = patient == j
        z = np.c_[np.ones(m.sum()), f[m]]
        cov = np.diag(d[m]) + z @ g @ z.T
        assert ll[j] == pytest.approx(stats.multivariate_normal(np.zeros(m.sum()),
                                                                cov).logpdf(r[m]))
        v = np.linalg.inv(np.linalg.inv(g) + z.T @ np.diag(1 / d[m]) @ z)
        mean = v @ z.T @ (r[m] / d[m])
        assert post[j] == pytest.approx([mean[0], mean[1], v[0, 0], v[0, 1], v[1, 1]])
    # one variance for every row: the design's sums come from NumPy, the same numbers
    for fn in (intercept_slope_loglik, intercept_slope_posterior):
        same = fn(pytensor.shared(r), f, pt.as_tensor(0.8), patient, 3, s0, s1, rho).eval()
        rows = fn(pytensor.shared(r), f, pytensor.shared(np.full(11, 0.8)), patient, 3, s0,
                  s1, rho).eval()
        np.testing.assert_allclose(same, rows, rtol=1e-12)
    np.testing.assert_allclose(
        intercept_slope_level_information(f, pt.as_tensor(0.8), patient, 3, s0, s1, rho).eval(),
        intercept_slope_level_information(f, pytensor.shared(np.full(11, 0.8)), patient, 3,
                                          s0, s1, rho).eval(), rtol=1e-12)


def test_latent_pairs_through_standard_normals_have_the_conditional_law():
    """eta = E[eta | r] + R z has mean and covariance of eta given r, and the change of
    variables is exact: prior(eta) p(r | eta) |d eta / d z| = p(r) N(z), the identity
    the growth model's likelihood rests on. A patient without rows gets eta = L z."""
    rng = np.random.default_rng(3)
    patient = np.repeat([0, 1], [5, 2])  # patient 2 has no rows
    f = rng.uniform(-0.5, 0.5, 7)
    r, d = rng.normal(size=7), rng.uniform(0.2, 1.5, 7)
    s0, s1, rho = 0.8, 0.4, 0.3
    g = np.array([[s0**2, rho * s0 * s1], [rho * s0 * s1, s1**2]])
    zs = pt.matrix("z")
    eta = intercept_slope_given_data(pytensor.shared(r), f, pytensor.shared(d), patient, 3,
                                     s0, s1, rho, zs)
    evaluate = pytensor.function([zs], eta)
    post = intercept_slope_posterior(pytensor.shared(r), f, pytensor.shared(d), patient, 3,
                                     s0, s1, rho).eval()
    marginal = intercept_slope_loglik(pytensor.shared(r), f, pytensor.shared(d), patient, 3,
                                      s0, s1, rho).eval()
    z0 = rng.normal(size=(3, 2))
    at_zero = evaluate(np.zeros((3, 2)))
    # eta is affine in z: its columns are R's
    r_cols = [evaluate(np.eye(2)[[k] * 3]) - at_zero for k in range(2)]
    for j in range(3):
        rmat = np.column_stack([r_cols[0][j], r_cols[1][j]])
        assert at_zero[j] == pytest.approx(post[j, :2])
        assert rmat @ rmat.T == pytest.approx(np.array([[post[j, 2], post[j, 3]],
                                                        [post[j, 3], post[j, 4]]]))
        e = evaluate(z0)[j]
        m = patient == j
        z = np.c_[np.ones(m.sum()), f[m]]
        lik = stats.multivariate_normal(z @ e, np.diag(d[m])).logpdf(r[m]) if m.any() else 0
        lhs = (stats.multivariate_normal(np.zeros(2), g).logpdf(e) + lik
               + np.log(abs(np.linalg.det(rmat))))
        rhs = marginal[j] + stats.norm.logpdf(z0[j]).sum()
        assert lhs == pytest.approx(rhs)
    chol = np.linalg.cholesky(g)
    assert evaluate(z0)[2] == pytest.approx(chol @ z0[2])


def test_a_further_latent_integrated_and_written_given_the_rows_is_exact():
    """A patient's latent A (here the early alliance's true score) that loads on their
    level by a0 and on their slope by a1, Normal(m0, v0) given their score: the outcome's
    density given the score (extra=(v0, a0, a1): G + v0 a a') is the dense marginal, and
    A written as m0 + v0 t / (1 + v0 q) + sqrt(v0 / (1 + v0 q)) z (q, t from
    intercept_slope_shift_terms) is an exact change of variables:
    N(A; m0, v0) p(r | A) |dA/dz| = p(r) N(z). v0 = 0 (an error-free score) gives A = m0."""
    rng = np.random.default_rng(7)
    patient = np.repeat([0, 1, 2], [5, 2, 4])
    f = rng.uniform(-0.5, 0.5, 11)
    r, d = rng.normal(size=11), rng.uniform(0.2, 1.5, 11)
    s0, s1, rho, a0, a1 = 0.8, 0.4, 0.3, 2.5, -1.2
    v0 = np.array([0.3, 1.7, 0.0])
    g = np.array([[s0**2, rho * s0 * s1], [rho * s0 * s1, s1**2]])
    a = np.array([a0, a1])
    marginal = intercept_slope_loglik(pytensor.shared(r), f, pytensor.shared(d), patient, 3,
                                      s0, s1, rho, extra=(pt.as_tensor(v0), a0, a1)).eval()
    q, t = (x.eval() for x in intercept_slope_shift_terms(
        pytensor.shared(r), f, pytensor.shared(d), patient, 3, s0, s1, rho, a0, a1))
    z = rng.normal(size=3)
    shrink = v0 / (1 + v0 * q)
    shift = shrink * t + np.sqrt(shrink) * z  # A - m0
    for j in range(3):
        m = patient == j
        zm = np.c_[np.ones(m.sum()), f[m]]
        cov = np.diag(d[m]) + zm @ g @ zm.T
        dense = stats.multivariate_normal(np.zeros(m.sum()), cov + v0[j] * np.outer(zm @ a, zm @ a))
        assert marginal[j] == pytest.approx(dense.logpdf(r[m]))
        assert q[j] == pytest.approx(a @ zm.T @ np.linalg.solve(cov, zm @ a))
        assert t[j] == pytest.approx(a @ zm.T @ np.linalg.solve(cov, r[m]))
        given_a = stats.multivariate_normal(shift[j] * (zm @ a), cov).logpdf(r[m])
        if v0[j] == 0:
            assert shift[j] == 0 and marginal[j] == pytest.approx(given_a)
            continue
        lhs = (stats.norm(0, np.sqrt(v0[j])).logpdf(shift[j]) + given_a
               + 0.5 * np.log(shrink[j]))
        assert lhs == pytest.approx(marginal[j] + stats.norm.logpdf(z[j]))


def test_group_intercepts_scaled_by_information_keep_their_prior():
    """Scaling the offsets by the data's information is a change of variables: prior
    draws of the intercepts are N(0, sd) whatever the information (so prior predictive
    checks and SBC draw them right), and the level information matches dense algebra."""
    index = np.array([0, 0, 1, 2, 2, 2])
    with pm.Model():
        v = group_intercepts("sd_site", index, 1.0, pt.as_tensor([0.0, 5.0, 50.0, 1.0,
                                                                    2.0, 400.0]))
        sd = pm.modelcontext(None)["sd_site"]
        draws_v, draws_sd = pm.draw([v, sd], draws=20000, random_seed=4)
    ratio = draws_v[:, [0, 2, 3]] / draws_sd[:, None]  # one element per group
    np.testing.assert_allclose(ratio.mean(axis=0), 0, atol=0.03)
    np.testing.assert_allclose(ratio.std(axis=0), 1, atol=0.02)
    rng = np.random.default_rng(5)
    patient = np.repeat([0, 1], [4, 3])
    f, d = rng.uniform(0, 1, 7), rng.uniform(0.5, 2, 7)
    s0, s1, rho = 0.6, 1.1, 0.3
    g = np.array([[s0**2, rho * s0 * s1], [rho * s0 * s1, s1**2]])
    info = intercept_slope_level_information(f, pytensor.shared(d), patient, 2, s0, s1,
                                             rho).eval()
    for j in range(2):
        m = patient == j
        z = np.c_[np.ones(m.sum()), f[m]]
        cov = np.diag(d[m]) + z @ g @ z.T
        assert info[j] == pytest.approx(np.ones(m.sum()) @ np.linalg.solve(cov, np.ones(m.sum())))


def test_intercept_slope_likelihood_stays_finite_with_a_zero_sd():
    patient, f = np.array([0, 0, 0]), np.array([0.0, 0.5, 1.0])
    r = np.array([0.3, -0.2, 0.1])
    ll = intercept_slope_loglik(pytensor.shared(r), f, pytensor.shared(np.ones(3)), patient,
                                1, 0.0, 1.0, 0.5).eval()
    cov = np.eye(3) + np.outer(f, f)  # only the slope varies
    assert ll[0] == pytest.approx(stats.multivariate_normal(np.zeros(3), cov).logpdf(r))


def dense_riclpm_cov(phi, psi, sigma_z, sigma_ri, t):
    """Covariance of a patient's stacked (occasion-major) values under the RI-CLPM."""
    k = phi.shape[0]
    var = [psi]
    for _ in range(1, t):
        var.append(phi @ var[-1] @ phi.T + sigma_z)
    cov = np.zeros((t * k, t * k))
    for a in range(t):
        for b in range(a, t):
            block = np.linalg.matrix_power(phi, b - a) @ var[a]  # cov(w_b, w_a)
            cov[b * k:(b + 1) * k, a * k:(a + 1) * k] = block
            cov[a * k:(a + 1) * k, b * k:(b + 1) * k] = block.T
    return cov + np.kron(np.ones((t, t)), sigma_ri)


def test_riclpm_likelihood_integrates_the_random_intercepts_exactly():
    rng = np.random.default_rng(2)
    k, t = 2, 4
    phi = np.array([[0.4, -0.2], [0.15, 0.3]])

    def spd(scale):
        a = rng.normal(size=(k, k))
        return a @ a.T * scale + np.eye(k) * 0.3

    psi, sigma_z, sigma_ri = spd(0.5), spd(0.3), spd(0.8)
    d = rng.normal(size=(3, t, k))
    last = np.array([3, 1, 0])  # complete, two occasions, one occasion
    ll = riclpm.riclpm_loglik(pt.as_tensor(d), last, pt.as_tensor(phi), pt.as_tensor(psi),
                              pt.as_tensor(sigma_z), pt.as_tensor(sigma_ri), t, k).eval()
    for i in range(3):
        n = last[i] + 1
        cov = dense_riclpm_cov(phi, psi, sigma_z, sigma_ri, n)
        expected = stats.multivariate_normal(np.zeros(n * k), cov).logpdf(d[i, :n].ravel())
        assert ll[i] == pytest.approx(expected)


def test_riclpm_samples_only_cells_missing_inside_a_patients_span():
    sessions = pd.DataFrame({
        "patient": ["a"] * 4 + ["b"] * 4, "session": [1, 2, 3, 4] * 2,
        "x": [1.0, np.nan, 3.0, np.nan, 1.0, 2.0, np.nan, np.nan],
        "y": [1.0, 2.0, 2.0, np.nan, 2.0, np.nan, np.nan, np.nan]})
    data = riclpm.prepare(sessions, riclpm.RiclpmSpec(("x", "y"), 1, 4))
    assert data.last.tolist() == [2, 1]  # a: last seen at occasion 3; b: at 2
    holes = riclpm.latent_cells(data)
    # a: x at occasion 2 (inside); b: y at occasion 2 (inside); nothing after the last
    assert sorted(map(tuple, holes.tolist())) == [(0, 1, 0), (1, 1, 1)]


def test_item_error_sd_is_recovered():
    rng = np.random.default_rng(3)
    true = rng.normal(3, 0.5, 4000)
    items = pd.DataFrame(true[:, None] + rng.normal(0, 0.6, (4000, 8))
                         + np.linspace(-0.3, 0.3, 8))  # items differ in their means
    got = score_error_variance(items, [], 1, 5, "mean")
    assert got["error_sd"] == pytest.approx(0.6 / np.sqrt(8), rel=0.03)
    summed = score_error_variance(items, [], 1, 5, "sum")
    assert summed["error_sd"] == pytest.approx(0.6 * np.sqrt(8), rel=0.03)


def trial_tables():
    sessions = pd.DataFrame({
        "patient": ["a"] * 5 + ["b"] * 5 + ["c"] * 5, "session": [1, 2, 3, 4, 5] * 3,
        "al": [3.0, 3.2, np.nan, 3.6, 3.8, 4.0, 4.1, 4.0, np.nan, np.nan,
               2.0, np.nan, 2.5, 2.4, 2.6],
        "dep": [20.0, 19, 18, np.nan, 15, 25, 24, np.nan, np.nan, np.nan, 30, 29, 28, 27, 26]})
    patients = pd.DataFrame({"patient": ["a", "b", "c"], "treated": [0, 1, np.nan],
                             "age": [30.0, 40, 50]})
    return sessions, patients


def test_growth_rows_keep_partly_observed_sessions_and_count_exclusions():
    sessions, patients = trial_tables()
    spec = growth.GrowthSpec(outcome="dep", alliance="al", start=1, end=5, arm=True,
                             covariates=("age",))
    data = growth.prepare(sessions, patients, spec)
    assert data.n_patients == 2 and data.n_excluded == 1  # c has no arm
    # a: 5 sessions (session 3 has dep only, 4 al only); b: 3 (session 3 al only)
    assert len(data.f) == 8
    assert np.isnan(data.alliance).sum() == 1 and np.isnan(data.y).sum() == 2
    assert data.f.min() == 0 and data.f.max() == 1
    levels, trends = growth.observed_parts(data.patient, data.f, data.alliance, 2)
    slope, at_mid = np.polyfit(np.array([0, 0.25, 0.75, 1]) - 0.5, [3, 3.2, 3.6, 3.8], 1)
    assert (levels[0], trends[0]) == pytest.approx((at_mid, slope))


def test_observed_decomposition_needs_two_alliance_sessions():
    sessions, patients = trial_tables()
    sessions.loc[(sessions["patient"] == "b") & (sessions["session"] > 1), "al"] = np.nan
    spec = growth.GrowthSpec(outcome="dep", alliance="al", start=1, end=5, arm=True,
                             decomposition="observed")
    data = growth.prepare(sessions, patients, spec)
    assert data.n_patients == 1 and data.n_too_few_alliance == 1  # b has one alliance score


def test_early_alliance_keeps_patients_who_missed_the_early_session():
    sessions, patients = trial_tables()
    patients["treated"] = [0, 1, 1]
    spec = early.EarlySpec(outcome="dep", alliance="al", session=2, end=5, arm=True)
    data = early.prepare(sessions, patients, spec)
    # b has no outcome after session 2; c missed the early session but stays
    assert data.n_patients == 2 and data.n_no_outcome == 1
    assert data.early[0] == 3.2 and np.isnan(data.early[1])
    assert data.g.max() == 0 and data.g.min() == pytest.approx(-2 / 3)


INFO = {"name": "t", "measures": ["al", "ers", "dep", "adh"], "roles": {
    "alliance": "al", "outcome": "dep"}, "arm": None, "baseline": ["age"], "levels": [],
    "change": None, "sessions": [1, 2, 3, 4, 5, 6]}


@pytest.mark.parametrize("analysis, message", [
    ({"type": "riclpm", "variables": ["al"]}, "2 to 4 measures"),
    ({"type": "riclpm", "variables": ["al", "mood"]}, "mood, which are not measures"),
    ({"type": "riclpm", "variables": ["al", "dep"], "start": 5}, "at least 3 sessions"),
    ({"type": "growth", "covariates": ["sex"]}, "sex, which are not baseline"),
    ({"type": "growth", "outcome": "bdi"}, "bdi, which are not measures"),
    ({"type": "growth", "start": 4, "end": 2}, "must come before"),
    ({"type": "growth", "by_arm": True}, "needs an arm"),
    ({"type": "moderation"}, "needs `moderators`"),
    ({"type": "moderation", "moderators": ["competence"]}, "competence, which are not"),
    ({"type": "early_alliance", "session": 6}, "before the end"),
    ({"type": "growth", "decomposition": "person_mean"}, "latent or observed"),
])
def test_trial_model_mistakes_are_named(analysis, message):
    with pytest.raises(ConfigError, match=message):
        check_analysis({"name": "x", **analysis}, INFO, "trial.yaml")


def test_trial_model_analyses_that_are_fine_pass():
    for analysis in ({"type": "growth"}, {"type": "moderation", "moderators": ["adh", "age"]},
                     {"type": "early_alliance", "session": 2},
                     {"type": "riclpm", "variables": ["al", "ers", "dep"]}):
        check_analysis({"name": "x", **analysis}, INFO, "trial.yaml")


def test_headline_of_each_analysis_type():
    assert headline_parameter({"type": "riclpm", "variables": ["a", "e", "d"]}) == \
        "indirect[a->e->d]"
    assert headline_parameter({"type": "riclpm", "variables": ["a", "d"]}) == "cl[a->d]"
    assert headline_parameter({"type": "growth"}) == "alliance_within"
    assert headline_parameter({"type": "early_alliance"}) == "early_alliance"


def test_early_alliance_per_sd_is_per_sd_of_the_true_early_alliance(tmp_path):
    """Per SD of the true early alliance over the trial's patients, arm, therapists and
    sites included, not per its residual SD given them (sd_early_alliance)."""
    from allianceflow import synthetic
    from allianceflow.analyses import find_analysis
    from allianceflow.trial_models_stage import early_spec
    from allianceflow.trials import load_trial

    ds = synthetic.cbasp_rct(seed=6, n_patients=40, n_sessions=6, n_sites=2,
                             therapists_per_site=2)
    t = load_trial(synthetic.write_dataset(ds, tmp_path))
    spec = early_spec(find_analysis(t.info, "early_alliance"), t.info)
    data = early.prepare(t.sessions, t.patients, spec)
    assert data.therapist is not None and data.site is not None and spec.arm
    with pytensor.config.change_flags(mode="FAST_COMPILE"):
        model = early.build_model(data, spec)
        names = ["early_alliance", "early_alliance_per_sd", "sd_early_alliance",
                 "alliance_arm", "sd_therapist_alliance", "sd_site_alliance"]
        with model:
            prior = pm.sample_prior_predictive(draws=20, var_names=names, random_seed=2)
    p = {n: prior["prior"][n].to_numpy().ravel() for n in names}
    arm = data.design.x[:, data.design.names.index("arm")]
    sd_true = np.sqrt(p["sd_early_alliance"] ** 2 + p["alliance_arm"] ** 2 * np.var(arm)
                      + p["sd_therapist_alliance"] ** 2 + p["sd_site_alliance"] ** 2)
    np.testing.assert_allclose(p["early_alliance_per_sd"], p["early_alliance"] * sd_true)
    assert not np.allclose(p["early_alliance_per_sd"],
                           p["early_alliance"] * p["sd_early_alliance"])


def test_riclpm_sentence_gives_the_lag_of_the_chain():
    from allianceflow.report_trial_models import analysis_sentence

    rows = pd.DataFrame({"parameter": ["indirect[a->b->c->d]", "indirect[a->b->c]"],
                         "mean": [0.01, 0.02], "q2.5": [0.0, 0.01], "q97.5": [0.02, 0.03]})
    four = analysis_sentence(rows, {"type": "riclpm", "variables": ["a", "b", "c", "d"]})
    assert "d 3 sessions later through b then c with a lag-3" in four
    three = analysis_sentence(rows, {"type": "riclpm", "variables": ["a", "b", "c"]})
    assert "c 2 sessions later through b with a lag-2" in three
