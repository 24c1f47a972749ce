"""PyTensor's graph rewrites, done once per graph and machine instead of once per process.

Every `pytensor.function` rewrites its graph (canonicalisation, specialisation, fusion,
in-place operations) before it is linked. The linked code is cached on disk by PyTensor
(Numba's cache), but the rewriting is not, and for the trial models it is most of a warm
job's compile time: about 18 s of the test RI-CLPM fit's 24 s of compiling, redone in
every fit and K-fold process (a profile of the job, bench/RESULTS.md). Small graphs (the
meta-analyses' checks) gain nothing measurable: loading costs about what rewriting does.

`install()` wraps `FunctionMaker.prepare_fgraph`. Before rewriting, it writes the graph
as a canonical description (every node's op with its `__props__`, or its pickle where it
has none, as the scalar ops do; the types of the inputs and outputs; every constant's
dtype, shape and bytes; in topological order) and hashes it, together with the compile
mode, which inputs may be overwritten in place and which outputs may share memory, and
the versions of PyTensor, NumPy, Numba and this module.
The rewritten graph is pickled under that hash; a later process with the same graph loads
it and puts it in place of the unrewritten one, over its own inputs (so that shared
variables keep the current process's values). PyTensor defines an op by its `__props__`
(they are what its equality and hash compare), so equal descriptions are equal graphs.
A graph with anything the description cannot state exactly (a lambda among an op's
properties, an object array, an op that cannot be pickled) is rewritten as usual and not
stored; an op whose pickle varies between processes (PyMC's random variables) only
misses the cache; any failure to load an entry falls back to rewriting.

The process that rewrites a graph also links it as stored (loaded back), so that it and
every later process give PyTensor's Numba cache the same graph, in the same order, and
find the same compiled code. The fits' tables were byte-identical with and without the
cache (bench/RESULTS.md); tests/unit/test_rewrite_cache.py checks the values, the shared
values and the compiled code's key. `ALLIANCEFLOW_REWRITE_CACHE=0` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger(__name__)

# Bump when the description or the stored entry changes.
CACHE_VERSION = "1"

_STATS = {"loaded": 0, "stored": 0, "uncached": 0}


class _NotDescribable(Exception):
    """The graph holds something the description cannot state exactly."""


def _value_key(value: Any, depth: int = 0) -> Any:
    """An exact, process-independent description of an op's property or a constant."""
    if depth > 20:
        raise _NotDescribable("nested too deeply")
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return (type(value).__name__, value)
    if isinstance(value, np.generic):
        return ("np", value.dtype.str, value.tobytes())
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise _NotDescribable("object array")
        return ("array", value.dtype.str, value.shape,
                hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest())
    if isinstance(value, tuple | list):
        return (type(value).__name__, tuple(_value_key(v, depth + 1) for v in value))
    if isinstance(value, frozenset | set):
        return ("set", tuple(sorted(repr(_value_key(v, depth + 1)) for v in value)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(_value_key(k, depth + 1)), _value_key(v, depth + 1))
                                     for k, v in value.items())))
    if isinstance(value, slice):
        return ("slice", _value_key((value.start, value.stop, value.step), depth + 1))
    if isinstance(value, type):
        return ("class", value.__module__, value.__qualname__)
    from pytensor.graph.basic import Variable
    from pytensor.graph.op import Op
    from pytensor.graph.type import Type

    if isinstance(value, Op | Type):
        props = getattr(type(value), "__props__", None)
        if props is not None:
            return ("obj", type(value).__module__, type(value).__qualname__,
                    tuple((p, _value_key(getattr(value, p), depth + 1)) for p in props))
    if isinstance(value, Variable):
        raise _NotDescribable("a variable inside an op's properties")
    if callable(value) and hasattr(value, "__qualname__") and not isinstance(value, Op):
        if "<" in value.__qualname__:  # a lambda or a closure: not named exactly
            raise _NotDescribable(f"function {value.__qualname__}")
        return ("function", value.__module__, value.__qualname__)
    # Anything else (scalar ops, which define their equality by hand rather than by
    # __props__): its pickle. Equal bytes rebuild an equal object; state pickled in a
    # varying order (a set of strings) only misses the cache.
    try:
        return ("pickle", type(value).__module__, type(value).__qualname__,
                hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest())
    except Exception as exc:  # noqa: BLE001
        raise _NotDescribable(f"{type(value).__qualname__} cannot be pickled: {exc}") from None


def _type_key(t) -> Any:
    from pytensor.tensor.type import TensorType

    if isinstance(t, TensorType):
        return ("tensor", t.dtype, t.shape)
    return _value_key(t)


def _mode_key(mode) -> Any:
    """The rewrites a mode asks for (tags, in order) and its linker; a mode holding a
    rewriter object rather than a query is not described."""
    from pytensor.graph.rewriting.db import RewriteDatabaseQuery

    query = mode._optimizer
    if not isinstance(query, RewriteDatabaseQuery) or query.subquery or query.extra_rewrites:
        raise _NotDescribable(f"mode with rewriter {query!r}")
    return (tuple(query.include), tuple(query.require), tuple(query.exclude),
            query.position_cutoff, type(mode.linker).__module__, type(mode.linker).__qualname__)


