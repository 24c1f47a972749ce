"""allianceflow.numba_products: the matrix products PyTensor's Numba backend compiles
for `Dot` and `BatchedDot` give NumPy's result for every layout, dtype and size, through a
compiled PyTensor function and its gradient, and replace PyTensor's (slow to compile)
implementation under a cache key of their own."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from allianceflow import numba_products
from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key
from pytensor.tensor.blas import BatchedDot
from pytensor.tensor.math import Dot

numba_products.install()
RNG = np.random.default_rng(11)


def operands(m: int, k: int, n: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    return (RNG.normal(size=(m, k)).astype(dtype), RNG.normal(size=(k, n)).astype(dtype))


def layouts(x: np.ndarray, y: np.ndarray):
    """The same product with C, Fortran, transposed and strided (sliced) operands."""
    yield "C", x, y
    yield "F", np.asfortranarray(x), np.asfortranarray(y)
    yield "transposed", np.ascontiguousarray(x.T).T, np.ascontiguousarray(y.T).T
    wide_x = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=x.dtype)
    wide_x[:, ::2] = x
    tall_y = np.zeros((2 * y.shape[0], y.shape[1]), dtype=y.dtype)
    tall_y[::2] = y
    yield "strided", wide_x[:, ::2], tall_y[::2]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(7, 3, 3), (1, 4, 1), (5, 1, 6), (0, 3, 2), (3, 0, 2),
                                   (200, 120, 50)])
def test_dot_gives_numpys_product_for_every_layout(shape, dtype):
    a, b = pt.matrix(dtype=dtype), pt.matrix(dtype=dtype)
    fn = pytensor.function([a, b], pt.dot(a, b), mode="NUMBA")
    assert any(isinstance(node.op, Dot) for node in fn.maker.fgraph.apply_nodes)
    x, y = operands(*shape, dtype)
    tol = 1e-12 if dtype == "float64" else 1e-4
    for label, xs, ys in layouts(x, y):
        got = fn(xs, ys)
        assert got.dtype == np.dtype(dtype), label
        np.testing.assert_allclose(got, x.astype(float) @ y.astype(float), rtol=tol,
                                   atol=tol * shape[1], err_msg=label)


def test_the_gradient_of_a_product_is_numpys():
    x, y = operands(6, 3, 4, "float64")
    a, b = pt.matrix(), pt.matrix()
    cost = (pt.dot(a, b) ** 2).sum()
    fn = pytensor.function([a, b], pytensor.grad(cost, [a, b]), mode="NUMBA")
    ga, gb = fn(x, y)
    np.testing.assert_allclose(ga, 2 * (x @ y) @ y.T, rtol=1e-12)
    np.testing.assert_allclose(gb, 2 * x.T @ (x @ y), rtol=1e-12)


def test_batched_products_are_numpys():
    x = RNG.normal(size=(4, 5, 3))
    y = RNG.normal(size=(4, 3, 2))
    a, b = pt.tensor3(), pt.tensor3()
    fn = pytensor.function([a, b], pt.matmul(a, b), mode="NUMBA")
    np.testing.assert_allclose(fn(x, y), x @ y, rtol=1e-12)
    np.testing.assert_allclose(fn(np.asfortranarray(x), y[:, :, ::-1]), x @ y[:, :, ::-1],
                               rtol=1e-12)
    node = BatchedDot().make_node(pt.tensor3(), pt.tensor3())
    _, key = numba_funcify_and_cache_key(node.op, node=node)
    assert key is not None


def test_integer_products_keep_pytensors_implementation():
    a, b = pt.matrix(dtype="int64"), pt.matrix(dtype="int64")
    fn = pytensor.function([a, b], pt.dot(a, b), mode="NUMBA")
    x, y = np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4)
    got = fn(x, y)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, x @ y)


def test_the_cache_key_is_not_pytensors():
    """A function PyTensor compiled with its own product is never loaded for these."""
    from pytensor.link.numba.dispatch.basic import default_hash_key_from_props

    node = Dot().make_node(pt.matrix(), pt.matrix())
    _, key = numba_funcify_and_cache_key(node.op, node=node)
    assert key == default_hash_key_from_props(
        node.op, cache_version=str(numba_products.CACHE_VERSION))
    assert key != default_hash_key_from_props(node.op, cache_version="3")
