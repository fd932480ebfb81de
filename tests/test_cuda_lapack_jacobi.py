"""The CUDA kernels of eigh, svd and pinv (jitgrad/backends/cuda/lapack_jacobi.py: Jacobi
methods), run on the grid emulator and compared with the CPU backend (LAPACK), NumPy and
the factorizations' defining properties.

`assert_agrees` is how tests/test_grid_emulator.py compares these primitives' op specs.
The Jacobi kernels agree with LAPACK to rounding in everything LAPACK's rule decides:
eigenvalues (ascending) and singular values (descending) to a small multiple of eps
times the matrix's scale, pinv to rounding times its condition number. Vectors are
compared up to what is free: the sign (phase, for complex matrices) of each column
(eigenvectors; singular vector pairs, whose signs go together, so U S V^H is compared
too), and within a group of equal values only the subspace, compared through its
projector V_g V_g^H (the extra columns of full_matrices=True and those of zero singular
values form one group: the complement, determined only where the factor is square). The
tolerance of a group's projector grows as eps over its gap to the other values, as
perturbation theory says it must.

Also: adversarial matrices (repeated values, zero and rank-deficient matrices, tiny and
huge scales, Hilbert), NaN/inf (all NaN, only for that matrix), the sweep limit (NaN),
batches wider than the emulator's grid, gradients on the emulator against the CPU, and
the PTX of the float32 and complex128 kernels through ptxas and nvJitLink.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import jitgrad
import jitgrad.backends.cuda.lapack_jacobi as lapack_jacobi
from jitgrad.backends import backend_for
from jitgrad.backends.cuda import lapack as cuda_lapack
from jitgrad.ir import DType, TensorType
from jitgrad.passes.lower_complex import LowerComplex
from jitgrad.primitives import lapack as L
from jitgrad.primitives.lapack import svd_shapes

from cuda_ptx import assert_family_ptx_accepted, emit_family
from helpers import build

EMULATOR = "cuda-emulator"
HERE = os.path.dirname(os.path.abspath(__file__))


def _eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


# --------------------------------------------------------------------------- comparisons

def _groups(values: np.ndarray, tol: float) -> list[list[int]]:
    """Positions of `values` (sorted either way) split where neighbours differ by more
    than `tol`: each group is a run of (numerically) equal values."""
    groups = [[0]]
    for j in range(1, len(values)):
        if abs(values[j] - values[j - 1]) > tol:
            groups.append([])
        groups[-1].append(j)
    return groups


def _same_subspaces(got: np.ndarray, expected: np.ndarray, values: np.ndarray, groups, tol: float,
                    scale: float) -> None:
    """For each group of columns, the projector onto their span is the same, to
    tol * (1 + scale / gap), the gap being the distance to the nearest value outside."""
    for group in groups:
        outside = [values[j] for j in range(len(values)) if j not in group]
        gap = min((abs(values[i] - v) for i in group for v in outside), default=np.inf)
        allowed = tol * (1 + scale / max(gap, 1e-300))
        g, e = got[:, group], expected[:, group]
        np.testing.assert_allclose(g @ g.conj().T, e @ e.conj().T, atol=allowed, rtol=0)


def _nan_like_lapack(got: np.ndarray, expected: np.ndarray) -> bool:
    """Where the CPU's result for a matrix holds NaN, the kernel's is NaN throughout (its
    failure rule); a kernel result of NaN needs one from the CPU. True when handled."""
    if np.isnan(expected).any() or np.isnan(got).any():
        assert np.isnan(got).all(), "LAPACK failed on this matrix, the kernel did not return NaN"
        assert np.isnan(expected).any(), "the kernel returned NaN where LAPACK did not fail"
        return True
    return False


def _orthonormal(q: np.ndarray, tol: float) -> None:
    np.testing.assert_allclose(q.conj().T @ q, np.eye(q.shape[1]), atol=tol, rtol=0)


def _real_values(values: np.ndarray) -> np.ndarray:
    """Eigenvalues or singular values, stored as v + 0i for a complex matrix."""
    if np.iscomplexobj(values):
        np.testing.assert_array_equal(values.imag, 0)
    return values.real.astype(np.float64)


def _wide(x: np.ndarray) -> np.ndarray:
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def _eigh_agrees(op, got, expected, tol: float) -> None:
    n = op.operands[0].type.shape[-1]
    for index in np.ndindex(*expected.shape[:-2 if op.attrs["vectors"] else -1]):
        g, e = got[index], expected[index]
        if _nan_like_lapack(g, e):
            continue
        w_got, w_expected = (_real_values(x[0] if op.attrs["vectors"] else x) for x in (g, e))
        scale = max(float(np.max(np.abs(w_expected))), 1e-300)
        np.testing.assert_allclose(w_got, w_expected, atol=tol * scale, rtol=0)
        assert np.all(np.diff(w_got) >= 0), "eigenvalues not ascending"
        if op.attrs["vectors"]:
            _orthonormal(_wide(g[1:]), tol * n)
            groups = _groups(w_expected, 10 * tol * scale)
            _same_subspaces(_wide(g[1:]), _wide(e[1:]), w_expected, groups, tol * n, scale)


def _svd_agrees(op, got, expected, tol: float) -> None:
    m, n = op.operands[0].type.shape[-2:]
    full, vectors = op.attrs["full_matrices"], op.attrs["vectors"]
    (_, u_cols), k, (vt_rows, _) = svd_shapes(m, n, full)
    for index in np.ndindex(*expected.shape[:-1]):
        g, e = got[index], expected[index]
        if _nan_like_lapack(g, e):
            continue
        s_got, s_expected = (_real_values(x[m * u_cols:m * u_cols + k] if vectors else x) for x in (g, e))
        scale = max(float(np.max(s_expected)), 1e-300)
        np.testing.assert_allclose(s_got, s_expected, atol=tol * scale, rtol=0)
        assert np.all(np.diff(s_got) <= 0), "singular values not descending"
        if not vectors:
            continue
        parts = []
        for packed in (g, e):
            u = _wide(packed[:m * u_cols].reshape(m, u_cols))
            vt = _wide(packed[m * u_cols + k:].reshape(vt_rows, n))
            parts.append((u, vt))
        (u_g, vt_g), (u_e, vt_e) = parts
        _orthonormal(u_g, tol * max(m, n))
        _orthonormal(vt_g.conj().T, tol * max(m, n))
        # the pairs' signs (phases) go together: U S V^H over the k values is the same matrix
        product = lambda u, s, vt: (u[:, :k] * s) @ vt[:k]
        np.testing.assert_allclose(product(u_g, s_got, vt_g), product(u_e, s_expected, vt_e), atol=tol * scale * k,
                                   rtol=0)
        for side_got, side_expected, columns in ((u_g, u_e, u_cols), (vt_g.conj().T, vt_e.conj().T, vt_rows)):
            # values of the columns: s_j, then 0 for the completion past k
            values = np.concatenate([s_expected.astype(np.float64), np.zeros(columns - k)])
            groups = _groups(values, 10 * tol * scale)
            if columns < side_got.shape[0]:    # reduced factors: any basis of part of the null space will do
                groups = [group for group in groups if values[group[0]] > 10 * tol * scale]
            _same_subspaces(side_got, side_expected, values, groups, tol * max(m, n), scale)


def _pinv_agrees(got, expected, tol: float) -> None:
    """To tol times ||P|| times P's condition number, which is A's over the singular
    values kept (P's nonzero singular values are their inverses): the pseudo-inverse's
    sensitivity to rounding."""
    for index in np.ndindex(*expected.shape[:-2]):
        g, e = got[index], expected[index]
        if _nan_like_lapack(g, e):
            continue
        s = np.linalg.svd(e.astype(np.float64), compute_uv=False)
        kept = s[s > s[0] * 1e-30] if s[0] > 0 else s[:1]
        cond = kept[0] / kept[-1] if kept[-1] > 0 else 1.0
        np.testing.assert_allclose(g, e, atol=tol * cond * max(s[0], np.finfo(e.dtype).tiny), rtol=0)


def _tolerance(dtype) -> float:
    """A few hundred eps: both LAPACK's and the kernel's errors are a small multiple of
    eps times the matrix's scale for the sizes tested."""
    return 300 * _eps(dtype)


def assert_agrees(op, got, expected) -> None:
    """The emulator's outputs `got` against the CPU's `expected` for a function holding
    `op` (eigh, svd or pinv): an output that is the op's packed result is compared up to
    the factorization's freedoms, any other output to rounding."""
    for g, e in zip(got, expected, strict=True):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape and g.dtype == e.dtype
        tol = _tolerance(e.dtype)
        if g.shape == tuple(op.results[0].type.shape) and op.name == "eigh":
            _eigh_agrees(op, g, e, tol)
        elif g.shape == tuple(op.results[0].type.shape) and op.name == "svd":
            _svd_agrees(op, g, e, tol)
        elif g.shape == tuple(op.results[0].type.shape) and op.name == "pinv":
            _pinv_agrees(g, e, tol)
        else:
            np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
            finite = np.isfinite(e)
            scale = max(1.0, float(np.max(np.abs(e[finite]), initial=0.0)))
            np.testing.assert_allclose(g[finite], e[finite], atol=tol * scale, rtol=0)


def _compile_both(name: str, shape, dtype, *bodies):
    """One function returning each body's result, compiled for the CPU and the emulator."""
    dtype = {np.float64: DType.f64, np.float32: DType.f32, np.complex128: DType.c128,
             np.complex64: DType.c64}[np.dtype(dtype).type]
    fn = build(name, [TensorType(shape, dtype)], lambda x: [body(x) for body in bodies])
    return fn, backend_for("cpu").compile(fn), backend_for(EMULATOR).compile(fn)


def _ops_of(fn):
    """The eigh/svd/pinv op behind each output."""
    return [v.defining_op for v in fn.outputs]


def _check(name: str, a: np.ndarray, *bodies):
    """The ops compiled for the CPU and the emulator agree on `a` (assert_agrees, output
    by output); returns the emulator's results."""
    fn, cpu, emulated = _compile_both(name, a.shape, a.dtype, *bodies)
    got, expected = emulated([a]), cpu([a])
    for op, g, e in zip(_ops_of(fn), got, expected, strict=True):
        assert op.name in ("eigh", "svd", "pinv")
        assert_agrees(op, [g], [e])
    return got


# --------------------------------------------------------------------------- eigh

SQUARE = [(1, 1), (4, 4), (2, 3, 5, 5), (130, 3, 3), (9, 9)]
"""1 x 1, small, two batch axes, a batch larger than the emulator's 96 threads (the
grid-stride loop wraps), and a size needing several sweeps."""


def _random_symmetric(shape, dtype, seed):
    a = np.random.default_rng(seed).standard_normal(shape)
    return a.astype(dtype)              # not symmetric: the kernel must read one triangle


def _symmetric_of(a, lower):
    t = np.tril(a) if lower else np.triu(a)
    return t + np.swapaxes(t, -1, -2) - t * np.eye(a.shape[-1])


@pytest.mark.parametrize("shape", SQUARE, ids=["x".join(map(str, s)) for s in SQUARE])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_eigh_agrees_with_lapack_and_is_an_eigendecomposition(shape, dtype):
    a = _random_symmetric(shape, dtype, sum(shape))
    results = _check("eigh", a, *(lambda x, lower=lower, vectors=vectors: L.eigh_p.bind(x, vectors=vectors, lower=lower)
                                  for lower in (True, False) for vectors in (True, False)))
    for lower, packed, values in ((True, *results[:2]), (False, *results[2:])):
        w, v = packed[..., 0, :].astype(np.float64), packed[..., 1:, :].astype(np.float64)
        s = _symmetric_of(a.astype(np.float64), lower)
        tol = 100 * _eps(dtype) * max(1.0, np.abs(s).max()) * shape[-1]
        np.testing.assert_allclose(w, np.linalg.eigvalsh(s), atol=tol, rtol=0)
        np.testing.assert_allclose(np.einsum("...ij,...j,...kj->...ik", v, w, v), s, atol=tol, rtol=0)
        np.testing.assert_allclose(values, w, atol=tol, rtol=0)


def _rotated(diagonal, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(diagonal),) * 2))
    return (q * np.asarray(diagonal, np.float64)) @ q.T


