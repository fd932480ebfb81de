"""numpy.linalg on traced arrays: each function follows NumPy 2's own Python code (its
argument handling, batching over leading axes, dtypes and order of operations) on top of
the LAPACK primitives of `jitgrad.primitives.lapack`, so values agree with NumPy to
rounding and derivatives come from the primitives' rules.

Inputs: float32 stays float32, float64 stays float64, integers, bools and bfloat16 (not
`np.inexact` to NumPy) compute in float64; float16 is refused, as NumPy refuses it.
complex64 and complex128 matrices are taken by the functions in `COMPLEX_FUNCTIONS`
(LAPACK's c/z routines); the others refuse them with a DTypeError naming the function
(`numpy_complex` wraps every function outside that set).
Where NumPy raises `LinAlgError` on the numbers (a singular matrix, one not positive
definite), the result is NaN for that matrix (see docs/linalg.md). Functions that return
a named tuple in NumPy (`eigh`, `qr`, `svd`, `slogdet`) return a plain tuple here:
unpacking works, attribute access does not.
"""
from __future__ import annotations

import math
import operator

import numpy as np

from jitgrad import primitives as P
from jitgrad.errors import DTypeError, ShapeError, UnsupportedOperationError
from jitgrad.ir import DType, Value
from jitgrad.primitives import complex_numbers as C
from jitgrad.primitives import lapack as L
from . import numpy_api as api


# --------------------------------------------------------------------------- operands

def _float_operand(x, name: str) -> Value:
    """x as a float32/float64 (or complex64/complex128) Value, as NumPy's linalg
    `_commonType` chooses."""
    x = api.as_value(x)
    dtype = x.type.dtype
    if dtype in (DType.f32, DType.f64, DType.c64, DType.c128):
        return x
    if dtype == DType.f16:
        raise DTypeError(f"numpy.linalg.{name}: array type float16 is unsupported in linalg")
    return P.convert(x, DType.f64)      # NumPy computes what is not np.inexact (bfloat16 too) in float64


def _common_float(name: str, *xs) -> list[Value]:
    """NumPy's `_commonType`: complex if any operand is, double if any is."""
    values = [_float_operand(x, name) for x in xs]
    double = any(v.type.dtype in (DType.f64, DType.c128) for v in values)
    complex_ = any(v.type.dtype.is_complex for v in values)
    target = (DType.c128 if double else DType.c64) if complex_ else (DType.f64 if double else DType.f32)
    return [v if v.type.dtype == target else P.convert(v, target) for v in values]


def _square(x: Value, name: str) -> Value:
    if x.type.ndim < 2:
        raise ShapeError(f"numpy.linalg.{name}: {x.type.ndim}-dimensional array given. Array must be at "
                         "least two-dimensional")
    if x.type.shape[-1] != x.type.shape[-2]:
        raise ShapeError(f"numpy.linalg.{name}: last 2 dimensions of the array must be square")
    return x


def _stacked(x: Value, name: str) -> Value:
    if x.type.ndim < 2:
        raise ShapeError(f"numpy.linalg.{name}: {x.type.ndim}-dimensional array given. Array must be at "
                         "least two-dimensional")
    return x


