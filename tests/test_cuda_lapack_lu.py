"""The CUDA kernels of cholesky, triangular_solve, solve and slogdet
(`jitgrad/backends/cuda/lapack_lu.py`) on the grid emulator, against the CPU backend
(OpenBLAS) and NumPy, in float32, float64, complex64 and complex128:

- one batch of 100 matrices per dtype (more than the emulator's 96 threads, so the
  grid-stride loop wraps) holding random matrices and adversarial ones: pivot ties,
  permutations, exactly singular matrices, not positive definite ones, NaN and inf
  entries, ill-conditioned and tiny-pivot matrices, and garbage in the triangle a
  primitive does not read;
- shapes: 1 x 1, several batch axes, right-hand sides wider than the matrix, slogdet of
  empty matrices;
- gradients through every primitive (reverse mode reaches the transposed solves);
- PTX of the float32 and complex128 kernels through ptxas (sm_80, sm_90, no spills) and
  nvJitLink (float64's are in tests/test_cuda_backend.py's module of every op spec).

`assert_agrees` is how tests/test_grid_emulator.py compares this family's op specs.

Agreement: to rounding, relative to the result's magnitude times the matrix's condition
number; NaN exactly where the CPU has NaN, except for a matrix holding NaN, whose solve
and log|det| are NaN throughout on the GPU where the CPU may leave entries finite (the
documented pivot rule), and whose slogdet sign is free.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import jitgrad
from jitgrad.backends import backend_for
from jitgrad.backends.cuda import lapack as cuda_lapack
from jitgrad.backends.cuda import lapack_lu
from jitgrad.ir import DType, TensorType
from jitgrad.passes.lower_complex import LowerComplex
from jitgrad.primitives import lapack as L

from cuda_ptx import assert_family_ptx_accepted, emit_family
from helpers import build

EMULATOR = "cuda-emulator"
HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = [np.float64, np.float32, np.complex128, np.complex64]
BATCH, N, COLS = 100, 4, 3
SUBNORMAL_PIVOT = 7
"""The matrix of the batch whose first pivot is subnormal."""
TRIANGLES = [(lower, transpose) for lower in (True, False) for transpose in (False, True)]


def _epsilon(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


# --------------------------------------------------------------------------- comparisons

def _nan(x):
    return np.isnan(x.real) | np.isnan(x.imag) if np.iscomplexobj(x) else np.isnan(x)


def _assert_close(got, expected, rtol: float, what: str, nan_may_spread: bool = False) -> None:
    """NaN where `expected` has NaN (and, unless NaN may spread, nowhere else), infinities
    equal, finite values within rtol times the largest finite magnitude of `expected`."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (what, got.shape, expected.shape)
    nan_got, nan_expected = _nan(got), _nan(expected)
    if nan_may_spread:
        assert not np.any(nan_expected & ~nan_got), f"{what}: finite where the CPU has NaN\n{got}\n{expected}"
    else:
        assert np.array_equal(nan_got, nan_expected), f"{what}: NaN in other places\n{got}\n{expected}"
    compared = ~nan_got & ~nan_expected
    g, e = got[compared], expected[compared]
    infinite = ~np.isfinite(e)
    assert np.array_equal(g[infinite], e[infinite]), f"{what}: infinities differ\n{got}\n{expected}"
    assert np.all(np.isfinite(g[~infinite])), f"{what}: infinite where the CPU is finite\n{got}\n{expected}"
    finite_e = e[~infinite]
    scale = max(1.0, float(np.max(np.abs(finite_e)))) if finite_e.size else 1.0
    error = float(np.max(np.abs(g[~infinite] - finite_e))) if finite_e.size else 0.0
    assert error <= rtol * scale, f"{what}: off by {error:.3g} (allowed {rtol * scale:.3g})\n{got}\n{expected}"


def assert_agrees(op, got, expected) -> None:
    """The grid emulator's outputs against the CPU backend's for a function holding one of
    this family's primitives (tests/test_grid_emulator.py): well-conditioned finite inputs,
    so to rounding, NaN in the same places."""
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        e = np.asarray(e)
        dtype = e.dtype if e.dtype.kind in "fc" else np.float64
        _assert_close(g, e, 1e4 * _epsilon(dtype), f"{op.name} output {k}")


