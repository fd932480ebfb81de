"""Dense factorizations and solves on LAPACK: cholesky, triangular_solve, solve, slogdet,
eigh, svd, qr and pinv, each batched over leading axes (the last two are the matrix).

Several results in one op are packed into one array, so every primitive keeps the
one-result interface of the rule machinery and LAPACK runs once per matrix:
  - slogdet: (..., 2) = [sign, log|det|];
  - eigh with vectors: (..., n + 1, n) = eigenvalues (ascending) on row 0, the
    eigenvectors as the columns of rows 1..n;
  - svd / qr: the factors flattened and concatenated on the last axis; `svd_parts` and
    `qr_parts` take them apart with slices and reshapes.

Derivatives are JVP rules written with other primitives (the solves are linear in their
right-hand side and have transpose rules), so reverse mode and higher orders come from
the usual linearize + transpose:
  - solve / triangular_solve / slogdet: the adjoint solve (Giles 2008, section 2.2);
  - cholesky: Murray 2016, dL = L Phi(L^-1 dA L^-T);
  - eigh: Giles 2008 section 3.1, dw = diag(V^T dA V), dV = V (F o V^T dA V);
  - svd: Townsend 2016 (JAX's svd_jvp_rule), reduced factors only;
  - qr: Walter and Lehmann / Seeger et al. 2017 (JAX's qr_jvp_rule), m >= n;
  - pinv: Golub and Pereyra 1973, in terms of the pseudo-inverse itself.
Where the input only reads one triangle (cholesky, eigh: the lower one, as NumPy), the
derivative is that of the function actually computed: a change in the unread triangle
changes nothing. Eigenvector and singular vector derivatives divide by eigenvalue
(singular value) gaps: at exactly repeated values they are inf/NaN, never a silently
dropped term; eigenvalue-only and singular-value-only primitives (`vectors=False`) have
derivatives that never divide by a gap.

Failure (a matrix that is not positive definite, a singular matrix, LAPACK reporting no
convergence) fills that matrix's result with NaN: NumPy raises `LinAlgError` there, and
compiled code cannot raise; NaN is never a plausible number. Input holding NaN or inf runs
through LAPACK as in NumPy (NaN and inf come out where NumPy's do), except the SVD-based
primitives (svd, pinv), whose result is NaN for such a matrix.
"""
from __future__ import annotations

import math

import numpy as np

from .kernel_kind import KernelKind
from jitgrad.errors import DTypeError, GradientError, ShapeError
from jitgrad.ir import DType, TensorType
from . import elementwise as E
from . import structural as S
from .base import Primitive, UndefinedPrimal, Zero, deftranspose, emit_named, instantiate
from .linalg import dot_general
from .reductions import reduce_max, reduce_sum


class LapackKernel(KernelKind):
    """A call into LAPACK (or a BLAS triangular solve) per matrix of the batch."""

    emitters = {"cpu": "jitgrad.backends.cpu.lapack:emit", "cuda": "jitgrad.backends.cuda.lapack:emit"}
    cost = 64
    uses_blas = True


LAPACK_KERNEL = LapackKernel()
FLOATS = (DType.f32, DType.f64)
COMPLEX = (DType.c64, DType.c128)
INTERLEAVED_COMPLEX = ("solve", "triangular_solve", "slogdet", "cholesky", "eigh", "svd", "qr", "eig")
"""The primitives that take complex matrices: their kernels call LAPACK's z/c routines,
which read and write NumPy's interleaved (re, im) layout, so `lower-complex` leaves their
operands and results complex (interleaving the parts around the call) instead of
splitting them into real parts."""


# --------------------------------------------------------------------------- shape rules

# The complex-number primitives (`complex_numbers`, which marks the primitives taking complex
# operands once every family is registered) are emitted by name.
def conj(x):
    return emit_named("conj", x)


def real(x):
    return emit_named("real", x)


def imag(x):
    return emit_named("imag", x)


def make_complex(re, im):
    return emit_named("complex", re, im)


def _check_matrix(name: str, a: TensorType, square: bool = True) -> None:
    if a.dtype not in FLOATS and not (a.dtype in COMPLEX and name in INTERLEAVED_COMPLEX):
        kinds = "float32, float64, complex64 or complex128" if name in INTERLEAVED_COMPLEX else "float32 or float64"
        raise DTypeError(f"{name} needs {kinds} matrices, got {a.dtype}")
    if a.ndim < 2:
        raise ShapeError(f"{name}: {a.ndim}-dimensional array given; it needs at least two dimensions")
    if not square and 0 in a.shape[-2:]:
        raise ShapeError(f"{name}: empty matrices ({a.shape}) are not supported")
    if square and a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"{name}: last 2 dimensions of the array must be square, got {a.shape}")