def _mT(x: Value) -> Value:
    nd = x.type.ndim
    return P.transpose(x, tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _eye_like(x: Value) -> Value:
    n = x.type.shape[-1]
    eye = P.constant(np.eye(n), x.type.dtype)
    return P.broadcast_in_dim(eye, x.type.shape, (x.type.ndim - 2, x.type.ndim - 1))


def _index_last(x: Value, i: int) -> Value:
    """x[..., i]."""
    nd = x.type.ndim
    i %= x.type.shape[-1]
    part = P.static_slice(x, (0,) * (nd - 1) + (i,), x.type.shape[:-1] + (i + 1,))
    return P.reshape(part, x.type.shape[:-1])


# --------------------------------------------------------------------------- solve, inv, det

def _triangular_factor(a: Value) -> bool | None:
    """True (lower) or False (upper) when `a` is a Cholesky factor computed in this trace
    (or its matrix transpose): a solve with it is then a triangular solve, O(n^2) per
    right-hand side instead of a fresh LU factorization, with the same solution up to
    rounding."""
    op = a.defining_op
    if op is None:
        return None
    if op.opdef is L.cholesky_p:
        return True
    nd = a.type.ndim
    if op.name == "transpose" and op.attrs["permutation"] == tuple(range(nd - 2)) + (nd - 1, nd - 2):
        inner = op.operands[0].defining_op
        if inner is not None and inner.opdef is L.cholesky_p:
            return False
    return None


def _solve_square(a: Value, b: Value) -> Value:
    lower = _triangular_factor(a)
    if lower is None:
        return L.solve(a, b)
    return L.triangular_solve(a, b, lower=lower)


def solve(a, b):
    a, b = _common_float("solve", a, b)
    _square(a, "solve")
    vector = b.type.ndim == 1
    if vector:
        b = P.reshape(b, b.type.shape + (1,))
    batch = api.broadcast_shapes(a.type.shape[:-2], b.type.shape[:-2])
    a = api.broadcast_to(a, batch + a.type.shape[-2:])
    if b.type.shape[-2] != a.type.shape[-1]:
        raise ShapeError(f"numpy.linalg.solve: b has {b.type.shape[-2]} rows for a matrix of order "
                         f"{a.type.shape[-1]}")
    b = api.broadcast_to(b, batch + b.type.shape[-2:])
    x = _solve_square(a, b)
    return P.reshape(x, x.type.shape[:-1]) if vector else x


def inv(a):
    a = _square(_float_operand(a, "inv"), "inv")
    return _solve_square(a, _eye_like(a))


def slogdet(a):
    a = _square(_float_operand(a, "slogdet"), "slogdet")
    return L.slogdet(a)


def det(a):
    """sign * exp(log|det|), NumPy's own formula (a complex sign times a real modulus for
    complex matrices)."""
    sign, logdet = slogdet(a)
    modulus = P.exp(logdet)
    if sign.type.dtype.is_complex:
        modulus = C.make_complex(modulus, P.full(0, modulus.type))
    return P.mul(sign, modulus)


def cholesky(a, /, *, upper=False):
    """The lower factor from the lower triangle; with upper=True, NumPy reads the upper
    triangle and returns U = L^T of its transpose."""
    a = _square(_float_operand(a, "cholesky"), "cholesky")
    if upper:
        return _mT(L.cholesky(_mT(a)))
    return L.cholesky(a)


# --------------------------------------------------------------------------- factorizations

def qr(a, mode="reduced"):
    if mode not in ("reduced", "complete", "r"):
        raise UnsupportedOperationError(f"numpy.linalg.qr with mode={mode!r} is not supported (supported: "
                                        "'reduced', 'complete', 'r')")
    a = _stacked(_float_operand(a, "qr"), "qr")
    if 0 in a.type.shape[-2:]:
        q, r = _empty_qr(a, mode == "complete")
    else:
        q, r = L.qr(a, complete=mode == "complete")
    return r if mode == "r" else (q, r)


def _identity_or_empty(batch, rows, cols, dtype):
    """NumPy's factors of empty matrices: identities where they are square, else empty."""
    value = np.broadcast_to(np.eye(rows, cols, dtype=dtype.numpy), batch + (rows, cols))
    return P.constant(np.ascontiguousarray(value))


def _empty_qr(a, complete):
    batch, (m, n) = a.type.shape[:-2], a.type.shape[-2:]
    q_cols = m if complete else min(m, n)
    return (_identity_or_empty(batch, m, q_cols, a.type.dtype),
            P.constant(np.zeros(batch + (q_cols, n), a.type.dtype.numpy)))


def _reads_lower(uplo) -> bool:
    if uplo not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    return uplo == "L"


def eigh(a, UPLO="L"):
    a = _square(_float_operand(a, "eigh"), "eigh")
    return L.eigh(a, lower=_reads_lower(UPLO))


def eigvalsh(a, UPLO="L"):
    a = _square(_float_operand(a, "eigvalsh"), "eigvalsh")
    return L.eigh(a, vectors=False, lower=_reads_lower(UPLO))


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    if hermitian:
        raise UnsupportedOperationError("numpy.linalg.svd with hermitian=True is not supported; "
                                        "use hermitian=False (the same factors up to signs)")
    a = _stacked(_float_operand(a, "svd"), "svd")
    if 0 not in a.type.shape[-2:]:
        return L.svd(a, full_matrices=full_matrices, vectors=compute_uv)
    batch, (m, n) = a.type.shape[:-2], a.type.shape[-2:]
    s = P.constant(np.zeros(batch + (0,), a.type.dtype.real_dtype.numpy))     # singular values are real
    if not compute_uv:
        return s
    u = _identity_or_empty(batch, m, m if full_matrices else 0, a.type.dtype)
    return u, s, _identity_or_empty(batch, n if full_matrices else 0, n, a.type.dtype)


def svdvals(x, /):
    return svd(x, compute_uv=False)


def eig(a):
    """(w, V) of a general matrix by geev as NumPy calls it: the eigenvalues in LAPACK's
    order, unit eigenvectors with their largest component real. Always complex (complex64
    for float32 input, complex128 otherwise): NumPy returns real arrays for a real matrix
    whose eigenvalues all happen to be real, a dtype that depends on the values, which a
    compiled program's types cannot."""
    a = _square(_float_operand(a, "eig"), "eig")
    w, v = L.eig(_in_double(a))
    return _rounded_like(w, a), _rounded_like(v, a)


def eigvals(a):
    """The eigenvalues of `eig`, complex (see `eig`)."""
    a = _square(_float_operand(a, "eigvals"), "eigvals")
    return _rounded_like(L.eig(_in_double(a), vectors=False), a)


def _in_double(a: Value) -> Value:
    """NumPy's linalg computes in double precision and rounds the results to the input's
    precision (`_commonType`); eig follows it, so that float32's eigenvalue order and
    eigenvector signs are NumPy's, not those of LAPACK's single-precision routine."""
    if a.type.dtype in (DType.f32, DType.c64):
        return P.convert(a, DType.c128 if a.type.dtype.is_complex else DType.f64)
    return a


def _rounded_like(result: Value, a: Value) -> Value:
    single = a.type.dtype in (DType.f32, DType.c64)
    return P.convert(result, DType.c64) if single else result


# --------------------------------------------------------------------------- derived from svd

def pinv(a, rcond=None, hermitian=False, *, rtol=None):
    if hermitian:
        raise UnsupportedOperationError("numpy.linalg.pinv with hermitian=True is not supported")
    a = _stacked(_float_operand(a, "pinv"), "pinv")
    if rcond is None:
        rcond = 1e-15 if rtol is None else rtol
    elif rtol is not None:
        raise ValueError("`rtol` and `rcond` can't be both set.")
    batch, (m, n) = a.type.shape[:-2], a.type.shape[-2:]
    if m == 0 or n == 0:
        return P.constant(np.zeros(batch + (n, m), a.type.dtype.numpy))
    if a.type.dtype.is_complex:
        return _pinv(a, rcond)
    if isinstance(rcond, (int, float, np.floating, np.integer)) and not isinstance(rcond, bool):
        return L.pinv(a, rcond=float(rcond))
    return _pinv(a, rcond)


def _per_matrix_scalar(x) -> Value:
    """NumPy's `asarray(x)[..., newaxis]` for a tolerance given per matrix (or one for all)."""
    x = api.as_value(x)
    return P.reshape(x, x.type.shape + (1,))


def _mH(x: Value) -> Value:
    return C.conj(_mT(x)) if x.type.dtype.is_complex else _mT(x)


def _pinv(a: Value, rcond) -> Value:
    """pinv through the SVD's factors, V diag(1/s) U^H, for a tolerance given per matrix or
    traced, and for complex matrices: its derivative divides by singular-value gaps
    (docs/linalg.md)."""
    u, s, vt = L.svd(a, full_matrices=False)
    cutoff = api.UFUNCS[np.multiply](_per_matrix_scalar(rcond), api.amax(s, axis=-1, keepdims=True))
    large = api.UFUNCS[np.greater](s, cutoff)
    s_inv = P.select(large, P.div(P.full(1, s.type), P.select(large, s, P.full(1, s.type))), P.full(0, s.type))
    nd = s_inv.type.ndim
    if a.type.dtype.is_complex:
        s_inv = C.make_complex(s_inv, P.full(0, s_inv.type))
    scaled = P.mul(P.broadcast_in_dim(s_inv, s_inv.type.shape + (a.type.shape[-2],), tuple(range(nd))), _mH(u))
    return api.matmul(_mH(vt), scaled)


def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):
    if rtol is not None and tol is not None:
        raise ValueError("`tol` and `rtol` can't be both set.")
    if hermitian:
        raise UnsupportedOperationError("numpy.linalg.matrix_rank with hermitian=True is not supported")
    A = _float_operand(A, "matrix_rank")
    if A.type.ndim < 2:
        nonzero = api.UFUNCS[np.not_equal](A, 0)
        return P.reduce_max(P.convert(nonzero, DType.i64), tuple(range(A.type.ndim)))
    if 0 in A.type.shape[-2:]:                  # no singular values: rank 0, as NumPy
        return P.constant(np.zeros(A.type.shape[:-2], np.int64))
    s = L.svd(A, vectors=False)
    if tol is None:
        if rtol is None:
            rtol = max(A.type.shape[-2:]) * float(np.finfo(s.type.dtype.numpy).eps)
        else:
            rtol = _per_matrix_scalar(rtol)
        tol = api.UFUNCS[np.multiply](api.amax(s, axis=-1, keepdims=True), rtol)
    else:
        tol = _per_matrix_scalar(tol)
    above = api.UFUNCS[np.greater](s, tol)
    return P.reduce_sum(P.convert(above, DType.i64), (s.type.ndim - 1,))