EIGH_CASES = {
    "identity": np.eye(4),
    "repeated-pair-and-triple": _rotated([2.0, 2.0, -1.0, -1.0, -1.0, 5.0], 1),
    "zero": np.zeros((3, 3)),
    "diagonal-unsorted": np.diag([3.0, -2.0, 0.0, 7.0]),
    "hilbert": 1.0 / (np.arange(6)[:, None] + np.arange(6) + 1.0),
    "tiny": _rotated([1.0, -3.0, 2.0], 2) * 1e-300,
    "huge": _rotated([1.0, -3.0, 2.0], 3) * 1e300,
    "graded": _rotated([1e-12, 1.0, 1e12], 4),
    "nan-in-the-other-triangle": np.triu(np.full((3, 3), np.nan), 1) + np.diag([1.0, 2.0, 3.0]),
}


@pytest.mark.parametrize("name", list(EIGH_CASES))
def test_eigh_adversarial_matrices(name):
    a = EIGH_CASES[name]
    (packed,) = _check("eigh", a, lambda x: L.eigh_p.bind(x, vectors=True, lower=True))
    w, v = packed[0], packed[1:]
    s = np.tril(a) + np.tril(a, -1).T
    scale = max(np.abs(s).max(), 1e-300)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(s), atol=1e-13 * scale, rtol=0)
    np.testing.assert_allclose((v * w) @ v.T, s, atol=1e-13 * scale, rtol=0)
    _orthonormal(v, 1e-13)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("lower", [True, False])
