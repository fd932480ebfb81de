"""The CUDA kernels of qr and eig (jitgrad/backends/cuda/lapack_qr.py), run on the grid
emulator and compared with the CPU backend (LAPACK) and NumPy.

`assert_agrees` is how tests/test_grid_emulator.py compares these primitives' op specs:
qr to rounding (the kernel makes LAPACK's Householder choices, so Q and R are LAPACK's);
eig's eigenvalues as a multiset and its eigenvectors column by column up to a unit
factor, matched through their eigenvalues (where rounding decides the order of close
eigenvalues or the phase of a vector, LAPACK's choice is not reproducible).
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import jitgrad
from jitgrad.backends.cuda import lapack as cuda_lapack
from jitgrad.errors import UnsupportedOperationError

EMULATOR = "cuda-emulator"
TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-5}


def _tolerance(dtype) -> float:
    dtype = np.dtype(dtype)
    return TOLERANCE.get(np.dtype(dtype.char.lower()) if dtype.kind == "c" else dtype, 1e-12)


def _close(got, expected, tol: float) -> None:
    """Equal to `tol` relative to the array's largest finite magnitude; NaN and inf where
    the other has them."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    np.testing.assert_allclose(got[finite], expected[finite], rtol=tol, atol=tol * scale)


def _eig_columns_agree(got, expected, tol: float) -> None:
    """(..., n + 1, n) arrays, eigenvalues on row 0 and vectors below: each expected
    eigenvalue matched to the nearest unused one of `got`, and its vector equal up to a
    factor of modulus 1."""
    got, expected = np.asarray(got), np.asarray(expected)
    n = expected.shape[-1]
    for index in np.ndindex(*expected.shape[:-2]):
        g, e = got[index], expected[index]
        if np.isnan(e).any() or np.isnan(g).any():
            np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
            continue
        unused = list(range(n))
        for j in range(n):
            k = min(unused, key=lambda k: abs(g[0, k] - e[0, j]))
            unused.remove(k)
            scale = max(1.0, abs(e[0, j]))
            assert abs(g[0, k] - e[0, j]) <= 1e3 * tol * scale, (g[0], e[0])
            u, v = g[1:, k], e[1:, j]
            factor = np.vdot(u, v) / max(np.vdot(u, u).real, 1e-300)
            assert abs(abs(factor) - 1) < 1e3 * tol, (u, v)
            np.testing.assert_allclose(u * factor, v, atol=1e3 * tol)


def _multiset(got, expected, tol: float) -> None:
    """Eigenvalues (last axis) equal as multisets."""
    got, expected = np.asarray(got), np.asarray(expected)
    key = lambda z: np.sort_complex(z.astype(np.complex128)) if np.iscomplexobj(z) else np.sort(z, axis=-1)
    _close(key(got), key(expected), 1e3 * tol)


def assert_agrees(op, got, expected) -> None:
    """The emulator's outputs `got` against the CPU's `expected` for a function holding
    `op` (qr or eig)."""
    for g, e in zip(got, expected, strict=True):
        tol = _tolerance(np.asarray(e).dtype)
        if op.name == "qr":
            _close(g, e, 100 * tol)
            continue
        try:                     # LAPACK's order and phases, to rounding: the ordinary case
            _close(g, e, 1e3 * tol)
            continue
        except AssertionError:
            pass
        if op.attrs["vectors"] and np.ndim(e) >= 2 and np.shape(e)[-2:] == tuple(op.results[0].type.shape[-2:]):
            _eig_columns_agree(g, e, tol)
        else:
            _multiset(g, e, tol)


def _has_kernel(primitive: str) -> bool:
    """Whether the family holding `primitive` has a CUDA kernel for its real operands."""
    try:
        module = importlib.import_module(f"jitgrad.backends.cuda.{cuda_lapack.FAMILIES[primitive]}")
    except ModuleNotFoundError:
        return False
    return hasattr(module, f"emit_{primitive}")


# --------------------------------------------------------------------------- qr

def _both(fun, *args):
    return jitgrad.jit(fun)(*args), jitgrad.jit(fun, device=EMULATOR)(*args)


