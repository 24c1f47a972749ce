"""Closed-form Gaussian pieces shared by the trial models."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt


def compound_symmetric_loglik(resid, patient: np.ndarray, n_patients: int, sigma, sd_level):
    """Per-patient log density of residuals sharing one Normal(0, sd_level) level.

    Covariance sigma^2 I + s^2 11' for the n residuals of a patient: its determinant is
    sigma^(2(n-1)) (sigma^2 + n s^2), and its inverse applied to r gives
    (r'r - s^2 (sum r)^2 / (sigma^2 + n s^2)) / sigma^2 (Sherman-Morrison).
    """
    n = np.bincount(patient, minlength=n_patients).astype(float)
    ss = pt.inc_subtensor(pt.zeros(n_patients)[patient], resid**2)
    s1 = pt.inc_subtensor(pt.zeros(n_patients)[patient], resid)
    s2, t2 = sigma**2, sd_level**2
    denom = s2 + n * t2
    quad = (ss - t2 * s1**2 / denom) / s2
    logdet = (n - 1) * pt.log(s2) + pt.log(denom)
    return -0.5 * (n * np.log(2 * np.pi) + logdet + quad)


def compound_symmetric_scores(resid, f: np.ndarray, patient: np.ndarray, n_patients: int,
                              sigma, sd_level):
    """Per patient, q = f'C^-1 f and b = f'C^-1 r for residuals r with the compound-symmetric
    covariance C = sigma^2 I + sd_level^2 11' of compound_symmetric_loglik, f being each
    row's loading on a latent of the patient's (Sherman-Morrison, through per-patient sums).
    With the latent's own density these integrate it out (latent_normal_correction)."""
    n = np.bincount(patient, minlength=n_patients).astype(float)
    sf = np.bincount(patient, f, minlength=n_patients)
    sff = np.bincount(patient, f * f, minlength=n_patients)
    sr = pt.inc_subtensor(pt.zeros(n_patients)[patient], resid)
    sfr = pt.inc_subtensor(pt.zeros(n_patients)[patient], f * resid)
    s2, t2 = sigma**2, sd_level**2
    shrink = t2 / (s2 + n * t2)
    return (sff - shrink * sf**2) / s2, (sfr - shrink * sf * sr) / s2


def latent_normal_correction(q: list, b: list, factor: list[list]):
    """What integrating a patient's latent vector out adds to their log density at its mean.

    The data of block k load on latent k only (q[k], b[k]: per-patient vectors from
    compound_symmetric_scores, taken at the latent's mean); the latent is Normal around
    that mean with covariance L L', L = factor (a K x K nested list of scalars, 0 for a
    structural zero). Then (Sylvester's and the push-through identity, Q = diag(q)):
        log p(data) = log p(data | latent = mean) - 1/2 [log|K| - c'K^-1 c],
        K = I + L'QL,  c = L'b.
    K >= I, so its Cholesky factor (unrolled here over the few latents, elementwise over
    patients, differentiable on every backend) stays well conditioned; written with L
    rather than its inverse, it stays finite when a latent's SD goes to zero.
    """
    n = len(q)

    def dot(terms):
        return sum((t for t in terms if t is not None), start=pt.zeros(()))

    def col(a, k):
        return None if isinstance(factor[k][a], int) else factor[k][a]

    kmat = [[dot(col(a, k) * col(c, k) * q[k] for k in range(n)
                 if col(a, k) is not None and col(c, k) is not None) + float(a == c)
             for c in range(n)] for a in range(n)]
    cvec = [dot(col(a, k) * b[k] for k in range(n) if col(a, k) is not None)
            for a in range(n)]
    chol = [[None] * n for _ in range(n)]
    z, logdet = [], 0.0
    for j in range(n):
        pivot = kmat[j][j] - dot(chol[j][p] ** 2 for p in range(j))
        chol[j][j] = pt.sqrt(pivot)
        for i in range(j + 1, n):
            chol[i][j] = (kmat[i][j] - dot(chol[i][p] * chol[j][p] for p in range(j))
                          ) / chol[j][j]
        z.append((cvec[j] - dot(chol[j][p] * z[p] for p in range(j))) / chol[j][j])
        logdet = logdet + pt.log(pivot)
    return -0.5 * (logdet - dot(zj**2 for zj in z))


def _intercept_slope_terms(resid, f, var, patient, n_patients, sd_level, sd_slope, rho,
                           extra=None):
    """Per-patient sums for a random level and slope on f: returns (L entries, K, L'b,
    r'D^-1 r, sum log d, (S, b)); see intercept_slope_loglik. `resid` None: b = Z' D^-1 1
    and 1' D^-1 1 in their places (a shift of all the patient's rows). `extra` (v, a0, a1):
    G + v a a' in place of G, L then its Cholesky factor.

    A 0-d `var` (the same for every row) takes the sums of the design from NumPy: they do
    not change from one gradient to the next, and the scatter-adds over rows are what a
    gradient costs here.

    Scalars (the SDs, rho, a 0-d var) are broadcast to one value per patient once, here:
    every elementwise use of a scalar beside a per-patient vector otherwise adds its own
    broadcast and, in the gradient, its own reduction back to the scalar (a few hundred of
    each in the growth model, a third of its gradient's cost)."""
    def per_patient(values):
        return pt.inc_subtensor(pt.zeros(n_patients)[patient], values)

    ones = pt.ones(n_patients)
    var = pt.as_tensor(var)
    if var.ndim == 0:
        n = np.bincount(patient, minlength=n_patients).astype(float)
        w = ones / var
        var = ones * var
        s00 = w * n
        s01 = w * np.bincount(patient, f, minlength=n_patients)
        s11 = w * np.bincount(patient, f * f, minlength=n_patients)
        logd = n * pt.log(var)
        if resid is None:
            b0, b1, rr = s00, s01, s00
        else:
            b0, b1 = w * per_patient(resid), w * per_patient(f * resid)
            rr = w * per_patient(resid**2)
    else:
        w = 1.0 / var
        s00, s01, s11 = per_patient(w), per_patient(w * f), per_patient(w * f * f)
        logd = per_patient(pt.log(var))
        if resid is None:
            b0, b1, rr = s00, s01, s00
        else:
            b0, b1 = per_patient(w * resid), per_patient(w * f * resid)
            rr = per_patient(w * resid**2)
    l00, l10, l11 = (ones * v for v in (sd_level, rho * sd_slope,
                                        sd_slope * pt.sqrt(1 - rho**2)))
    if extra is not None:
        # G' = L L' + v a a': its determinant as a sum of squares, l00^2 l11^2 +
        # v [(l10 a0 - l00 a1)^2 + l11^2 a0^2], so that l11' stays real when G' is near
        # singular
        v, a0, a1 = extra
        g00 = l00**2 + v * a0**2
        g01 = l00 * l10 + v * a0 * a1
        det = (l00 * l11)**2 + v * ((l10 * a0 - l00 * a1)**2 + (l11 * a0)**2)
        l00 = pt.sqrt(g00)
        l10, l11 = g01 / l00, pt.sqrt(det / g00)
    # K = I + L' S L for lower-triangular L (entries l00, l10, l11)
    k00 = 1 + l00**2 * s00 + 2 * l00 * l10 * s01 + l10**2 * s11
    k01 = l00 * l11 * s01 + l10 * l11 * s11
    k11 = 1 + l11**2 * s11
    c0, c1 = l00 * b0 + l10 * b1, l11 * b1
    return (l00, l10, l11), (k00, k01, k11), (c0, c1), rr, logd, ((s00, s01, s11), (b0, b1))


def intercept_slope_loglik(resid, f: np.ndarray, var, patient: np.ndarray, n_patients: int,
                           sd_level, sd_slope, rho, extra=None):
    """Per-patient log density of residuals sharing a random level and slope on f.

    A patient's residuals r (rows at times f, independent variances d) have covariance
    V = D + Z G Z', Z = [1, f], G = L L' with L = [[s0, 0], [rho s1, s1 sqrt(1 - rho^2)]].
    With S = Z' D^-1 Z, b = Z' D^-1 r and K = I + L' S L (2 x 2, closed form):
        log det V = sum log d + log det K
        r' V^-1 r = r' D^-1 r - (L' b)' K^-1 (L' b)          (Woodbury)
    Written with L rather than G^-1, it stays finite when an SD goes to zero.

    `extra` (v, a0, a1), per patient: a further latent of the patient's, with variance v
    and loadings a0 on the level and a1 on the slope, also integrated out (G + v a a').
    """
    n = np.bincount(patient, minlength=n_patients).astype(float)
    _, (k00, k01, k11), (c0, c1), rr, logd, _ = _intercept_slope_terms(
        resid, f, var, patient, n_patients, sd_level, sd_slope, rho, extra)
    det = k00 * k11 - k01**2
    quad = rr - (k11 * c0**2 - 2 * k01 * c0 * c1 + k00 * c1**2) / det
    return -0.5 * (n * np.log(2 * np.pi) + logd + pt.log(det) + quad)


def intercept_slope_level_information(f: np.ndarray, var, patient: np.ndarray,
                                      n_patients: int, sd_level, sd_slope, rho):
    """Per patient, 1' V^-1 1 for V of intercept_slope_loglik: how precisely the
    patient's rows fix a shift of all of them (a therapist's or site's intercept), the
    patient's own random level and slope integrated out (Woodbury, as there)."""
    _, (k00, k01, k11), (c0, c1), rr, _, _ = _intercept_slope_terms(
        None, f, var, patient, n_patients, sd_level, sd_slope, rho)
    det = k00 * k11 - k01**2
    return rr - (k11 * c0**2 - 2 * k01 * c0 * c1 + k00 * c1**2) / det


def intercept_slope_shift_terms(resid, f: np.ndarray, var, patient: np.ndarray,
                                n_patients: int, sd_level, sd_slope, rho, a0, a1):
    """Per patient, q = a'Z'V^-1 Z a and t = a'Z'V^-1 r for V of intercept_slope_loglik
    and a further latent's loadings a = (a0 on the level, a1 on the slope): what the
    patient's rows say about that latent (its information and score) with their random
    level and slope integrated out. Woodbury as there: with u = L'S a,
        q = a'S a - u'K^-1 u,    t = a'b - u'K^-1 L'b."""
    (l00, l10, l11), (k00, k01, k11), (c0, c1), _, _, ((s00, s01, s11), (b0, b1)) = (
        _intercept_slope_terms(resid, f, var, patient, n_patients, sd_level, sd_slope, rho))
    sa0, sa1 = s00 * a0 + s01 * a1, s01 * a0 + s11 * a1  # S a
    u0, u1 = l00 * sa0 + l10 * sa1, l11 * sa1
    det = k00 * k11 - k01**2
    i00, i01, i11 = k11 / det, -k01 / det, k00 / det  # K^-1
    q = a0 * sa0 + a1 * sa1 - (i00 * u0**2 + 2 * i01 * u0 * u1 + i11 * u1**2)
    t = a0 * b0 + a1 * b1 - (u0 * (i00 * c0 + i01 * c1) + u1 * (i01 * c0 + i11 * c1))
    return q, t


def intercept_slope_posterior(resid, f: np.ndarray, var, patient: np.ndarray,
                              n_patients: int, sd_level, sd_slope, rho):
    """Each patient's random (level, slope) given their residuals: mean and covariance.

    With eta = L z, z ~ N(0, I): z | r ~ N(K^-1 L' b, K^-1), so eta | r has mean
    L K^-1 L' b and covariance L K^-1 L'. Returns a patients x 5 tensor: mean level,
    mean slope, var level, cov, var slope.
    """
    (l00, l10, l11), (k00, k01, k11), (c0, c1), _, _, _ = _intercept_slope_terms(
        resid, f, var, patient, n_patients, sd_level, sd_slope, rho)
    det = k00 * k11 - k01**2
    i00, i01, i11 = k11 / det, -k01 / det, k00 / det  # K^-1
    z0, z1 = i00 * c0 + i01 * c1, i01 * c0 + i11 * c1
    mean0, mean1 = l00 * z0, l10 * z0 + l11 * z1
    v00 = l00**2 * i00
    v01 = l00 * (l10 * i00 + l11 * i01)
    v11 = l10**2 * i00 + 2 * l10 * l11 * i01 + l11**2 * i11
    return pt.stack([mean0, mean1, v00, v01, v11], axis=1)


def intercept_slope_given_data(resid, f: np.ndarray, var, patient: np.ndarray,
                               n_patients: int, sd_level, sd_slope, rho, z):
    """Each patient's random (level, slope) written through standard normals z (n x 2)
    that are scaled and shifted by what the patient's own rows say about it:

        eta = E[eta | r] + R z,   R R' = Cov[eta | r]   (intercept_slope_posterior's),

    with R = L M^-T for K = M M' (so R R' = L K^-1 L'). Given z ~ N(0, I) this eta is
    distributed as the patient's latent given their residuals r, so that the prior of
    eta times the density of r given eta equals the marginal density of r
    (intercept_slope_loglik) times N(z; 0, I): a model adds the first as its likelihood
    and samples z.

    Why: the centred form (eta itself sampled) has a funnel where patients barely differ
    (eta pinned near the mean as the SD goes to zero) and the non-centred one (eta = L z)
    a ridge where a patient's rows pin eta down (z = eta / SD, so z and the SD move
    together). Here z's scale follows the data: eta = L z where the rows say little (a
    patient with no rows gets exactly the non-centred form), eta = estimate + standard
    error times z where they say much, with the weights chosen patient by patient and
    draw by draw from the data and the SDs. K >= I keeps M well conditioned, and R goes
    smoothly to 0 with the SDs.
    """
    (l00, l10, l11), (k00, k01, k11), (c0, c1), _, _, _ = _intercept_slope_terms(
        resid, f, var, patient, n_patients, sd_level, sd_slope, rho)
    m00 = pt.sqrt(k00)
    m10 = k01 / m00
    m11 = pt.sqrt(k11 - m10**2)
    # K^-1 c by the Cholesky factor, then the mean L K^-1 c
    w0 = c0 / m00
    w1 = (c1 - m10 * w0) / m11
    u1 = w1 / m11
    u0 = (w0 - m10 * u1) / m00
    # M^-T = [[1/m00, -m10/(m00 m11)], [0, 1/m11]]; R = L M^-T
    a0 = z[:, 0] / m00 - z[:, 1] * m10 / (m00 * m11)
    a1 = z[:, 1] / m11
    level = l00 * (u0 + a0)
    slope = l10 * (u0 + a0) + l11 * (u1 + a1)
    return pt.stack([level, slope], axis=1)


# ---- replicated data (numpy), for the predictive checks: per-draw parts in, draws out


def _per_draw(value: np.ndarray, draws: int) -> np.ndarray:
    """A per-draw scalar as a (draws, 1) column; per-draw vectors unchanged."""
    value = np.asarray(value, dtype=float)
    return value.reshape(draws, 1) if value.size == draws else value.reshape(draws, -1)


def simulate_compound_symmetric(parts: dict[str, np.ndarray], patient: np.ndarray,
                                n_patients: int, rng: np.random.Generator) -> np.ndarray:
    """mean + a Normal(0, sd_level) level per patient + Normal(0, sigma) per row, the
    model behind compound_symmetric_loglik. parts: mean (draws, n), sigma, sd_level."""
    mean = parts["mean"]
    draws = mean.shape[0]
    level = rng.standard_normal((draws, n_patients)) * _per_draw(parts["sd_level"], draws)
    noise = rng.standard_normal(mean.shape) * _per_draw(parts["sigma"], draws)
    return mean + level[:, patient] + noise


def simulate_intercept_slope(parts: dict[str, np.ndarray], f: np.ndarray, patient: np.ndarray,
                             n_patients: int, rng: np.random.Generator) -> np.ndarray:
    """mean + level_i + slope_i f + Normal(0, var) per row, (level, slope) correlated
    Normal with SDs sd_level, sd_slope and correlation rho: the model behind
    intercept_slope_loglik. parts: mean, var (draws, n or 1), sd_level, sd_slope, rho."""
    mean = parts["mean"]
    draws = mean.shape[0]
    s0, s1, rho = (_per_draw(parts[k], draws) for k in ("sd_level", "sd_slope", "rho"))
    z0, z1 = rng.standard_normal((2, draws, n_patients))
    level = s0 * z0
    slope = s1 * (rho * z0 + np.sqrt(1 - rho**2) * z1)
    noise = rng.standard_normal(mean.shape) * np.sqrt(_per_draw(parts["var"], draws))
    return mean + level[:, patient] + slope[:, patient] * f + noise


def simulate_random_slopes(parts: dict[str, np.ndarray], z: np.ndarray, patient: np.ndarray,
                           n_patients: int, rng: np.random.Generator) -> np.ndarray:
    """mean + z u_i + a Normal(0, sd_level) level per patient + Normal(0, sigma) per row,
    u_i ~ Normal(0, cov_u) drawn afresh for each patient (z: rows x q, each row's loading
    on u): the model behind random_slopes_marginal_loglik, one block.
    parts: mean (draws, n), sigma, sd_level, cov_u (draws, q, q)."""
    mean = parts["mean"]
    draws = mean.shape[0]
    cov = np.asarray(parts["cov_u"]).reshape(draws, z.shape[1], z.shape[1])
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(z.shape[1]))
    u = np.einsum("dij,dpj->dpi", chol, rng.standard_normal((draws, n_patients, z.shape[1])))
    slopes = np.einsum("rq,drq->dr", z, u[:, patient])
    return simulate_compound_symmetric(parts, patient, n_patients, rng) + slopes


