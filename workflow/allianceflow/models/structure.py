"""Which free variables of a model are population-level and which are latent, decided in
one place for the prior table, power-scaling and simulation-based calibration.

Latent variables are those with one value per patient, person, study or group, or per
missing cell, whatever their number: the standardised offsets of random effects (named
`z` or `z_<effect>`, multilevel.py, growth.py, early_alliance.py, within_mediation.py) and
the RI-CLPM's cells missed inside a patient's span (`missing_cells`, riclpm.py). Every
other free variable is population-level, however many values it has (a 4-variable
RI-CLPM's 16 lagged paths, a review's moderator effects). The models follow this naming;
tests/unit/test_structure.py builds every model family on two datasets of different
sizes and checks that exactly the latent variables change size with the data."""

from __future__ import annotations

import pymc as pm

LATENT_OFFSET = "z"  # z, or z_<effect>: standard-normal offsets of random effects
MISSING_CELLS = "missing_cells"


def is_latent(name: str) -> bool:
    return name == LATENT_OFFSET or name.startswith(f"{LATENT_OFFSET}_") or name == MISSING_CELLS


def population_variables(model: pm.Model) -> list[str]:
    """The model's population-level free variables, in the model's order."""
    return [rv.name for rv in model.free_RVs if not is_latent(rv.name)]