def _qr_of(mode):
    return lambda a: np.linalg.qr(a, mode=mode)


SHAPES = [(4, 3), (3, 5), (4, 4), (1, 1), (6, 1), (1, 4), (2, 3, 4, 2), (130, 3, 3)]
"""Tall, wide, square, 1 x 1, a single column and row, two batch axes, and a batch
larger than the emulator's 96 threads (the grid-stride loop wraps)."""


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("mode", ["reduced", "complete"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_qr_matches_lapack_and_numpy(shape, mode, dtype):
    a = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    cpu, emulated = _both(_qr_of(mode), a)
    tol = _tolerance(dtype)
    for g, e in zip(emulated, cpu, strict=True):
        _close(g, e, 100 * tol)
    q, r = emulated
    reference_q, reference_r = np.linalg.qr(a, mode=mode)
    _close(q, reference_q, 100 * tol)                 # LAPACK's signs: NumPy's factors, not just a QR
    _close(r, reference_r, 100 * tol)
    _close(q @ r, a, 100 * tol)


def _with(a, *entries):
    a = a.copy()
    for position, value in entries:
        a[position] = value
    return a


_RNG = np.random.default_rng(7)
_BASE = _RNG.standard_normal((4, 3))
ADVERSARIAL = {
    "nan": _with(_BASE, ((1, 1), np.nan)),
    "inf-first-column": _with(_BASE, ((2, 0), np.inf)),
    "minus-inf-last-column": _with(_BASE, ((0, 2), -np.inf)),
    "zero": np.zeros((4, 3)),
    "zero-column": _with(_BASE, ((slice(None), 1), 0.0)),
    "already-triangular": np.triu(_RNG.standard_normal((4, 3))),
    "tiny": _BASE * 1e-300,
    "huge": _BASE * 1e300,
    "hilbert": 1.0 / (np.arange(4)[:, None] + np.arange(3) + 1.0),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
@pytest.mark.parametrize("mode", ["reduced", "complete"])
def test_qr_adversarial_inputs_as_lapack(name, mode):
    """NaN and inf spread where LAPACK's spread; zero columns keep tau = 0 (R's diagonal
    keeps the column's sign, Q's column is e_j)."""
    a = ADVERSARIAL[name]
    cpu, emulated = _both(_qr_of(mode), a)
    for g, e in zip(emulated, cpu, strict=True):
        _close(g, e, 1e-12)
    if np.isfinite(a).all():
        _close(emulated[0] @ emulated[1], a, 1e-12)


def test_qr_of_a_rank_one_matrix_is_a_qr_with_lapacks_first_column():
    """Past the rank, Q's columns are decided by rounding noise (R's later diagonal is
    about eps * |A|): only Q R = A, Q's orthonormality and the first column and row,
    which the data decide, are LAPACK's."""
    a = np.outer(_RNG.standard_normal(4), _RNG.standard_normal(3))
    (q_cpu, r_cpu), (q, r) = _both(_qr_of("reduced"), a)
    _close(q[:, 0], q_cpu[:, 0], 1e-12)
    _close(r[0], r_cpu[0], 1e-12)
    _close(q @ r, a, 1e-12)
    _close(q.T @ q, np.eye(3), 1e-12)


def test_qr_gradients_on_the_emulator_match_the_cpu():
    rng = np.random.default_rng(3)
    a, weights_q, weights_r = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 3, 3))

    def loss(a):
        q, r = np.linalg.qr(a)
        return np.sum(q * weights_q) + np.sum(np.sin(r) * weights_r)

    cpu = jitgrad.jit(jitgrad.grad(loss))(a)
    if not _has_kernel("triangular_solve"):        # qr's derivative solves with R
        with pytest.raises(UnsupportedOperationError, match="triangular_solve has no kernel for device 'cuda'"):
            jitgrad.jit(jitgrad.grad(loss), device=EMULATOR)(a)
        return
    emulated = jitgrad.jit(jitgrad.grad(loss), device=EMULATOR)(a)
    _close(emulated, cpu, 1e-11)


# --------------------------------------------------------------------------- eig

def _eig(a):
    return np.linalg.eig(a)


def _eigvals(a):
    return np.linalg.eigvals(a)


def _assert_is_eig_of(a, w, v, tol=1e-10) -> None:
    """A V = V diag(w) to `tol` relative to |A|; unit columns whose largest component is
    real (xGEEV's normalization)."""
    scale = max(1.0, float(np.max(np.abs(a))))
    np.testing.assert_allclose(a @ v, v * w[..., None, :], atol=tol * scale)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-2), 1.0, atol=1e-12)
    largest = np.take_along_axis(v, np.argmax(np.abs(v), axis=-2)[..., None, :], axis=-2)
    np.testing.assert_allclose(largest.imag, 0.0, atol=1e-12)