def _condition(a: np.ndarray) -> float:
    """The 2-norm condition number of a finite matrix (inf when singular); 1 for a matrix
    holding inf, whose results are inf, NaN or exact patterns compared tightly."""
    if not np.all(np.isfinite(a)):
        return 1.0
    with np.errstate(all="ignore"):
        c = float(np.linalg.cond(a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)))
    return c if np.isfinite(c) else np.inf


def _rtol(dtype, a: np.ndarray) -> float:
    """Rounding allowed for a result computed from matrix `a`: a small multiple of the
    dtype's epsilon times the condition number."""
    return 64 * N * _epsilon(dtype) * max(1.0, _condition(a))


# --------------------------------------------------------------------------- the adversarial batch

def _matrices(dtype, seed: int = 0) -> dict[str, np.ndarray]:
    """The operands of the family function: A (solve, slogdet), B, S (cholesky: its
    lower triangle is read) and T (triangular solves: either triangle is read), each a
    batch of BATCH matrices; the adversarial ones first, named in `LABELS`."""
    rng = np.random.default_rng(seed)
    real = np.dtype(dtype).type(0).real.dtype
    complex_ = np.iscomplexobj(np.zeros((), dtype))

    def random(*shape):
        x = rng.standard_normal(shape)
        return x + 1j * rng.standard_normal(shape) if complex_ else x

    tiny = float(np.finfo(real).tiny)
    eye = np.eye(N)
    a = random(BATCH, N, N)
    special_a = [
        np.array([[1, 1, 0, 0], [-1, 1, 0, 0], [1, -1, 1, 0], [1, 1, -1, 1]]),          # pivot ties
        eye[[2, 0, 3, 1]],                                                                # a permutation
        np.array([[1, 2, 3, 4], [2, 4, 6, 8], [0, 1, 0, 1], [1, 0, 1, 1]]),              # equal rows (scaled)
        np.array([[1, 0, 3, 4], [5, 0, 7, 8], [9, 0, 1, 2], [3, 0, 5, 6]]),              # a zero column
        np.arange(1.0, 17.0).reshape(4, 4),                                              # rank 2
        np.diag([-1.0, 2.0, -3.0, 0.5]) + np.triu(np.ones((4, 4)), 1),                   # negative diagonal
        1.0 / (np.arange(4)[:, None] + np.arange(4)[None, :] + 1.0),                      # Hilbert
        np.diag([tiny / 2, 1.0, 2.0, 3.0]),                                               # SUBNORMAL_PIVOT
        _with(random(N, N) + 4 * eye, (0, 0), np.inf),
        _with(random(N, N) + 4 * eye, (2, 1), np.nan),
        _with(random(N, N) + 4 * eye, (0, 0), np.nan),
        _with(random(N, N) + 4 * eye, (3, 3), np.inf),
    ]
    a[:len(special_a)] = special_a
    x = random(BATCH, N, N)
    s = x @ np.conj(np.swapaxes(x, -1, -2)) + eye
    s += np.triu(random(BATCH, N, N) * 100, 1)                  # garbage above the diagonal: never read
    special_s = [
        np.diag([1.0, -1.0, 2.0, 3.0]),                                                   # not positive definite
        np.zeros((N, N)),
        _with(4 * eye, (1, 1), np.nan),
        _with(4 * eye, (2, 0), np.nan),
        _with(4 * eye, (0, 2), np.nan),                                                   # above: not read
        _with(4 * eye, (0, 0), np.inf),
        _with(4 * eye, (3, 1), np.inf),
        1.0 / (np.arange(4)[:, None] + np.arange(4)[None, :] + 1.0),                      # Hilbert
        np.array([[4, 0, 0, 0], [2, 1, 0, 0], [1, 1, 9, 0], [0, 0, 0, 1.0]]),            # singular at step 2
    ]
    s[:len(special_s)] = special_s
    if complex_:
        s[len(special_s)] += np.diag([0.5j, -2j, 1j, 0])         # the diagonal's imaginary part is not read
    t = random(BATCH, N, N) + 4 * eye
    special_t = [
        _with(random(N, N) + 4 * eye, (2, 2), 0.0),                                      # zero diagonal: LU
        _with(_with(random(N, N) + 4 * eye, (1, 1), 0.0), (3, 3), 0.0),
        _with(random(N, N) + 4 * eye, (2, 1), np.nan),                                   # lower only
        _with(random(N, N) + 4 * eye, (1, 2), np.nan),                                   # upper only
        _with(random(N, N) + 4 * eye, (3, 0), np.inf),
        _with(random(N, N) + 4 * eye, (0, 0), np.inf),
        np.diag([1e-3, 1e3, 1.0, -1.0]) + np.tril(np.ones((4, 4)), -1) + np.triu(np.ones((4, 4)), 1),
    ]
    t[:len(special_t)] = special_t
    b = random(BATCH, N, COLS)
    b[SUBNORMAL_PIVOT, 0] *= tiny                                # x = b / d stays finite
    return {k: v.astype(dtype) for k, v in (("a", a), ("b", b), ("s", s), ("t", t))}


