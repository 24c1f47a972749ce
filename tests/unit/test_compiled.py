"""allianceflow.compiled: with Numba, callbacks cached on disk that sample exactly what
nutpie's own compilation samples, swap data like it, and load in a new process or for new
data of another size instead of compiling again; with JAX (the default), nutpie's JAX
compilation with XLA's executables in JAX's persistent cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import nutpie
import pymc as pm
import pytest
from allianceflow.compiled import compile_model

# A small model with the kinds of data the package's models use: float and integer arrays
# of rank 1 and 2 as pm.Data, a free vector and a positive scalar.
MODEL_SOURCE = textwrap.dedent("""
    import numpy as np
    import pymc as pm

    def build(n, seed=0):
        rng = np.random.default_rng(seed)
        group = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 2))
        y = 0.5 * x[:, 0] - 0.2 * x[:, 1] + np.array([0.0, 0.3, -0.3])[group] + rng.normal(size=n)
        with pm.Model() as model:
            x_d = pm.Data("x", x)
            g_d = pm.Data("group", group)
            y_d = pm.Data("y", y)
            beta = pm.Normal("beta", 0, 1, shape=2)
            level = pm.Normal("level", 0, 1, shape=3)
            sigma = pm.HalfNormal("sigma", 1)
            pm.Normal("obs", (x_d * beta).sum(axis=1) + level[g_d], sigma, observed=y_d)
        return model, {"x": x, "group": group, "y": y}
""")
namespace: dict = {}
exec(MODEL_SOURCE, namespace)
build = namespace["build"]

SETTINGS = dict(draws=60, tune=60, chains=2, cores=1, seed=3, progress_bar=False)


def draws(compiled) -> dict[str, np.ndarray]:
    post = nutpie.sample(compiled, **SETTINGS)["posterior"]
    return {k: post[k].to_numpy() for k in ("beta", "level", "sigma")}


def test_samples_exactly_what_nutpies_own_compilation_samples():
    model, _ = build(40)
    ours, theirs = draws(compile_model(model)), draws(nutpie.compile_pymc_model(model))
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_new_data_of_another_size_give_what_a_model_built_on_them_gives():
    model, _ = build(40)
    _, new = build(25, seed=1)
    swapped = compile_model(model).with_data(**new)
    fresh = nutpie.compile_pymc_model(build(25, seed=1)[0])
    ours, theirs = draws(swapped), draws(fresh)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-10)


CHILD = MODEL_SOURCE + textwrap.dedent("""
    import json, sys
    from allianceflow.compiled import compile_model
    compiled = compile_model(build(int(sys.argv[1]))[0])
    print(json.dumps([compiled.compiled_logp_func.cache_hits,
                      compiled.compiled_expand_func.cache_hits]))
""")


def compile_in_new_process(n: int, cache_dir) -> list[int]:
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={cache_dir}")
    run = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.filterwarnings("ignore")
def test_a_new_process_and_new_data_load_the_callbacks_from_the_cache(tmp_path):
    assert compile_in_new_process(40, tmp_path) == [0, 0]  # empty cache: compiled
    assert compile_in_new_process(40, tmp_path) == [1, 1]  # same model: loaded
    assert compile_in_new_process(55, tmp_path) == [1, 1]  # more rows: loaded


@pytest.mark.filterwarnings("ignore")
def test_fitting_sample_gives_what_pm_sample_through_nutpie_gives():
    """fitting.sample compiles with compile_model and calls nutpie itself; the draws and
    the pointwise log-likelihood are pm.sample's for the same seed (pm.sample compiles
    with Numba)."""
    from allianceflow import fitting

    model, _ = build(30)
    settings = fitting.SamplerSettings(chains=2, draws=50, tune=50, seed=11, threads=1,
                                       compiler="numba")
    ours = fitting.sample(model, settings)
    theirs = pm.sample(draws=50, tune=50, chains=2, cores=1, random_seed=11, model=model,
                       nuts_sampler="nutpie", progressbar=False,
                       nuts_sampler_kwargs={"target_accept": settings.target_accept},
                       idata_kwargs={"log_likelihood": True})
    for group, name in [("posterior", "beta"), ("posterior", "sigma"),
                        ("log_likelihood", "obs")]:
        np.testing.assert_array_equal(ours[group][name].to_numpy(),
                                      theirs[group][name].to_numpy())
    assert set(theirs.children) <= set(ours.children)


def test_static_data_shapes_keep_the_log_density_and_the_data_as_data():
    """compile_jax's model: the same log-density, the pm.Data still shared variables (so
    that with_data swaps them) but typed with their values' shapes (so that JAX traces)."""
    from allianceflow.compiled import with_static_data_shapes

    model, data = build(40)
    static = with_static_data_shapes(model)
    point = model.initial_point()
    assert np.isclose(static.compile_logp()(point), model.compile_logp()(point), rtol=1e-14)
    for name, value in data.items():
        assert static[name].type.shape == value.shape
        np.testing.assert_array_equal(static[name].get_value(), value)


def test_jax_and_numba_compile_the_same_log_density():
    """Same model, two compilers: each one's log-density at random points (unpacked by its
    own layout: the two order the parameters differently) is PyMC's, so that the draws
    differ only as two samplers' draws do."""
    model, _ = build(40)
    truth = model.compile_logp()
    rng = np.random.default_rng(0)
    for compiler in ("jax", "numba"):
        compiled = compile_model(model, compiler=compiler)
        names, slices, _ = compiled.shape_info if compiler == "numba" else (None,) * 3
        for _ in range(3):
            x = rng.normal(scale=0.7, size=compiled.n_dim)
            if compiler == "jax":
                logp = compiled._make_logp_func()(x, **compiled._shared_data)[0]
                point = compiled._make_expand_func(0, 0, 0)(x, **compiled._shared_data)
            else:
                logp = compiled.logp_func(x)[0]  # the PyTensor function the callback wraps
                point = {name: x[sl] for name, sl in zip(names, slices, strict=True)
                         if sl.stop <= compiled.n_dim}
            value = {v.name: point[v.name].reshape(v.type.shape if v.ndim else ())
                     for v in model.value_vars}
            assert np.isclose(logp, truth(value), rtol=1e-12), compiler


def test_jax_new_data_of_the_same_shapes_give_what_a_model_built_on_them_gives():
    """The refits swap data of the same shapes (weights, simulated outcomes): with JAX the
    shapes are part of the compiled function."""
    model, _ = build(40)
    _, new = build(40, seed=1)
    swapped = compile_model(model, compiler="jax").with_data(**new)
    fresh = compile_model(build(40, seed=1)[0], compiler="jax")
    ours, theirs = draws(swapped), draws(fresh)
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-10)


JAX_CHILD = MODEL_SOURCE + textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from allianceflow.compiled import compile_model
    compile_model(build(int(sys.argv[1]))[0], compiler="jax")
""")


def jax_log_in_new_process(n: int, cache_dir) -> str:
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={cache_dir}")
    run = subprocess.run([sys.executable, "-c", JAX_CHILD, str(n)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return next(line for line in run.stderr.splitlines() if "compiled model (JAX)" in line)


@pytest.mark.filterwarnings("ignore")
def test_jax_a_new_process_loads_the_executables_from_the_cache(tmp_path):
    assert "compiled and stored in the cache in" in jax_log_in_new_process(40, tmp_path)
    assert "loaded from the cache in" in jax_log_in_new_process(40, tmp_path)
    assert any((tmp_path / "jax").iterdir())
