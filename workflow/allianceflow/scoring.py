"""Questionnaire scoring: reverse-keyed items, totals and subscales with prorating."""

from __future__ import annotations

import numpy as np
import pandas as pd


def reverse_key(values: pd.Series, low: float, high: float) -> pd.Series:
    """Reverse an item on its response scale: x -> low + high - x."""
    return low + high - values


def score_items(items: pd.DataFrame, how: str = "mean", min_fraction: float = 0.8) -> pd.Series:
    """Score rows of item responses.

    A row with at least `min_fraction` of its items answered is scored from the
    answered items (a sum is prorated to the full item count); otherwise the
    score is missing, never a silent partial sum.
    """
    answered = items.notna().sum(axis=1)
    enough = answered >= np.ceil(min_fraction * items.shape[1] - 1e-9)
    mean = items.mean(axis=1, skipna=True)
    score = mean if how == "mean" else mean * items.shape[1]
    return score.where(enough & (answered > 0))


def score_measure(sessions: pd.DataFrame, items: list[str], reverse: list[str],
                  subscales: dict[str, list[str]], low: float, high: float,
                  how: str = "mean", min_fraction: float = 0.8) -> pd.DataFrame:
    """Total and subscale scores for one item-based measure (columns 'total', '<subscale>')."""
    keyed = sessions[items].astype(float).copy()
    for item in reverse:
        keyed[item] = reverse_key(keyed[item], low, high)
    out = pd.DataFrame(index=sessions.index)
    out["total"] = score_items(keyed, how, min_fraction)
    for name, cols in subscales.items():
        out[name] = score_items(keyed[cols], how, min_fraction)
    return out


def score_error_variance(items: pd.DataFrame, reverse: list[str], low: float, high: float,
                         how: str = "mean") -> dict[str, float] | None:
    """Measurement-error variance of a session's score, estimated from its items.

    Rows (sessions) with every item answered are decomposed additively into a session
    effect, an item effect and a residual (two-way ANOVA without replication); the
    residual mean square estimates one item's error variance, so the error variance of
    the item mean is MS_residual / k (times k^2 for a sum). This is the error of a
    session's score around the session's true score; a model uses it to undo the
    attenuation of within-patient effects. None with fewer than 2 items or 3 rows.
    """
    keyed = items.astype(float).copy()
    for item in reverse:
        keyed[item] = reverse_key(keyed[item], low, high)
    x = keyed.dropna().to_numpy()
    n, k = x.shape
    if k < 2 or n < 3:
        return None
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0) + x.mean()
    ms = float((resid**2).sum() / ((n - 1) * (k - 1)))
    var = ms / k if how == "mean" else ms * k
    return {"error_sd": var**0.5, "items": k, "sessions": n,
            "method": "two-way (session x item) residual mean square of complete sessions"}