def _with(m: np.ndarray, at, value) -> np.ndarray:
    m = np.array(m, dtype=np.result_type(m, np.float64))
    m[at] = value
    return m


def _family(a, rhs, spd, tri):
    return [L.solve(a, rhs), L.solve(a, rhs, transpose_a=True), L.slogdet_p.bind(a), L.cholesky(spd),
            *(L.triangular_solve(tri, rhs, lower=lower, transpose_a=transpose) for lower, transpose in TRIANGLES)]


def _run(body, args, device: str):
    types = [TensorType(x.shape, DType.from_numpy(x.dtype)) for x in args]
    fn = LowerComplex().run(build("lapack_lu", types, body))        # backends see complex values as pairs
    return backend_for(device).compile(fn)(list(args))


@pytest.fixture(scope="module", params=DTYPES, ids=lambda d: np.dtype(d).name)
def family(request):
    """(dtype, operands, emulator outputs, CPU outputs) of `_family` on the adversarial batch."""
    m = _matrices(request.param)
    args = (m["a"], m["b"], m["s"], m["t"])
    return request.param, m, _run(_family, args, EMULATOR), _run(_family, args, "cpu")


def _holds_nan(x):
    return bool(np.any(_nan(x)))


def _numpy_solve(a, b):
    with np.errstate(all="ignore"):
        try:
            return np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            return None


# --------------------------------------------------------------------------- the family on the batch

def test_solve_agrees_with_the_cpu_and_numpy(family):
    dtype, m, got, expected = family
    for output, transpose in ((0, False), (1, True)):
        for k in range(BATCH):
            a, b = m["a"][k], m["b"][k]
            g, e = got[output][k], expected[output][k]
            what = f"solve (transpose_a={transpose}) of matrix {k}"
            if k == SUBNORMAL_PIVOT:    # a diagonal matrix: x = b / d, to rounding
                wide = np.complex128 if np.iscomplexobj(a) else np.float64
                exact = b.astype(wide) / np.diag(a).astype(wide)[:, None]
                _assert_close(g, e, 16 * _epsilon(dtype), what)
                _assert_close(g, exact.astype(dtype), 16 * _epsilon(dtype), f"{what} vs b / d")
                continue
            if _holds_nan(a):
                assert np.all(_nan(g)), f"{what}: a matrix holding NaN gives NaN throughout\n{g}"
                _assert_close(g, e, 0.0, what, nan_may_spread=True)
                continue
            _assert_close(g, e, _rtol(dtype, a), what)
            reference = _numpy_solve(a.T if transpose else a, b) if np.all(np.isfinite(a)) else None
            if reference is None:
                continue
            if _condition(a) == np.inf:       # singular in NumPy's rounding too: NaN, as its LinAlgError
                assert np.all(_nan(g)), what
            else:
                _assert_close(g, reference.astype(dtype), _rtol(dtype, a), f"{what} vs NumPy")
    singular = [2, 3, 4]
    assert all(np.all(_nan(got[0][k])) for k in singular), "exactly singular matrices give NaN"