def _agrees_with_lapack(emulated, cpu) -> tuple[int, int]:
    """Eigenvalues in LAPACK's order; each vector LAPACK's up to a unit factor. Returns
    (vectors equal to LAPACK's outright, vectors)."""
    (w, v), (w_cpu, v_cpu) = emulated, cpu
    _close(w, w_cpu, 1e-11)
    packed, packed_cpu = (np.concatenate([x[..., None, :], y], axis=-2) for x, y in ((w, v), (w_cpu, v_cpu)))
    _eig_columns_agree(packed, packed_cpu, 1e-12)
    same = np.all(np.abs(v - v_cpu) < 1e-9, axis=-2)
    return int(same.sum()), same.size


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (5, 5), (2, 3, 4, 4), (130, 4, 4)],
                         ids=lambda s: "x".join(map(str, s)))
def test_eig_of_random_matrices_in_lapacks_order(shape):
    """Eigenvalues in LAPACK's order (the Schur form's diagonal, as xLAHQR deflates),
    conjugate pairs with the positive imaginary part first; vectors LAPACK's up to a
    unit factor, and LAPACK's outright for almost all (where a sweep's direction comes
    from rounding-sized entries, the sign of a vector can differ)."""
    a = np.random.default_rng(shape[-1] + len(shape)).standard_normal(shape)
    emulated, cpu = jitgrad.jit(_eig, device=EMULATOR)(a), jitgrad.jit(_eig)(a)
    same, total = _agrees_with_lapack(emulated, cpu)
    assert same >= 0.9 * total
    _assert_is_eig_of(a, *emulated)
    values = jitgrad.jit(_eigvals, device=EMULATOR)(a)
    _close(values, jitgrad.jit(_eigvals)(a), 1e-11)
    _close(values, emulated[0], 1e-11)


def _matrix_with(entries, n=4, seed=0):
    a = np.random.default_rng(seed).standard_normal((n, n))
    for position, value in entries:
        a[position] = value
    return a


_R = np.random.default_rng(11)
_UPPER_BLOCKS = np.block([[_R.standard_normal((2, 2)), _R.standard_normal((2, 2))],
                          [np.zeros((2, 2)), _R.standard_normal((2, 2))]])
EIG_CASES = {
    "upper-triangular": np.triu(_R.standard_normal((4, 4))),            # balancing isolates every eigenvalue
    "lower-triangular": np.tril(_R.standard_normal((4, 4))),
    "permuted-blocks": _UPPER_BLOCKS[[2, 0, 3, 1]][:, [2, 0, 3, 1]],     # isolates some, reduces the rest
    "zero-row": _matrix_with([((1, slice(None)), 0.0)]),
    "diagonal-repeated": np.diag([3.0, 1.0, 2.0, 1.0]),
    "zero": np.zeros((3, 3)),
    "jordan": 2 * np.eye(4) + np.eye(4, k=1),
    "companion": np.array([[0, 0, 0, -24.0], [1, 0, 0, 50], [0, 1, 0, -35], [0, 0, 1, 10]]),
    "rotation": np.array([[0.0, -1.0], [1.0, 0.0]]),
    "repeated-complex-pairs": np.kron(np.eye(2), np.array([[0.0, -1.0], [1.0, 0.0]])),
    "badly-scaled": np.diag([1e-8, 1, 1e4, 1e8]) @ _R.standard_normal((4, 4)) @ np.diag([1e8, 1, 1e-4, 1e-8]),
    "huge": _R.standard_normal((4, 4)) * 1e300,                          # xGEEV scales it down first
    "tiny": _R.standard_normal((4, 4)) * 1e-300,
    "symmetric": (lambda s: s + s.T)(_R.standard_normal((5, 5))),
    "skew-symmetric": (lambda s: s - s.T)(_R.standard_normal((5, 5))),
    "hilbert": 1.0 / (np.arange(6)[:, None] + np.arange(6) + 1.0),
    "nan": _matrix_with([((1, 2), np.nan)]),
    "inf": _matrix_with([((0, 0), np.inf)]),
}


