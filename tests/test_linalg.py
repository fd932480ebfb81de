"""numpy.linalg: the LAPACK primitives and the public functions built on them.

  - `LAPACK_SPEC_ROWS` feed tests/test_primitive_rules.py's table: each primitive's value
    against NumPy and its JVP/VJP against central differences to second order
    (interpreter);
  - the same primitives compiled (the CPU kernels calling OpenBLAS) against the
    interpreter, f64 and f32, batched, and their first derivatives on compiled code;
  - every public np.linalg function traced and compiled against NumPy itself (values,
    shapes, dtypes), batched where NumPy batches, and gradients of scalar losses through
    them against central differences of NumPy running the same function;
  - failure outcomes (NaN where NumPy raises LinAlgError) and the documented refusals.
"""
from __future__ import annotations

import numpy as np
import pytest

import jitgrad
import jitgrad.primitives as P
from jitgrad.backends.cpu import CPUBackend
from jitgrad.errors import DTypeError, GradientError, UnsupportedOperationError
from jitgrad.interpreter import evaluate
from jitgrad.passes.lower_complex import LowerComplex
from jitgrad.ir import DType, TensorType
from jitgrad.primitives import complex_numbers as C
from jitgrad.primitives import lapack as L

from helpers import build, check_grads


def f64(*shape): return TensorType(shape, DType.f64)
def f32(*shape): return TensorType(shape, DType.f32)


def _eye_like(x, scale):
    n, nd = x.type.shape[-1], x.type.ndim
    return P.broadcast_in_dim(P.constant(scale * np.eye(n), x.type.dtype), x.type.shape, (nd - 2, nd - 1))


def _spd(x):
    """x x^T + 3 I: symmetric positive definite for any x."""
    nd = x.type.ndim
    batch = tuple(range(nd - 2))
    return P.add(P.dot_general(x, x, ((nd - 1,), (nd - 1,)), (batch, batch)), _eye_like(x, 3.0))


def _spd_ref(x):
    return x @ np.swapaxes(x, -1, -2) + 3.0 * np.eye(x.shape[-1])


def _dominant(x):
    """x + 4 I: a well-conditioned matrix (and triangle) for solves."""
    return P.add(x, _eye_like(x, 4.0))


def _solve_tri_ref(a, b, lower, transpose_a):
    t = np.tril(a) if lower else np.triu(a)
    return np.linalg.solve(np.swapaxes(t, -1, -2) if transpose_a else t, b)


def _pack_flat(*parts, batch=()):
    return np.concatenate([p.reshape(batch + (-1,)) for p in parts], axis=-1)


def _eigh_ref(a, lower=True):
    w, v = np.linalg.eigh(a, UPLO="L" if lower else "U")
    return np.concatenate([w[..., None, :], v], axis=-2)


def _svd_ref(a, full):
    u, s, vt = np.linalg.svd(a, full_matrices=full)
    return _pack_flat(u, s, vt, batch=a.shape[:-2])


def _qr_ref(a, complete):
    q, r = np.linalg.qr(a, mode="complete" if complete else "reduced")
    return _pack_flat(q, r, batch=a.shape[:-2])


def _spread(x):
    """0.1 x + diag(1, 2, ...): a general matrix with distinct real eigenvalues, whose
    real unit eigenvectors change smoothly (no phase to follow)."""
    n = x.type.shape[-1]
    return P.add(P.mul(x, P.full(0.1, x.type)), P.broadcast_in_dim(P.constant(np.diag(np.arange(1.0, n + 1)),
                                                                              x.type.dtype), x.type.shape,
                                                                  (x.type.ndim - 2, x.type.ndim - 1)))


def _f64(x):
    """eig runs in double precision (as NumPy's linalg)."""
    return x if x.type.dtype == DType.f64 else P.convert(x, DType.f64)


def _parts(z):
    """Re z + Im z / 2: a real output that reads both parts of a complex one."""
    re, im = C.real(z), C.imag(z)
    return P.add(re, P.mul(im, P.full(0.5, im.type)))


def _eig_ref(a, vectors):
    a = 0.1 * a + np.diag(np.arange(1.0, a.shape[-1] + 1)) if vectors else a
    w, v = np.linalg.eig(a)
    z = np.concatenate([w[..., None, :], v], axis=-2) if vectors else w
    return z.real + z.imag / 2


def _tri(lower, transpose_a):
    return lambda a, b: L.triangular_solve(_dominant(a), b, lower=lower, transpose_a=transpose_a)


