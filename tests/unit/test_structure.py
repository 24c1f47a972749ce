"""Which free variables are population-level (models/structure.py), checked against the
models' structure: every model family built on two datasets of different sizes (more
patients, studies, therapists and sites), the variables that change size with the data
are exactly the latent ones. And the places that read the split: the prior table,
power-scaling and SBC keep a 4-variable RI-CLPM's 16 lagged paths, and the RI-CLPM's SBC
runs on a template with cells missed inside patients' spans."""

import numpy as np
import pandas as pd
import pytest
from allianceflow import synthetic
from allianceflow.checks import prior_table
from allianceflow.models import riclpm
from allianceflow.models.meta import MetaPriors, build_model, model_specs
from allianceflow.models.structure import is_latent, population_variables
from allianceflow.sbc import TRIAL_CASES, SbcCase, Step, prior_draws, simulate_dataset
from allianceflow.trials import load_trial


def sizes(model) -> dict[str, int]:
    shapes = model.eval_rv_shapes()
    return {rv.name: int(np.prod(shapes[rv.name])) for rv in model.free_RVs}


def assert_latent_exactly_where_sizes_follow_the_data(small, large):
    a, b = sizes(small), sizes(large)
    follows_data = {n for n in a.keys() | b.keys() if a.get(n) != b.get(n)}
    latent = {n for n in a.keys() | b.keys() if is_latent(n)}
    assert follows_data == latent


def review(n_studies: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_study = rng.integers(1, 4, n_studies)
    study = np.repeat([f"s{i}" for i in range(n_studies)], per_study)
    n = rng.integers(30, 300, len(study))
    return pd.DataFrame({"study": study, "es_id": [str(i) for i in range(len(study))],
                         "yi": rng.normal(0.25, 0.15, len(study)), "vi": 1 / (n - 3.0)})


@pytest.mark.parametrize("kind", ["random_effects", "three_level", "pet", "peese",
                                  "selection", "metareg"])
def test_meta_models_have_no_latent_variables(kind):
    def model(n):
        effects = review(n).assign(year=lambda d: 2000 + np.arange(len(d)) % 20)
        specs = model_specs(True, [{"name": "year", "type": "continuous"}], (0.025, 0.05, 0.5), 1)
        spec = next(s for s in specs if s.name.startswith(kind))
        return build_model(spec, effects, MetaPriors())

    assert_latent_exactly_where_sizes_follow_the_data(model(20), model(26))


def trial(kind: str, tmp_path, patients: int, groups: int):
    if kind == "cbasp":
        ds = synthetic.cbasp_rct(seed=6, n_patients=patients, n_sessions=6, n_sites=groups,
                                 therapists_per_site=groups)
    else:
        ds = synthetic.internet_adolescent_trial(seed=6, n_patients=patients, n_weeks=6)
    return load_trial(synthetic.write_dataset(ds, tmp_path / f"{kind}_{patients}"))


@pytest.mark.parametrize("kind", ["cbasp", "internet"])
def test_trial_models_latent_exactly_where_the_patients_set_the_size(kind, tmp_path):
    """More patients, the same sites and therapists: what grows is latent. The offsets
    of therapist and site effects (z_sd_*) are latent without growing; a site's fixed
    effect (a covariate's dummy) grows with the sites, not with the patients, and is
    population-level."""
    small, large = trial(kind, tmp_path, 30, 2), trial(kind, tmp_path, 40, 2)
    grown = set()
    for analysis in small.info["analyses"]:
        a, b = (sizes(TRIAL_CASES[analysis["type"]](analysis, t.info, t.sessions,
                                                     t.patients).model)
                for t in (small, large))
        grows = {n for n in a.keys() | b.keys() if a.get(n) != b.get(n)}
        latent = {n for n in a.keys() | b.keys() if is_latent(n)}
        assert grows <= latent, analysis["name"]
        assert all(n.startswith("z_sd_") for n in latent - grows), analysis["name"]
        grown |= grows
    assert grown  # per-patient arrays were there to be found


def four_measure_sessions(holes: bool) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n, t = 25, 5
    rows = pd.DataFrame({"patient": np.repeat([f"p{i}" for i in range(n)], t),
                         "session": np.tile(np.arange(1, t + 1), n)})
    for v in "abcd":
        rows[v] = rng.normal(size=len(rows)) + np.repeat(rng.normal(size=n), t)
    if holes:  # missed sessions inside the patients' spans
        rows.loc[[7, 13, 31, 52, 88], ["b", "c"]] = np.nan
    return rows


def test_a_four_variable_riclpm_keeps_its_sixteen_lagged_paths():
    spec = riclpm.RiclpmSpec(("a", "b", "c", "d"), 1, 5)
    data = riclpm.prepare(four_measure_sessions(holes=True), spec)
    model = riclpm.build_model(data, spec)
    assert sizes(model)["phi"] == 16 and sizes(model)["missing_cells"] == 10
    population = population_variables(model)
    assert "phi" in population and "missing_cells" not in population
    table = prior_table(model).set_index("parameter")
    assert table.loc["phi", "values"] == 16 and "missing_cells" not in table.index


def test_riclpm_sbc_simulates_on_a_template_with_missed_cells():
    """The missed cells have a Flat prior (their density is the likelihood's): a
    simulation draws every other variable from its prior and simulates the data, and the
    cells stay out of the ranked parameters."""
    import pytensor

    with pytensor.config.change_flags(mode="FAST_COMPILE"):  # one evaluation: no compiling
        simulate_with_missed_cells()


def simulate_with_missed_cells():
    spec = riclpm.RiclpmSpec(("a", "b", "c"), 1, 5)
    data = riclpm.prepare(four_measure_sessions(holes=True), spec)
    model = riclpm.build_model(data, spec)
    seen = ~np.isnan(data.values)
    case = SbcCase("riclpm", model, [Step(model.predictive_parts, lambda v, rng: {
        "values": np.where(seen, riclpm.simulate_cube(v, seen.shape[0], rng)[0], 0.0)})])
    prior = prior_draws(model, 1, seed=3)
    assert "missing_cells" not in prior and {"phi", "mu_level"} <= set(prior.data_vars)
    from allianceflow.checks import part_values

    first = part_values(model, {f"0:{k}": t for k, t in model.predictive_parts.items()}, prior)
    values = simulate_dataset(case, prior, first, np.random.default_rng(0))["values"]
    assert values.shape == data.values.shape and np.isfinite(values).all()
    assert np.all(values[~seen] == 0) and np.all(values[seen] != 0)
