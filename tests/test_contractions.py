"""Contractions of every shape on the CPU: values against NumPy (bit for bit where jitgrad
calls the BLAS routine NumPy calls with the same arguments), transposed and broadcast
operands read in place (no gather kernel of their own), integer products kept off BLAS,
size-0 and size-1 axes, and gradients against central differences."""
import numpy as np
import pytest

import jitgrad as jg

RNG = np.random.default_rng(12)


def data(*shape, dtype=np.float64):
    if np.issubdtype(dtype, np.integer):
        return RNG.integers(-9, 10, size=shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def kernels(fn, *args) -> str:
    return jg.jit(fn).lower(*args).as_text("kernels")


def llvm(fn, *args) -> str:
    return jg.jit(fn).lower(*args).as_text("llvm")


# (name, function, operand shapes): each is checked bit for bit against NumPy in float64
SAME_ROUTINE = [
    ("vector.vector", lambda a, b: a @ b, [(300,), (300,)]),
    ("matrix.vector", lambda a, b: a @ b, [(70, 40), (40,)]),
    ("transposed matrix.vector", lambda a, b: a.T @ b, [(70, 40), (70,)]),
    ("vector.matrix", lambda a, b: a @ b, [(70,), (70, 40)]),
    ("vector.transposed matrix", lambda a, b: a @ b.T, [(40,), (70, 40)]),
    ("matrix.matrix", lambda a, b: a @ b, [(30, 20), (20, 25)]),
    ("transposed.matrix", lambda a, b: a.T @ b, [(20, 30), (20, 25)]),
    ("matrix.transposed", lambda a, b: a @ b.T, [(30, 20), (25, 20)]),
    ("transposed.transposed", lambda a, b: a.T @ b.T, [(20, 30), (25, 20)]),
    ("np.dot vectors", lambda a, b: np.dot(a, b), [(17,), (17,)]),
]


@pytest.mark.parametrize("name,fn,shapes", SAME_ROUTINE, ids=[c[0] for c in SAME_ROUTINE])
def test_same_bits_as_numpy(name, fn, shapes):
    args = [data(*s) for s in shapes]
    got = jg.jit(fn)(*args)
    np.testing.assert_array_equal(got, fn(*args))


@pytest.mark.parametrize("name,fn,shapes", SAME_ROUTINE, ids=[c[0] for c in SAME_ROUTINE])
def test_float32(name, fn, shapes):
    args = [data(*s, dtype=np.float32) for s in shapes]
    got = jg.jit(fn)(*args)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, fn(*[a.astype(np.float64) for a in args]), rtol=2e-5, atol=2e-5)


def test_transposes_are_read_in_place():
    A, r = data(50, 8), data(50)
    plan = kernels(lambda a, b: a.T @ b, A, r)
    assert "gather" not in plan and ": 1 kernels" in plan and "(inlined: " in plan
    assert "workspace: 0 bytes" in plan
    text = llvm(lambda a, b: a.T @ b, A, r)
    assert "scipy_cblas_dgemv64_\"(i32 101, i32 112" in text     # row-major, transposed


def test_level_by_shape():
    A, B, x = data(6, 5), data(5, 4), data(5)
    assert "call double @\"scipy_cblas_ddot64_" in llvm(lambda a, b: a @ b, x, x)
    assert "call void @\"scipy_cblas_dgemv64_" in llvm(lambda a, b: a @ b, A, x)
    assert "call void @\"scipy_cblas_dgemm64_" in llvm(lambda a, b: a @ b, A, B)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8])
def test_integer_products_stay_off_blas(dtype):
    A, B, x = data(7, 5, dtype=dtype), data(5, 3, dtype=dtype), data(5, dtype=dtype)
    for fn, args in [(lambda a, b: a @ b, (A, B)), (lambda a, b: a @ b, (A, x)),
                     (lambda a, b: a.T @ b, (B, data(5, 2, dtype=dtype))), (lambda a, b: a @ b, (x, x))]:
        got = jg.jit(fn)(*args)
        expected = fn(*args)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        assert "cblas" not in llvm(fn, *args)