def test_eigh_of_a_matrix_holding_nan_or_inf_is_nan_and_only_that_matrix(bad, lower):
    """In the triangle read: all NaN (LAPACK gives NaN in part of the results, or finite
    numbers for a NaN on the diagonal); in the other triangle: not read at all. The
    batch's other matrices are unaffected."""
    a = np.stack([np.eye(3) * 2.0, np.eye(3) + 0.5])
    read, unread = ((2, 1), (0, 2)) if lower else ((1, 2), (2, 0))
    a[1][read] = bad
    a[0][unread] = np.nan
    fn = build("eigh", [TensorType(a.shape, DType.f64)],
               lambda x: [L.eigh_p.bind(x, vectors=vectors, lower=lower) for vectors in (True, False)])
    packed, values = backend_for(EMULATOR).compile(fn)([a])
    assert np.isnan(packed[1]).all() and np.isnan(values[1]).all()
    np.testing.assert_array_equal(packed[0], np.concatenate([np.full((1, 3), 2.0), np.eye(3)]))
    np.testing.assert_array_equal(values[0], np.full(3, 2.0))


# --------------------------------------------------------------------------- svd

SHAPES = [(5, 3), (3, 5), (4, 4), (1, 1), (1, 4), (6, 1), (2, 3, 4, 2), (130, 3, 2), (12, 9)]