def _check_rhs(name: str, a: TensorType, b: TensorType) -> None:
    if b.dtype != a.dtype:
        raise DTypeError(f"{name}: operand dtypes {a.dtype} and {b.dtype} differ")
    if b.ndim != a.ndim or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != a.shape[-1]:
        raise ShapeError(f"{name}: right-hand side {b.shape} does not match the matrices {a.shape} "
                         "(same batch axes, rows equal to the matrix order)")


def svd_shapes(m: int, n: int, full_matrices: bool) -> tuple[tuple[int, int], int, tuple[int, int]]:
    k = min(m, n)
    return ((m, m if full_matrices else k), k, (n if full_matrices else k, n))


def qr_shapes(m: int, n: int, complete: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    q = m if complete else min(m, n)
    return (m, q), (q, n)


# --------------------------------------------------------------------------- NumPy references

def _per_matrix(a, fn, out_shape, *others):
    """fn on each matrix of the batch; NaN where NumPy raises LinAlgError."""
    batch = a.shape[:-2]
    out = np.empty(batch + out_shape, a.dtype)
    for index in np.ndindex(*batch):
        try:
            with np.errstate(all="ignore"):
                out[index] = fn(a[index], *(o[index] for o in others))
        except np.linalg.LinAlgError:
            out[index] = np.nan
    return out


def _cholesky_impl(a):
    return _per_matrix(a, np.linalg.cholesky, a.shape[-2:])


def _triangular_matrix(a, lower):
    return np.tril(a) if lower else np.triu(a)


def _triangular_solve_impl(a, b, *, lower, transpose_a):
    def one(a1, b1):     # NumPy's solve of the triangle written out in full, as the kernel's fallback
        t = _triangular_matrix(a1, lower)
        return np.linalg.solve(t.T if transpose_a else t, b1)
    return _per_matrix(a, one, b.shape[-2:], b)


def _solve_impl(a, b, *, transpose_a):
    return _per_matrix(a, lambda a1, b1: np.linalg.solve(a1.T if transpose_a else a1, b1), b.shape[-2:], b)


def _slogdet_impl(a):
    """[sign, log|det|]; for complex matrices the sign is det / |det| and log|det| is stored
    as a complex number with a zero imaginary part."""
    sign, logdet = np.linalg.slogdet(a)
    return np.stack([sign, logdet.astype(sign.dtype)], axis=-1).astype(a.dtype)


def _eigh_impl(a, *, vectors, lower):
    n = a.shape[-1]
    uplo = "L" if lower else "U"
    if not vectors:
        return _per_matrix(a, lambda m: np.linalg.eigvalsh(m, UPLO=uplo), (n,))

    def one(m):
        w, v = np.linalg.eigh(m, UPLO=uplo)
        return np.concatenate([w[None], v])
    return _per_matrix(a, one, (n + 1, n))


def _finite_matrix(x):
    """x, or LinAlgError (NaN for that matrix) where it holds inf or NaN: the SVD's documented
    answer there, since NumPy's gesdd may never return on an infinite element."""
    if not np.all(np.isfinite(x)):
        raise np.linalg.LinAlgError("SVD of a matrix holding inf or NaN")
    return x


def _svd_impl(a, *, full_matrices, vectors):
    m, n = a.shape[-2:]
    if not vectors:
        return _per_matrix(a, lambda x: np.linalg.svd(_finite_matrix(x), compute_uv=False), (min(m, n),))
    (um, uq), k, (vq, vn) = svd_shapes(m, n, full_matrices)

    def one(x):
        u, s, vt = np.linalg.svd(_finite_matrix(x), full_matrices=full_matrices)
        return np.concatenate([u.ravel(), s, vt.ravel()])
    return _per_matrix(a, one, (um * uq + k + vq * vn,))


def _qr_impl(a, *, complete):
    m, n = a.shape[-2:]
    (qm, qq), (rq, rn) = qr_shapes(m, n, complete)

    def one(x):
        q, r = np.linalg.qr(x, mode="complete" if complete else "reduced")
        return np.concatenate([q.ravel(), r.ravel()])
    return _per_matrix(a, one, (qm * qq + rq * rn,))


# --------------------------------------------------------------------------- helpers for the rules

def _mT(x):
    """Swap the last two axes."""
    nd = x.type.ndim
    return S.transpose(x, tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _matmul(a, b):
    """Batched a @ b for operands of equal rank >= 2."""
    nd = a.type.ndim
    batch = tuple(range(nd - 2))
    return dot_general(a, b, ((nd - 1,), (nd - 2,)), (batch, batch))


def _masked(x, mask: np.ndarray):
    """x times a constant (rows, cols) matrix, broadcast over the batch."""
    nd = x.type.ndim
    c = S.constant(mask, x.type.dtype)
    return E.mul(x, S.broadcast_in_dim(c, x.type.shape, (nd - 2, nd - 1)))


def _tril(x, k=0):
    return _masked(x, np.tri(*x.type.shape[-2:], k))


def _triu(x, k=0):
    return _masked(x, 1 - np.tri(*x.type.shape[-2:], k - 1))


def _identity(batch, n: int, dtype: DType):
    return S.broadcast_in_dim(S.constant(np.eye(n), dtype), batch + (n, n), (len(batch), len(batch) + 1))


def _diagonal(x):
    """(..., n, n) -> (..., n)."""
    return reduce_sum(_masked(x, np.eye(x.type.shape[-1])), (x.type.ndim - 1,))


def _rows(v, cols: int):
    """(..., n) -> (..., r, n) with v[..., j] in every row: multiplying by it scales columns."""
    nd = v.type.ndim
    return S.broadcast_in_dim(v, v.type.shape[:-1] + (cols, v.type.shape[-1]), tuple(range(nd - 1)) + (nd,))


def _cols(v, rows: int):
    """(..., n) -> (..., n, c) with v[..., i] in every column: multiplying by it scales rows."""
    nd = v.type.ndim
    return S.broadcast_in_dim(v, v.type.shape + (rows,), tuple(range(nd)))


def _symmetric_from_lower(t):
    """The symmetric matrix a routine that reads only the lower triangle sees."""
    return E.add(_tril(t), _mT(_tril(t, -1)))


def _hermitian_from_lower(t):
    """The Hermitian matrix a complex routine that reads only the lower triangle sees: the
    strict lower triangle, its conjugate transpose above, and the real part of the diagonal
    (potrf and heevd ignore the diagonal's imaginary parts). Real matrices: the symmetric one."""
    if not t.type.dtype.is_complex:
        return _symmetric_from_lower(t)
    strict = _tril(t, -1)
    diagonal = make_complex(_masked(real(t), np.eye(t.type.shape[-1])), S.full(0, real(t).type))
    return E.add(E.add(strict, conj(_mT(strict))), diagonal)


def _hermitian_from_upper(t):
    """As `_hermitian_from_lower`, from the upper triangle."""
    if not t.type.dtype.is_complex:
        return _symmetric_from_upper(t)
    return _mH(_hermitian_from_lower(_mH(t)))


def _as_complex(x, like):
    """A real x as x + 0i when `like` is complex."""
    return make_complex(x, S.full(0, x.type)) if like.type.dtype.is_complex else x


def _real_part(x):
    return real(x) if x.type.dtype.is_complex else x


def _mH(x):
    """The conjugate transpose of the last two axes (the transpose for real matrices)."""
    return conj(_mT(x)) if x.type.dtype.is_complex else _mT(x)


def _symmetric_from_upper(t):
    return E.add(_triu(t), _mT(_triu(t, 1)))


def _gap_reciprocals(w):
    """F[i, j] = 1 / (w[j] - w[i]) off the diagonal, 0 on it; NaN where w[i] and w[j] are
    numerically repeated (|w[j] - w[i]| <= 8 n eps max|w|, the resolution of the computed
    eigenvalues): there the eigenvectors are an arbitrary basis of their eigenspace and have
    no derivative, and 1 / (rounding noise) would be a huge finite number that neither
    finite differences nor the JVP/VJP pair reproduce."""
    n = w.type.shape[-1]
    gaps = E.sub(_rows(w, n), _cols(w, n))
    one_on_diagonal = _masked(E.add(gaps, S.full(1, gaps.type)), np.eye(n))
    off_diagonal = _masked(S.full(1, gaps.type), 1 - np.eye(n))
    reciprocals = E.div(off_diagonal, E.add(gaps, one_on_diagonal))
    eps = float(np.finfo(w.type.dtype.numpy).eps)
    largest = reduce_max(E.absolute(w), (w.type.ndim - 1,))
    resolution = E.mul(largest, S.full(8 * n * eps, largest.type))
    resolution = S.broadcast_in_dim(resolution, gaps.type.shape, tuple(range(w.type.ndim - 1)))
    off = S.constant(1 - np.eye(n), DType.bool)
    off = S.broadcast_in_dim(off, gaps.type.shape, (gaps.type.ndim - 2, gaps.type.ndim - 1))
    repeated = E.logical_and(off, E.le(E.absolute(gaps), resolution))
    return E.select(repeated, S.full(np.nan, gaps.type), reciprocals)


def _last_axis_slice(x, start: int, stop: int):
    nd = x.type.ndim
    return S.static_slice(x, (0,) * (nd - 1) + (start,), x.type.shape[:-1] + (stop,))


def _pack(parts, batch):
    """Flatten each (batch + shape) part and concatenate them on the last axis."""
    flat = [S.reshape(p, batch + (math.prod(p.type.shape[len(batch):]),)) for p in parts]
    return S.concatenate(flat, len(batch))


def _unpack(x, shapes):
    batch = x.type.shape[:-1]
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(S.reshape(_last_axis_slice(x, start, start + size), batch + tuple(shape)))
        start += size
    return out


# --------------------------------------------------------------------------- cholesky

def _cholesky_infer(a):
    _check_matrix("cholesky", a)
    return [a]


cholesky_p = Primitive("cholesky", _cholesky_infer, _cholesky_impl,
                       doc="Lower Cholesky factor of the lower triangle's symmetric (Hermitian) matrix (potrf).")
cholesky_p.lowering = LAPACK_KERNEL


def cholesky(a):
    return cholesky_p.bind(a)


def _cholesky_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    if isinstance(da, Zero):
        return Zero(a.type)
    factor = cholesky(a)
    n = a.type.shape[-1]
    left = triangular_solve(factor, _hermitian_from_lower(da), lower=True)       # L^-1 dA
    middle = triangular_solve(factor, _mH(left), lower=True)                     # L^-1 dA L^-H
    half_diagonal = np.tri(n) - 0.5 * np.eye(n)
    return _matmul(factor, _masked(middle, half_diagonal))


cholesky_p.jvp = _cholesky_jvp


# --------------------------------------------------------------------------- triangular_solve

def _triangular_solve_infer(a, b, *, lower, transpose_a):
    _check_matrix("triangular_solve", a)
    _check_rhs("triangular_solve", a, b)
    return [b]


triangular_solve_p = Primitive(
    "triangular_solve", _triangular_solve_infer, _triangular_solve_impl,
    doc="X with op(T) X = B, T the lower (or upper) triangle of A, op transposes when asked (trsm).")
triangular_solve_p.lowering = LAPACK_KERNEL


def triangular_solve(a, b, *, lower: bool, transpose_a: bool = False):
    return triangular_solve_p.bind(a, b, lower=bool(lower), transpose_a=bool(transpose_a))


def _triangular_solve_jvp(primals, tangents, *, lower, transpose_a):
    (a, b), (da, db) = primals, tangents
    if isinstance(da, Zero) and isinstance(db, Zero):
        return Zero(b.type)
    rhs = db
    if not isinstance(da, Zero):
        x = triangular_solve(a, b, lower=lower, transpose_a=transpose_a)
        dt = _tril(da) if lower else _triu(da)
        change = _matmul(_mT(dt) if transpose_a else dt, x)
        rhs = E.neg(change) if isinstance(db, Zero) else E.sub(db, change)
    return triangular_solve(a, rhs, lower=lower, transpose_a=transpose_a)


def _triangular_solve_transpose(ct, a, b, *, lower, transpose_a):
    if isinstance(a, UndefinedPrimal):
        raise GradientError("triangular_solve is not linear in its matrix")
    return [None, triangular_solve(a, instantiate(ct), lower=lower, transpose_a=not transpose_a)]


triangular_solve_p.jvp = _triangular_solve_jvp
deftranspose(triangular_solve_p, _triangular_solve_transpose, linear_operands=(1,))


# --------------------------------------------------------------------------- solve (LU)

def _solve_infer(a, b, *, transpose_a):
    _check_matrix("solve", a)
    _check_rhs("solve", a, b)
    return [b]


solve_p = Primitive("solve", _solve_infer, _solve_impl,
                    doc="X with op(A) X = B by LU with partial pivoting (getrf + getrs).")
solve_p.lowering = LAPACK_KERNEL


def solve(a, b, *, transpose_a: bool = False):
    return solve_p.bind(a, b, transpose_a=bool(transpose_a))


def _solve_jvp(primals, tangents, *, transpose_a):
    (a, b), (da, db) = primals, tangents
    if isinstance(da, Zero) and isinstance(db, Zero):
        return Zero(b.type)
    rhs = db
    if not isinstance(da, Zero):
        change = _matmul(_mT(da) if transpose_a else da, solve(a, b, transpose_a=transpose_a))
        rhs = E.neg(change) if isinstance(db, Zero) else E.sub(db, change)
    return solve(a, rhs, transpose_a=transpose_a)


def _solve_transpose(ct, a, b, *, transpose_a):
    if isinstance(a, UndefinedPrimal):
        raise GradientError("solve is not linear in its matrix")
    return [None, solve(a, instantiate(ct), transpose_a=not transpose_a)]


solve_p.jvp = _solve_jvp
deftranspose(solve_p, _solve_transpose, linear_operands=(1,))


# --------------------------------------------------------------------------- slogdet

def _slogdet_infer(a):
    _check_matrix("slogdet", a)
    return [TensorType(a.shape[:-2] + (2,), a.dtype)]


slogdet_p = Primitive("slogdet", _slogdet_infer, _slogdet_impl,
                      doc="[sign, log|det|] of each matrix from its LU factors (getrf), as NumPy.")
slogdet_p.lowering = LAPACK_KERNEL


def slogdet(a):
    """(sign, log|det|); for a complex matrix the sign is complex and log|det| real."""
    packed = slogdet_p.bind(a)
    sign, logdet = _unpack(packed, [(), ()])
    return sign, (real(logdet) if logdet.type.dtype.is_complex else logdet)


def _slogdet_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    out_type = _slogdet_infer(a.type)[0]
    if isinstance(da, Zero):
        return Zero(out_type)
    trace = _diagonal(solve(a, da))
    trace = reduce_sum(trace, (trace.type.ndim - 1,))                            # tr(A^-1 dA)
    nd = out_type.ndim
    column = out_type.shape[:-1] + (1,)
    if not a.type.dtype.is_complex:
        zero = S.full(0, TensorType(column, a.type.dtype))
        return S.concatenate([zero, S.reshape(trace, column)], nd - 1)
    # d log|det| = Re tr(A^-1 dA); the sign det/|det| turns by i Im tr(A^-1 dA)
    sign = S.reshape(_last_axis_slice(slogdet_p.bind(a), 0, 1), trace.type.shape)
    zeros = S.full(0, real(trace).type)
    dsign = E.mul(sign, make_complex(zeros, imag(trace)))
    dlogdet = make_complex(real(trace), zeros)
    return S.concatenate([S.reshape(dsign, column), S.reshape(dlogdet, column)], nd - 1)


slogdet_p.jvp = _slogdet_jvp


# --------------------------------------------------------------------------- eigh

def _eigh_infer(a, *, vectors, lower):
    _check_matrix("eigh", a)
    n = a.shape[-1]
    return [TensorType(a.shape[:-2] + ((n + 1, n) if vectors else (n,)), a.dtype)]


eigh_p = Primitive("eigh", _eigh_infer, _eigh_impl,
                   doc="Eigenvalues (ascending) and, with vectors, eigenvectors of the symmetric matrix "
                       "of the lower (or upper) triangle (syevd), packed as (n + 1, n).")
eigh_p.lowering = LAPACK_KERNEL


def eigh(a, *, vectors: bool = True, lower: bool = True):
    """(w, V) with vectors, else w; w is real also for a complex Hermitian matrix."""
    packed = eigh_p.bind(a, vectors=bool(vectors), lower=bool(lower))
    if not vectors:
        return _real_part(packed)
    n = a.type.shape[-1]
    nd = packed.type.ndim
    w = S.reshape(S.static_slice(packed, (0,) * nd, packed.type.shape[:-2] + (1, n)), a.type.shape[:-1])
    v = S.static_slice(packed, (0,) * (nd - 2) + (1, 0), packed.type.shape)
    return _real_part(w), v


def _eigh_jvp(primals, tangents, *, vectors, lower):
    (a,), (da,) = primals, tangents
    if isinstance(da, Zero):
        return Zero(_eigh_infer(a.type, vectors=vectors, lower=lower)[0])
    w, v = eigh(a, lower=lower)
    symmetric = _hermitian_from_lower(da) if lower else _hermitian_from_upper(da)
    projected = _matmul(_mH(v), _matmul(symmetric, v))
    dw = _as_complex(_real_part(_diagonal(projected)), a)
    if not vectors:
        return dw
    # Complex eigenvectors are defined up to a phase each: this is the derivative with
    # Im(v_i^H dv_i) = 0 (JAX's eigh_jvp), exact for functions that do not depend on the phases.
    dv = _matmul(v, E.mul(_as_complex(_gap_reciprocals(w), a), projected))
    n = a.type.shape[-1]
    return S.concatenate([S.reshape(dw, a.type.shape[:-2] + (1, n)), dv], a.type.ndim - 2)


eigh_p.jvp = _eigh_jvp


# --------------------------------------------------------------------------- svd

def _svd_infer(a, *, full_matrices, vectors):
    _check_matrix("svd", a, square=False)
    m, n = a.shape[-2:]
    if not vectors:
        return [TensorType(a.shape[:-2] + (min(m, n),), a.dtype)]
    u, k, vt = svd_shapes(m, n, full_matrices)
    return [TensorType(a.shape[:-2] + (math.prod(u) + k + math.prod(vt),), a.dtype)]


svd_p = Primitive("svd", _svd_infer, _svd_impl,
                  doc="Singular values (descending) and, with vectors, U and V^T (gesdd), flattened and "
                      "concatenated: U, s, Vt.")
svd_p.lowering = LAPACK_KERNEL


def svd(a, *, full_matrices: bool = False, vectors: bool = True):
    """(U, s, Vt) with vectors, else s; s is real also for a complex matrix."""
    packed = svd_p.bind(a, full_matrices=bool(full_matrices), vectors=bool(vectors))
    if not vectors:
        return _real_part(packed)
    return tuple(svd_parts(packed, a.type.shape[-2:], full_matrices))


def svd_parts(packed, matrix_shape, full_matrices):
    u, k, vt = svd_shapes(*matrix_shape, full_matrices)
    u, s, vt = _unpack(packed, [u, (k,), vt])
    return u, _real_part(s), vt


def _svd_jvp(primals, tangents, *, full_matrices, vectors):
    (a,), (da,) = primals, tangents
    out_type = _svd_infer(a.type, full_matrices=full_matrices, vectors=vectors)[0]
    if isinstance(da, Zero):
        return Zero(out_type)
    m, n = a.type.shape[-2:]
    if vectors and full_matrices and m != n:
        raise GradientError("the derivative of svd's full_matrices=True factors of a non-square matrix is "
                            "not defined (the extra singular vectors are arbitrary); use full_matrices=False")
    u, s, vt = svd(a)
    v = _mH(vt)
    ds_matrix = _matmul(_mH(u), _matmul(da, v))
    ds = _as_complex(_real_part(_diagonal(ds_matrix)), a)
    if not vectors:
        return ds
    k = min(m, n)
    gaps = E.mul(E.add(_rows(s, k), _cols(s, k)), E.sub(_rows(s, k), _cols(s, k)))   # s_j^2 - s_i^2
    f = E.div(_masked(S.full(1, gaps.type), 1 - np.eye(k)), E.add(gaps, _masked(S.full(1, gaps.type), np.eye(k))))
    f, s_entries = _as_complex(f, a), _as_complex(s, a)
    scaled_right = E.mul(ds_matrix, _rows(s_entries, k))       # dS diag(s)
    scaled_left = E.mul(_cols(s_entries, k), ds_matrix)        # diag(s) dS
    du = _matmul(u, E.mul(f, E.add(scaled_right, _mH(scaled_right))))
    dv = _matmul(v, E.mul(f, E.add(scaled_left, _mH(scaled_left))))
    if a.type.dtype.is_complex:
        # the phases of the singular vector pairs: Im(u_i^H du_i) carries (dS - dS^H)_ii / 2 s_i,
        # and v_i^H dv_i is real (JAX's svd_jvp_rule)
        skew_diagonal = _masked(E.sub(ds_matrix, _mH(ds_matrix)), 0.5 * np.eye(k))
        divisor = E.add(_masked(_rows(s_entries, k), np.eye(k)), _masked(S.full(1, f.type), 1 - np.eye(k)))
        du = E.add(du, _matmul(u, E.div(skew_diagonal, divisor)))
    if m > n:
        dav = _matmul(da, v)
        du = E.add(du, E.div(E.sub(dav, _matmul(u, _matmul(_mH(u), dav))), _rows(s_entries, m)))
    if n > m:
        datu = _matmul(_mH(da), u)
        dv = E.add(dv, E.div(E.sub(datu, _matmul(v, _matmul(vt, datu))), _rows(s_entries, n)))
    return _pack([du, ds, _mH(dv)], a.type.shape[:-2])


svd_p.jvp = _svd_jvp


# --------------------------------------------------------------------------- qr

def _qr_infer(a, *, complete):
    _check_matrix("qr", a, square=False)
    q, r = qr_shapes(*a.shape[-2:], complete)
    return [TensorType(a.shape[:-2] + (math.prod(q) + math.prod(r),), a.dtype)]


qr_p = Primitive("qr", _qr_infer, _qr_impl,
                 doc="Q and R of A = QR (geqrf + orgqr), flattened and concatenated: Q, R.")
qr_p.lowering = LAPACK_KERNEL


def qr(a, *, complete: bool = False):
    """(Q, R)."""
    packed = qr_p.bind(a, complete=bool(complete))
    return tuple(_unpack(packed, qr_shapes(*a.type.shape[-2:], complete)))


def _qr_jvp(primals, tangents, *, complete):
    (a,), (da,) = primals, tangents
    if isinstance(da, Zero):
        return Zero(_qr_infer(a.type, complete=complete)[0])
    m, n = a.type.shape[-2:]
    if m < n or (complete and m != n):
        raise GradientError(f"the derivative of qr is defined for m >= n with reduced factors; got a {m}x{n} "
                            f"matrix{' in complete mode' if complete else ''} (the factors are not unique)")
    q, r = qr(a)
    da_rinv = _mT(triangular_solve(r, _mT(da), lower=False, transpose_a=True))   # dA R^-1
    qt_da_rinv = _matmul(_mH(q), da_rinv)
    lower = _tril(qt_da_rinv, -1)
    skew = E.sub(lower, _mH(lower))
    if a.type.dtype.is_complex:     # R's diagonal stays real: Q^H dQ gets i Im of Q^H dA R^-1's diagonal
        imaginary = make_complex(S.full(0, real(qt_da_rinv).type), imag(qt_da_rinv))
        skew = E.add(skew, _masked(imaginary, np.eye(n)))
    dq = E.add(_matmul(q, E.sub(skew, qt_da_rinv)), da_rinv)
    dr = _matmul(E.sub(qt_da_rinv, skew), r)
    return _pack([dq, dr], a.type.shape[:-2])


qr_p.jvp = _qr_jvp


# --------------------------------------------------------------------------- pinv

def _pinv_infer(a, *, rcond):
    _check_matrix("pinv", a, square=False)
    return [TensorType(a.shape[:-2] + (a.shape[-1], a.shape[-2]), a.dtype)]


def _pinv_impl(a, *, rcond):
    m, n = a.shape[-2:]
    return _per_matrix(a, lambda x: np.linalg.pinv(_finite_matrix(x), rcond=rcond), (n, m))


pinv_p = Primitive("pinv", _pinv_infer, _pinv_impl,
                   doc="Moore-Penrose pseudo-inverse from the SVD (gesdd + gemm), singular values at or "
                       "below rcond * max(s) dropped, as NumPy's pinv.")
pinv_p.lowering = LAPACK_KERNEL


def pinv(a, *, rcond: float):
    return pinv_p.bind(a, rcond=float(rcond))


def _pinv_jvp(primals, tangents, *, rcond):
    """Golub and Pereyra 1973 (as JAX's pinv JVP): exact while the rank does not change,
    and free of singular-value gaps, unlike the derivative through the SVD's factors."""
    (a,), (da,) = primals, tangents
    p = pinv(a, rcond=rcond)
    if isinstance(da, Zero):
        return Zero(p.type)
    m, n = a.type.shape[-2:]
    eye_m, eye_n = _identity(a.type.shape[:-2], m, a.type.dtype), _identity(a.type.shape[:-2], n, a.type.dtype)
    da_t = _mT(da)
    first = E.neg(_matmul(p, _matmul(da, p)))
    second = _matmul(_matmul(p, _mT(p)), _matmul(da_t, E.sub(eye_m, _matmul(a, p))))
    third = _matmul(E.sub(eye_n, _matmul(p, a)), _matmul(da_t, _matmul(_mT(p), p)))
    return E.add(E.add(first, second), third)


pinv_p.jvp = _pinv_jvp


# --------------------------------------------------------------------------- eig

def _eig_infer(a, *, vectors):
    """Double precision only: NumPy's linalg computes in double and rounds the results, and
    single-precision geev's eigenvector signs and eigenvalue order are not NumPy's."""
    _check_matrix("eig", a)
    if a.dtype not in (DType.f64, DType.c128):
        raise DTypeError(f"eig runs in float64/complex128 (as NumPy's linalg); got {a.dtype}: convert first")
    n = a.shape[-1]
    return [TensorType(a.shape[:-2] + ((n + 1, n) if vectors else (n,)), a.dtype.complex_dtype)]


def _eig_impl(a, *, vectors):
    n = a.shape[-1]
    dtype = np.result_type(a.dtype, np.complex64)
    out = np.empty(a.shape[:-2] + ((n + 1, n) if vectors else (n,)), dtype)
    for index in np.ndindex(*a.shape[:-2]):
        try:
            w, v = np.linalg.eig(a[index])
            out[index] = np.concatenate([w[None], v]) if vectors else w
        except np.linalg.LinAlgError:
            out[index] = np.nan
    return out


eig_p = Primitive("eig", _eig_infer, _eig_impl,
                  doc="Eigenvalues (LAPACK's order) and, with vectors, right eigenvectors (unit norm, largest "
                      "component real) of a general real or complex matrix (geev), complex, packed as (n + 1, n).")
eig_p.lowering = LAPACK_KERNEL


def eig(a, *, vectors: bool = True):
    """(w, V) with vectors, else w: complex for real matrices too."""
    packed = eig_p.bind(a, vectors=bool(vectors))
    if not vectors:
        return packed
    n = a.type.shape[-1]
    nd = packed.type.ndim
    w = S.reshape(S.static_slice(packed, (0,) * nd, packed.type.shape[:-2] + (1, n)), a.type.shape[:-1])
    return w, S.static_slice(packed, (0,) * (nd - 2) + (1, 0), packed.type.shape)


def _eig_jvp(primals, tangents, *, vectors):
    """dw = diag(V^-1 dA V), dV = V (F o V^-1 dA V) with F_ij = 1 / (w_j - w_i) off the
    diagonal, then the part along each v_i that changes its norm removed, Re(v_i^H dv_i) = 0
    (JAX's eig_jvp_rule): eigenvectors keep unit norm; their phases are LAPACK's choice
    (largest component real), which this derivative does not follow, so only functions
    of the eigenvectors that do not depend on their phases have finite-difference-exact
    derivatives. Repeated eigenvalues give inf/NaN in dV."""
    (a,), (da,) = primals, tangents
    if isinstance(da, Zero):
        return Zero(_eig_infer(a.type, vectors=vectors)[0])
    w, v = eig(a)
    n = a.type.shape[-1]
    if not da.type.dtype.is_complex:
        da = E.convert(da, v.type.dtype)
    projected = _matmul(solve(v, da), v)                          # V^-1 dA V
    dw = _diagonal(projected)
    if not vectors:
        return dw
    gaps = E.sub(_rows(w, n), _cols(w, n))                        # w_j - w_i
    eye = _masked(S.full(1, gaps.type), np.eye(n))
    f = E.sub(E.div(S.full(1, gaps.type), E.add(gaps, eye)), eye)
    du = _matmul(v, E.mul(f, projected))
    along = reduce_sum(E.mul(conj(v), du), (v.type.ndim - 2,))     # v_i^H du_i
    along = make_complex(real(along), S.full(0, real(along).type))
    dv = E.sub(du, E.mul(v, _rows(along, n)))
    return S.concatenate([S.reshape(dw, a.type.shape[:-2] + (1, n)), dv], a.type.ndim - 2)


eig_p.jvp = _eig_jvp


for _name in INTERLEAVED_COMPLEX:
    Primitive.all[_name].complex_ready = True