def test_batched():
    a, b = data(4, 6, 5), data(4, 5, 3)
    np.testing.assert_allclose(jg.jit(lambda a, b: a @ b)(a, b), a @ b, rtol=1e-13, atol=1e-13)
    at = data(4, 5, 6)
    np.testing.assert_allclose(jg.jit(lambda a, b: np.swapaxes(a, 1, 2) @ b)(at, b),
                               np.swapaxes(at, 1, 2) @ b, rtol=1e-13, atol=1e-13)
    v = data(4, 5)
    np.testing.assert_allclose(jg.jit(lambda a, v: np.einsum("bij,bj->bi", a, v))(a, v),
                               np.einsum("bij,bj->bi", a, v), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(jg.jit(lambda v, b: np.einsum("bj,bjk->bk", v, b))(v, b),
                               np.einsum("bj,bjk->bk", v, b), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(jg.jit(lambda v, w: np.einsum("bj,bj->b", v, w))(v, v[::-1].copy()),
                               np.einsum("bj,bj->b", v, v[::-1]), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("lhs,rhs", [((3, 4, 5), (5, 6)), ((4, 5), (3, 5, 6)), ((2, 3, 4, 5), (5, 2)),
                                     ((3, 4, 5), (5,)), ((5,), (3, 5, 6)), ((2, 1, 4, 5), (3, 5, 6)),
                                     ((1, 4, 5), (3, 5, 6))])
def test_broadcast_batch(lhs, rhs):
    a, b = data(*lhs), data(*rhs)
    got = jg.jit(lambda a, b: a @ b)(a, b)
    np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-13)
    plan = kernels(lambda a, b: a @ b, a, b)
    if len(lhs) == 3 and len(rhs) == 2:
        assert "gather" not in plan          # the broadcast is a batch stride of 0, not a copy


def test_broadcast_batch_merges_into_one_gemm():
    a, b = data(3, 4, 5), data(5, 6)
    text = llvm(lambda a, b: a @ b, a, b)
    assert text.count("call void @\"scipy_cblas_dgemm64_\"(i32 101, i32 111, i32 111, i64 12, i64 6, i64 5") == 1


@pytest.mark.parametrize("lhs,rhs", [((0, 5), (5, 3)), ((4, 0), (0, 3)), ((4, 5), (5, 0)), ((0,), (0,)),
                                     ((1, 5), (5, 1)), ((4, 1), (1, 3)), ((1, 1), (1, 1)), ((1,), (1, 7)),
                                     ((2, 0, 3), (2, 3, 4)), ((5, 1), (1,)), ((0, 4, 5), (5,))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_size_zero_and_one_axes(lhs, rhs, dtype):
    a, b = data(*lhs, dtype=dtype), data(*rhs, dtype=dtype)
    got = jg.jit(lambda a, b: a @ b)(a, b)
    expected = a @ b
    assert np.shape(got) == expected.shape and np.asarray(got).dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_outer_product_exact():
    x, y = data(9), data(7)
    np.testing.assert_array_equal(jg.jit(np.outer)(x, y), np.outer(x, y))
    np.testing.assert_array_equal(jg.jit(lambda x, y: x[:, None] @ y[None, :])(x, y), np.outer(x, y))


def test_transposed_operand_of_computed_value():
    """A transpose of an inlined expression is materialized (copied) before the product;
    a transpose also read elsewhere keeps its buffer."""
    A, x = data(30, 6), data(30)
    f = jg.jit(lambda a, x: np.sin(a).T @ x)
    np.testing.assert_allclose(f(A, x), np.sin(A).T @ x, rtol=1e-13, atol=1e-13)
    g = jg.jit(lambda a, x: (a.T @ x, a.T * 2.0))
    got = g(A, x)
    np.testing.assert_allclose(got[0], A.T @ x, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(got[1], A.T * 2.0)


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_operands_broadcast_along_rows_or_columns(dtype):
    """A row repeated (stride 0 between rows) has no BLAS layout: it is copied first."""
    v, B, w = data(5, dtype=dtype), data(5, 3, dtype=dtype), data(4, dtype=dtype)
    f = jg.jit(lambda v, B: np.broadcast_to(v, (4, 5)) @ B)
    np.testing.assert_allclose(f(v, B), np.broadcast_to(v, (4, 5)) @ B, rtol=1e-13, atol=1e-13)
    g = jg.jit(lambda w, B: np.broadcast_to(w[:, None], (4, 5)) @ B)
    np.testing.assert_allclose(g(w, B), np.broadcast_to(w[:, None], (4, 5)) @ B, rtol=1e-13, atol=1e-13)


def central_difference(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("name,loss,shapes", [
    ("least squares", lambda A, x, b: np.sum((A @ x - b) ** 2) + 0.1 * np.sum(x * x), [(12, 4), (4,), (12,)]),
    ("vector.matrix", lambda v, B, c: np.sum(np.tanh(v @ B.T) * c), [(5,), (3, 5), (3,)]),
    ("batched", lambda a, b, c: np.sum(np.sin(a @ b) * c), [(2, 3, 4), (4, 5), (2, 3, 5)]),
    ("transposed", lambda a, b, c: np.sum((a.T @ b) * c), [(4, 3), (4, 2), (3, 2)]),
    ("dot", lambda x, y, c: np.dot(x, y) ** 2 * c.sum(), [(6,), (6,), (2,)]),
])
def test_gradients_vs_central_differences(name, loss, shapes):
    args = [data(*s) for s in shapes]
    grads = jg.jit(jg.grad(loss, argnums=(0, 1, 2)))(*args)
    for k, g in enumerate(grads):
        def partial(v, k=k):
            return loss(*[v if j == k else a for j, a in enumerate(args)])
        np.testing.assert_allclose(g, central_difference(partial, args[k]), rtol=1e-6, atol=1e-7)


def test_least_squares_gradient_matches_hand_written_numpy_bits():
    A, x, b, lam = data(500, 20), data(20), data(500), 0.1

    def loss(A, x, b):
        e = A @ x - b
        return np.sum(e * e) + lam * np.sum(x * x)

    _, g = jg.jit(jg.value_and_grad(loss, argnums=1))(A, x, b)
    e = A @ x - b
    np.testing.assert_allclose(g, 2 * (A.T @ e) + 2 * lam * x, rtol=1e-14, atol=1e-14)


def test_views_keep_their_base_buffer_alive():
    """The product reads its operand through a transpose view of an intermediate: the
    memory plan must not let a later kernel overwrite (in place) or reuse that buffer
    before the product has read it."""
    A, x, y = data(40, 30), data(40), data(30)

    def f(a, x, y):
        b = np.sin(a) * 2.0
        c = np.cos(b) + 1.0                 # may overwrite b's slot in place, after its last read
        r = b.T @ x                         # reads b through the view
        s = np.broadcast_to(c[0], (40, 30)).T @ x
        d = np.exp(c * 0.1) @ y
        return r, s, d, c * 0.5

    got = jg.jit(f)(A, x, y)
    for g, e in zip(got, f(A, x, y)):
        np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.float64])
def test_products_blas_does_not_serve_batched_and_outer(dtype):
    """Batched products with a transposed operand, and k = 1 products, in dtypes BLAS does
    not serve or with k = 1: the loop kernel, equal to NumPy."""
    x = (np.arange(50) % 7 - 3).reshape(2, 5, 5).astype(dtype)
    got = jg.jit(lambda x: x @ np.swapaxes(x, -1, -2))(x)
    expected = x @ np.swapaxes(x, -1, -2)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-3)
    col, row = x[0, :, :1].copy(), x[1, :1, :].copy()
    np.testing.assert_array_equal(jg.jit(lambda a, b: a @ b)(col, row), col @ row)