def lstsq(a, b, rcond=None):
    """NumPy's gelsd answer through the SVD: x = pinv(a) b with singular values at or below
    rcond * s[0] dropped; residuals are the squared column norms of b - a x when m > n
    (NumPy returns an empty array when the rank is below n: here they are NaN then, the
    shape cannot depend on the data)."""
    a, b = _common_float("lstsq", a, b)
    vector = b.type.ndim == 1
    if vector:
        b = P.reshape(b, b.type.shape + (1,))
    if a.type.ndim != 2 or b.type.ndim != 2:
        raise ShapeError(f"numpy.linalg.lstsq: {max(a.type.ndim, b.type.ndim)}-dimensional array given. "
                         "Array must be two-dimensional")
    m, n = a.type.shape
    if b.type.shape[0] != m:
        raise ShapeError("numpy.linalg.lstsq: Incompatible dimensions")
    if rcond is None:
        rcond = float(np.finfo(a.type.dtype.numpy).eps) * max(n, m)
    elif not isinstance(rcond, (int, float, np.floating, np.integer)) or isinstance(rcond, bool):
        raise UnsupportedOperationError("numpy.linalg.lstsq: rcond must be a Python or NumPy number "
                                        f"(got {type(rcond).__name__})")
    if m == 0 or n == 0:
        raise ShapeError("numpy.linalg.lstsq of an empty matrix is not supported")
    s = L.svd(a, vectors=False)
    x = api.matmul(_pinv(a, float(rcond)) if a.type.dtype.is_complex else L.pinv(a, rcond=float(rcond)), b)
    cutoff = P.mul(api.amax(s, axis=-1, keepdims=True), P.full(rcond, s.type.with_shape((1,))))
    rank = P.reduce_sum(P.convert(api.UFUNCS[np.greater](s, cutoff), DType.i64), (0,))
    k = b.type.shape[1]
    if m > n:
        residual = P.sub(b, api.matmul(a, x))
        resids = P.reduce_sum(_squared_modulus(residual), (0,))
        full_rank = P.broadcast_in_dim(P.eq(rank, P.constant(n, DType.i64)), (k,), ())
        resids = P.select(full_rank, resids, P.full(np.nan, resids.type))
    else:
        resids = P.constant(np.zeros(0, a.type.dtype.real_dtype.numpy))
    if vector:
        x = P.reshape(x, (n,))
    return x, resids, P.convert(rank, DType.i32), s      # gelsd's rank is a C int: NumPy's int32


