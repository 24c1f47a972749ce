"""While chains sample, BLAS runs on one thread: a BLAS thread of its own spun beside the
chains and took about a third of 2 cores (see fitting.py). The samplers are replaced here
by stand-ins that record the BLAS thread counts they were called with."""

import nutpie
import pymc as pm
import xarray as xr
from allianceflow import fitting
from threadpoolctl import threadpool_info


def blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def tiny_tree():
    ds = xr.Dataset({"x": (("chain", "draw"), [[0.0]])})
    return xr.DataTree.from_dict({"posterior": ds, "sample_stats": ds})


def test_blas_is_held_to_one_thread_while_pymc_samples_and_released_after(monkeypatch):
    seen = []
    monkeypatch.setattr(pm, "sample", lambda **kw: seen.append(blas_threads()) or tiny_tree())
    before = blas_threads()
    assert before, "no BLAS library found by threadpoolctl"
    fitting.sample(pm.Model(), fitting.SamplerSettings(backend="pymc"))
    assert seen == [[1] * len(before)]
    assert blas_threads() == before


def test_blas_is_held_to_one_thread_while_nutpie_samples_and_released_after(monkeypatch):
    seen = []
    monkeypatch.setattr(fitting, "compile_model", lambda model, compiler: object())
    monkeypatch.setattr(nutpie, "sample",
                        lambda compiled, **kw: seen.append(blas_threads()) or tiny_tree())
    monkeypatch.setattr("pymc.backends.arviz.patch_nutpie_idata", lambda *a, **k: None)
    before = blas_threads()
    fitting.sample(pm.Model(), fitting.SamplerSettings(), log_likelihood=False)
    assert seen == [[1] * len(before)]
    assert blas_threads() == before


def test_blas_is_held_to_one_thread_while_a_refit_samples(monkeypatch):
    seen = []

    class Compiled:
        def with_data(self, **data):
            return self

    monkeypatch.setattr(fitting, "compile_model", lambda model, compiler: Compiled())
    monkeypatch.setattr(nutpie, "sample",
                        lambda compiled, **kw: seen.append(blas_threads()) or tiny_tree())
    before = blas_threads()
    fitting.Refitter(pm.Model(), fitting.SamplerSettings()).fit(values=[0.0])
    assert seen == [[1] * len(before)]
    assert blas_threads() == before
