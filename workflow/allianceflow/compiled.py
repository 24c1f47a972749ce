"""Compile a PyMC model for nutpie, by Numba (`compile_numba`: minutes to compile, about
three times faster sampling, cached once per machine, not once per process) or by JAX
(`compile_jax`: XLA compiles in seconds); docs/compiled-models.md compares the two.

Numba: `nutpie.compile_pymc_model` turns the model's log-density (and its gradient) into a
PyTensor function, which PyTensor's Numba backend compiles and caches on disk
(`<base_compiledir>/numba`), and then wraps it in two Numba C callbacks (`numba.cfunc`) for
the Rust sampler. Those wrappers are closures over a record dtype with random (uuid) field
names and over the data arrays themselves, so Numba cannot cache them: every new process
types and compiles them again, and that is most of a small fit's time (konstantopoulos2011:
about 8 of the 13 s of a process, the PyTensor function loading from its cache in 0.3 s).

Here the two callbacks are generated as source whose only inputs are the shapes of the
problem (number of parameters, rank and dtype of each data array) and the cache key
PyTensor gave the function they call. They read the data through the same pointer record
nutpie passes at run time (fields named by position, not uuid), so new data of the same
rank, a new trial wave with more patients for example, reuse the compiled callbacks; and
they are registered with PyTensor's own Numba cache locator under a key derived from
PyTensor's, so they are stored beside the function they wrap and invalidated with it.

Everything else (initial points and their jitter, shapes, coordinates, `with_data`, the
sampler) is nutpie's own. Where PyTensor cannot cache the log-density (it reports no cache
key, e.g. a model with large constant arrays) this falls back to nutpie's compilation.
nutpie's private helpers are used; `requirements.lock` pins nutpie, and the tests compare
this compilation with nutpie's (same log-density, gradient and draws).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

LOG = logging.getLogger(__name__)

# Bump when the generated source below changes: part of every callback's cache key.
WRAPPER_VERSION = "1"

_LOGP_TEMPLATE = '''
def {name}(dim, x_, out_, logp_, user_data_):
    if dim != {n_dim}:
        return -1
    try:
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_dim},))
        logp = numba.carray(logp_, ())
{unpack}
        logp_val, grad = inner(x{args})
        logp[()] = logp_val
        ok = True
        for i in range({n_dim}):
            g = grad[i]
            out[i] = g
            if not np.isfinite(g):
                ok = False
        if not ok:
            return 3
        if not np.isfinite(logp_val):
            return 4
    except Exception:  # noqa: BLE001
        return 1
    return 0
'''

_EXPAND_TEMPLATE = '''
def {name}(dim, expanded, x_, out_, user_data_):
    if dim != {n_dim}:
        return -1
    if expanded != {n_expanded}:
        return -1
    try:
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_expanded},))
{unpack}
        (values,) = inner(x{args})
        for i in range({n_expanded}):
            out[i] = values[i]
    except Exception:  # noqa: BLE001
        return -2
    return 0
'''


def _record_slots(user_data: np.ndarray, keys: list[str]) -> dict[str, tuple[int, int, int]]:
    """Where each shared array's pointer, size and first shape entry sit in nutpie's
    user-data record, in units of 8-byte words (every field is a uintp or a uint64)."""
    shared = user_data.dtype.fields["shared"]
    base = shared[1]
    fields = shared[0].fields
    slots = {}
    for key in keys:
        words = []
        for part in ("data", "size", "shape"):
            sub, offset = fields[part][0], fields[part][1]
            byte = base + offset + sub.fields[key][1]
            if byte % 8:
                raise RuntimeError("nutpie's user-data record is not word-aligned")
            words.append(byte // 8)
        slots[key] = tuple(words)
    if user_data.dtype.itemsize % 8:
        raise RuntimeError("nutpie's user-data record is not a whole number of words")
    return slots


def _unpack_source(arrays: list[np.ndarray], slots: list[tuple[int, int, int]],
                   n_words: int) -> tuple[str, str]:
    """Source lines rebuilding each shared array from the record, and the call arguments."""
    if not arrays:
        return "", ""
    lines = [f"ud = numba.carray(user_data_, ({n_words},), np.uint64)"]
    for i, (value, (data, size, shape)) in enumerate(zip(arrays, slots, strict=True)):
        dtype = f"np.{np.dtype(value.dtype).name}"
        flat = f"numba.carray(address_as_void_pointer(ud[{data}]), (int(ud[{size}]),), {dtype})"
        if value.ndim == 1:
            lines.append(f"s{i} = {flat}")
        else:
            dims = ", ".join(f"int(ud[{shape + d}])" for d in range(value.ndim))
            lines.append(f"s{i} = {flat}.reshape(({dims}))")
    unpack = "\n".join(" " * 8 + line for line in lines)
    args = "".join(f", s{i}" for i in range(len(arrays)))
    return unpack, args


def _callback(template: str, kind: str, inner, inner_key: str, arrays: list[np.ndarray],
              slots: list[tuple[int, int, int]], n_words: int, sig, **sizes: int):
    import numba
    from nutpie.compile_pymc import address_as_void_pointer
    from pytensor.link.numba.cache import compile_numba_function_src

    unpack, args = _unpack_source(arrays, slots, n_words)
    layout = [(a.ndim, np.dtype(a.dtype).str) for a in arrays]
    key = hashlib.sha256(repr((WRAPPER_VERSION, kind, inner_key, sizes, layout, slots,
                               n_words)).encode()).hexdigest()
    name = f"nutpie_{kind}_{key[:16]}"
    src = template.format(name=name, unpack=unpack, args=args, **sizes)
    py_func = compile_numba_function_src(
        # __name__: Numba rebuilds a cached function's environment from its module
        src, name, global_env={"__name__": __name__, "numba": numba, "np": np, "inner": inner,
                               "address_as_void_pointer": address_as_void_pointer},
        cache_key=f"nutpie_{kind}_{key}",
    )
    return numba.cfunc(sig, cache=True)(py_func)


def _inner_cache_key(fn) -> str | None:
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    py_func = getattr(fn, "py_func", None)
    return None if py_func is None else CACHED_SRC_FUNCTIONS.get(py_func)


# XLA's own thread pool would compete with the other fit jobs the scheduler runs beside
# this one (a job gets `sampler.threads` cores, one by default); the model's operations
# are small, so one thread per call loses nothing.
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def compile_model(model, var_names=None, compiler: str = "numba") -> Any:
    """The model compiled for nutpie by `compiler`, one of COMPILERS."""
    if compiler not in COMPILERS:
        raise ValueError(f"unknown compiler {compiler!r}: use one of {', '.join(COMPILERS)}")
    return COMPILERS[compiler](model, var_names)


def _jax_cache_events() -> dict[str, int]:
    """Counts of JAX's persistent-cache events in this process (hits and misses), from
    JAX's own monitoring hooks; registered once."""
    import jax

    if not hasattr(_jax_cache_events, "counts"):
        counts = {"hits": 0, "misses": 0}

        def listen(event: str, **_: Any) -> None:
            if event == "/jax/compilation_cache/cache_hits":
                counts["hits"] += 1
            elif event == "/jax/compilation_cache/cache_misses":
                counts["misses"] += 1

        jax.monitoring.register_event_listener(listen)
        _jax_cache_events.counts = counts
    return dict(_jax_cache_events.counts)