# --------------------------------------------------------------------------- products

def matrix_power(a, n):
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError("exponent must be an integer") from None
    a = api.as_value(a)
    _square(a, "matrix_power")
    if n == 0:
        return P.convert(_eye_like(P.convert(a, DType.f64)), a.type.dtype)
    if n < 0:
        a = inv(a)
        n = abs(n)
    if n == 1:
        return a
    if n == 2:
        return api.matmul(a, a)
    if n == 3:
        return api.matmul(api.matmul(a, a), a)
    z = result = None
    while n > 0:
        z = a if z is None else api.matmul(z, z)
        n, bit = divmod(n, 2)
        if bit:
            result = z if result is None else api.matmul(result, z)
    return result


def multi_dot(arrays, *, out=None):
    """NumPy's order of products: the cheaper of the two for three arrays, the optimal
    chain order (dynamic programming) for more."""
    if out is not None:
        raise UnsupportedOperationError("numpy.linalg.multi_dot with out= is not supported")
    arrays = [api.as_value(x) for x in arrays]
    n = len(arrays)
    if n < 2:
        raise ValueError("Expecting at least two arrays.")
    if n == 2:
        return api.dot(arrays[0], arrays[1])
    first_vector, last_vector = arrays[0].type.ndim == 1, arrays[-1].type.ndim == 1
    if first_vector:
        arrays[0] = P.reshape(arrays[0], (1,) + arrays[0].type.shape)
    if last_vector:
        arrays[-1] = P.reshape(arrays[-1], arrays[-1].type.shape + (1,))
    for x in arrays:
        if x.type.ndim != 2:
            raise ShapeError(f"numpy.linalg.multi_dot: {x.type.ndim}-dimensional array given. Array must be "
                             "two-dimensional")
    if n == 3:
        result = _multi_dot_three(*arrays)
    else:
        order = _chain_order(arrays)
        result = _multi_dot(arrays, order, 0, n - 1)
    if first_vector and last_vector:
        return P.reshape(result, ())
    if first_vector or last_vector:
        return P.reshape(result, (result.type.size,))
    return result