def _svd_body(full, vectors):
    return lambda x: L.svd_p.bind(x, full_matrices=full, vectors=vectors)


def _unpack_svd(packed, m, n, full):
    (_, u_cols), k, (vt_rows, _) = svd_shapes(m, n, full)
    u = packed[..., :m * u_cols].reshape(packed.shape[:-1] + (m, u_cols))
    s = packed[..., m * u_cols:m * u_cols + k]
    vt = packed[..., m * u_cols + k:].reshape(packed.shape[:-1] + (vt_rows, n))
    return u, s, vt


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_svd_agrees_with_lapack_and_is_an_svd(shape, dtype):
    a = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    m, n = shape[-2:]
    k = min(m, n)
    a64 = a.astype(np.float64)
    tol = 100 * _eps(dtype) * max(1.0, np.abs(a64).max()) * max(m, n)
    reference = np.linalg.svd(a64, compute_uv=False)
    reduced, full_factors, values = _check("svd", a, _svd_body(False, True), _svd_body(True, True),
                                           _svd_body(False, False))
    for full, packed in ((False, reduced), (True, full_factors)):
        u, s, vt = (p.astype(np.float64) for p in _unpack_svd(packed, m, n, full))
        np.testing.assert_allclose(s, reference, atol=tol, rtol=0)
        np.testing.assert_allclose((u[..., :k] * s[..., None, :]) @ vt[..., :k, :], a64, atol=tol, rtol=0)
        eye = lambda q: np.broadcast_to(np.eye(q.shape[-1]), q.shape[:-2] + (q.shape[-1],) * 2)
        np.testing.assert_allclose(np.swapaxes(u, -1, -2) @ u, eye(u), atol=tol, rtol=0)
        np.testing.assert_allclose(vt @ np.swapaxes(vt, -1, -2), eye(np.swapaxes(vt, -1, -2)), atol=tol, rtol=0)
    np.testing.assert_allclose(values, reference, atol=tol, rtol=0)


