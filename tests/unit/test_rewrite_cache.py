"""allianceflow.rewrite_cache: a graph rewritten in one process is loaded in the next and
computes exactly what the rewritten graph computes, over the new process's own shared
values (to rounding), with the same compiled code; a graph that differs in anything that decides its
rewriting has another key; a bad entry is rewritten again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from allianceflow import rewrite_cache
from pytensor.compile.io import In, SymbolicOutput
from pytensor.compile.mode import get_mode
from pytensor.graph.fg import FunctionGraph

# A function with what the models' functions hold: a shared array, constants, a gradient,
# an in-place candidate (set_subtensor) and reductions that the rewrites fuse.
CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pytensor, pytensor.tensor as pt
    from allianceflow import rewrite_cache
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key

    if sys.argv[1] == "1":
        rewrite_cache.install()
    x = pt.dvector("x")
    s = pytensor.shared(np.arange(5.0), name="s")
    y = pt.exp(x * s).sum() + pt.log1p(pt.exp(x)).sum() + (x[:, None] * s[None, :]).sum()
    z = pt.set_subtensor(x[2:], y * np.array([1.0, 2.0, 3.0]))
    g = pytensor.grad(y + (z ** 2).sum(), x)
    f = pytensor.function([x], [y, g], mode="NUMBA")
    point = np.linspace(-0.5, 0.5, 5)
    first = [np.asarray(v).tolist() for v in f(point)]
    s.set_value(np.full(5, 0.3))
    second = [np.asarray(v).tolist() for v in f(point)]
    print(json.dumps({"stats": rewrite_cache.stats(), "values": [first, second],
                      "numba_key": numba_funcify_and_cache_key(f.maker.fgraph)[1]}))
""")


def run_child(cache_dir: Path, use_cache: bool) -> dict:
    env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={cache_dir}")
    run = subprocess.run([sys.executable, "-c", CHILD, "1" if use_cache else "0"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_graph_rewritten_once_is_loaded_by_the_next_process(tmp_path):
    plain = run_child(tmp_path, use_cache=False)
    stored = run_child(tmp_path, use_cache=True)
    loaded = run_child(tmp_path, use_cache=True)
    assert stored["stats"]["stored"] >= 1 and stored["stats"]["loaded"] == 0
    assert loaded["stats"]["loaded"] == stored["stats"]["stored"]
    assert loaded["stats"]["stored"] == 0
    # the same numbers, before and after the shared value changes: to rounding, since the
    # same compiled function, cache or none, differs in the last bit between processes
    # (two runs without the cache do too: memory alignment in vectorised loops)
    for run in (stored, loaded):
        for got, want in zip(run["values"], plain["values"], strict=True):
            np.testing.assert_allclose(np.concatenate([np.ravel(v) for v in got]),
                                       np.concatenate([np.ravel(v) for v in want]),
                                       rtol=1e-13)
    assert loaded["values"][0] != loaded["values"][1]
    # the storing process compiles the graph as stored, so the next finds its code
    assert loaded["numba_key"] == stored["numba_key"]
    entries = list((tmp_path / "rewritten").rglob("*.pkl"))
    assert len(entries) == stored["stats"]["stored"]


def test_a_bad_entry_is_rewritten_again(tmp_path, caplog):
    good = run_child(tmp_path, use_cache=True)
    for entry in (tmp_path / "rewritten").rglob("*.pkl"):
        entry.write_bytes(b"not a pickle")
    again = run_child(tmp_path, use_cache=True)
    np.testing.assert_allclose(again["values"][0][1], good["values"][0][1], rtol=1e-13)
    assert again["stats"]["loaded"] == 0 and again["stats"]["stored"] >= 1


def key_of(outputs, inputs, mutable=False, mode="NUMBA"):
    fgraph = FunctionGraph(inputs, outputs, clone=True)
    specs = [In(v, mutable=mutable) for v in inputs]
    return rewrite_cache.graph_key(fgraph, get_mode(mode), specs,
                                   [SymbolicOutput(o) for o in outputs])


def graph(constant=(1.0, 2.0), op=pt.exp, shape=(None,)):
    x = pt.tensor("x", dtype="float64", shape=shape)
    s = pytensor.shared(np.ones(3), name="s")
    return [op(x).sum() * pt.as_tensor(np.array(constant)).sum() + s.sum()], [x, s]


def test_the_key_follows_what_decides_the_rewriting():
    base = key_of(*graph())
    assert base is not None
    assert key_of(*graph()) == base  # built again: the same graph
    assert key_of(*graph(constant=(1.0, 2.5))) != base
    assert key_of(*graph(op=pt.log)) != base
    assert key_of(*graph(shape=(4,))) != base
    assert key_of(*graph(), mutable=True) != base
    assert key_of(*graph(), mode="FAST_COMPILE") != base


def test_a_shared_value_is_not_part_of_the_key():
    outputs, inputs = graph()
    before = key_of(outputs, inputs)
    inputs[1].set_value(np.zeros(3))
    assert key_of(outputs, inputs) == before


def test_install_is_idempotent():
    rewrite_cache.install()
    wrapped = pytensor.compile.maker.FunctionMaker.__dict__["prepare_fgraph"]
    rewrite_cache.install()
    assert pytensor.compile.maker.FunctionMaker.__dict__["prepare_fgraph"] is wrapped


@pytest.mark.parametrize("value", [np.array([object()]), lambda v: v])
def test_what_cannot_be_described_exactly_is_not_cached(value):
    with pytest.raises(rewrite_cache._NotDescribable):
        rewrite_cache._value_key(value)