@pytest.mark.parametrize("name", list(EIG_CASES))
def test_eig_adversarial_inputs_as_lapack(name):
    """Balancing's permutations and scaling, exact zeros, repeated and complex
    eigenvalues, extreme magnitudes: LAPACK's eigenvalues in LAPACK's order and its
    vectors up to a unit factor; NaN (every output) for a matrix holding NaN or inf."""
    a = EIG_CASES[name]
    emulated, cpu = jitgrad.jit(_eig, device=EMULATOR)(a), jitgrad.jit(_eig)(a)
    values = jitgrad.jit(_eigvals, device=EMULATOR)(a)
    if not np.isfinite(a).all():
        assert np.isnan(emulated[0]).all() and np.isnan(emulated[1]).all() and np.isnan(values).all()
        _close(emulated[0], cpu[0], 0.0)
        return
    _agrees_with_lapack(emulated, cpu)
    _close(values, emulated[0], 1e-11)
    if name not in ("jordan", "huge", "tiny", "hilbert"):   # defective, or a residual below the tolerance's reach
        _assert_is_eig_of(a, *emulated)


def test_eig_of_a_rank_one_matrix_is_an_eigendecomposition():
    """The zero eigenvalue is triple: which null vectors come out is decided by rounding
    (LAPACK's are not reproducible), but each is one, with unit norm."""
    a = np.outer(_R.standard_normal(4), _R.standard_normal(4))
    w, v = jitgrad.jit(_eig, device=EMULATOR)(a)
    w_cpu, _ = jitgrad.jit(_eig)(a)
    _multiset(w, w_cpu, 1e-12)
    _assert_is_eig_of(a, w, v)


def test_eig_of_float32_input_is_rounded_like_the_cpu():
    a = np.random.default_rng(5).standard_normal((3, 3, 3)).astype(np.float32)
    emulated, cpu = jitgrad.jit(_eig, device=EMULATOR)(a), jitgrad.jit(_eig)(a)
    assert emulated[0].dtype == cpu[0].dtype == np.complex64
    _close(emulated[0], cpu[0], 1e-6)


@pytest.mark.parametrize("fun", [_eig, lambda a: np.linalg.qr(a)], ids=["eig", "qr"])
def test_complex_matrices_are_refused_with_the_reason(fun):
    a = np.random.default_rng(6).standard_normal((3, 3)) * (1 + 0.5j)
    with pytest.raises(UnsupportedOperationError, match="has no kernel for device 'cuda'.*c128 operands"):
        jitgrad.jit(fun, device=EMULATOR)(a)


def test_eig_gradients_on_the_emulator_match_the_cpu():
    rng = np.random.default_rng(9)
    a, weights = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 3))

    def loss(a):
        w = np.linalg.eigvals(0.1 * a + np.diag([1.0, 2.0, 3.0]))
        return np.sum(np.real(w) * weights)

    cpu = jitgrad.jit(jitgrad.grad(loss))(a)
    if not _has_kernel("solve"):        # eig's derivative solves with the eigenvector matrix
        with pytest.raises(UnsupportedOperationError, match="solve has no kernel for device 'cuda'"):
            jitgrad.jit(jitgrad.grad(loss), device=EMULATOR)(a)
        return
    _close(jitgrad.jit(jitgrad.grad(loss), device=EMULATOR)(a), cpu, 1e-10)
