"""The priors of a review's meta-analytic models, set by the measure its effects are on.

One prior cannot serve every review: N(0, 0.5) on the pooled effect suits Fisher z, but a
review of pre-post standardised mean changes (pooled near -2, heterogeneity SD near 1.5,
as psychotherapy data have) would be pulled toward zero by it. So each measure has its
own defaults, on the analysis scale, weakly informative for effects of that kind:

  measure      mu ~ Normal(0, .)  tau ~ HalfNormal(.)  beta ~ Normal(0, .)  reasoning
  fisher_z     0.5                0.5                  0.3                  see below
  smd          1.0                0.5                  0.5
  smc          2.5                1.5                  1.0
  log_ratio    2.0                0.5                  1.0

- fisher_z (correlations, analysed as z = atanh r): one participant's information gives
  an SD of 1 (var z = 1 / (n - 3)); half of it, 0.5, keeps 95% of the prior for the
  pooled correlation within |r| < .76. HalfNormal(0.5) on each heterogeneity SD allows
  anything from homogeneity to SDs of 0.5 (wide for alliance-outcome data); a moderator
  difference of 0.3 in z (about .3 in r) would be very large in this literature.
- smd (between-group standardised mean differences, d or g): var d is about 4 / N, so
  one participant's information gives an SD of 2; half of it, 1, keeps 95% of the prior
  within |d| < 2, beyond any between-group psychotherapy effect. HalfNormal(0.5): the
  heterogeneity SDs of SMDs in Cochrane reviews are mostly below 0.5 (Rhodes et al. 2015).
- smc (pre-post standardised mean changes within a group): psychotherapy changes are
  large (pooled -1 to -2.5 SD) and vary much between studies (SDs near 1 to 1.5), so
  mu ~ N(0, 2.5) (95% within |g| < 5) and HalfNormal(1.5).
- log_ratio (log odds, risk or hazard ratios): N(0, 2) keeps 95% of the prior for the
  pooled ratio between 1/50 and 50; HalfNormal(0.5) is the weakly informative
  heterogeneity prior for log odds ratios that Friede et al. (2017) and Röver et al.
  (2021) discuss.

PET's slope (effect per standard error) and PEESE's (per sampling variance) are set in
config for every measure (meta.priors pet_sd, peese_sd). A review's own `priors` in
review.yaml win over config's meta.priors, which win over the measure's defaults; a
measure this table does not know needs its priors in review.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class MetaPriors:
    mu_sd: float = 0.5
    tau_sd: float = 0.5
    beta_sd: float = 0.3
    pet_sd: float = 2.0
    peese_sd: float = 10.0


# measure -> (the names a review.yaml may give it, its mu_sd, tau_sd, beta_sd)
MEASURES: dict[str, tuple[tuple[str, ...], float, float, float]] = {
    "fisher_z": (("r", "z", "fisherz", "zcor", "cor", "correlation"), 0.5, 0.5, 0.3),
    "smd": (("smd", "d", "g", "cohensd", "hedgesg", "standardisedmeandifference",
             "standardizedmeandifference"), 1.0, 0.5, 0.5),
    "smc": (("smc", "smcr", "smcc", "smd_change", "smdchange", "prepostsmd",
             "standardisedmeanchange", "standardizedmeanchange"), 2.5, 1.5, 1.0),
    "log_ratio": (("or", "logor", "rr", "logrr", "hr", "loghr", "logoddsratio",
                   "logriskratio", "loghazardratio"), 2.0, 0.5, 1.0),
}
SCALE_KEYS = ("mu_sd", "tau_sd", "beta_sd")


def measure_key(measure: str) -> str | None:
    """The MEASURES entry a review's `measure` names (case, spaces and punctuation
    ignored: "Hedges' g" is smd), or None."""
    name = re.sub(r"[^a-z0-9_]", "", str(measure).lower())
    for key, (aliases, *_) in MEASURES.items():
        if name == key or name in aliases:
            return key
    return None


def review_priors(measure: str, config_priors: dict[str, float],
                  own_priors: dict[str, float], source: str) -> tuple[MetaPriors, dict]:
    """The priors of one review and where each came from: review.yaml `priors`, then
    config `meta.priors`, then the measure's defaults. `source` names the review.yaml
    for the error raised when the measure is unknown and no scale is given."""
    given = {**config_priors, **own_priors}
    key = measure_key(measure)
    if key is None and not all(k in given for k in SCALE_KEYS):
        known = ", ".join(f"{k} ({', '.join(a[:3])}, ...)" for k, (a, *_) in MEASURES.items())
        missing = [k for k in SCALE_KEYS if k not in given]
        raise ConfigError(
            f"{source}: measure '{measure}' has no default priors (known measures: {known}); "
            f"name one of them as `measure`, or give `priors: {{{', '.join(missing)}}}` "
            "on the analysis scale")
    defaults = dict(zip(SCALE_KEYS, MEASURES[key][1:], strict=True)) if key else {}
    values = {f.name: f.default for f in fields(MetaPriors)} | defaults | given
    origin: dict[str, Any] = {
        k: ("review.yaml" if k in own_priors else "config" if k in config_priors
            else f"measure {key}" if k in defaults else "default") for k in values}
    return MetaPriors(**values), {"measure": key or measure, "from": origin}


def priors_of_review(info: dict[str, Any], config_priors: dict[str, float]
                     ) -> tuple[MetaPriors, dict]:
    """review_priors for a cleaned review (review.json: its measure and own priors)."""
    return review_priors(info.get("measure", ""), config_priors, info.get("priors", {}),
                         f"review.yaml of {info.get('name', 'the review')}")