def test_slogdet_agrees_with_the_cpu_and_numpy(family):
    dtype, m, got, expected = family
    for k in range(BATCH):
        a, (g_sign, g_log), (e_sign, e_log) = m["a"][k], got[2][k], expected[2][k]
        what = f"slogdet of matrix {k}"
        if _holds_nan(a):
            assert np.isnan(g_log.real) and np.isnan(e_log.real), what           # the sign is free
            continue
        assert (g_sign == 0) == (e_sign == 0), f"{what}: sign {g_sign} vs {e_sign}"
        _assert_close(g_sign, e_sign, 16 * _epsilon(dtype) * N, f"{what} sign")
        _assert_close(g_log, e_log, _rtol(dtype, a), f"{what} log|det|")
        with np.errstate(all="ignore"):
            n_sign, n_log = np.linalg.slogdet(a)
        _assert_close(g_sign, np.asarray(n_sign).astype(dtype), 16 * _epsilon(dtype) * N, f"{what} sign vs NumPy")
        _assert_close(g_log, np.asarray(n_log).astype(dtype), _rtol(dtype, a), f"{what} log|det| vs NumPy")
    assert [got[2][k][0] for k in (2, 3, 4)] == [0, 0, 0]
    assert all(got[2][k][1] == -np.inf for k in (2, 3, 4))
    assert got[2][1][0] == np.linalg.slogdet(m["a"][1])[0] and got[2][5][0] == 1.0


def test_cholesky_agrees_with_the_cpu_and_numpy(family):
    dtype, m, got, expected = family
    for k in range(BATCH):
        s, g, e = m["s"][k], got[3][k], expected[3][k]
        lower = np.tril(s)
        hermitian = lower + np.conj(np.tril(s, -1)).T
        if np.iscomplexobj(s):
            hermitian = hermitian - 1j * np.diag(np.diag(s).imag)
        finite = bool(np.all(np.isfinite(lower)))
        rtol = _rtol(dtype, hermitian) if finite else 64 * N * _epsilon(dtype)
        _assert_close(g, e, rtol, f"cholesky of matrix {k}")          # NaN as the CPU: same potf2 steps
        assert np.all(np.triu(g, 1) == 0) or np.all(_nan(g)), f"cholesky of matrix {k}: not lower triangular"
        if finite:
            with np.errstate(all="ignore"):
                try:
                    reference = np.linalg.cholesky(hermitian)
                except np.linalg.LinAlgError:
                    reference = np.full_like(hermitian, np.nan)
            _assert_close(g, reference.astype(dtype), rtol, f"cholesky of matrix {k} vs NumPy")
    assert np.all(_nan(got[3][0])) and np.all(_nan(got[3][1])) and np.all(_nan(got[3][8]))    # not positive definite
    assert not np.any(_nan(got[3][4])), "NaN above the diagonal is never read"


@pytest.mark.parametrize("triangle", range(len(TRIANGLES)),
                         ids=[f"{'lower' if lo else 'upper'}{'-transposed' if tr else ''}" for lo, tr in TRIANGLES])
def test_triangular_solve_agrees_with_the_cpu_and_numpy(family, triangle):
    dtype, m, got, expected = family
    lower, transpose = TRIANGLES[triangle]
    for k in range(BATCH):
        t = np.tril(m["t"][k]) if lower else np.triu(m["t"][k])
        op_t = t.T if transpose else t
        g, e = got[4 + triangle][k], expected[4 + triangle][k]
        what = f"triangular_solve (lower={lower}, transpose_a={transpose}) of matrix {k}"
        if _holds_nan(t):         # the CPU's LU route: NaN throughout here
            assert np.all(_nan(g)), what
            _assert_close(g, e, 0.0, what, nan_may_spread=True)
            continue
        _assert_close(g, e, _rtol(dtype, op_t), what)
        reference = _numpy_solve(op_t, m["b"][k]) if np.all(np.isfinite(t)) else None
        if reference is not None and _condition(op_t) < np.inf:
            _assert_close(g, reference.astype(dtype), _rtol(dtype, op_t), f"{what} vs NumPy")
    nan_in_lower, nan_in_upper = 2, 3
    assert np.all(_nan(got[4 + triangle][nan_in_lower if lower else nan_in_upper]))
    assert not np.any(_nan(got[4 + triangle][nan_in_upper if lower else nan_in_lower])), "the other triangle is read"
    assert np.all(_nan(got[4 + triangle][0])), "a zero on the diagonal: singular, NaN"


