"""Matrix products for PyTensor's Numba backend that compile in a fraction of a second.

PyTensor (3.3) lowers its `Dot` and `BatchedDot` operations to `_gemm`, a BLAS call
wrapped in stride normalisation, operand copies and a GEMV path, all inlined. Numba takes
9 to 16 s to compile it, once per combination of the operands' memory layouts (C, F or
strided), and a model's log-density and gradient have several such combinations: in the
default RI-CLPM, 10 `_gemm` and 17 `_gemv` compilations were more than half of its
225 s cold compile (measured with Numba's compile events, bench/by_hand.md), and every
trial model multiplies a design matrix by its coefficients somewhere. Most of that time
is the code for the layouts, not BLAS.

`install` registers, for floating-point operands of one dtype, NumPy's `np.dot` (BLAS) on
C-contiguous copies of the operands: with the layouts fixed it compiles in about 0.2 to
0.6 s. Other dtypes keep PyTensor's implementation. A plain loop for small products
compiled as fast and sampled no faster (the default moderation fit: 119.5 s against 122.2 s
for 4 x 3000 iterations), so there is one arithmetic, BLAS's, for every size. The cache key differs from
PyTensor's (`CACHE_VERSION`), so functions PyTensor compiled before are never mistaken for
these, and a change here is a new key. The tests compare both with NumPy on every layout.
"""

from __future__ import annotations

import functools

import numpy as np

# Bump when the functions below change: part of the cache key of every compiled product.
CACHE_VERSION = 7003

_FLOATS = frozenset(np.dtype(name) for name in ("float32", "float64"))
_installed = False


def _same_float_dtype(node) -> bool:
    dtypes = {v.type.numpy_dtype for v in (*node.inputs, *node.outputs)}
    return len(dtypes) == 1 and next(iter(dtypes)) in _FLOATS


@functools.cache
def _product():
    """One Numba function for every product node of the process, so that it compiles once
    per operand layout, not once per node."""
    from pytensor.link.numba.dispatch import basic as numba_basic

    @numba_basic.numba_njit
    def product(x, y, out):
        m, k = x.shape
        n = y.shape[1]
        if y.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
            raise ValueError("dot: operands have mismatched shapes")
        out[:, :] = np.dot(np.ascontiguousarray(x), np.ascontiguousarray(y))
        return out

    return product


def _dot(dtype):
    from pytensor.link.numba.dispatch import basic as numba_basic

    product = _product()

    @numba_basic.numba_njit
    def dot(x, y, out=None):
        if out is None:
            out = np.empty((x.shape[0], y.shape[1]), dtype=dtype)
        return product(x, y, out)

    return dot


def _batched_dot(dtype):
    from pytensor.link.numba.dispatch import basic as numba_basic

    product = _product()

    @numba_basic.numba_njit
    def batched_dot(x, y, out=None):
        if out is None:
            out = np.empty(x.shape[:-1] + y.shape[2:], dtype=dtype)
        for b in range(out.shape[0]):
            product(x[b], y[b], out[b])
        return out

    return batched_dot


def install() -> None:
    """Register the quick products with PyTensor's Numba dispatch (idempotent)."""
    global _installed
    if _installed:
        return
    from pytensor.link.numba.dispatch import elemwise as numba_elemwise
    from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key
    from pytensor.tensor.blas import BatchedDot
    from pytensor.tensor.math import Dot

    for op_type, build, pytensor_impl in (
            (Dot, _dot, numba_elemwise.numba_funcify_Dot),
            (BatchedDot, _batched_dot, numba_elemwise.numba_funcify_BatchedDot)):

        def quick(op, node, build=build, pytensor_impl=pytensor_impl, **kwargs):
            if not _same_float_dtype(node):
                return pytensor_impl(op, node, **kwargs)
            fn = build(node.outputs[0].type.numpy_dtype)
            fn.handles_out = True  # writes into the output it is given
            return fn, CACHE_VERSION

        register_funcify_default_op_cache_key(op_type)(quick)
    _installed = True