# (primitive, variant, input types, body, NumPy reference); the inputs are standard normal
LAPACK_SPEC_ROWS = [
    ("cholesky", "batched", [f64(2, 3, 3)], lambda x: L.cholesky(_spd(x)),
     lambda x: np.linalg.cholesky(_spd_ref(x))),
    ("triangular_solve", "lower", [f64(3, 3), f64(3, 2)], _tri(True, False),
     lambda a, b: _solve_tri_ref(a + 4 * np.eye(3), b, True, False)),
    ("triangular_solve", "upper-transposed-batched", [f64(2, 3, 3), f64(2, 3, 2)], _tri(False, True),
     lambda a, b: _solve_tri_ref(a + 4 * np.eye(3), b, False, True)),
    ("solve", "batched", [f64(2, 3, 3), f64(2, 3, 2)], lambda a, b: L.solve(_dominant(a), b),
     lambda a, b: np.linalg.solve(a + 4 * np.eye(3), b)),
    ("solve", "transposed", [f64(3, 3), f64(3, 1)], lambda a, b: L.solve(_dominant(a), b, transpose_a=True),
     lambda a, b: np.linalg.solve((a + 4 * np.eye(3)).T, b)),
    ("slogdet", "batched", [f64(2, 3, 3)], lambda a: L.slogdet_p.bind(a),
     lambda a: np.stack(np.linalg.slogdet(a), axis=-1)),
    ("eigh", "vectors", [f64(3, 3)], lambda a: L.eigh_p.bind(a, vectors=True, lower=True), _eigh_ref),
    ("eigh", "vectors-upper-batched", [f64(2, 3, 3)], lambda a: L.eigh_p.bind(a, vectors=True, lower=False),
     lambda a: _eigh_ref(a, lower=False)),
    ("eigh", "values", [f64(2, 4, 4)], lambda a: L.eigh_p.bind(a, vectors=False, lower=True),
     lambda a: np.linalg.eigvalsh(a)),
    ("svd", "tall", [f64(4, 3)], lambda a: L.svd_p.bind(a, full_matrices=False, vectors=True),
     lambda a: _svd_ref(a, False)),
    ("svd", "wide-batched", [f64(2, 3, 4)], lambda a: L.svd_p.bind(a, full_matrices=False, vectors=True),
     lambda a: _svd_ref(a, False)),
    ("svd", "square-full", [f64(3, 3)], lambda a: L.svd_p.bind(a, full_matrices=True, vectors=True),
     lambda a: _svd_ref(a, True)),
    ("svd", "values", [f64(3, 5)], lambda a: L.svd_p.bind(a, full_matrices=False, vectors=False),
     lambda a: np.linalg.svd(a, compute_uv=False)),
    ("pinv", "tall", [f64(4, 3)], lambda a: L.pinv(a, rcond=1e-15), np.linalg.pinv),
    ("pinv", "wide-batched", [f64(2, 2, 3)], lambda a: L.pinv(a, rcond=1e-15), np.linalg.pinv),
    ("qr", "tall", [f64(4, 3)], lambda a: L.qr_p.bind(a, complete=False), lambda a: _qr_ref(a, False)),
    ("qr", "square-complete-batched", [f64(2, 3, 3)], lambda a: L.qr_p.bind(a, complete=True),
     lambda a: _qr_ref(a, True)),
    ("eig", "real-spectrum-vectors", [f64(3, 3)], lambda a: _parts(L.eig_p.bind(_spread(_f64(a)), vectors=True)),
     lambda a: _eig_ref(a, True)),
    ("eig", "values-batched", [f64(2, 3, 3)], lambda a: _parts(L.eig_p.bind(_f64(a), vectors=False)),
     lambda a: _eig_ref(a, False)),
]


# --------------------------------------------------------------------------- compiled primitives

def _compiled(fn, args):
    return CPUBackend().compile(LowerComplex().run(fn))(args)     # backends see complex values as real pairs


def _row_args(types, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(t.shape).astype(dtype) for t in types]


