"""gather / scatter_add / scatter: compiled kernels against the NumPy references on every
dtype, clamped out-of-range indices, empty and 0-d edge cases, NumPy's semantics for the
indexing built on them (repeated writes, np.add.at), and derivatives of the compiled
code (forward and reverse) against finite differences and the transposition identity.
The rules themselves are checked to second order in tests/test_primitive_rules.py."""
import ml_dtypes
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import DTypeError, ShapeError
from jitgrad.ir import DType, TensorType
from jitgrad.primitives.gather import gather, gather_p, scatter, scatter_add, scatter_add_p, scatter_p
from jitgrad.tracing.tracer import Tracer

ALL_DTYPES = [d.numpy for d in DType if not d.is_complex]     # complex: refused with a clear error (docs/complex.md)


def _values(rng, shape, dtype):
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(-50, 50, shape).astype(dtype)


def _kernels(axis):
    def f(x, i, u):
        x, i, u = x.value, i.value, u.value
        return (Tracer(gather(x, i, axis)), Tracer(scatter(x, i, u, axis)),
                Tracer(scatter_add(x, i, u, axis)) if x.type.dtype != DType.bool else Tracer(scatter(x, i, u, axis)))
    return jitgrad.jit(f)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_compiled_kernels_match_the_references_on_every_dtype(dtype):
    rng = np.random.default_rng(0)
    x = _values(rng, (2, 5, 3), dtype)
    i = np.array([[0, 4], [-3, 9], [2, 2]])              # negative and too large: clamped
    u = _values(rng, (2, 3, 2, 3), dtype)
    got = _kernels(1)(x, i, u)
    want = [gather_p.impl(x, i, axis=1), scatter_p.impl(x, i, u, axis=1),
            scatter_add_p.impl(x, i, u, axis=1) if dtype != np.bool_ else scatter_p.impl(x, i, u, axis=1)]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8))


def test_references_follow_numpy():
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(gather_p.impl(x, np.array([2, 0, 2]), axis=0), x[[2, 0, 2]])
    np.testing.assert_array_equal(gather_p.impl(x, np.array([7, -1]), axis=1), x[:, [3, 0]])
    added = x.copy()
    np.add.at(added, ([1, 1, 2],), np.ones((3, 4)))
    np.testing.assert_array_equal(scatter_add_p.impl(x, np.array([1, 1, 2]), np.ones((3, 4)), axis=0), added)
    written = x.copy()
    written[[1, 1]] = [[5.0] * 4, [6.0] * 4]                # NumPy: the last write stays
    np.testing.assert_array_equal(scatter_p.impl(x, np.array([1, 1]), np.array([[5.0] * 4, [6.0] * 4]), axis=0),
                                  written)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
def test_scatter_add_rounds_after_every_add_as_numpy(dtype):
    x = np.full(2, 2048, dtype)
    updates = np.ones(5, dtype)                           # 2048 + 1 rounds back to 2048 in float16
    i = np.array([0, 0, 0, 1, 1])
    got = _kernels(0)(x, i, updates)[2]
    want = x.copy()
    np.add.at(want, i, updates)
    np.testing.assert_array_equal(got, want)


def test_empty_indices_operands_and_axes():
    f = _kernels(0)
    x, i, u = np.ones((3, 2)), np.zeros((0,), np.int64), np.ones((0, 2))
    g, s, a = f(x, i, u)
    assert g.shape == (0, 2)
    np.testing.assert_array_equal(s, x)
    np.testing.assert_array_equal(a, x)
    g, s, a = _kernels(1)(np.ones((2, 0)), np.array([0, 3]), np.ones((2, 2)))    # nothing to read: zeros
    np.testing.assert_array_equal(g, np.zeros((2, 2)))
    assert s.shape == a.shape == (2, 0)


def test_shape_and_dtype_rules():
    f64 = TensorType((3, 4), DType.f64)
    assert gather_p.infer(f64, TensorType((5, 6), DType.i64), axis=1)[0].shape == (3, 5, 6, )
    with pytest.raises(DTypeError, match="int64"):
        gather_p.infer(f64, TensorType((2,), DType.i32), axis=0)
    with pytest.raises(ShapeError, match="out of bounds"):
        gather_p.infer(f64, TensorType((2,), DType.i64), axis=2)
    with pytest.raises(ShapeError, match="updates"):
        scatter_p.infer(f64, TensorType((2,), DType.i64), TensorType((3, 4), DType.f64), axis=0)
    with pytest.raises(DTypeError, match="bool"):
        scatter_add_p.infer(f64.with_dtype(DType.bool), TensorType((2,), DType.i64),
                            TensorType((2, 4), DType.bool), axis=0)


# --------------------------------------------------------------------------- indexing built on them