def _orthogonal(n, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0]


_RNG = np.random.default_rng(11)
SVD_CASES = {
    "zero": np.zeros((4, 3)),
    "zero-wide": np.zeros((2, 5)),
    "rank-one": np.outer(_RNG.standard_normal(5), _RNG.standard_normal(3)),
    "zero-column": np.where(np.arange(4) == 2, 0.0, _RNG.standard_normal((5, 4))),
    "orthogonal-all-values-one": _orthogonal(4, 3),
    "repeated-values": (_orthogonal(5, 4)[:, :3] * [2.0, 2.0, 1.0]) @ _orthogonal(3, 5),
    "hilbert": 1.0 / (np.arange(7)[:, None] + np.arange(5) + 1.0),
    "tiny": _RNG.standard_normal((4, 3)) * 1e-300,
    "huge": _RNG.standard_normal((3, 4)) * 1e300,
    "graded-columns": _RNG.standard_normal((4, 3)) * [1e-10, 1.0, 1e10],
}


@pytest.mark.parametrize("name", list(SVD_CASES))
def test_svd_adversarial_matrices(name):
    """Rank-deficient matrices need U's (V's) completion for their zero singular values;
    repeated values leave only the subspaces determined."""
    a = SVD_CASES[name]
    m, n = a.shape
    scale = max(np.abs(a).max(), 1e-300)
    for full, packed in zip((False, True), _check("svd", a, _svd_body(False, True), _svd_body(True, True))):
        u, s, vt = _unpack_svd(packed, m, n, full)
        k = min(m, n)
        np.testing.assert_allclose(s, np.linalg.svd(a, compute_uv=False), atol=1e-13 * scale, rtol=0)
        np.testing.assert_allclose((u[:, :k] * s) @ vt[:k], a, atol=1e-13 * scale, rtol=0)
        _orthonormal(u, 1e-13)
        _orthonormal(vt.T, 1e-13)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_svd_and_pinv_of_a_matrix_holding_nan_or_inf_are_nan_like_the_cpu(bad):
    a = np.random.default_rng(5).standard_normal((3, 4, 3))
    a[1, 2, 0] = bad
    fn, cpu, emulated = _compile_both("nonfinite", a.shape, a.dtype, _svd_body(True, True), _svd_body(False, False),
                                      lambda x: L.pinv(x, rcond=1e-15))
    for op, got, expected in zip(_ops_of(fn), emulated([a]), cpu([a]), strict=True):
        assert np.isnan(got[1]).all() and np.isnan(expected[1]).all()
        assert np.isfinite(got[[0, 2]]).all()
        assert_agrees(op, [got], [expected])