@pytest.mark.parametrize("row", LAPACK_SPEC_ROWS, ids=[f"{r[0]}-{r[1]}" for r in LAPACK_SPEC_ROWS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_primitive_matches_interpreter(row, dtype):
    name, _, types, body, _ = row
    types = [TensorType(t.shape, DType.from_numpy(np.dtype(dtype))) for t in types]
    fn = build(name, types, body)
    args = _row_args(types, dtype)
    expected = evaluate(fn, args)
    got = _compiled(fn, args)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("index", [0, 3, 6, 9, 13, 15])
def test_compiled_first_derivatives(index):
    """Forward and reverse mode on compiled code (the kernels run inside the derivatives)."""
    name, _, types, body, _ = LAPACK_SPEC_ROWS[index]
    fn = build(name, types, body)
    check_grads(fn, _row_args(types, np.float64), order=1, evaluator=_compiled)


# --------------------------------------------------------------------------- public functions vs NumPy

RNG = np.random.default_rng(1)
A = RNG.standard_normal((3, 4, 4))
B = RNG.standard_normal((3, 4, 2))
V4 = RNG.standard_normal(4)
SPD = A @ np.swapaxes(A, -1, -2) + 4 * np.eye(4)
TALL = RNG.standard_normal((5, 3))
WIDE = RNG.standard_normal((2, 3, 5))
T623 = RNG.standard_normal((6, 2, 3))


def _cases():
    cases = {
        "solve": (lambda a, b: np.linalg.solve(a, b), (A, B)),
        "solve-vector": (lambda a, b: np.linalg.solve(a, b), (A[0], V4)),
        "solve-broadcast": (lambda a, b: np.linalg.solve(a, b), (A, B[:1])),
        "inv": (np.linalg.inv, (A,)),
        "det": (np.linalg.det, (A,)),
        "slogdet": (lambda a: tuple(np.linalg.slogdet(a)), (A,)),
        "cholesky": (np.linalg.cholesky, (SPD,)),
        "cholesky-upper": (lambda a: np.linalg.cholesky(a, upper=True), (SPD,)),
        "qr": (lambda a: tuple(np.linalg.qr(a)), (TALL,)),
        "qr-wide-batched": (lambda a: tuple(np.linalg.qr(a)), (WIDE,)),
        "qr-complete": (lambda a: tuple(np.linalg.qr(a, mode="complete")), (TALL,)),
        "qr-r": (lambda a: np.linalg.qr(a, mode="r"), (TALL,)),
        "eigh": (lambda a: tuple(np.linalg.eigh(a)), (SPD,)),
        "eigh-upper": (lambda a: tuple(np.linalg.eigh(a, UPLO="U")), (A,)),
        "eigvalsh": (np.linalg.eigvalsh, (A,)),
        "svd": (lambda a: tuple(np.linalg.svd(a)), (TALL,)),
        "svd-reduced-batched": (lambda a: tuple(np.linalg.svd(a, full_matrices=False)), (WIDE,)),
        "svd-values": (lambda a: np.linalg.svd(a, compute_uv=False), (A,)),
        "svdvals": (np.linalg.svdvals, (WIDE,)),
        "pinv": (np.linalg.pinv, (TALL,)),
        "pinv-batched-rtol": (lambda a: np.linalg.pinv(a, rtol=1e-3), (WIDE,)),
        "lstsq": (lambda a, b: tuple(np.linalg.lstsq(a, b)), (TALL, RNG.standard_normal(5))),
        "lstsq-matrix": (lambda a, b: tuple(np.linalg.lstsq(a, b)), (TALL, RNG.standard_normal((5, 2)))),
        "lstsq-wide": (lambda a, b: tuple(np.linalg.lstsq(a, b)), (TALL.T, RNG.standard_normal(3))),
        "matrix-rank": (np.linalg.matrix_rank, (A,)),
        "matrix-rank-deficient": (np.linalg.matrix_rank, (TALL @ np.diag([1.0, 1.0, 0.0]),)),
        "matrix-rank-rtol-per-matrix": (lambda a: np.linalg.matrix_rank(a, rtol=np.array([1e-15, 0.3])),
                                        (WIDE,)),
        "matrix-rank-tol": (lambda a: np.linalg.matrix_rank(a, tol=1.0), (A,)),
        "pinv-rcond-per-matrix": (lambda a: np.linalg.pinv(a, rcond=np.array([1e-15, 0.3])), (WIDE,)),
        "matrix-power-0": (lambda a: np.linalg.matrix_power(a, 0), (A,)),
        "matrix-power-3": (lambda a: np.linalg.matrix_power(a, 3), (A,)),
        "matrix-power-13": (lambda a: np.linalg.matrix_power(a, 13), (A * 0.5,)),
        "matrix-power-neg": (lambda a: np.linalg.matrix_power(a, -2), (A,)),
        "multi-dot-3": (lambda a, b, c: np.linalg.multi_dot([a, b, c]), (TALL, TALL.T, TALL)),
        "multi-dot-4-vectors": (lambda a, b, c, d: np.linalg.multi_dot([a, b, c, d]),
                                (RNG.standard_normal(5), TALL, TALL.T, RNG.standard_normal(5))),
        "cond": (np.linalg.cond, (A,)),
        "cond--2": (lambda a: np.linalg.cond(a, -2), (A,)),
        "cond-1": (lambda a: np.linalg.cond(a, 1), (A,)),
        "cond-inf": (lambda a: np.linalg.cond(a, np.inf), (A,)),
        "cond-fro": (lambda a: np.linalg.cond(a, "fro"), (A,)),
        "cond-nuc": (lambda a: np.linalg.cond(a, "nuc"), (A,)),
        "tensorsolve": (np.linalg.tensorsolve, (T623, RNG.standard_normal(6))),
        "tensorsolve-axes": (lambda a, b: np.linalg.tensorsolve(a, b, axes=(0,)),
                             (RNG.standard_normal((2, 3, 2, 3)) + 3 * np.eye(6).reshape(2, 3, 2, 3),
                              RNG.standard_normal((2, 3)))),
        "tensorinv": (lambda a: np.linalg.tensorinv(a, ind=1), (T623,)),
        "vector-norm": (lambda x: np.linalg.vector_norm(x, ord=3, axis=(0, 2), keepdims=True), (A,)),
        "vector-norm-all": (np.linalg.vector_norm, (A,)),
        "matrix-norm": (lambda x: np.linalg.matrix_norm(x, ord="nuc"), (A,)),
        "norm-default": (np.linalg.norm, (A,)),
        "norm-keepdims": (lambda x: np.linalg.norm(x, keepdims=True), (TALL,)),
        "norm-int": (lambda x: np.linalg.norm(x, 1, axis=0), (np.arange(6).reshape(2, 3),)),
        "norm-f32": (lambda x: np.linalg.norm(x, 2, axis=(1, 2)), (A.astype(np.float32),)),
        "solve-f32": (lambda a, b: np.linalg.solve(a, b), (A.astype(np.float32), B.astype(np.float32))),
        "eigh-f32": (lambda a: tuple(np.linalg.eigh(a)), (SPD.astype(np.float32),)),
        "svd-f32": (lambda a: tuple(np.linalg.svd(a, full_matrices=False)), (WIDE.astype(np.float32),)),
        "det-int": (np.linalg.det, (np.array([[2, 1], [1, 3]]),)),
        "diagonal": (lambda a: np.linalg.diagonal(a, offset=1), (A,)),
        "trace": (lambda a: np.linalg.trace(a, offset=-1), (A,)),
        "matrix-transpose": (np.linalg.matrix_transpose, (WIDE,)),
        "cross": (lambda a, b: np.linalg.cross(a, b, axis=0), (TALL[:3], TALL[2:])),
        "vecdot": (lambda a, b: np.linalg.vecdot(a, b, axis=0), (A, B[..., :1])),
        "vecdot-last": (np.linalg.vecdot, (A, V4)),
    }
    for o in [None, "fro", "nuc", np.inf, -np.inf, 1, -1, 2, -2]:
        cases[f"norm-matrix-{o}"] = (lambda x, o=o: np.linalg.norm(x, ord=o, axis=(2, 0)), (A,))
    for o in [None, np.inf, -np.inf, 0, 1, -1, 2, 3, 0.5]:
        cases[f"norm-vector-{o}"] = (lambda x, o=o: np.linalg.norm(x, ord=o, axis=-1), (TALL,))
    return cases


CASES = _cases()


def _leaves(x):
    return list(x) if isinstance(x, tuple) else [x]


@pytest.mark.parametrize("name", sorted(CASES))
def test_public_function_matches_numpy(name):
    f, args = CASES[name]
    got, expected = _leaves(jitgrad.jit(f)(*args)), _leaves(f(*args))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape, (g.shape, e.shape)
        assert g.dtype == e.dtype, (g.dtype, e.dtype)      # lstsq's rank: int32, matrix_rank's: int64
        if e.dtype.kind == "f":
            tol = 2e-5 if e.dtype == np.float32 else 1e-11
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(g, e)


# --------------------------------------------------------------------------- gradients of public functions

def _numerical_grad(f, args, i, eps=1e-6):
    x = np.array(args[i], dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        shifted = []
        for sign in (1, -1):
            y = x.copy()
            y[index] += sign * eps
            shifted.append(f(*args[:i], y, *args[i + 1:]))
        grad[index] = (shifted[0] - shifted[1]) / (2 * eps)
    return grad


W3 = RNG.standard_normal((3, 3))
W43 = RNG.standard_normal((4, 3))
SPD3 = W3 @ W3.T + 3 * np.eye(3)

GRAD_CASES = {
    "solve": (lambda a, b: np.sum(np.sin(np.linalg.solve(a, b))), (A[:2] + 3 * np.eye(4), B[:2])),
    "inv": (lambda a: np.sum(np.linalg.inv(a) * W3), (W3 + 3 * np.eye(3),)),
    "det": (lambda a: np.sum(np.linalg.det(a)), (A,)),
    "slogdet": (lambda a: np.sum(np.linalg.slogdet(a)[1]), (A,)),
    "cholesky": (lambda a: np.sum(np.linalg.cholesky(a @ a.T + 3 * np.eye(3)) * W3), (W3,)),
    "cholesky-upper": (lambda a: np.sum(np.linalg.cholesky(a, upper=True) * W3), (SPD3,)),
    "qr": (lambda a: np.sum(np.linalg.qr(a)[0] * W43) + np.sum(np.linalg.qr(a)[1] * W3), (TALL[:4],)),
    "qr-r": (lambda a: np.sum(np.linalg.qr(a, mode="r") ** 2 * W3), (TALL[:4],)),
    "eigh": (lambda a: np.sum(np.linalg.eigh(a)[1] ** 2 * W3) + np.sum(np.linalg.eigh(a)[0] * W3[0]), (SPD3,)),
    "eigvalsh": (lambda a: np.sum(np.linalg.eigvalsh(a) * W3[0]), (W3,)),
    "svd": (lambda a: np.sum(np.abs(np.linalg.svd(a, full_matrices=False)[0]) * W43)
            + np.sum(np.linalg.svd(a, full_matrices=False)[1] * W3[0]), (TALL[:4],)),
    "svd-wide-vt": (lambda a: np.sum(np.linalg.svd(a, full_matrices=False)[2] ** 2 * W43.T), (TALL[:4].T,)),
    "svdvals": (lambda a: np.sum(np.linalg.svdvals(a) ** 2), (WIDE,)),
    "pinv": (lambda a: np.sum(np.linalg.pinv(a) * W43.T), (TALL[:4],)),
    "lstsq": (lambda a, b: np.sum(np.linalg.lstsq(a, b)[0] ** 2), (TALL, RNG.standard_normal(5))),
    "matrix-power": (lambda a: np.sum(np.linalg.matrix_power(a, -3)), (W3 + 3 * np.eye(3),)),
    "multi-dot": (lambda a, b, c: np.sum(np.linalg.multi_dot([a, b, c])), (TALL, TALL.T, TALL)),
    "cond": (lambda a: np.linalg.cond(a), (W3,)),
    "cond-1": (lambda a: np.linalg.cond(a, 1), (W3,)),
    "norm-nuc": (lambda a: np.linalg.norm(a, "nuc"), (W43,)),
    "norm-2": (lambda a: np.linalg.norm(a, 2), (W43,)),
    "norm-vector-3": (lambda x: np.sum(np.linalg.norm(x, 3, axis=0)), (W43,)),
    "tensorsolve": (lambda a, b: np.sum(np.linalg.tensorsolve(a, b) ** 2), (T623 + np.eye(6).reshape(6, 2, 3) * 3,
                                                                           RNG.standard_normal(6))),
    "tensorinv": (lambda a: np.sum(np.linalg.tensorinv(a, ind=1) * W3[:2].T.reshape(2, 3, 1)),
                  (T623 + np.eye(6).reshape(6, 2, 3) * 3,)),
    "gp-nlml": (lambda k, y: (0.5 * y @ np.linalg.solve(k, y) + np.sum(np.log(np.diagonal(np.linalg.cholesky(k))))),
                (SPD3, W3[0])),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_public_gradient_matches_central_differences(name):
    f, args = GRAD_CASES[name]
    positions = list(range(len(args)))
    grads = jitgrad.grad(f, argnums=positions)(*args)
    for i, g in zip(positions, grads, strict=True):
        np.testing.assert_allclose(g, _numerical_grad(f, list(args), i), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("name", ["cholesky", "solve", "eigh", "svd", "qr"])
def test_public_second_derivative(name):
    """Hessian-vector products (forward over reverse) against differences of gradients."""
    f, args = GRAD_CASES[name]
    x = args[0]
    direction = np.random.default_rng(3).standard_normal(x.shape)
    g = jitgrad.grad(lambda x, *rest: f(x, *rest))
    _, hv = jitgrad.jvp(lambda x: g(x, *args[1:]), (x,), (direction,))
    eps = 1e-5
    numeric = (g(x + eps * direction, *args[1:]) - g(x - eps * direction, *args[1:])) / (2 * eps)
    np.testing.assert_allclose(hv, numeric, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- failures and refusals

def test_not_positive_definite_gives_nan_per_matrix():
    good = SPD3
    bad = -SPD3
    out = jitgrad.jit(np.linalg.cholesky)(np.stack([good, bad]))
    np.testing.assert_allclose(out[0], np.linalg.cholesky(good), rtol=1e-13)
    assert np.all(np.isnan(out[1]))


def test_singular_matrix_solve_and_inv_give_nan():
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    x = jitgrad.jit(np.linalg.solve)(singular, np.ones(2))
    assert np.all(np.isnan(x))
    assert np.all(np.isnan(jitgrad.jit(np.linalg.inv)(np.stack([singular, np.eye(2)]))[0]))


def test_singular_matrix_det_slogdet_and_cond_as_numpy():
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    assert jitgrad.jit(np.linalg.det)(singular) == np.linalg.det(singular) == 0.0
    sign, logdet = jitgrad.jit(lambda a: tuple(np.linalg.slogdet(a)))(singular)
    assert (sign, logdet) == (0.0, -np.inf)
    assert jitgrad.jit(lambda a: np.linalg.cond(a, 1))(singular) == np.inf


def test_singular_triangular_solve_gives_nan():
    fn = build("tri", [f64(2, 2), f64(2, 1)], lambda a, b: L.triangular_solve(a, b, lower=True))
    out = _compiled(fn, [np.array([[0.0, 0.0], [1.0, 1.0]]), np.ones((2, 1))])[0]
    assert np.all(np.isnan(out))
    assert np.all(np.isnan(evaluate(fn, [np.array([[0.0, 0.0], [1.0, 1.0]]), np.ones((2, 1))])[0]))


def test_float16_is_refused_as_numpy_refuses_it():
    with pytest.raises(DTypeError, match="unsupported in linalg"):
        jitgrad.jit(np.linalg.inv)(W3.astype(np.float16))


@pytest.mark.parametrize("f, x", [
    (lambda a: np.sum(np.linalg.qr(a)[0]), TALL.T),
    (lambda a: np.sum(np.linalg.qr(a, mode="complete")[0]), TALL),
    (lambda a: np.sum(np.linalg.svd(a)[0]), TALL),
], ids=["qr-wide", "qr-complete-tall", "svd-full-nonsquare"])
def test_undefined_factor_derivatives_are_refused(f, x):
    with pytest.raises(GradientError):
        jitgrad.grad(f)(x)


def test_eigenvalue_gradient_is_finite_at_repeated_eigenvalues():
    """eigvalsh never divides by an eigenvalue gap: d sum(w * c) / dA at the identity."""
    c = np.array([1.0, 2.0, 3.0])
    g = jitgrad.grad(lambda a: np.sum(np.linalg.eigvalsh(a) * c))(np.eye(3))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(np.trace(g), c.sum(), rtol=1e-12)   # d/dt of sum(w * c) along A = I + tI


def test_eigenvector_gradient_at_repeated_eigenvalues_is_not_finite():
    """Eigenvectors of a repeated eigenvalue are not differentiable: inf/NaN, never a number."""
    g = jitgrad.grad(lambda a: np.sum(np.linalg.eigh(a)[1] * W3))(np.diag([1.0, 1.0, 2.0]))
    assert not np.all(np.isfinite(g))


@pytest.mark.parametrize("upper", [False, True])
def test_solve_with_a_cholesky_factor_is_a_triangular_solve(upper):
    """solve(cholesky(K), y) and inv(cholesky(K)) need no LU factorization; values and
    gradients stay NumPy's."""
    def f(k, y):
        factor = np.linalg.cholesky(k, upper=upper)
        return np.linalg.solve(factor, y), np.linalg.inv(factor)

    names = {op.name for op in jitgrad.jit(f).lower(SPD, B).function.walk()}
    assert "triangular_solve" in names and "solve" not in names
    for got, expected in zip(jitgrad.jit(f)(SPD, B), f(SPD, B), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)
    loss = lambda k, y: np.sum(np.sin(f(k, y)[0])) + np.sum(f(k, y)[1] ** 2)   # noqa: E731
    grad = jitgrad.grad(loss)(SPD3, W3)
    np.testing.assert_allclose(grad, _numerical_grad(loss, [SPD3, W3], 0), rtol=2e-6, atol=2e-7)


def test_empty_square_matrices_as_numpy():
    empty = np.zeros((2, 0, 0))
    f = lambda a: (np.linalg.inv(a), np.linalg.det(a), np.linalg.slogdet(a)[1], np.linalg.cholesky(a),  # noqa: E731
                   np.linalg.eigvalsh(a), np.linalg.solve(a, np.zeros((2, 0, 3))))
    for got, expected in zip(jitgrad.jit(f)(empty), f(empty), strict=True):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_bfloat16_and_integers_compute_in_float64():
    import ml_dtypes
    x = (W3 + 3 * np.eye(3)).astype(ml_dtypes.bfloat16)
    got = jitgrad.jit(np.linalg.inv)(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.linalg.inv(x), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128, np.complex64])
@pytest.mark.parametrize("shape", [(3, 0), (0, 2), (2, 0, 0), (2, 3, 0)])
def test_factors_of_empty_matrices_as_numpy(shape, dtype):
    """Singular values are real also for complex matrices, and an empty matrix has rank 0."""
    empty = np.zeros(shape, dtype)
    f = lambda a: (*np.linalg.qr(a), *np.linalg.qr(a, mode="complete"), *np.linalg.svd(a),  # noqa: E731
                   *np.linalg.svd(a, full_matrices=False), np.linalg.svdvals(a), np.linalg.matrix_rank(a),
                   np.linalg.norm(a, 2, axis=(-2, -1)), np.linalg.norm(a, "nuc", axis=(-2, -1)))
    for got, expected in zip(jitgrad.jit(f)(empty), f(empty), strict=True):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_ir_text_round_trip_of_the_gradient():
    """The printed IR of a gradient through every LAPACK primitive parses back, verifies
    and computes the same numbers."""
    from jitgrad.ir.parser import parse_function
    from jitgrad.ir.printer import print_function
    from jitgrad.ir.verifier import verify
    from jitgrad.passes.reverse import vjp_function
    from jitgrad.tracing.tracer import trace

    def f(a):
        spd = a @ a.T + 3 * np.eye(3)
        return (np.sum(np.linalg.cholesky(spd)) + np.linalg.slogdet(a)[1] + np.sum(np.linalg.eigh(spd)[1] ** 2)
                + np.sum(np.linalg.svd(a)[1]) + np.sum(np.linalg.qr(a)[1] ** 2) + np.sum(np.linalg.inv(spd))
                + np.sum(np.linalg.solve(np.linalg.cholesky(spd), a)) + np.sum(np.linalg.eigvalsh(spd)))

    fn = vjp_function(trace(f, (W3,)).function, [0])
    text = print_function(fn)
    parsed = parse_function(text)
    verify(parsed)
    assert print_function(parsed) == text
    args = [W3, np.array(1.0)]
    for got, expected in zip(evaluate(parsed, args), evaluate(fn, args), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_pinv_and_lstsq_gradients_are_finite_at_repeated_singular_values():
    """pinv's derivative (Golub-Pereyra) never divides by singular-value gaps: an
    orthonormal design has every singular value 1."""
    q = np.linalg.qr(RNG.standard_normal((5, 3)))[0]
    y = RNG.standard_normal(5)
    for f, args in ((lambda a: np.sum(np.linalg.pinv(a) * TALL.T), (q,)),
                    (lambda a, b: np.sum(np.linalg.lstsq(a, b)[0] ** 3), (q, y))):
        grads = jitgrad.grad(f, argnums=list(range(len(args))))(*args)
        for i, g in enumerate(grads):
            np.testing.assert_allclose(g, _numerical_grad(f, list(args), i), rtol=2e-6, atol=2e-7)


def _losses_in(dtype):
    """Scalar losses whose every constant has `dtype`, so float32 runs float32 kernels."""
    w, eye = W3.astype(dtype), np.eye(3, dtype=dtype)
    return {
        "cholesky": lambda a: np.sum(np.linalg.cholesky(a @ a.T + 3 * eye) * w),
        "solve": lambda a: np.sum(np.sin(np.linalg.solve(a + 3 * eye, w))),
        "eigh": lambda a: np.sum(np.linalg.eigh(a @ a.T + eye)[1] ** 2 * w) + np.sum(np.linalg.eigvalsh(a + a.T)),
        "svd": lambda a: np.sum(np.linalg.svd(a)[0] ** 2 * w) + np.sum(np.linalg.svd(a)[1]),
        "qr": lambda a: np.sum(np.linalg.qr(a)[0] * w) + np.sum(np.linalg.qr(a)[1] * w),
        "pinv": lambda a: np.sum(np.linalg.pinv(a) * w),
        "slogdet": lambda a: np.linalg.slogdet(a + 3 * eye)[1],
    }


@pytest.mark.parametrize("name", sorted(_losses_in(np.float64)))
def test_float32_gradients_agree_with_float64(name):
    x = W3 + 0.5 * np.diag([1.0, 2.0, 3.0])
    g64 = jitgrad.grad(_losses_in(np.float64)[name])(x)
    g32 = jitgrad.grad(_losses_in(np.float32)[name])(x.astype(np.float32))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=2e-3, atol=2e-3 * np.max(np.abs(g64)))


def test_lstsq_with_a_traced_rcond_is_refused():
    with pytest.raises(UnsupportedOperationError, match="rcond must be a Python or NumPy number"):
        jitgrad.jit(lambda a, b, r: np.linalg.lstsq(a, b, rcond=r)[0])(TALL, np.ones(5), np.array(1e-3))


# --------------------------------------------------------------------------- non-finite input, as NumPy

def _with(value, where, base):
    a = base.copy()
    a[where] = value
    return a


# SPD3 with one NaN, inf or -inf, on and off the diagonal, in either triangle
NON_FINITE = np.stack([_with(v, w, SPD3) for v, w in [(np.nan, (1, 0)), (np.nan, (0, 1)), (np.inf, (0, 0)),
                                                       (np.inf, (2, 1)), (-np.inf, (2, 2)), (-np.inf, (0, 2))]])
NON_FINITE_CASES = {
    "solve": lambda a: np.linalg.solve(a, W3[:, :2]),
    "inv": np.linalg.inv,
    "det": np.linalg.det,
    "slogdet": lambda a: tuple(np.linalg.slogdet(a)),
    "cholesky": np.linalg.cholesky,
    "cholesky-upper": lambda a: np.linalg.cholesky(a, upper=True),
    "solve-cholesky-factor": lambda a: np.linalg.solve(np.linalg.cholesky(a), W3[:, :2]),
    "inv-cholesky-factor-transposed": lambda a: np.linalg.inv(np.swapaxes(np.linalg.cholesky(a), -1, -2)),
    "qr": lambda a: tuple(np.linalg.qr(a)),
    "qr-complete-wide": lambda a: tuple(np.linalg.qr(a[..., :2, :], mode="complete")),
    "eigh": lambda a: tuple(np.linalg.eigh(a)),
    "eigvalsh-upper": lambda a: np.linalg.eigvalsh(a, UPLO="U"),
    "svdvals": np.linalg.svdvals,
    "matrix-rank": np.linalg.matrix_rank,
    "cond": np.linalg.cond,
    "cond-1": lambda a: np.linalg.cond(a, 1),
    "norm-2": lambda a: np.linalg.norm(a, 2, axis=(-2, -1)),
    "norm-nuc": lambda a: np.linalg.norm(a, "nuc", axis=(-2, -1)),
    "norm-inf": lambda a: np.linalg.norm(a, np.inf, axis=(-2, -1)),
    "matrix-power": lambda a: np.linalg.matrix_power(a, 3),
    "matrix-power-negative": lambda a: np.linalg.matrix_power(a, -2),
}


def _numpy_per_matrix(f, batch):
    """NumPy on each matrix; None where it raises LinAlgError (jitgrad's answer: all NaN)."""
    out = []
    for a in batch:
        try:
            with np.errstate(all="ignore"):
                out.append(_leaves(f(a)))
        except np.linalg.LinAlgError:
            out.append(None)
    return out


@pytest.mark.parametrize("name", sorted(NON_FINITE_CASES))
def test_non_finite_input_gives_numpy_values_element_by_element(name):
    """NaN, inf, -inf and 0 exactly where NumPy has them (cholesky of NaN: NaN on and below
    the diagonal, zeros above; a solve with a Cholesky factor holding inf: NaN as NumPy's
    LU), the finite elements to rounding; all NaN where NumPy raises LinAlgError."""
    f = NON_FINITE_CASES[name]
    got = _leaves(jitgrad.jit(f)(NON_FINITE))
    for i, expected in enumerate(_numpy_per_matrix(f, NON_FINITE)):
        for k, g in enumerate(got):
            g = np.asarray(g)[i]
            if expected is None and g.dtype.kind == "i":    # no NaN in integers: documented 0
                assert np.all(g == 0), (i, k, g)
                continue
            if expected is None:
                assert np.all(np.isnan(g)), (i, k, g)
                continue
            e = np.asarray(expected[k])
            assert g.dtype == e.dtype and g.shape == e.shape
            if e.dtype.kind != "f":
                np.testing.assert_array_equal(g, e)
                continue
            for same_class in (np.isnan, np.isposinf, np.isneginf, lambda x: x == 0):
                np.testing.assert_array_equal(same_class(g), same_class(e), err_msg=f"matrix {i}, output {k}")
            finite = np.isfinite(e)
            np.testing.assert_allclose(g[finite], e[finite], rtol=1e-9, atol=1e-12)


def test_cholesky_of_nan_is_nan_below_and_zero_above_the_diagonal():
    out = jitgrad.jit(np.linalg.cholesky)(np.full((3, 3), np.nan))
    lower = np.tri(3, dtype=bool)
    assert np.all(np.isnan(out[lower])) and np.all(out[~lower] == 0)


def test_qr_of_overflowing_input_gives_inf_as_numpy():
    a = np.array([[1e308, 1e308], [1e308, -1e308], [1e308, 2.0]])
    for mode in ("reduced", "r"):
        got, expected = _leaves(jitgrad.jit(lambda x: np.linalg.qr(x, mode=mode))(a)), _leaves(np.linalg.qr(a, mode))
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
            np.testing.assert_array_equal(np.isposinf(g), np.isposinf(e))
            np.testing.assert_array_equal(np.isneginf(g), np.isneginf(e))
            assert np.any(np.isinf(e))
            finite = np.isfinite(e)
            np.testing.assert_allclose(g[finite], e[finite], rtol=1e-12)


_SVD_OF_INF = """
import numpy as np, jitgrad
a = np.eye(3); a[0, 0] = np.inf
u, s, vt = jitgrad.jit(lambda a: tuple(np.linalg.svd(a)))(a)
print(bool(np.all(np.isnan(u)) and np.all(np.isnan(s)) and np.all(np.isnan(vt))),
      bool(np.all(np.isnan(jitgrad.jit(np.linalg.pinv)(a)))),
      bool(np.all(np.isnan(jitgrad.jit(lambda a: np.linalg.lstsq(a, np.ones(3))[0])(a)))))
"""


def test_svd_pinv_lstsq_of_a_matrix_holding_inf_are_nan_and_return():
    """NumPy's gesdd never returns on this matrix (a square one with an infinite element):
    jitgrad's SVD-based functions give NaN without calling it (a subprocess contains a hang)."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _SVD_OF_INF], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "True"], done.stdout + done.stderr


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 0)])
@pytest.mark.parametrize("ord", [2, "nuc"])
def test_singular_value_norms_of_empty_matrices_as_numpy(shape, ord):
    x = np.zeros(shape)
    got = jitgrad.jit(lambda x: np.linalg.norm(x, ord, axis=(-2, -1)))(x)
    expected = np.linalg.norm(x, ord, axis=(-2, -1))
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_eigenvector_derivatives_at_numerically_repeated_eigenvalues_are_nan_both_ways():
    """ones((3, 3)) @ ones + 3 I has the eigenvalue 3 twice, computed a few ulps apart:
    1 / (rounding noise) gave huge finite JVP and VJP values that disagreed with each other
    and with finite differences; both are NaN now, as at exactly repeated eigenvalues."""
    f = lambda m: np.abs(np.linalg.eigh(m @ m.T + 3 * np.eye(3))[1])      # noqa: E731
    x = np.ones((3, 3))
    _, tangent_out = jitgrad.jvp(f, (x,), (W3,))
    _, pullback = jitgrad.vjp(f, x)
    assert np.any(np.isnan(tangent_out)) and np.any(np.isnan(pullback(SPD3)))


def test_eigenvector_jvp_and_vjp_agree_with_each_other_and_finite_differences():
    f = lambda m: np.arctan2(np.abs(np.linalg.eigh(m @ m.T + 3 * np.eye(3))[1]), m + 1)   # noqa: E731
    x, t, c = W3, SPD3 / 10, np.cos(W3)
    _, tangent_out = jitgrad.jvp(f, (x,), (t,))
    _, pullback = jitgrad.vjp(f, x)
    np.testing.assert_allclose(np.sum(t * pullback(c)), np.sum(tangent_out * c), rtol=1e-10)
    central = (f(x + 1e-6 * t) - f(x - 1e-6 * t)) / 2e-6
    np.testing.assert_allclose(tangent_out, central, rtol=1e-5, atol=1e-7)
