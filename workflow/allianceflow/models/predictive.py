"""What a model's data look like and how to replicate them: the description each model
gives of its data blocks for the posterior checks (checks.py runs them). Here, below the
models, so that a model module needs nothing from the layers above it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytensor.tensor as pt


@dataclass
class Predictive:
    """What a model's data look like and how to replicate them.

    `observed`: the data values the replicates are compared with (n,); `group`: each
    value's unit in the log-likelihood group (an effect, a study, a patient), for
    LOO-PIT; `parts`: tensors of the model evaluated per draw; `simulate`: turns those
    per-draw values (arrays with a leading draw axis) into replicated data (draws, n);
    `label`: what the values are; `bounds`: the values the data can take (e.g. a
    scale's range), for the prior predictive check; `group_name`: what a unit is;
    `cluster`: each value's study or patient, for the test statistic `cluster_sd`;
    `loglik`: where the block's units have their own log-likelihood in the posterior
    (e.g. the alliance of a growth model), its name; else the model's is used.
    """

    observed: np.ndarray
    group: np.ndarray
    parts: dict[str, pt.TensorVariable]
    simulate: Callable[[dict[str, np.ndarray], np.random.Generator], np.ndarray]
    label: str
    bounds: tuple[float, float] = (-np.inf, np.inf)
    group_name: str = "unit"
    cluster: np.ndarray | None = None  # studies or patients, for the spread of their means
    loglik: str | None = None  # posterior variable of this block's own per-unit log-lik
    # replicates keep the unit's own sampled latent effects (e.g. a patient's latent
    # changes): fine for posterior predictive checks, but then LOO-PIT is not a
    # leave-one-unit-out predictive and is reported without being judged
    conditional_on_units: bool = False