def _multi_dot_three(a, b, c):
    a0, a1b0 = a.type.shape
    b1c0, c1 = c.type.shape
    cost1 = a0 * b1c0 * (a1b0 + c1)
    cost2 = a1b0 * c1 * (a0 + b1c0)
    if cost1 < cost2:
        return api.dot(api.dot(a, b), c)
    return api.dot(a, api.dot(b, c))


def _chain_order(arrays):
    n = len(arrays)
    p = [a.type.shape[0] for a in arrays] + [arrays[-1].type.shape[1]]
    m = np.zeros((n, n), dtype=np.float64)
    s = np.empty((n, n), dtype=np.intp)
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            m[i, j] = np.inf
            for k in range(i, j):
                q = m[i, k] + m[k + 1, j] + p[i] * p[k + 1] * p[j + 1]
                if q < m[i, j]:
                    m[i, j] = q
                    s[i, j] = k
    return s


def _multi_dot(arrays, order, i, j):
    if i == j:
        return arrays[i]
    return api.dot(_multi_dot(arrays, order, i, order[i, j]), _multi_dot(arrays, order, order[i, j] + 1, j))


# --------------------------------------------------------------------------- norms and cond

def _abs(x):
    return api.UFUNCS[np.absolute](x)


def _squared_modulus(x):
    """x * x, or |x|^2 = re^2 + im^2 for complex x (NumPy's (x.conj() * x).real)."""
    if not x.type.dtype.is_complex:
        return P.mul(x, x)
    re, im = C.real(x), C.imag(x)
    return P.add(P.mul(re, re), P.mul(im, im))