def with_static_data_shapes(model):
    """A copy of `model` with every dimension frozen and every pm.Data kept as data but
    typed with the static shape of its current value.

    JAX traces shapes as values, so a graph that reshapes by a data array's length fails
    to trace (the RI-CLPM does); nutpie's JAX default, PyMC's `freeze_dims_and_data`, folds
    the data into constants instead, which ends `with_data` (the refits swap data of the
    same shapes). Typing the data with static shapes gives PyTensor the lengths as
    constants and leaves the values as inputs. Built like `freeze_dims_and_data`, with a
    shared variable of static shape where it puts a constant."""
    import pytensor
    from pymc.model.fgraph import fgraph_from_model, model_from_fgraph
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph import FunctionGraph
    from pytensor.graph.replace import clone_replace

    if any(v is not None for v in model.rvs_to_initial_values.values()):
        raise ValueError("with_static_data_shapes: models with initial values are not supported")
    fg, memo = fgraph_from_model(model)
    replacements = {
        memo[length]: length.type.constant_type(type=length.type, data=length.get_value(),
                                                name=length.name)
        for length in model.dim_lengths.values() if isinstance(length, SharedVariable)}
    for var in model.named_vars.values():
        if isinstance(var, SharedVariable):
            value = var.get_value()
            replacements[memo[var].owner.inputs[0]] = pytensor.shared(
                value, name=var.name, shape=np.shape(value))
    outputs = clone_replace(fg.outputs, replace=replacements, rebuild_strict=False)
    new = FunctionGraph(outputs=outputs, clone=False)
    new._coords = fg._coords
    new._dim_lengths = {dim: replacements.get(length, length)
                        for dim, length in fg._dim_lengths.items()}
    return model_from_fgraph(new, mutate_fgraph=True)