# --------------------------------------------------------------------------- pinv

@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (1, 1), (2, 3, 2, 3), (130, 2, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pinv_agrees_with_lapack_and_numpy(shape, dtype):
    a = np.random.default_rng(sum(shape) + 1).standard_normal(shape).astype(dtype)
    (got,) = _check("pinv", a, lambda x: L.pinv(x, rcond=1e-15))
    reference = np.linalg.pinv(a.astype(np.float64))
    cond = np.linalg.cond(a.astype(np.float64)).max()
    np.testing.assert_allclose(got, reference, atol=100 * _eps(dtype) * cond * np.abs(reference).max(), rtol=0)


def _with_singular_values(values, m, n, seed):
    u, v = _orthogonal(m, seed)[:, :len(values)], _orthogonal(n, seed + 1)[:, :len(values)]
    return (u * values) @ v.T


@pytest.mark.parametrize("rcond", [1e-15, 1e-5, 0.5])
def test_pinv_drops_singular_values_at_or_below_rcond_times_the_largest(rcond):
    """Values 3, 2.1, 3e-3, 3e-8 and an exact 0 (rank deficiency): rcond 1e-5 drops
    3e-8 and 0, 0.5 keeps only 3 and 2.1 (the cutoff is relative to the largest value);
    what is kept is inverted."""
    a = _with_singular_values([3.0, 2.1, 3e-3, 3e-8], 6, 5, 8)
    (got,) = _check("pinv", a, lambda x: L.pinv(x, rcond=rcond))
    expected = np.linalg.pinv(a, rcond=rcond)
    tol = 1e-13 * np.abs(expected).max() * (1e8 if rcond < 1e-8 else 1e3)
    np.testing.assert_allclose(got, expected, atol=tol, rtol=0)
    np.testing.assert_allclose(got.T, np.linalg.pinv(a.T, rcond=rcond), atol=tol, rtol=0)


# --------------------------------------------------------------------------- gradients, limits

def test_gradients_through_eigh_svd_and_pinv_on_the_emulator_match_the_cpu():
    """Losses that do not depend on the vectors' signs."""
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 5, 3))
    weights = rng.standard_normal((4, 4))

    def loss(a, b):
        sym = a + np.swapaxes(a, -1, -2)
        w, v = np.linalg.eigh(sym)
        u, s, vt = np.linalg.svd(b, full_matrices=False)
        return (np.sum(w * np.arange(4.0)) + np.sum(v * v * weights) + np.sum(np.sin(s))
                + np.sum((u * u)[..., :2]) + np.sum(np.cos(np.linalg.pinv(b))) + np.sum(np.linalg.svd(a)[1] ** 2))

    grad = jitgrad.grad(loss, argnums=(0, 1))
    cpu, emulated = jitgrad.jit(grad)(a, b), jitgrad.jit(grad, device=EMULATOR)(a, b)
    for g, e in zip(emulated, cpu, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-10 * max(1.0, np.abs(e).max()), rtol=0)


def test_a_matrix_not_converged_within_the_sweep_limit_is_nan(monkeypatch):
    """With one sweep allowed, a 6 x 6 matrix has not converged: NaN, never the
    half-finished numbers; with the default limit the same matrix factors."""
    a = np.random.default_rng(4).standard_normal((6, 6))
    bodies = [lambda x: L.eigh_p.bind(x, vectors=True, lower=True), _svd_body(False, True),
              lambda x: L.pinv(x, rcond=1e-15)]
    for body in bodies:
        fn = build("capped", [TensorType((6, 6), DType.f64)], body)
        assert np.isfinite(backend_for(EMULATOR).compile(fn)([a])[0]).all()
    monkeypatch.setattr(lapack_jacobi, "MAX_SWEEPS", 1)
    for body in bodies:
        fn = build("capped", [TensorType((6, 6), DType.f64)], body)
        assert np.isnan(backend_for(EMULATOR).compile(fn)([a])[0]).all()