def _max_from_zero(x, axis, keepdims=False):
    """np.max(x, axis, initial=0), as NumPy's norms take it: 0 for an empty axis."""
    return api.FUNCTIONS[np.max](x, axis=axis, keepdims=keepdims, initial=0)


def norm(x, ord=None, axis=None, keepdims=False):
    x = api.as_value(x)
    if not x.type.dtype.is_inexact or x.type.dtype == DType.bf16:
        x = P.convert(x, DType.f64)
    nd = x.type.ndim
    if axis is None and (ord is None or (ord in ("f", "fro") and nd == 2) or (ord == 2 and nd == 1)):
        # A sum of squares, not NumPy's dot(x, x): mul's rules are strong-zero, so the
        # gradient at x = 0 is the documented 0 (a contraction's transpose gives 0 * inf).
        flat = api.ravel(x)
        ret = P.sqrt(api.sum(_squared_modulus(flat)))
        return P.reshape(ret, (1,) * nd) if keepdims else ret
    if axis is None:
        axis = tuple(range(nd))
    elif not isinstance(axis, tuple):
        try:
            axis = (operator.index(axis),)
        except TypeError:
            raise TypeError("'axis' must be None, an integer or a tuple of integers") from None
    if len(axis) == 1:
        return _vector_norm(x, ord, axis, keepdims)
    if len(axis) == 2:
        return _matrix_norm(x, ord, axis, keepdims)
    raise ValueError("Improper number of dimensions to norm.")