TIES = np.array([[[0.3, 2.3, 0.1], [-0.3, 2.3, -1.3], [0.3, 11.5, -2.3]],
                 [[0.1, -1.3, -0.3], [0.1, 0.7, 1.1], [0.1, 2.7, 2.5]],
                 [[-0.7, 0.3, 0.1], [-0.7, 2.3, 2.3], [0.0, 2.0, 2.2]],
                 [[-1.3, 0.3, -0.3], [-1.3, 0.1, 2.3], [-1.3, -0.1, 4.9]],
                 [[0.3, -0.7, 1.1], [0.3, 2.3, 0.7], [0.3, 5.3, 0.3]],
                 [[0.1, -0.3, -1.3], [-0.1, -0.3, 1.1], [0.0, -0.6, -0.2]]])
"""Singular matrices (row 3 a combination of rows 1 and 2 in exact decimals) whose first
column ties in magnitude: which tied row becomes the pivot decides whether rounding
leaves an exactly zero pivot. Rows first on ties (getrf): zero pivots in 0, 2 and 3;
taking the last tied row instead flips every one of the six."""


def test_pivot_ties_go_to_the_first_row_as_in_getrf():
    b = np.ones((len(TIES), 3, 1))
    body = lambda a, rhs: [L.slogdet_p.bind(a), L.solve(a, rhs)]      # noqa: E731
    (got_det, got_x), (cpu_det, cpu_x) = _run(body, (TIES, b), EMULATOR), _run(body, (TIES, b), "cpu")
    sign, logdet = np.linalg.slogdet(TIES)
    zero_pivot = [True, False, True, True, False, False]
    assert [bool(s == 0) for s in got_det[:, 0]] == zero_pivot == [bool(s == 0) for s in sign]
    _assert_close(got_det, cpu_det, 1e-12, "slogdet")
    _assert_close(got_det[:, 1], logdet, 1e-12, "log|det| vs NumPy")
    assert [bool(np.all(np.isnan(x))) for x in got_x] == zero_pivot
    _assert_close(got_x, cpu_x, 1e-6, "solve")          # the finite solutions are huge (|x| ~ 1e16)


# --------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("dtype, batch, n, cols", [
    (np.float64, (), 1, 1), (np.complex64, (), 1, 1), (np.complex64, (2, 3), 2, 5), (np.float64, (3, 1, 2), 5, 1),
    (np.float64, (2,), 40, 3), (np.complex128, (2,), 40, 3),
], ids=["1x1-float64", "1x1-complex64", "batch-2x3-wide-rhs-complex64", "batch-3x1x2-5x5-float64",
        "40x40-float64", "40x40-complex128"])
def test_shapes_agree_with_the_cpu(dtype, batch, n, cols):
    rng = np.random.default_rng(n)

    def random(*shape):
        x = rng.standard_normal(shape)
        return (x + 1j * rng.standard_normal(shape) if np.iscomplexobj(np.zeros((), dtype)) else x).astype(dtype)
    a = random(*batch, n, n) + 2 * float(np.sqrt(n)) * np.eye(n, dtype=dtype)
    spd = (a @ np.conj(np.swapaxes(a, -1, -2))).astype(dtype)
    args = (a, random(*batch, n, cols), spd, a)
    got, expected = _run(_family, args, EMULATOR), _run(_family, args, "cpu")
    condition = max(_condition(m) for m in spd.reshape(-1, n, n))        # cond(A)^2: bounds every output's
    rtol = 64 * n * _epsilon(dtype) * condition
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.shape == e.shape
        _assert_close(g, e, rtol, f"output {k}")
    _assert_close(got[0], np.linalg.solve(a, args[1]), rtol, "solve vs NumPy")