def test_results_are_bit_identical_run_to_run():
    a = np.random.default_rng(6).standard_normal((100, 4, 3))
    f = jitgrad.jit(lambda a: (np.linalg.svd(a), np.linalg.pinv(a), np.linalg.eigh(a[..., :3, :])), device=EMULATOR)
    first, second = f(a), f(a.copy())
    for x, y in zip(jitgrad.tree.leaves(first), jitgrad.tree.leaves(second), strict=True):
        assert x.tobytes() == y.tobytes()


# --------------------------------------------------------------------------- complex

def _complex_random(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _hermitian_of(a, lower):
    """The Hermitian matrix LAPACK reads: one triangle, its conjugate transpose, the
    diagonal's real part."""
    t = np.tril(a, -1) if lower else np.triu(a, 1)
    diagonal = np.real(np.diagonal(a, axis1=-2, axis2=-1))
    return t + np.conj(np.swapaxes(t, -1, -2)) + diagonal[..., None] * np.eye(a.shape[-1])


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 5, 5), (1, 1), (130, 3, 3)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_complex_eigh_agrees_with_lapack_and_is_an_eigendecomposition(shape, dtype):
    a = _complex_random(shape, dtype, sum(shape))
    a[..., 0, 0] += 0.5j                   # the diagonal's imaginary parts are not read
    results = _check("eigh", a, *(lambda x, lower=lower, vectors=vectors: L.eigh_p.bind(x, vectors=vectors, lower=lower)
                                  for lower in (True, False) for vectors in (True, False)))
    for lower, packed, values in ((True, *results[:2]), (False, *results[2:])):
        w, v = _real_values(packed[..., 0, :]), packed[..., 1:, :].astype(np.complex128)
        h = _hermitian_of(a.astype(np.complex128), lower)
        tol = 100 * _eps(dtype) * max(1.0, np.abs(h).max()) * shape[-1]
        np.testing.assert_allclose(w, np.linalg.eigvalsh(h), atol=tol, rtol=0)
        np.testing.assert_allclose(np.einsum("...ij,...j,...kj->...ik", v, w, v.conj()), h, atol=tol, rtol=0)
        np.testing.assert_allclose(_real_values(values), w, atol=tol, rtol=0)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (1, 3), (2, 3, 4, 2), (130, 2, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_complex_svd_agrees_with_lapack_and_is_an_svd(shape, dtype):
    a = _complex_random(shape, dtype, sum(shape) + 2)
    m, n = shape[-2:]
    k = min(m, n)
    wide = a.astype(np.complex128)
    tol = 100 * _eps(dtype) * max(1.0, np.abs(wide).max()) * max(m, n)
    reduced, full_factors, values = _check("svd", a, _svd_body(False, True), _svd_body(True, True),
                                           _svd_body(False, False))
    reference = np.linalg.svd(wide, compute_uv=False)
    np.testing.assert_allclose(_real_values(values), reference, atol=tol, rtol=0)
    for full, packed in ((False, reduced), (True, full_factors)):
        u, s, vt = _unpack_svd(packed.astype(np.complex128), m, n, full)
        s = _real_values(s)
        np.testing.assert_allclose(s, reference, atol=tol, rtol=0)
        np.testing.assert_allclose((u[..., :k] * s[..., None, :]) @ vt[..., :k, :], wide, atol=tol, rtol=0)
        eye = lambda q: np.broadcast_to(np.eye(q.shape[-1]), q.shape[:-2] + (q.shape[-1],) * 2)
        np.testing.assert_allclose(np.conj(np.swapaxes(u, -1, -2)) @ u, eye(u), atol=tol, rtol=0)
        np.testing.assert_allclose(vt @ np.conj(np.swapaxes(vt, -1, -2)), eye(np.swapaxes(vt, -1, -2)), atol=tol,
                                   rtol=0)


def test_complex_rank_deficient_svd_completes_u_and_v():
    rng = np.random.default_rng(12)
    a = np.outer(rng.standard_normal(4) + 1j * rng.standard_normal(4), rng.standard_normal(3) - 2j)
    for full, packed in zip((False, True), _check("svd", a, _svd_body(False, True), _svd_body(True, True))):
        u, s, vt = _unpack_svd(packed, 4, 3, full)
        np.testing.assert_allclose((u[:, :3] * s.real) @ vt[:3], a, atol=1e-13 * np.abs(a).max(), rtol=0)
        _orthonormal(u, 1e-13)
        _orthonormal(vt.conj().T, 1e-13)


def test_complex_gradients_through_eigh_and_svd_on_the_emulator_match_the_cpu():
    """A real loss of complex matrices built from real inputs, independent of the
    vectors' phases."""
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4, 3))
    weights = rng.standard_normal((3, 3))

    def loss(x, y):
        c = x + 1j * np.swapaxes(x, -1, -2) ** 2
        w, v = np.linalg.eigh(c)
        u, s, vt = np.linalg.svd(y + 1j * np.cos(y), full_matrices=False)
        return (np.sum(w * np.arange(3.0)) + np.sum(np.abs(v) ** 2 * weights) + np.sum(np.sin(s))
                + np.sum(np.abs(u[..., :2]) ** 2 * y[..., :2]))

    grad = jitgrad.grad(loss, argnums=(0, 1))
    cpu, emulated = jitgrad.jit(grad)(x, y), jitgrad.jit(grad, device=EMULATOR)(x, y)
    for g, e in zip(emulated, cpu, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-10 * max(1.0, np.abs(e).max()), rtol=0)