def compile_jax(model, var_names=None) -> Any:
    """nutpie's JAX compilation of `model` (PyTensor's gradient, as with Numba), with XLA's
    executables kept in JAX's persistent cache beside PyTensor's (`<base_compiledir>/jax`).

    XLA compiles a model's log-density in seconds where Numba took minutes (the default
    RI-CLPM: 4 s against 334 s), whatever the data's size; sampling is slower (that model,
    4 chains of 3000 on one thread: 121 s against 41 s); see docs/compiled-models.md.
    Both functions are compiled here, on the initial point, rather than inside the
    sampler's first call, so that the log says whether they came from the cache."""
    import os

    os.environ.setdefault("XLA_FLAGS", XLA_FLAGS)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import nutpie
    import pytensor

    folder = os.path.join(pytensor.config.base_compiledir, "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    # every executable is cached, not only those that took over a second to compile
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    before = _jax_cache_events()
    compiled = nutpie.compile_pymc_model(with_static_data_shapes(model), backend="jax",
                                         gradient_backend="pytensor", var_names=var_names,
                                         freeze_model=False)
    x = np.asarray(compiled._make_initial_points(0), dtype="float64")
    compiled._make_logp_func()(x, **compiled._shared_data)
    compiled._make_expand_func(0, 0, 0)(x, **compiled._shared_data)
    after = _jax_cache_events()
    hits, misses = (after[k] - before[k] for k in ("hits", "misses"))
    LOG.info("compiled model (JAX): %s %s", "loaded from the cache in" if hits and not misses
             else "compiled and stored in the cache in", folder)
    return compiled


def compile_numba(model, var_names=None) -> Any:
    """nutpie's CompiledPyMCModel for `model`, with callbacks Numba caches on disk.

    Same defaults as `nutpie.compile_pymc_model(model)` (Numba backend, support-point
    initialisation with jitter on every free variable, data as shared variables so that
    `with_data` swaps them)."""
    import nutpie
    import nutpie.compile_pymc as ncp
    import pytensor
    from numba import types
    from pymc.initial_point import make_initial_point_fn

    if not pytensor.config.numba__cache:
        return nutpie.compile_pymc_model(model, var_names=var_names)

    initial_point_fn = ncp._wrap_with_lock(make_initial_point_fn(
        model=model, default_strategy="support_point", jitter_rvs=set(model.free_RVs),
        return_transformed=True))
    (n_dim, n_expanded, logp_fn_pt, expand_fn_pt, initial_point_array_fn, shape_info,
     reparameterized) = ncp._make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True,
        pymc_initial_point_fn=initial_point_fn, var_names=var_names)
    logp_fn, expand_fn = logp_fn_pt.vm.jit_fn, expand_fn_pt.vm.jit_fn
    logp_key, expand_key = _inner_cache_key(logp_fn), _inner_cache_key(expand_fn)
    if logp_key is None or expand_key is None:
        LOG.info("compiled model (Numba): PyTensor cannot cache this model's log-density; "
                 "compiled by nutpie")
        return nutpie.compile_pymc_model(model, var_names=var_names)

    # nutpie's layout of the shared data, with positional names instead of uuids so that
    # the record dtype, and with it the compiled callbacks, are the same in every process.
    shared_var_keys: dict[Any, str] = {}
    shared_data: dict[str, np.ndarray] = {}
    for var in [*logp_fn_pt.get_shared(), *expand_fn_pt.get_shared()]:
        if var in shared_var_keys:
            continue
        key = f"s{len(shared_var_keys)}"
        value = np.array(var.get_value(), order="C", copy=True)
        value.flags.writeable = False
        shared_var_keys[var], shared_data[key] = key, value
    user_data = ncp.make_user_data(shared_var_keys, shared_data)
    slots = _record_slots(user_data, list(shared_data))
    n_words = user_data.dtype.itemsize // 8

    def parts(fn_pt):
        keys = [shared_var_keys[v] for v in fn_pt.get_shared()]
        return [shared_data[k] for k in keys], [slots[k] for k in keys]

    ptr = types.CPointer(types.double)
    logp_sig = types.int64(types.uint64, ptr, ptr, ptr, types.voidptr)
    expand_sig = types.int64(types.uint64, types.uint64, ptr, ptr, types.voidptr)
    arrays, where = parts(logp_fn_pt)
    logp_cfunc = _callback(_LOGP_TEMPLATE, "logp", logp_fn, logp_key, arrays, where,
                           n_words, logp_sig, n_dim=n_dim)
    arrays, where = parts(expand_fn_pt)
    expand_cfunc = _callback(_EXPAND_TEMPLATE, "expand", expand_fn, expand_key, arrays,
                             where, n_words, expand_sig, n_dim=n_dim, n_expanded=n_expanded)

    from pytensor.link.numba.cache import NUMBA_CACHE_PATH

    hits = logp_cfunc.cache_hits + expand_cfunc.cache_hits
    LOG.info("compiled model (Numba): %s %s", "loaded from the cache in" if hits == 2 else
             "compiled and stored in the cache in", NUMBA_CACHE_PATH)
    dims, coords = ncp._prepare_dims_and_coords(model, shape_info, reparameterized)
    return ncp.CompiledPyMCModel(
        _n_dim=n_dim, dims=dims, _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info, strict=True)},
        compiled_logp_func=logp_cfunc, compiled_expand_func=expand_cfunc,
        initial_point_func=initial_point_array_fn, shared_data=shared_data,
        shared_var_keys=shared_var_keys, user_data=user_data, n_expanded=n_expanded,
        shape_info=shape_info, logp_func=logp_fn_pt, expand_func=expand_fn_pt,
        reparameterized_names=reparameterized,
    )


# the compilers `sampler.compiler` names (config.schema.yaml lists the same)
COMPILERS = {"numba": compile_numba, "jax": compile_jax}