def _vector_norm(x, ord, axis, keepdims):
    if ord == np.inf:    # NumPy's max(initial=0): 0 for an empty vector
        return _max_from_zero(_abs(x), axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return api.amin(_abs(x), axis=axis, keepdims=keepdims)
    if ord == 0:
        return api.sum(P.convert(api.UFUNCS[np.not_equal](x, 0), x.type.dtype.real_dtype), axis=axis,
                       keepdims=keepdims)
    if ord == 1:
        return api.sum(_abs(x), axis=axis, keepdims=keepdims)
    if ord is None or ord == 2:
        return P.sqrt(api.sum(_squared_modulus(x), axis=axis, keepdims=keepdims))
    if isinstance(ord, str):
        raise ValueError(f"Invalid norm order '{ord}' for vectors")
    try:
        p = float(ord)
    except TypeError:
        raise UnsupportedOperationError("numpy.linalg.norm with a traced ord is not supported") from None
    real_dtype = x.type.dtype.real_dtype.numpy
    powered = api.power(_abs(x), P.constant(np.asarray(p, real_dtype)))
    total = api.sum(powered, axis=axis, keepdims=keepdims)
    return api.power(total, P.constant(np.reciprocal(np.asarray(p, real_dtype))))


def _svd_norm(x, row_axis, col_axis, reduce):
    """reduce(singular values): the public svd, which gives empty matrices no singular values."""
    y = api.moveaxis(x, (row_axis, col_axis), (-2, -1))
    return reduce(svd(y, compute_uv=False), axis=-1)


def _matrix_norm(x, ord, axis, keepdims):
    nd = x.type.ndim
    row_axis, col_axis = (a if a >= 0 else a + nd for a in axis)
    if not (0 <= row_axis < nd and 0 <= col_axis < nd):
        raise ValueError(f"axis {axis} is out of bounds for array of dimension {nd}")
    if row_axis == col_axis:
        raise ValueError("Duplicate axes given.")
    if ord == 2:     # NumPy: the largest singular value, 0 for an empty matrix (initial=0)
        ret = _svd_norm(x, row_axis, col_axis, lambda s, axis: _max_from_zero(s, axis=axis))
    elif ord == -2:
        ret = _svd_norm(x, row_axis, col_axis, api.amin)
    elif ord == 1:
        ret = _max_from_zero(api.sum(_abs(x), axis=row_axis), axis=col_axis - (col_axis > row_axis))
    elif ord == np.inf:
        ret = _max_from_zero(api.sum(_abs(x), axis=col_axis), axis=row_axis - (row_axis > col_axis))
    elif ord == -1:
        ret = api.amin(api.sum(_abs(x), axis=row_axis), axis=col_axis - (col_axis > row_axis))
    elif ord == -np.inf:
        ret = api.amin(api.sum(_abs(x), axis=col_axis), axis=row_axis - (row_axis > col_axis))
    elif ord in (None, "fro", "f"):
        ret = P.sqrt(api.sum(_squared_modulus(x), axis=(row_axis, col_axis)))
    elif ord == "nuc":
        ret = _svd_norm(x, row_axis, col_axis, api.sum)
    else:
        raise ValueError("Invalid norm order for matrices.")
    if keepdims:
        shape = list(x.type.shape)
        shape[row_axis] = shape[col_axis] = 1
        ret = P.reshape(ret, tuple(shape))
    return ret


def vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    x = api.as_value(x)
    shape = list(x.type.shape)
    if axis is None:
        x = api.ravel(x)
        inner_axis = 0
    elif isinstance(axis, tuple):
        axes = api.normalize_axes(axis, x.type.ndim)
        rest = tuple(i for i in range(x.type.ndim) if i not in axes)
        x = P.reshape(P.transpose(x, axes + rest),
                      (math.prod(shape[i] for i in axes),) + tuple(shape[i] for i in rest))
        inner_axis = 0
    else:
        inner_axis = axis
    res = norm(x, axis=inner_axis, ord=ord)
    if keepdims:
        axes = range(len(shape)) if axis is None else api.normalize_axes(axis if isinstance(axis, tuple)
                                                                        else (axis,), len(shape))
        for i in axes:
            shape[i] = 1
        res = P.reshape(res, tuple(shape))
    return res


def matrix_norm(x, /, *, keepdims=False, ord="fro"):
    return norm(x, axis=(-2, -1), keepdims=keepdims, ord=ord)


def cond(x, p=None):
    x = _stacked(_float_operand(x, "cond"), "cond")
    if p is None or p in (2, -2):
        s = L.svd(x, vectors=False)
        largest, smallest = _index_last(s, 0), _index_last(s, -1)
        r = P.div(smallest, largest) if p == -2 else P.div(largest, smallest)
    else:
        _square(x, "cond")
        r = P.mul(norm(x, p, axis=(-2, -1)), norm(inv(x), p, axis=(-2, -1)))
    # NaN (a singular matrix) becomes inf unless x itself holds NaN, as NumPy
    x_has_nan = P.reduce_max(P.convert(P.ne(x, x), DType.i64), (x.type.ndim - 2, x.type.ndim - 1))
    nan_from_singular = P.logical_and(P.ne(r, r), P.eq(x_has_nan, P.full(0, x_has_nan.type)))
    return P.select(nan_from_singular, P.full(np.inf, r.type), r)


# --------------------------------------------------------------------------- tensors

def tensorsolve(a, b, axes=None):
    a, b = _common_float("tensorsolve", a, b)
    an = a.type.ndim
    if axes is not None:
        allaxes = list(range(an))
        for k in axes:
            allaxes.remove(k)
            allaxes.insert(an, k)
        a = P.transpose(a, tuple(allaxes))
    oldshape = a.type.shape[-(an - b.type.ndim):]
    prod = math.prod(oldshape)
    if a.type.size != prod ** 2:
        raise ShapeError("numpy.linalg.tensorsolve: Input arrays must satisfy the requirement "
                         "prod(a.shape[b.ndim:]) == prod(a.shape[:b.ndim])")
    x = solve(P.reshape(a, (prod, prod)), api.ravel(b))
    return P.reshape(x, oldshape)


def tensorinv(a, ind=2):
    a = _float_operand(a, "tensorinv")
    if ind <= 0:
        raise ValueError("Invalid ind argument.")
    oldshape = a.type.shape
    invshape = oldshape[ind:] + oldshape[:ind]
    prod = math.prod(oldshape[ind:])
    if prod == 0 or a.type.size % prod:
        raise ShapeError(f"numpy.linalg.tensorinv: cannot reshape an array of shape {oldshape} to ({prod}, -1)")
    return P.reshape(inv(P.reshape(a, (prod, a.type.size // prod))), invshape)


# --------------------------------------------------------------------------- the array-API aliases

def diagonal(x, /, *, offset=0):
    return api.FUNCTIONS[np.diagonal](x, offset, -2, -1)


def trace(x, /, *, offset=0, dtype=None):
    return api.FUNCTIONS[np.trace](x, offset, -2, -1, dtype)


def matrix_transpose(x, /):
    return api.FUNCTIONS[np.matrix_transpose](x)


def cross(x1, x2, /, *, axis=-1):
    x1, x2 = api.as_value(x1), api.as_value(x2)
    if x1.type.shape[axis] != 3 or x2.type.shape[axis] != 3:
        raise ShapeError("numpy.linalg.cross: both input vectors must be 3-dimensional along the axis "
                         f"(got {x1.type.shape[axis]} and {x2.type.shape[axis]})")
    return api.FUNCTIONS[np.cross](x1, x2, axis=axis)


def vecdot(x1, x2, /, *, axis=-1):
    """The gufunc's `axes=[(axis,), (axis,), ()]`: each operand's own axis moved last."""
    x1, x2 = (api.moveaxis(api.as_value(x), axis, -1) for x in (x1, x2))
    return api.UFUNCS[np.vecdot](x1, x2)


COMPLEX_FUNCTIONS = frozenset({
    np.linalg.solve, np.linalg.inv, np.linalg.det, np.linalg.slogdet, np.linalg.cholesky, np.linalg.matrix_power,
    np.linalg.eigh, np.linalg.eigvalsh, np.linalg.svd, np.linalg.svdvals, np.linalg.pinv, np.linalg.lstsq,
    np.linalg.matrix_rank, np.linalg.qr, np.linalg.eig, np.linalg.eigvals,
    np.linalg.multi_dot, np.linalg.norm, np.linalg.vector_norm, np.linalg.matrix_norm, np.linalg.cond,
    np.linalg.tensorsolve, np.linalg.tensorinv, np.linalg.matmul, np.linalg.outer, np.linalg.tensordot,
    np.linalg.diagonal, np.linalg.matrix_transpose, np.linalg.cross,
})
"""The numpy.linalg functions that take complex arrays, checked against NumPy on them
(tests/test_linalg_complex.py); the others refuse complex input with a DTypeError."""

FUNCTIONS = {
    np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.det: det, np.linalg.slogdet: slogdet,
    np.linalg.cholesky: cholesky, np.linalg.qr: qr, np.linalg.eigh: eigh, np.linalg.eigvalsh: eigvalsh,
    np.linalg.svd: svd, np.linalg.svdvals: svdvals, np.linalg.pinv: pinv, np.linalg.matrix_rank: matrix_rank,
    np.linalg.lstsq: lstsq, np.linalg.matrix_power: matrix_power, np.linalg.multi_dot: multi_dot,
    np.linalg.norm: norm, np.linalg.vector_norm: vector_norm, np.linalg.matrix_norm: matrix_norm,
    np.linalg.cond: cond, np.linalg.tensorsolve: tensorsolve, np.linalg.tensorinv: tensorinv,
    np.linalg.eig: eig, np.linalg.eigvals: eigvals,
    np.linalg.matmul: api.matmul, np.linalg.outer: api.outer, np.linalg.tensordot: api.tensordot,
    np.linalg.diagonal: diagonal, np.linalg.trace: trace, np.linalg.matrix_transpose: matrix_transpose,
    np.linalg.cross: cross, np.linalg.vecdot: vecdot,
}