def test_embedding_lookup_value_and_gradient():
    rng = np.random.default_rng(1)
    table, ids = rng.standard_normal((50, 8)), rng.integers(0, 50, 64)

    def loss(table, ids):
        return np.sum(np.tanh(table[ids]) ** 2)
    value, grad = jitgrad.jit(jitgrad.value_and_grad(loss))(table, ids)
    t = np.tanh(table[ids])
    expected = np.zeros_like(table)
    np.add.at(expected, ids, 2 * t * (1 - t ** 2))       # repeated ids accumulate
    np.testing.assert_allclose(value, np.sum(t ** 2), rtol=1e-13)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)


def test_indexing_emits_one_gather_and_no_one_hot_product():
    lowered = jitgrad.jit(lambda table, ids: table[ids]).lower(np.ones((1000, 32)), np.zeros(512, np.int64))
    text = lowered.as_text()
    assert text.count(" gather(") == 1 and "reduce_sum" not in text and "eq(" not in text


def test_traced_indices_wrap_once_and_raise_out_of_range_or_clamp_when_configured():
    x = np.arange(5.0)
    f = jitgrad.jit(lambda x, i: x[i])
    np.testing.assert_array_equal(f(x, np.array([-1, -5, 4, 0])), [4.0, 0.0, 4.0, 0.0])
    with pytest.raises(IndexError, match="index -7 is out of bounds"):
        f(x, np.array([-1, -5, -7, 4, 9]))
    saved = jitgrad.config.config.index_bounds
    jitgrad.config.config.index_bounds = "clamp"
    try:
        np.testing.assert_array_equal(f(x, np.array([-1, -5, -7, 4, 9])), [4.0, 0.0, 0.0, 4.0, 4.0])
    finally:
        jitgrad.config.config.index_bounds = saved


def test_item_assignment_with_repeated_traced_indices_last_write_wins():
    def f(x, i, v):
        x = x * 1.0
        x[i] = v
        return x
    x, i, v = np.zeros(5), np.array([1, 3, 1]), np.array([10.0, 20.0, 30.0])
    want = x.copy()
    want[i] = v
    np.testing.assert_array_equal(jitgrad.jit(f)(x, i, v), want)
    # the losing write of index 1 gets no gradient; the overwritten x elements none either
    gx, gv = jitgrad.grad(lambda x, v: np.sum(f(x, i, v) * np.arange(1.0, 6.0)), argnums=(0, 1))(x, v)
    np.testing.assert_array_equal(gx, [1.0, 0.0, 3.0, 0.0, 5.0])
    np.testing.assert_array_equal(gv, [0.0, 4.0, 2.0])


def test_add_at_accumulates_and_augmented_assignment_adds_once():
    def f(x, i):
        y = x * 1.0
        np.add.at(y, i, 1.0)
        z = x * 1.0
        z[i] += 1.0
        return y, z
    x, i = np.zeros(4), np.array([0, 2, 2, 2])
    y, z = jitgrad.jit(f)(x, i)
    want_y = x.copy()
    np.add.at(want_y, i, 1.0)
    want_z = x.copy()
    want_z[i] += 1.0
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(z, want_z)


def test_add_at_on_booleans_is_a_logical_or():
    def f(x, i):
        y = x & True
        np.add.at(y, i, True)
        return y
    x = np.array([False, True, False])
    want = x.copy()
    np.add.at(want, [0, 0], True)
    np.testing.assert_array_equal(jitgrad.jit(f)(x, np.array([0, 0])), want)


def test_take_along_axis_with_traced_indices_and_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))
    idx = rng.integers(0, 4, (3, 6))

    def f(x, idx):
        return np.take_along_axis(x, idx, axis=1)
    np.testing.assert_array_equal(jitgrad.jit(f)(x, idx), np.take_along_axis(x, idx, axis=1))
    jac_fwd = jitgrad.jacfwd(f)(x, idx)
    jac_rev = jitgrad.jacrev(f)(x, idx)
    expected = np.zeros((3, 6, 3, 4))
    for r in range(3):
        for c in range(6):
            expected[r, c, r, idx[r, c]] = 1.0
    np.testing.assert_array_equal(jac_fwd, expected)
    np.testing.assert_array_equal(jac_rev, expected)


def test_second_order_through_gather_and_scatter_matches_finite_differences():
    rng = np.random.default_rng(3)
    i = np.array([2, 0, 2, 1])

    def f(x, v):
        y = x * 1.0
        y[i] = v * x[i]
        return np.sum(np.sin(y) * y[np.array([0, 1, 2, 0])].sum())
    x, v = rng.standard_normal(3), rng.standard_normal(4)
    hess = jitgrad.hessian(f)(x, v)
    eps = 1e-4
    grad = jitgrad.jit(jitgrad.grad(f))
    numeric = np.stack([(grad(x + eps * e, v) - grad(x - eps * e, v)) / (2 * eps) for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(hess, numeric, rtol=1e-6, atol=1e-7)