def graph_key(fgraph, mode, inputs=(), outputs=()) -> str | None:
    """The hash of `fgraph`'s description and of what else decides its rewriting (the
    mode, and the input and output specifications: which inputs may be overwritten in
    place, which outputs may share memory), or None where the graph cannot be described
    exactly."""
    import numba
    import pytensor
    from pytensor.graph.basic import Constant

    names: dict[Any, str] = {}
    parts: list[Any] = []
    for i, var in enumerate(fgraph.inputs):
        names[var] = f"i{i}"
        parts.append(("input", _type_key(var.type)))

    def name_of(var) -> Any:
        if var in names:
            return names[var]
        if isinstance(var, Constant):
            return ("constant", _type_key(var.type), _value_key(var.data))
        raise _NotDescribable("a root variable that is not an input")

    try:
        for n, node in enumerate(fgraph.toposort()):
            parts.append(("node", _value_key(node.op), tuple(name_of(v) for v in node.inputs),
                          tuple(_type_key(v.type) for v in node.outputs)))
            for k, out in enumerate(node.outputs):
                names[out] = f"n{n}.{k}"
        parts.append(("outputs", tuple(name_of(v) for v in fgraph.outputs)))
        parts.append(("updates", tuple(sorted(fgraph.update_mapping.items()))
                      if fgraph.update_mapping else ()))
        parts.append(("mode", _mode_key(mode)))
        parts.append(("specs", tuple((bool(i.mutable), bool(i.borrow), i.update is not None)
                                     for i in inputs),
                      tuple(bool(o.borrow) for o in outputs)))
    except _NotDescribable as why:
        LOG.debug("graph not cached: %s", why)
        return None
    config = pytensor.config
    settings = (CACHE_VERSION, pytensor.__version__, np.__version__, numba.__version__,
                config.floatX,
                config.optimizer_excluding, config.optimizer_including,
                config.optimizer_requiring, config.cast_policy)
    return hashlib.sha256(repr((settings, parts)).encode()).hexdigest()


def _folder() -> Path:
    import pytensor

    return Path(pytensor.config.base_compiledir) / "rewritten"


def _store(path: Path, fgraph) -> None:
    """Pickle the rewritten graph over placeholder inputs (no shared values in the file)."""
    from pytensor.graph.basic import clone_get_equiv

    placeholders = [var.type() for var in fgraph.inputs]
    equiv = clone_get_equiv(fgraph.inputs, fgraph.outputs, copy_inputs=False,
                            memo=dict(zip(fgraph.inputs, placeholders, strict=True)))
    entry = (placeholders, [equiv[o] for o in fgraph.outputs])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(entry, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)  # atomic: concurrent jobs may store the same entry
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path, fgraph) -> None:
    """Put the stored rewritten graph in place of `fgraph`'s outputs, over its inputs.
    Everything that can fail is checked before `fgraph` is changed."""
    from pytensor.graph.basic import clone_get_equiv
    from pytensor.graph.destroyhandler import DestroyHandler
    from pytensor.graph.fg import FunctionGraph

    with open(path, "rb") as f:
        placeholders, outputs = pickle.load(f)
    if len(placeholders) != len(fgraph.inputs) or len(outputs) != len(fgraph.outputs):
        raise ValueError("the stored graph does not match")
    for stored, var in zip(placeholders, fgraph.inputs, strict=True):
        if stored.type != var.type:
            raise ValueError("the stored graph's input types do not match")
    # the stored graph has in-place operations: the destroy handler checks, on a copy,
    # that they are consistent (it raises otherwise)
    FunctionGraph(placeholders, outputs, clone=True).attach_feature(DestroyHandler())
    equiv = clone_get_equiv(placeholders, outputs, copy_inputs=False,
                            memo=dict(zip(placeholders, fgraph.inputs, strict=True)))
    # A fresh destroy handler, attached after the swap, so that the order it imposes on
    # the nodes (and with it the toposort that PyTensor's Numba cache key follows) is the
    # same in the process that stored the graph as in every process that loads it.
    for feature in [f for f in fgraph._features if isinstance(f, DestroyHandler)]:
        fgraph.remove_feature(feature)
    for i, out in enumerate(outputs):
        node, index = fgraph.get_output_client(i)
        fgraph.change_node_input(node, index, equiv[out], reason="rewrite_cache")
    fgraph.attach_feature(DestroyHandler())


def install() -> None:
    """Wrap PyTensor's `FunctionMaker.prepare_fgraph` with the cache (once per process)."""
    from pytensor.compile.maker import FunctionMaker

    original = FunctionMaker.__dict__["prepare_fgraph"]
    if getattr(original.__func__, "rewrite_cache", False):
        return
    rewrite = original.__func__

    def prepare_fgraph(inputs, outputs, additional_outputs, fgraph, mode, profile):
        from pytensor.compile.mode import get_mode

        key = graph_key(fgraph, get_mode(mode), inputs, [*outputs, *additional_outputs])
        if key is None:
            _STATS["uncached"] += 1
            return rewrite(inputs, outputs, additional_outputs, fgraph, mode, profile)
        path = _folder() / key[:2] / f"{key}.pkl"
        if path.exists():
            try:
                _load(path, fgraph)
                _STATS["loaded"] += 1
                return None
            except Exception as exc:  # noqa: BLE001  any bad entry: rewrite as usual
                LOG.warning("rewritten graph %s not loaded (%s); rewriting", path.name, exc)
        result = rewrite(inputs, outputs, additional_outputs, fgraph, mode, profile)
        try:
            _store(path, fgraph)
            # this process too compiles the graph as it was stored, so that a later
            # process that loads it finds its compiled code in PyTensor's cache
            _load(path, fgraph)
        except Exception as exc:  # noqa: BLE001  the rewritten graph is used as it is
            LOG.debug("rewritten graph not stored or not loaded back: %s", exc)
            return result
        _STATS["stored"] += 1
        return result

    prepare_fgraph.rewrite_cache = True
    FunctionMaker.prepare_fgraph = staticmethod(prepare_fgraph)


def stats() -> dict[str, int]:
    """How many graphs this process loaded, stored, and could not describe."""
    return dict(_STATS)