def simulate_normal(parts: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """mean + Normal(0, sd) per value. parts: mean (draws, n), sd (per draw or per value)."""
    mean = parts["mean"]
    return mean + rng.standard_normal(mean.shape) * _per_draw(parts["sd"], mean.shape[0])


# ---- per-unit marginal densities (numpy), for leave-one-unit-out: latents integrated


def random_slopes_marginal_loglik(blocks: list[tuple], cov_u: np.ndarray,
                                  n_units: int) -> np.ndarray:
    """Per-unit log density (draws, units) of residuals with the unit's random slopes
    u ~ Normal(0, cov_u) (q of them, shared by the blocks) and each block's random level
    and row noise integrated out.

    blocks: (resid (draws, rows), z (rows, q): each row's loading on u, unit (rows,),
    sigma (draws,), sd_level (draws,)). With C the blocks' compound-symmetric covariance
    (sigma^2 I + sd_level^2 11' per unit and block), Q = Z'C^-1 Z and b = Z'C^-1 r,
    by Woodbury:
        log p = -1/2 [n log 2 pi + log|C| + log|I + S Q| + r'C^-1 r - b'(I + S Q)^-1 S b]
    with S = cov_u; C^-1 is applied through per-unit sums (Sherman-Morrison).
    """
    draws, q = cov_u.shape[0], cov_u.shape[1]
    n_tot = np.zeros(n_units)
    logdet_c = np.zeros((draws, n_units))
    rcr = np.zeros((draws, n_units))
    qm = np.zeros((draws, n_units, q, q))
    b = np.zeros((draws, n_units, q))
    for resid, z, unit, sigma, sd_level in blocks:
        one_hot = np.zeros((len(unit), n_units))
        one_hot[np.arange(len(unit)), unit] = 1.0
        n = one_hot.sum(axis=0)
        s2 = np.asarray(sigma, dtype=float)[:, None] ** 2
        t2 = np.asarray(sd_level, dtype=float)[:, None] ** 2
        shrink = t2 / (s2 + n * t2)  # (draws, units)
        s_r, s_rr = resid @ one_hot, (resid * resid) @ one_hot
        s_z = one_hot.T @ z  # (units, q)
        s_zz = np.einsum("ru,ri,rj->uij", one_hot, z, z)
        s_zr = np.stack([(resid * z[:, i]) @ one_hot for i in range(q)], axis=-1)
        n_tot += n
        logdet_c += (n - 1) * np.log(s2) + np.log(s2 + n * t2)
        rcr += (s_rr - shrink * s_r**2) / s2
        qm += (s_zz[None] - shrink[..., None, None] * s_z[None, :, :, None]
               * s_z[None, :, None, :]) / s2[..., None, None]
        b += (s_zr - shrink[..., None] * s_z[None] * s_r[..., None]) / s2[..., None]
    inner = np.eye(q) + cov_u[:, None] @ qm  # I + S Q
    _, logdet = np.linalg.slogdet(inner)
    sb = np.einsum("dij,duj->dui", cov_u, b)
    quad = np.einsum("dui,dui->du", b, np.linalg.solve(inner, sb[..., None])[..., 0])
    return -0.5 * (n_tot * np.log(2 * np.pi) + logdet_c + logdet + rcr - quad)