def test_the_family_declares_its_complex_kernels():
    assert cuda_lapack.FAMILIES["pinv"] == "lapack_jacobi"
    assert lapack_jacobi.COMPLEX == ("eigh", "svd")      # NumPy's complex pinv goes through svd


# --------------------------------------------------------------------------- PTX

PTX_DTYPES = [DType.f32, DType.c128]
"""The dtypes whose PTX this file checks: float64 kernels are in tests/test_cuda_backend.py's
module of every op spec; complex64 is complex128's code in single precision."""


def _family(dtype: DType):
    """Every kernel variant of the family for `dtype`: eigh (vectors or not, either
    triangle), svd (tall and wide, reduced, full, values) and, for real matrices, pinv."""
    def body(square, tall, wide):
        outputs = [L.eigh_p.bind(square, vectors=vectors, lower=lower) for vectors in (True, False)
                   for lower in (True, False)]
        for x in (tall, wide):
            outputs += [L.svd_p.bind(x, full_matrices=full, vectors=vectors)
                        for full, vectors in ((False, True), (True, True), (False, False))]
            if not dtype.is_complex:
                outputs.append(L.pinv(x, rcond=1e-15))
        return outputs
    types = [TensorType((2, 4, 4), dtype), TensorType((2, 5, 3), dtype), TensorType((2, 3, 5), dtype)]
    return LowerComplex().run(build("lapack_jacobi", types, body))


def _emit_ptx(out_dir: str) -> None:
    """(In a subprocess.) The family's launches in PTX_DTYPES."""
    emit_family(out_dir, "lapack_jacobi", [(_family(dtype), f"jacobi_{dtype.name}") for dtype in PTX_DTYPES])


def test_ptxas_and_nvjitlink_accept_real_and_complex_kernels_without_spills(tmp_path):
    for dtype in PTX_DTYPES:
        ops = [op for op in _family(dtype).walk() if op.name in ("eigh", "svd", "pinv")]
        assert len(ops) == (10 if dtype.is_complex else 12) and all(cuda_lapack.has_kernel(op) for op in ops)
    assert_family_ptx_accepted(__file__, tmp_path, 22)


if __name__ == "__main__" and sys.argv[1:2] == ["emit"]:
    sys.path.insert(0, HERE)
    _emit_ptx(sys.argv[2])