def test_slogdet_of_empty_matrices_is_one_and_zero():
    for dtype in (np.float32, np.complex128):
        a = np.zeros((3, 0, 0), dtype)
        (got,) = _run(lambda x: L.slogdet_p.bind(x), (a,), EMULATOR)
        sign, logdet = np.linalg.slogdet(a)
        np.testing.assert_array_equal(got, np.stack([sign, logdet.astype(sign.dtype)], -1))


# --------------------------------------------------------------------------- gradients

def _loss(a, b, x):
    """Every primitive of the family, in a real loss of real or complex arguments: reverse
    mode solves with transposed matrices (solve's and triangular_solve's transpose rules),
    cholesky's JVP makes triangular solves."""
    spd = x @ np.conj(x.T) + 3.0 * np.eye(x.shape[-1])
    factor = np.linalg.cholesky(spd)
    return (np.sum(np.real(np.linalg.solve(a, b) * np.cos(b))) + np.linalg.slogdet(a)[1]
            + np.sum(np.real(factor * np.sin(x))) + np.sum(np.abs(np.linalg.solve(factor, b)) ** 2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128], ids=["float64", "float32", "complex128"])
def test_gradients_agree_with_the_cpu(dtype):
    rng = np.random.default_rng(7)

    def random(*shape):
        z = rng.standard_normal(shape)
        return (z + 1j * rng.standard_normal(shape) if np.iscomplexobj(np.zeros((), dtype)) else z).astype(dtype)
    a = (random(4, 4) + 3 * np.eye(4)).astype(dtype)
    b, x = random(4, 2), random(4, 4)
    grad = jitgrad.grad(_loss, argnums=(0, 1, 2))
    got = jitgrad.jit(grad, device=EMULATOR)(a, b, x)
    expected = jitgrad.jit(grad)(a, b, x)
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        _assert_close(g, e, 1e4 * _epsilon(dtype), f"gradient {k}")


# --------------------------------------------------------------------------- PTX

def test_every_primitive_and_dtype_has_a_kernel():
    assert set(lapack_lu.COMPLEX) == {"cholesky", "triangular_solve", "solve", "slogdet"}
    for dtype in DTYPES:
        types = [TensorType((2, N, N), DType.from_numpy(np.dtype(dtype)))] * 4
        types[1] = TensorType((2, N, COLS), types[0].dtype)
        fn = LowerComplex().run(build("lapack_lu", types, _family))
        ops = [op for op in fn.walk() if op.name in lapack_lu.COMPLEX]
        assert len(ops) == 8 and all(cuda_lapack.has_kernel(op) for op in ops)


PTX_DTYPES = [np.float32, np.complex128]
"""The dtypes whose PTX this file checks: float64 kernels are in tests/test_cuda_backend.py's
module of every op spec; complex64 is complex128's code in single precision."""


def _emit_ptx(out_dir: str) -> None:
    """(In a subprocess.) The family function's launches in PTX_DTYPES."""
    functions = []
    for dtype in PTX_DTYPES:
        m = _matrices(dtype)
        types = [TensorType(m[k][:3].shape, DType.from_numpy(m[k].dtype)) for k in ("a", "b", "s", "t")]
        functions.append((LowerComplex().run(build("lapack_lu", types, _family)), f"lu_{np.dtype(dtype).name}"))
    emit_family(out_dir, "lapack_lu", functions)


def test_ptxas_and_nvjitlink_accept_real_and_complex_kernels_without_spills(tmp_path):
    assert_family_ptx_accepted(__file__, tmp_path, 8 * len(PTX_DTYPES))     # one launch per primitive at least


if __name__ == "__main__" and sys.argv[1:2] == ["emit"]:
    sys.path.insert(0, HERE)
    _emit_ptx(sys.argv[2])
