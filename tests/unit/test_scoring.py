"""Item scoring: reverse keys, subscales, prorating, and not scoring too-sparse rows."""

import numpy as np
import pandas as pd
from allianceflow.scoring import reverse_key, score_items, score_measure


def test_reverse_key_on_1_to_5():
    assert reverse_key(pd.Series([1, 2, 3, 4, 5]), 1, 5).tolist() == [5, 4, 3, 2, 1]


def test_score_measure_reverse_and_subscales():
    df = pd.DataFrame({"i1": [5, 1], "i2": [1, 5], "i3": [4, 2], "i4": [2, 4]})
    out = score_measure(df, ["i1", "i2", "i3", "i4"], reverse=["i2", "i4"],
                        subscales={"a": ["i1", "i2"], "b": ["i3", "i4"]}, low=1, high=5)
    # Row 1 after keying: 5, 5, 4, 4 -> total 4.5, a 5, b 4.
    assert out.loc[0].tolist() == [4.5, 5.0, 4.0]
    assert out.loc[1].tolist() == [1.5, 1.0, 2.0]


def test_prorating_and_too_many_missing():
    items = pd.DataFrame({"i1": [2, 2, np.nan], "i2": [4, np.nan, np.nan],
                          "i3": [3, 4, np.nan], "i4": [3, 3, 1], "i5": [3, 3, np.nan]})
    mean = score_items(items, "mean", 0.8)
    total = score_items(items, "sum", 0.8)
    assert mean[0] == 3.0 and total[0] == 15.0
    assert mean[1] == 3.0 and total[1] == 15.0  # 4 of 5 answered: prorated
    assert np.isnan(mean[2]) and np.isnan(total[2])  # 1 of 5: missing, not a partial sum
